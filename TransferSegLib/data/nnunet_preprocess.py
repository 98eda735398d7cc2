"""nnU-Net v2's preprocessing and its inverse, step for step, for models whose recipe is nnU-Net's plans.

Forward (``preprocess_image``), in nnU-Net's order (``DefaultPreprocessor``):

1. the voxel array as stored, in SimpleITK's ``(z, y, x)`` order, axes permuted by
   the plans' ``transpose_forward`` (spacing likewise). The direction matrix is
   ignored, as nnU-Net ignores it: no reorientation.
2. crop to the bounding box of the nonzero voxels (holes filled); on CT that is
   usually the whole image.
3. per-channel normalization *before* resampling: ``CTNormalization`` clips to the
   dataset's foreground percentiles 0.5 / 99.5 and maps ``(x - mean) / std`` with
   the dataset's foreground mean and SD; ``ZScoreNormalization`` uses the image's
   own mean and SD (inside the nonzero mask with ``use_mask_for_norm``).
4. resampling to the configuration's spacing: the new shape is
   ``round(old_spacing / new_spacing * old_shape)`` per axis, cubic spline (order 3)
   with edge-aligned voxel grids (scikit-image's ``resize``, done here with
   ``scipy.ndimage.zoom(grid_mode=True)``, which ``resize`` calls), clipped to the
   input's range; when one spacing is more than 3x the others the low-resolution
   axis is resampled separately with nearest neighbour (nnU-Net's ``order_z`` 0).

Back (``restore_logits``): logits resampled linearly (order 1) to the cropped
shape, softmax, put back into the uncropped box (background outside), axes
permuted back by ``transpose_backward``: probabilities on the input's own grid.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from TransferSegLib.data.nnunet_recipe import ANISO_THRESHOLD, NnunetRecipe
from TransferSegLib.errors import CaseError

Box = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]


@dataclass
class NnunetPreprocessInfo:
    """What the way back needs: the input's geometry, the box of the nonzero crop
    (in transposed axes), the spacing after ``transpose_forward`` and the recipe."""

    recipe: NnunetRecipe
    size_zyx: Tuple[int, int, int]
    spacing_transposed: Tuple[float, float, float]
    shape_before_crop: Tuple[int, int, int]
    box: Box
    network_shape: Tuple[int, int, int]
    origin: Tuple[float, float, float]
    spacing: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @property
    def crop_shape(self) -> Tuple[int, int, int]:
        return tuple(int(e - s) for s, e in self.box)  # type: ignore[return-value]

    def image_from_zyx(self, array: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(array)
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        return image


def _lowres_axes(spacing: Sequence[float]) -> List[int]:
    spacing = np.asarray(spacing, float)
    return [int(a) for a in np.where(np.max(spacing) / spacing == 1)[0]]


def separate_z_axis(current: Sequence[float], new: Sequence[float],
                    force: Optional[bool] = None) -> Optional[int]:
    """The axis nnU-Net resamples on its own (None: all axes together).

    Anisotropic current spacing (max / min > 3) names its coarsest axis, else an
    anisotropic new spacing names its coarsest; two or three equally coarse axes
    mean no separate axis.
    """
    if force is not None:
        axes = _lowres_axes(current) if force else []
    elif max(current) / min(current) > ANISO_THRESHOLD:
        axes = _lowres_axes(current)
    elif max(new) / min(new) > ANISO_THRESHOLD:
        axes = _lowres_axes(new)
    else:
        axes = []
    return axes[0] if len(axes) == 1 else None


def new_shape(shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]) -> Tuple[int, ...]:
    return tuple(int(round(o / n * s)) for o, n, s in zip(old_spacing, new_spacing, shape))


def _resize(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """scikit-image's ``resize(array, shape, order, mode='edge', anti_aliasing=False)``: clipped to the input range."""
    from scipy import ndimage

    if tuple(array.shape) == tuple(shape):
        return array.astype(np.float32, copy=True)
    zoom = [n / o for n, o in zip(shape, array.shape)]
    out = ndimage.zoom(array, zoom, order=order, mode="nearest", grid_mode=True)
    if order > 1:
        np.clip(out, array.min(), array.max(), out=out)
    return out.astype(np.float32, copy=False)


