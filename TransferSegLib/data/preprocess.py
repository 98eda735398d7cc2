"""Preprocessing from a model's recipe, and its exact inverse for predictions.

Forward (``preprocess_image``): reorient (a pure re-indexing of the voxels: axes
permuted and reversed, physical positions unchanged; none for ``stored``),
resample to the recipe's spacing keeping the field of view, crop to the
foreground, resize the box to a fixed shape if the recipe says so, apply the
intensity steps (``data/steps.py``). A case with several channels (co-registered
images on one grid) goes through the same geometry; the steps treat the channels
as they say.

Inverse (``restore_*``): resize back to the box, un-crop, resample back onto the oriented grid (whose
voxels *are* the input's voxels, re-indexed), then undo the re-indexing. Without
resampling the round trip is voxel-exact. The result carries the input's size,
spacing, origin and direction unchanged, whatever the orientation or obliqueness
of the input. Because the resampled grid keeps the oriented grid's direction,
resampling is separable: three 1D passes (``data/resample.py``: trilinear or
nearest neighbour, with ITK's rules), fast and identical forward and backward.
``restore_*`` here are whole-volume references; predictions of full-size scans go
through ``inference/restore_blocks.py``, which gives the same labels in bounded memory.

A recipe holding nnU-Net plans (``recipe.nnunet``) is handed to
``data.nnunet_preprocess``, which reproduces nnU-Net's own steps; its info object
then routes the ``restore_*`` calls back there.

Orientation follows nibabel/MONAI (``Orientationd``): the axis-to-anatomy matching
is computed the way nibabel's ``io_orientation`` does it (closest rotation, then
strongest axis first), so a recipe's ``RAS`` gives the arrays a MONAI bundle sees,
also for oblique images. Arrays are ``(X, Y, Z)`` in ITK index order.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from TransferSegLib.errors import CaseError
from TransferSegLib.data import nnunet_preprocess
from TransferSegLib.data.nnunet_preprocess import NnunetPreprocessInfo
from TransferSegLib.data.framing import crop_box, resized_spacing_and_shift
from TransferSegLib.data.grid import Grid, grid_problems
from TransferSegLib.data.intensity import apply_steps
from TransferSegLib.data.recipe import IntensitySpec, Recipe
from TransferSegLib.data.steps import IntensityStep
from TransferSegLib.data.resample import resample_axes, resampled_grid

# The letter an index axis gets when it runs along +/- each SimpleITK (LPS) physical axis.
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
_PHYSICAL_AXIS = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


@dataclass
class Reorientation:
    """A re-indexing of an ``(X, Y, Z)`` array: output axis ``t`` is input axis
    ``axes[t]``, reversed where ``flips[t]``. Voxels keep their physical positions."""

    axes: Tuple[int, int, int] = (0, 1, 2)
    flips: Tuple[bool, bool, bool] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return tuple(self.axes) == (0, 1, 2) and not any(self.flips)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Re-index the last three axes (leading channel axes are kept)."""
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + a for a in self.axes))
        flipped = tuple(lead + t for t in range(3) if self.flips[t])
        return np.flip(out, axis=flipped) if flipped else out

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Undo ``apply`` on the last three axes."""
        lead = array.ndim - 3
        flipped = tuple(lead + t for t in range(3) if self.flips[t])
        out = np.flip(array, axis=flipped) if flipped else array
        inverse = np.argsort(self.axes)
        return np.transpose(out, tuple(range(lead)) + tuple(lead + int(a) for a in inverse))

    def grid(self, original: Grid) -> Grid:
        """The geometry of the re-indexed array (same physical voxel centres)."""
        matrix = original.matrix()
        spacing = np.array(original.spacing, float)
        corner = np.zeros(3)
        columns = []
        for t, a in enumerate(self.axes):
            sign = -1.0 if self.flips[t] else 1.0
            columns.append(sign * matrix[:, a])
            if self.flips[t]:
                corner[a] = original.size[a] - 1
        origin = np.array(original.origin, float) + matrix @ (spacing * corner)
        direction = np.stack(columns, axis=1)
        return Grid(tuple(int(original.size[a]) for a in self.axes), tuple(float(original.spacing[a]) for a in self.axes),
                    tuple(float(o) for o in origin), tuple(float(d) for d in direction.ravel()))


def _axis_assignment(direction: Tuple[float, ...]) -> List[Tuple[int, int]]:
    """For each index axis: the LPS physical axis it runs along most, and the sign.

    Uses the closest rotation to the direction matrix and assigns the most
    clearly aligned index axis first, so that near-diagonal (oblique) matrices get
    the same answer as nibabel's ``io_orientation`` (and thus MONAI).
    """
    matrix = np.array(direction, float).reshape(3, 3)
    norms = np.linalg.norm(matrix, axis=0)
    norms[norms == 0] = 1.0
    u, _, vt = np.linalg.svd(matrix / norms)
    rotation = u @ vt
    assignment: List[Tuple[int, int]] = [(0, 1)] * 3
    for axis in np.argsort(-np.max(rotation ** 2, axis=0), kind="stable"):
        column = rotation[:, axis]
        physical = int(np.argmax(np.abs(column)))
        assignment[int(axis)] = (physical, 1 if column[physical] > 0 else -1)
        rotation[physical, :] = 0.0
    return assignment


def orientation_code(direction: Tuple[float, ...]) -> str:
    """The image's own orientation code (``RAS``-style letters, see ``recipe``)."""
    return "".join(_LETTERS[p][0 if s > 0 else 1] for p, s in _axis_assignment(direction))


