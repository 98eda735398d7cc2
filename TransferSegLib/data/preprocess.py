"""Preprocessing from a model's recipe, and its exact inverse for predictions.

Forward (``preprocess_image``): reorient (a pure re-indexing of the voxels: axes
permuted and reversed, physical positions unchanged), resample to the recipe's
spacing keeping the field of view, crop to the body, normalize intensities.

Inverse (``restore_*``): un-crop, resample back onto the oriented grid (whose
voxels *are* the input's voxels, re-indexed), then undo the re-indexing. Without
resampling the round trip is voxel-exact. The result carries the input's size,
spacing, origin and direction unchanged, whatever the orientation or obliqueness
of the input. Because the resampled grid keeps the oriented grid's direction,
resampling is separable: three 1D passes (``data/resample.py``: trilinear or
nearest neighbour, with ITK's rules), fast and identical forward and backward.
``restore_*`` here are whole-volume references; predictions of full-size scans go
through ``inference/restore_blocks.py``, which gives the same labels in bounded memory.

Orientation follows nibabel/MONAI (``Orientationd``): the axis-to-anatomy matching
is computed the way nibabel's ``io_orientation`` does it (closest rotation, then
strongest axis first), so a recipe's ``RAS`` gives the arrays a MONAI bundle sees,
also for oblique images. Arrays are ``(X, Y, Z)`` in ITK index order.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from TransferSegLib.errors import CaseError
from TransferSegLib.data.grid import Grid
from TransferSegLib.data.recipe import IntensitySpec, Recipe
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
    """The re-indexing that brings an image with ``direction`` to orientation ``code``."""
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
    network saw before cropping and the crop box (indices into that grid)."""

    original: Grid
    resampled: Grid
    crop_start: Tuple[int, int, int]
    crop_stop: Tuple[int, int, int]
    reorientation: Reorientation
    oriented: Grid

    @property
    def was_resampled(self) -> bool:
        return self.resampled != self.oriented

    @property
    def crop_shape(self) -> Tuple[int, int, int]:
        return tuple(int(e - s) for s, e in zip(self.crop_start, self.crop_stop))  # type: ignore[return-value]

    def to_dict(self) -> Dict[str, Any]:
        return {"original": self.original.to_dict(), "oriented": self.oriented.to_dict(),
                "resampled": self.resampled.to_dict(), "crop_start": list(self.crop_start),
                "crop_stop": list(self.crop_stop), "axes": list(self.reorientation.axes),
                "flips": list(self.reorientation.flips)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "PreprocessInfo":
        return cls(Grid.from_dict(data["original"]), Grid.from_dict(data["resampled"]),
                   tuple(int(v) for v in data["crop_start"]), tuple(int(v) for v in data["crop_stop"]),
                   Reorientation(tuple(int(a) for a in data["axes"]), tuple(bool(f) for f in data["flips"])),
                   Grid.from_dict(data["oriented"]))


def _crop_box(array: np.ndarray, recipe: Recipe, spacing) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    shape = tuple(int(s) for s in array.shape)
    if not recipe.crop_foreground:
        return (0, 0, 0), shape  # type: ignore[return-value]
    mask = array > recipe.crop_threshold
    if not mask.any():
        return (0, 0, 0), shape  # type: ignore[return-value]
    margin = [int(np.ceil(recipe.crop_margin_mm / s)) for s in spacing]
    start, stop = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.nonzero(mask.any(axis=others))[0]
        start.append(max(0, int(hits[0]) - margin[axis]))
        stop.append(min(shape[axis], int(hits[-1]) + 1 + margin[axis]))
    return tuple(start), tuple(stop)  # type: ignore[return-value]


def normalize_intensity(array: np.ndarray, spec: IntensitySpec) -> np.ndarray:
    """Intensity normalization of a float array of any shape (float32 out)."""
    array = np.asarray(array, np.float32)
    if spec.kind == "none":
        return array.copy()
    if spec.kind == "window":
        scaled = (np.clip(array, spec.low, spec.high) - spec.low) / (spec.high - spec.low)
        return (scaled * (spec.out_max - spec.out_min) + spec.out_min).astype(np.float32)
    inside = array != 0 if spec.nonzero else None
    values = array[inside] if inside is not None else array
    if values.size == 0:
        return array.copy()
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    out = (array - mean) / max(std, 1e-8)
    if inside is not None:
        out = np.where(inside, out, 0.0)
    return out.astype(np.float32)


def _xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def _crop(array: np.ndarray, info: PreprocessInfo) -> np.ndarray:
    s, e = info.crop_start, info.crop_stop
    return array[..., s[0]:e[0], s[1]:e[1], s[2]:e[2]]


def preprocess_image(image: sitk.Image, recipe: Recipe) -> Tuple[np.ndarray, PreprocessInfo]:
    """The network's input ``(X, Y, Z)`` float32 array and how to invert its geometry.

    Linear interpolation when the recipe's spacing differs from the image's; the
    crop threshold applies to raw values (HU), before normalization.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"Preprocessing needs a 3D single-channel image, got size {image.GetSize()} "
                        f"with {image.GetNumberOfComponentsPerPixel()} component(s).")
    original = Grid.of(image)
    reorientation = reorientation_to(original.direction, recipe.orientation)
    oriented = reorientation.grid(original)
    target = resampled_grid(oriented, recipe.spacing)
    array = reorientation.apply(_xyz(image).astype(np.float32, copy=False))
    if target != oriented:
        array = resample_axes(array, oriented, target, linear=True)
    start, stop = _crop_box(array, recipe, target.spacing)
    info = PreprocessInfo(original, target, start, stop, reorientation, oriented)
    return np.ascontiguousarray(normalize_intensity(_crop(array, info), recipe.intensity)), info


def preprocess_labels(label: sitk.Image, info: PreprocessInfo) -> np.ndarray:
    """A labelmap (or region mask) on the image's original grid → the network's
    (cropped) grid by nearest neighbour; integer ``(X, Y, Z)`` of the label's type."""
    if tuple(label.GetSize()) != tuple(info.original.size) or label.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"A labelmap of size {label.GetSize()} is not on its image's grid (size {info.original.size}): "
                        f"export the segmentation with the image as reference geometry.")
    # The label was checked to lie on the image's grid: its voxels are the image's voxels.
    array = info.reorientation.apply(_xyz(label))
    if info.was_resampled:
        array = resample_axes(array, info.oriented, info.resampled, linear=False)
    return np.ascontiguousarray(_crop(array, info))


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
    probs = np.asarray(probs, np.float32)
    if probs.ndim != 4:
        raise ValueError(f"probabilities must be (C, X, Y, Z), got shape {probs.shape}")
    channels = probs.shape[0]
    background = [1.0] + [0.0] * (channels - 1)
    full = _uncrop(probs, info, background)
    if info.was_resampled:
        full = resample_axes(full, info.resampled, info.oriented, linear=True)
    return np.ascontiguousarray(info.reorientation.invert(full), dtype=np.float32)


def restore_labelmap(probs: np.ndarray, info: PreprocessInfo) -> sitk.Image:
    """UInt8 argmax of the restored probabilities, with the input's exact geometry."""
    labels = np.argmax(restore_probabilities(probs, info), axis=0).astype(np.uint8)
    return info.original.image_from_xyz(labels)


def restore_label_array(labels: np.ndarray, info: PreprocessInfo) -> sitk.Image:
    """A label array ``(X, Y, Z)`` on the preprocessed grid → a UInt8 labelmap on the
    input's grid by nearest neighbour (cheaper than restoring probabilities)."""
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("label values must lie in 0..255")
    full = _uncrop(labels.astype(np.uint8)[None], info, [0])[0]
    if info.was_resampled:
        full = resample_axes(full, info.resampled, info.oriented, linear=False)
    return info.original.image_from_xyz(info.reorientation.invert(full))
