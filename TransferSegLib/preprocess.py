"""Preprocessing from a model's recipe, and its exact inverse for predictions.

Forward: reorient (re-index only; physical positions unchanged), resample to the
recipe's spacing keeping the field of view, crop to the body, normalize
intensities. Inverse: un-crop, then resample the probabilities from the model's
grid directly onto the *original* voxel grid through physical space, so the
result has exactly the input's size, spacing, origin and direction whatever the
orientation or obliqueness of the input.
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import CaseError
from .recipe import IntensitySpec, Recipe

_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


@dataclass
class Grid:
    """A voxel grid's geometry (SimpleITK conventions, LPS physical space)."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def reference(self, pixel=sitk.sitkUInt8) -> sitk.Image:
        image = sitk.Image([int(s) for s in self.size], pixel)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass
class PreprocessInfo:
    """What ``restore_*`` needs to bring a prediction back onto the input grid."""

    original: Grid
    resampled: Grid
    crop_start: Tuple[int, int, int]
    crop_stop: Tuple[int, int, int]

    def to_dict(self) -> Dict[str, Any]:
        return {"original": self.original.__dict__, "resampled": self.resampled.__dict__,
                "crop_start": list(self.crop_start), "crop_stop": list(self.crop_stop)}


def itk_orientation_code(axcodes: str) -> str:
    """MONAI/nibabel axcodes → SimpleITK DICOMOrient code for the same voxel order.

    Both name the direction in which each index increases; SimpleITK's physical
    space is LPS and nibabel's RAS, but the letters denote anatomical directions
    in both, so the codes are the same letters.
    """
    return axcodes.upper()


def _orient(image: sitk.Image, recipe: Recipe) -> sitk.Image:
    return sitk.DICOMOrient(image, itk_orientation_code(recipe.orientation))


def _resampled_grid(image: sitk.Image, spacing: Optional[Tuple[float, float, float]]) -> Grid:
    if spacing is None:
        return Grid.of(image)
    old_size = np.array(image.GetSize(), float)
    old_spacing = np.array(image.GetSpacing(), float)
    new_spacing = np.array(spacing, float)
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    # Keep the field of view centred: first voxel centre moves by half the spacing change.
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shift = direction @ ((new_spacing - old_spacing) / 2.0)
    origin = np.array(image.GetOrigin()) + shift
    return Grid(tuple(int(s) for s in new_size), tuple(float(s) for s in new_spacing),
                tuple(float(o) for o in origin), tuple(image.GetDirection()))


def _resample(image: sitk.Image, grid: Grid, interpolator, default: float) -> sitk.Image:
    if Grid.of(image) == grid:
        return image
    return sitk.Resample(image, grid.reference(), sitk.Transform(), interpolator, default, image.GetPixelID())


def _crop_box(array: np.ndarray, recipe: Recipe, spacing) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    shape = array.shape
    if not recipe.crop_foreground:
        return (0, 0, 0), tuple(shape)
    mask = array > recipe.crop_threshold
    if not mask.any():
        return (0, 0, 0), tuple(shape)
    margin = [int(np.ceil(recipe.crop_margin_mm / s)) for s in spacing]
    start, stop = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(mask.any(axis=others))[0]
        start.append(max(0, int(idx[0]) - margin[axis]))
        stop.append(min(shape[axis], int(idx[-1]) + 1 + margin[axis]))
    return tuple(start), tuple(stop)


def normalize_intensity(array: np.ndarray, spec: IntensitySpec) -> np.ndarray:
    """Intensity normalization of a float array (any shape)."""
    if spec.kind == "none":
        return array.astype(np.float32)
    if spec.kind == "window":
        clipped = np.clip(array, spec.low, spec.high)
        scaled = (clipped - spec.low) / (spec.high - spec.low)
        return (scaled * (spec.out_max - spec.out_min) + spec.out_min).astype(np.float32)
    values = array[array != 0] if spec.nonzero else array
    if values.size == 0:
        return array.astype(np.float32)
    mean, std = float(values.mean()), float(values.std())
    out = (array - mean) / max(std, 1e-8)
    if spec.nonzero:
        out = np.where(array != 0, out, 0.0)
    return out.astype(np.float32)