def reorientation_to(direction: Tuple[float, ...], code: str) -> Reorientation:
    """The re-indexing that brings an image with ``direction`` to orientation ``code``
    (none for ``stored``)."""
    if code.lower() == "stored":
        return Reorientation()
    assignment = _axis_assignment(direction)
    axes, flips = [], []
    for letter in code.upper():
        physical, sign = _PHYSICAL_AXIS[letter]
        source = next(a for a, (p, _) in enumerate(assignment) if p == physical)
        axes.append(source)
        flips.append(assignment[source][1] != sign)
    return Reorientation(tuple(axes), tuple(flips))  # type: ignore[arg-type]


@dataclass
class PreprocessInfo:
    """What ``restore_*`` needs to bring a prediction back onto the input grid:
    the input's geometry, the re-indexing to the recipe's orientation, the grid the
    network saw before cropping, the crop box (indices into that grid) and, when
    the recipe resizes, the grid of the resized box (what the network saw)."""

    original: Grid
    resampled: Grid
    crop_start: Tuple[int, int, int]
    crop_stop: Tuple[int, int, int]
    reorientation: Reorientation
    oriented: Grid
    resized: Optional[Grid] = None

    @property
    def was_resampled(self) -> bool:
        return self.resampled != self.oriented

    @property
    def crop_shape(self) -> Tuple[int, int, int]:
        return tuple(int(e - s) for s, e in zip(self.crop_start, self.crop_stop))  # type: ignore[return-value]

    @property
    def network_shape(self) -> Tuple[int, int, int]:
        """The spatial shape of the network's input array."""
        return tuple(self.resized.size) if self.resized is not None else self.crop_shape  # type: ignore[return-value]

    def cropped(self) -> Grid:
        """The geometry of the crop box (a sub-grid of ``resampled``)."""
        grid = self.resampled
        corner = grid.matrix() @ (np.array(grid.spacing, float) * np.array(self.crop_start, float))
        return Grid(self.crop_shape, grid.spacing, tuple(float(o) for o in np.add(grid.origin, corner)),
                    grid.direction)

    def to_dict(self) -> Dict[str, Any]:
        return {"original": self.original.to_dict(), "oriented": self.oriented.to_dict(),
                "resampled": self.resampled.to_dict(), "crop_start": list(self.crop_start),
                "crop_stop": list(self.crop_stop), "axes": list(self.reorientation.axes),
                "flips": list(self.reorientation.flips),
                "resized": self.resized.to_dict() if self.resized is not None else None}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "PreprocessInfo":
        return cls(Grid.from_dict(data["original"]), Grid.from_dict(data["resampled"]),
                   tuple(int(v) for v in data["crop_start"]), tuple(int(v) for v in data["crop_stop"]),
                   Reorientation(tuple(int(a) for a in data["axes"]), tuple(bool(f) for f in data["flips"])),
                   Grid.from_dict(data["oriented"]),
                   Grid.from_dict(data["resized"]) if data.get("resized") else None)