def _resize_labels(labels: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """batchgenerators' ``resize_segmentation``: each label's mask resized, kept where >= 0.5."""
    if tuple(labels.shape) == tuple(shape):
        return labels.copy()
    if order == 0:
        index = [np.clip(np.floor((np.arange(n) + 0.5) * (o / n)), 0, o - 1).astype(np.intp)
                 for n, o in zip(shape, labels.shape)]
        return labels[np.ix_(*index)]
    out = np.zeros(tuple(shape), labels.dtype)
    for value in np.unique(labels):
        out[_resize((labels == value).astype(np.float32), shape, order) >= 0.5] = value
    return out


def _along_axis_nearest(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """``map_coordinates(order=0, mode='nearest')`` along one axis with edge-aligned grids."""
    n = array.shape[axis]
    where = (np.arange(size) + 0.5) * (n / size) - 0.5
    index = np.clip(np.floor(where + 0.5), 0, n - 1).astype(np.intp)
    return np.take(array, index, axis=axis)


def resample(array: np.ndarray, shape: Sequence[int], current: Sequence[float], new: Sequence[float],
             order: int, order_z: int = 0, force_separate_z: Optional[bool] = None, is_labels: bool = False) -> np.ndarray:
    """nnU-Net's ``resample_data_or_seg_to_shape`` for one 3D array (float32, or integer labels)."""
    shape = tuple(int(s) for s in shape)
    if tuple(array.shape) == shape:
        return array.copy() if is_labels else array.astype(np.float32, copy=True)
    axis = separate_z_axis(current, new, force_separate_z)
    fn = _resize_labels if is_labels else _resize
    if axis is None:
        return fn(array if is_labels else array.astype(np.float32, copy=False), shape, order)
    in_plane = [s for a, s in enumerate(shape) if a != axis]
    slices = [fn(np.take(array, i, axis=axis), in_plane, order) for i in range(array.shape[axis])]
    stacked = np.stack(slices, axis=axis)
    if stacked.shape[axis] == shape[axis]:
        return stacked
    if order_z != 0:
        raise CaseError(f"nnU-Net plans asking for order_z={order_z} are not supported (stock plans use 0).")
    return _along_axis_nearest(stacked, axis, shape[axis])


def _nonzero_box(channels: np.ndarray) -> Tuple[Box, np.ndarray]:
    """nnU-Net's ``crop_to_nonzero``: voxels nonzero in any channel, holes filled, and their bounding box."""
    from scipy import ndimage

    array = channels[0]
    mask = ndimage.binary_fill_holes(np.any(channels != 0, axis=0))
    box = []
    for axis in range(3):
        hits = np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        box.append((int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, int(array.shape[axis])))
    return tuple(box), mask  # type: ignore[return-value]


def _crop(array: np.ndarray, box: Box) -> np.ndarray:
    return array[box[0][0]:box[0][1], box[1][0]:box[1][1], box[2][0]:box[2][1]]


def normalize(array: np.ndarray, recipe: NnunetRecipe, channel: int, mask: Optional[np.ndarray]) -> np.ndarray:
    """nnU-Net's normalization of one channel (float32 in and out, as nnU-Net computes it)."""
    scheme, use_mask, props = recipe.normalization(channel)
    image = np.array(array, dtype=np.float32, copy=True)
    eps = 1e-8
    if scheme == "CTNormalization":
        np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
        image -= np.float32(props["mean"])
        image /= np.float32(max(props["std"], eps))
    elif scheme == "ZScoreNormalization":
        if use_mask and mask is not None:
            inside = image[mask]
            image[mask] = (inside - inside.mean()) / max(inside.std(), eps)
        else:
            image -= image.mean()
            image /= max(image.std(), eps)
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= max(image.max(), eps)
    return image


def _zyx(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _channels(image: Union[sitk.Image, Sequence[sitk.Image]], recipe: NnunetRecipe) -> List[sitk.Image]:
    images = [image] if isinstance(image, sitk.Image) else list(image)
    names = ", ".join(recipe.channel_names.values())
    if len(images) != recipe.num_channels:
        raise CaseError(f"This nnU-Net model takes {recipe.num_channels} channel(s) ({names}); the case has "
                        f"{len(images)} image(s). Give one image per channel, in the model's order.")
    for index, channel in enumerate(images):
        if channel.GetDimension() != 3 or channel.GetNumberOfComponentsPerPixel() != 1:
            raise CaseError(f"nnU-Net models need 3D single-component images; channel {index} has size "
                            f"{channel.GetSize()} with {channel.GetNumberOfComponentsPerPixel()} component(s).")
        if channel.GetSize() != images[0].GetSize():
            raise CaseError(f"Channel {index} has size {channel.GetSize()}, channel 0 {images[0].GetSize()}: the "
                            f"channels of an nnU-Net case must share one grid.")
    return images


def preprocess_image(image: Union[sitk.Image, Sequence[sitk.Image]],
                     recipe: NnunetRecipe) -> Tuple[np.ndarray, NnunetPreprocessInfo]:
    """The network's input (transposed, cropped, normalized, resampled; float32) and the way back:
    ``(D0, D1, D2)`` for one image, ``(C, D0, D1, D2)`` for a list of channel images."""
    images = _channels(image, recipe)
    tf = recipe.transpose_forward
    first = images[0]
    spacing_zyx = tuple(float(s) for s in reversed(first.GetSpacing()))
    spacing_t = tuple(spacing_zyx[a] for a in tf)
    data = np.stack([np.transpose(_zyx(c).astype(np.float32), tf) for c in images])
    box, mask = _nonzero_box(data)
    mask = _crop(mask, box)
    order, order_z, force = recipe.resampling("data")
    out = []
    for channel in range(len(images)):
        cropped = _crop(data[channel], box)
        normalized = normalize(cropped, recipe, channel, mask)
        target = new_shape(cropped.shape, spacing_t, recipe.spacing)
        out.append(resample(normalized, target, spacing_t, recipe.spacing, order, order_z, force))
    network_input = np.stack(out)
    info = NnunetPreprocessInfo(
        recipe=recipe, size_zyx=tuple(int(s) for s in _zyx(first).shape), spacing_transposed=spacing_t,  # type: ignore[arg-type]
        shape_before_crop=tuple(int(s) for s in data.shape[1:]), box=box,  # type: ignore[arg-type]
        network_shape=tuple(int(s) for s in network_input.shape[1:]),  # type: ignore[arg-type]
        origin=tuple(first.GetOrigin()), spacing=tuple(first.GetSpacing()), direction=tuple(first.GetDirection()))
    if isinstance(image, sitk.Image):
        network_input = network_input[0]
    return np.ascontiguousarray(network_input, dtype=np.float32), info


def preprocess_labels(label: sitk.Image, info: NnunetPreprocessInfo) -> np.ndarray:
    """A labelmap on the image's grid → the network's grid (nnU-Net's ``resampling_fn_seg``: order 1 per label)."""
    if tuple(reversed(label.GetSize())) != tuple(info.size_zyx) or label.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"A labelmap of size {label.GetSize()} is not on its image's grid (size "
                        f"{tuple(reversed(info.size_zyx))}): export the segmentation with the image as reference geometry.")
    values = _crop(np.transpose(_zyx(label), info.recipe.transpose_forward), info.box)
    seg = info.recipe.config.get("resampling_fn_seg_kwargs", {})
    return np.ascontiguousarray(resample(values, info.network_shape, info.spacing_transposed, info.recipe.spacing,
                                         int(seg.get("order", 1)), int(seg.get("order_z", 0)),
                                         seg.get("force_separate_z"), is_labels=True))


def _back_to_input(values: np.ndarray, info: NnunetPreprocessInfo, background: Sequence[float]) -> np.ndarray:
    """``(C, *crop)`` → ``(C, X, Y, Z)`` on the input grid: uncrop, ``transpose_backward``, SimpleITK's x-first order."""
    full = np.empty((values.shape[0],) + info.shape_before_crop, values.dtype)
    for c in range(values.shape[0]):
        full[c] = background[c]
    (z0, z1), (y0, y1), (x0, x1) = info.box
    full[:, z0:z1, y0:y1, x0:x1] = values
    zyx = np.transpose(full, (0,) + tuple(a + 1 for a in info.recipe.transpose_backward))
    return np.ascontiguousarray(np.transpose(zyx, (0, 3, 2, 1)))


def restore_logits(logits: np.ndarray, info: NnunetPreprocessInfo) -> np.ndarray:
    """Logits ``(C, *network_shape)`` → softmax probabilities ``(C, X, Y, Z)`` on the input's grid."""
    order, order_z, force = info.recipe.resampling("probabilities")
    resampled = np.stack([resample(np.asarray(c, np.float32), info.crop_shape, info.recipe.spacing,
                                   info.spacing_transposed, order, order_z, force) for c in logits])
    resampled -= resampled.max(axis=0, keepdims=True)
    np.exp(resampled, out=resampled)
    resampled /= resampled.sum(axis=0, keepdims=True)
    return _back_to_input(resampled, info, [1.0] + [0.0] * (resampled.shape[0] - 1))


def restore_probabilities(probs: np.ndarray, info: NnunetPreprocessInfo) -> np.ndarray:
    """Probabilities on the network grid → ``(C, X, Y, Z)`` on the input grid (linear, as nnU-Net's order 1)."""
    order, order_z, force = info.recipe.resampling("probabilities")
    resampled = np.stack([resample(np.asarray(c, np.float32), info.crop_shape, info.recipe.spacing,
                                   info.spacing_transposed, order, order_z, force) for c in probs])
    return _back_to_input(resampled, info, [1.0] + [0.0] * (resampled.shape[0] - 1))


def restore_label_array(labels: np.ndarray, info: NnunetPreprocessInfo) -> sitk.Image:
    """Labels on the network grid → a UInt8 labelmap with the input's geometry."""
    order, order_z, force = info.recipe.resampling("probabilities")
    resampled = resample(np.asarray(labels).astype(np.uint8), info.crop_shape, info.recipe.spacing,
                         info.spacing_transposed, order, order_z, force, is_labels=True)
    xyz = _back_to_input(resampled[None], info, [0])[0]
    return info.image_from_zyx(np.ascontiguousarray(xyz.transpose(2, 1, 0)))