def _to_xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def preprocess_image(image: sitk.Image, recipe: Recipe) -> Tuple[np.ndarray, PreprocessInfo]:
    """The network's input array ``(X, Y, Z)`` float32 and how to invert the geometry."""
    original = Grid.of(image)
    oriented = _orient(image, recipe)
    grid = _resampled_grid(oriented, recipe.spacing)
    array = _to_xyz(oriented) if grid == Grid.of(oriented) else None
    if array is None:
        background = float(sitk.GetArrayViewFromImage(image).min())
        array = _to_xyz(_resample(oriented, grid, sitk.sitkLinear, background))
    start, stop = _crop_box(array, recipe, grid.spacing)
    array = array[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]
    info = PreprocessInfo(original, grid, tuple(start), tuple(stop))
    return normalize_intensity(array, recipe.intensity), info


def preprocess_labels(label: sitk.Image, info: PreprocessInfo) -> np.ndarray:
    """A labelmap (or region mask) on the image's original grid → the network's grid."""
    if Grid.of(label).size != info.original.size:
        raise CaseError(f"Labelmap of size {label.GetSize()} does not match its image ({info.original.size}).")
    oriented = sitk.DICOMOrient(label, _code_of(info))
    resampled = _resample(oriented, info.resampled, sitk.sitkNearestNeighbor, 0)
    array = _to_xyz(resampled)
    s, e = info.crop_start, info.crop_stop
    return array[s[0]:e[0], s[1]:e[1], s[2]:e[2]]


def _code_of(info: PreprocessInfo) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(info.resampled.direction)


def _uncrop(probs: np.ndarray, info: PreprocessInfo) -> np.ndarray:
    size = info.resampled.size
    if tuple(probs.shape[1:]) == tuple(size):
        return probs
    full = np.zeros((probs.shape[0],) + tuple(size), np.float32)
    full[0] = 1.0
    s, e = info.crop_start, info.crop_stop
    full[:, s[0]:e[0], s[1]:e[1], s[2]:e[2]] = probs
    return full


def restore_probabilities(probs: np.ndarray, info: PreprocessInfo) -> np.ndarray:
    """Probabilities ``(C, X, Y, Z)`` on the network grid → ``(C, X0, Y0, Z0)`` on the input grid."""
    full = _uncrop(np.asarray(probs, np.float32), info)
    target = info.original
    out = np.empty((full.shape[0],) + tuple(target.size), np.float32)
    reference = target.reference()
    for c in range(full.shape[0]):
        channel = sitk.GetImageFromArray(np.ascontiguousarray(full[c].transpose(2, 1, 0)))
        channel.SetSpacing(info.resampled.spacing)
        channel.SetOrigin(info.resampled.origin)
        channel.SetDirection(info.resampled.direction)
        default = 1.0 if c == 0 else 0.0
        resampled = sitk.Resample(channel, reference, sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32)
        out[c] = _to_xyz(resampled)
    return out


def restore_labelmap(probs: np.ndarray, info: PreprocessInfo) -> sitk.Image:
    """Argmax of the restored probabilities, with the input's exact geometry."""
    labels = np.argmax(restore_probabilities(probs, info), axis=0).astype(np.uint8)
    return _image_on(labels, info.original)


def restore_label_array(labels: np.ndarray, info: PreprocessInfo) -> sitk.Image:
    """A label array on the network grid → the input grid (nearest neighbour)."""
    size = info.resampled.size
    full = np.zeros(tuple(size), np.uint8)
    s, e = info.crop_start, info.crop_stop
    full[s[0]:e[0], s[1]:e[1], s[2]:e[2]] = labels
    image = _image_on(full, info.resampled)
    return sitk.Resample(image, info.original.reference(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _image_on(array_xyz: np.ndarray, grid: Grid) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image