def resized_grid(box: Grid, shape: Optional[Tuple[int, int, int]]) -> Optional[Grid]:
    """The grid of ``box`` resized to ``shape`` voxels over the same physical box
    (``align_corners=False``), or ``None`` when there is nothing to resize."""
    if shape is None or tuple(shape) == tuple(box.size):
        return None
    spacing, shift = resized_spacing_and_shift(box.size, box.spacing, shape)
    origin = np.add(box.origin, box.matrix() @ shift)
    return Grid(tuple(int(s) for s in shape), spacing, tuple(float(o) for o in origin), box.direction)  # type: ignore


def normalize_intensity(array: np.ndarray, steps: Union[IntensitySpec, Sequence[IntensityStep]]) -> np.ndarray:
    """Intensity steps (or an old-style ``IntensitySpec``) on a float array (float32 out)."""
    if isinstance(steps, IntensitySpec):
        steps = steps.steps()
    return apply_steps(np.asarray(array, np.float32), list(steps))


def _xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def _crop(array: np.ndarray, info: PreprocessInfo) -> np.ndarray:
    s, e = info.crop_start, info.crop_stop
    return array[..., s[0]:e[0], s[1]:e[1], s[2]:e[2]]


def _channel_images(image: Union[sitk.Image, Sequence[sitk.Image]]) -> Tuple[Grid, List[sitk.Image]]:
    """The images of a case's channels, checked to be 3D scalars on one grid."""
    images = [image] if isinstance(image, sitk.Image) else list(image)
    if not images:
        raise CaseError("Preprocessing got no image.")
    for index, channel in enumerate(images):
        if channel.GetDimension() != 3 or channel.GetNumberOfComponentsPerPixel() != 1:
            raise CaseError(f"Preprocessing needs 3D single-component images, but channel {index} has size "
                            f"{channel.GetSize()} with {channel.GetNumberOfComponentsPerPixel()} component(s).")
    grid = Grid.of(images[0])
    for index, channel in enumerate(images[1:], start=1):
        problems = grid_problems(Grid.of(channel), grid)
        if problems:
            raise CaseError(f"Channel {index} is not on channel 0's grid ({'; '.join(problems)}): the channels "
                            f"of a case must be co-registered images on one grid; resample them first.")
    return grid, images


def preprocess_image(image: Union[sitk.Image, Sequence[sitk.Image]], recipe: Recipe) -> Tuple[np.ndarray, PreprocessInfo]:
    """The network's input and how to invert its geometry: ``(X, Y, Z)`` float32 for
    one image, ``(C, X, Y, Z)`` for a list of channel images on one grid.

    Linear interpolation when the recipe's spacing differs from the image's; the
    crop selects on raw values (HU), before the intensity steps.
    """
    if recipe.nnunet is not None:
        return nnunet_preprocess.preprocess_image(image, recipe.nnunet)  # type: ignore[return-value]
    original, images = _channel_images(image)
    reorientation = reorientation_to(original.direction, recipe.orientation)
    oriented = reorientation.grid(original)
    target = resampled_grid(oriented, recipe.spacing)
    array = np.stack([reorientation.apply(_xyz(c).astype(np.float32, copy=False)) for c in images])
    if target != oriented:
        array = resample_axes(array, oriented, target, linear=True)
    start, stop = crop_box(array, recipe, target.spacing)
    info = PreprocessInfo(original, target, start, stop, reorientation, oriented)
    info.resized = resized_grid(info.cropped(), recipe.resize)
    cropped = _crop(array, info)
    if info.resized is not None:
        cropped = resample_axes(cropped, info.cropped(), info.resized, linear=recipe.resize_mode == "linear")
    whole = array if any(s.stats == "image" for s in recipe.intensity) else None
    out = apply_steps(cropped, recipe.intensity, whole=whole)
    return np.ascontiguousarray(out[0] if isinstance(image, sitk.Image) else out), info


def preprocess_labels(label: sitk.Image, info: PreprocessInfo) -> np.ndarray:
    """A labelmap (or region mask) on the image's original grid → the network's
    (cropped, resized) grid by nearest neighbour; integer ``(X, Y, Z)`` of the label's type."""
    if isinstance(info, NnunetPreprocessInfo):
        return nnunet_preprocess.preprocess_labels(label, info)
    if tuple(label.GetSize()) != tuple(info.original.size) or label.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"A labelmap of size {label.GetSize()} is not on its image's grid (size {info.original.size}): "
                        f"export the segmentation with the image as reference geometry.")
    # The label was checked to lie on the image's grid: its voxels are the image's voxels.
    array = info.reorientation.apply(_xyz(label))
    if info.was_resampled:
        array = resample_axes(array, info.oriented, info.resampled, linear=False)
    array = _crop(array, info)
    if info.resized is not None:
        array = resample_axes(array, info.cropped(), info.resized, linear=False)
    return np.ascontiguousarray(array)


def _unresize(values: np.ndarray, info: PreprocessInfo, linear: bool) -> np.ndarray:
    """``(C, ...)`` values on the network's grid → the crop box's grid."""
    if info.resized is None:
        return values
    if tuple(values.shape[1:]) != tuple(info.resized.size):
        raise ValueError(f"predicted array of spatial shape {values.shape[1:]} does not match the preprocessed "
                         f"shape {info.resized.size}")
    return resample_axes(values, info.resized, info.cropped(), linear=linear)


def _uncrop(values: np.ndarray, info: PreprocessInfo, background) -> np.ndarray:
    """``(C, ...)`` values on the cropped grid → the full resampled grid."""
    size = tuple(info.resampled.size)
    expected = info.crop_shape
    if tuple(values.shape[1:]) != expected:
        raise ValueError(f"predicted array of spatial shape {values.shape[1:]} does not match the preprocessed "
                         f"shape {expected}")
    if expected == size:
        return values
    full = np.zeros((values.shape[0],) + size, values.dtype)
    for c in range(values.shape[0]):
        full[c] = background[c]
    s, e = info.crop_start, info.crop_stop
    full[:, s[0]:e[0], s[1]:e[1], s[2]:e[2]] = values
    return full


def restore_probabilities(probs: np.ndarray, info: PreprocessInfo) -> np.ndarray:
    """Probabilities ``(C, X, Y, Z)`` on the preprocessed (cropped) grid →
    ``(C, X0, Y0, Z0)`` on the input's grid. Outside the crop, channel 0
    (background) is 1 and the others 0; resampling back is linear."""
    if isinstance(info, NnunetPreprocessInfo):
        return nnunet_preprocess.restore_probabilities(probs, info)
    probs = np.asarray(probs, np.float32)
    if probs.ndim != 4:
        raise ValueError(f"probabilities must be (C, X, Y, Z), got shape {probs.shape}")
    channels = probs.shape[0]
    background = [1.0] + [0.0] * (channels - 1)
    full = _uncrop(_unresize(probs, info, linear=True), info, background)
    if info.was_resampled:
        full = resample_axes(full, info.resampled, info.oriented, linear=True)
    return np.ascontiguousarray(info.reorientation.invert(full), dtype=np.float32)


def restore_labelmap(probs: np.ndarray, info: PreprocessInfo) -> sitk.Image:
    """UInt8 argmax of the restored probabilities, with the input's exact geometry."""
    labels = np.argmax(restore_probabilities(probs, info), axis=0).astype(np.uint8)
    if isinstance(info, NnunetPreprocessInfo):
        return info.image_from_zyx(np.ascontiguousarray(labels.transpose(2, 1, 0)))
    return info.original.image_from_xyz(labels)


def restore_label_array(labels: np.ndarray, info: PreprocessInfo) -> sitk.Image:
    """A label array ``(X, Y, Z)`` on the preprocessed grid → a UInt8 labelmap on the
    input's grid by nearest neighbour (cheaper than restoring probabilities)."""
    if isinstance(info, NnunetPreprocessInfo):
        return nnunet_preprocess.restore_label_array(labels, info)
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("label values must lie in 0..255")
    full = _uncrop(_unresize(labels.astype(np.uint8)[None], info, linear=False), info, [0])[0]
    if info.was_resampled:
        full = resample_axes(full, info.resampled, info.oriented, linear=False)
    return info.original.image_from_xyz(info.reorientation.invert(full))
