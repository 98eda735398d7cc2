"""Voxel grids: a grid's geometry without its voxels, and whether two images share one (one check).

SimpleITK conventions: LPS physical space, direction cosines as index-axis columns.
Preprocessing, resampling and the restore onto the input grid all speak in grids.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from TransferSegLib.errors import CaseError

# RAS (Slicer) ⇄ LPS (ITK, DICOM, NIfTI readers) flips the first two axes.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Grid:
    """A voxel grid's geometry (SimpleITK conventions, LPS physical space), no voxels."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def matrix(self) -> np.ndarray:
        """Direction cosines as a 3x3 matrix whose columns are the index axes."""
        return np.array(self.direction, float).reshape(3, 3)

    def reference(self, pixel=sitk.sitkUInt8) -> sitk.Image:
        """A one-voxel-type image with this geometry (a resampling target)."""
        image = sitk.Image([int(s) for s in self.size], pixel)
        self.stamp(image)
        return image

    def stamp(self, image: sitk.Image) -> sitk.Image:
        """Give ``image`` exactly this geometry (same size assumed)."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_xyz(self, array: np.ndarray) -> sitk.Image:
        """An image on this grid from an ``(X, Y, Z)`` array."""
        if tuple(array.shape) != tuple(self.size):
            raise ValueError(f"array of shape {array.shape} does not fit a grid of size {self.size}")
        return self.stamp(sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0)))))

    def matches(self, other: "Grid") -> bool:
        """The same voxels in the same places, within the module's tolerances (see ``grid_problems``)."""
        return not grid_problems(self, other)

    def describe(self) -> str:
        size = "×".join(str(v) for v in self.size)
        spacing = "×".join(f"{v:.3g}" for v in self.spacing)
        return f"{size} voxels of {spacing} mm"

    def ijk_to_ras(self) -> np.ndarray:
        """The 4×4 IJK-to-RAS matrix Slicer keeps for a volume on this grid."""
        matrix = np.eye(4)
        matrix[:3, :3] = _RAS_TO_LPS @ self.matrix() * np.asarray(self.spacing, float)
        matrix[:3, 3] = _RAS_TO_LPS @ np.asarray(self.origin, float)
        return matrix

    @classmethod
    def from_ijk_to_ras(cls, matrix: np.ndarray, size: Tuple[int, int, int]) -> "Grid":
        """The grid of a Slicer volume from its IJK-to-RAS matrix and voxel counts."""
        linear = np.asarray(matrix, float)[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing <= 0):
            raise CaseError("A volume has a zero spacing in its IJK-to-RAS matrix; its geometry is broken.")
        direction = _RAS_TO_LPS @ (linear / spacing)
        origin = _RAS_TO_LPS @ np.asarray(matrix, float)[:3, 3]
        return cls(tuple(int(v) for v in size), tuple(float(v) for v in spacing),
                   tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel()))

    def to_dict(self) -> Dict[str, Any]:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Grid":
        return cls(tuple(int(v) for v in data["size"]), tuple(float(v) for v in data["spacing"]),
                   tuple(float(v) for v in data["origin"]), tuple(float(v) for v in data["direction"]))


#: How close two grids must be to count as the same: spacing (relative), origin (mm), direction cosines.
SPACING_RTOL, ORIGIN_ATOL_MM, DIRECTION_ATOL = 1e-4, 1e-3, 1e-4


def _rounded(values, digits: int) -> Tuple[float, ...]:
    return tuple(round(float(v), digits) for v in values)


def grid_problems(a: Grid, b: Grid) -> List[str]:
    """What differs between two grids (empty: the same grid within the tolerances above), as 'a vs b'."""
    problems = []
    if tuple(a.size) != tuple(b.size):
        problems.append(f"size {tuple(a.size)} vs {tuple(b.size)}")
    if len(a.size) != len(b.size):
        return problems
    if not np.allclose(b.spacing, a.spacing, rtol=SPACING_RTOL, atol=0.0):
        problems.append(f"spacing {_rounded(a.spacing, 5)} vs {_rounded(b.spacing, 5)} mm")
    if not np.allclose(a.origin, b.origin, rtol=0.0, atol=ORIGIN_ATOL_MM):
        problems.append(f"origin {_rounded(a.origin, 4)} vs {_rounded(b.origin, 4)} mm")
    if not np.allclose(a.direction, b.direction, rtol=0.0, atol=DIRECTION_ATOL):
        problems.append(f"direction {_rounded(a.direction, 4)} vs {_rounded(b.direction, 4)}")
    return problems


@dataclass
class AxisMap:
    """How a source grid's voxels lie on a target grid of the same lattice: target axis ``i`` is
    source axis ``axes[i]``, run backwards where ``flips[i]``."""

    axes: Tuple[int, int, int]
    flips: Tuple[bool, bool, bool]

    @property
    def permuted(self) -> bool:
        return tuple(self.axes) != (0, 1, 2)

    @property
    def flipped(self) -> bool:
        return any(self.flips)

    def describe(self) -> str:
        names = "xyz"
        return ", ".join(f"{names[i]} <- {'-' if f else ''}{names[a]}" for i, (a, f) in enumerate(zip(self.axes, self.flips)))


def lattice_permutation(source: Grid, target: Grid) -> Optional[AxisMap]:
    """The axis permutation and flips under which ``source`` has exactly ``target``'s voxel centres, or None.

    Same voxel centres means: each target index step is a source index step (a signed
    permutation within 1e-3 voxel), and target voxel 0 is a corner voxel of the source.
    """
    if len(source.size) != 3 or len(target.size) != 3:
        return None
    to_source = np.linalg.inv(source.matrix() * np.array(source.spacing))  # physical -> source index
    steps = to_source @ (target.matrix() * np.array(target.spacing))  # column i: a target step in source indices
    rounded = np.round(steps)
    if np.abs(steps - rounded).max() > 1e-3 or not np.all(np.abs(rounded).sum(axis=0) == 1):
        return None
    axes = tuple(int(np.flatnonzero(rounded[:, i])[0]) for i in range(3))
    if sorted(axes) != [0, 1, 2]:
        return None
    flips = tuple(bool(rounded[axes[i], i] < 0) for i in range(3))
    start = to_source @ (np.array(target.origin) - np.array(source.origin))
    for i, (axis, flip) in enumerate(zip(axes, flips)):
        if int(source.size[axis]) != int(target.size[i]):
            return None
        expected = source.size[axis] - 1 if flip else 0
        if abs(start[axis] - expected) > 1e-3:
            return None
    return AxisMap(axes, flips)  # type: ignore[arg-type]


def permute_onto(array_xyz: np.ndarray, mapping: AxisMap) -> np.ndarray:
    """A source ``(X, Y, Z[, extra])`` array re-indexed onto the target grid of ``lattice_permutation``."""
    order = tuple(mapping.axes) + tuple(range(3, array_xyz.ndim))
    out = np.transpose(array_xyz, order)
    for i, flip in enumerate(mapping.flips):
        if flip:
            out = np.flip(out, axis=i)
    return np.ascontiguousarray(out)


def image_grid_problems(image: sitk.Image, label: sitk.Image) -> List[str]:
    """``grid_problems`` of two images (any dimension), ``image`` first in each pair."""
    if image.GetDimension() != label.GetDimension():
        return [f"dimension {image.GetDimension()} vs {label.GetDimension()}"]
    return grid_problems(Grid.of(image), Grid.of(label))


def check_same_grid(image: sitk.Image, label: sitk.Image, image_path: str, label_path: str) -> None:
    """Refuse a labelmap that is not on the image's voxel grid, saying what differs
    (``grid.grid_problems``: the one grid check, with its tolerances)."""
    problems = image_grid_problems(image, label)
    if problems:
        raise CaseError(
            f"Labelmap '{label_path}' is not on the voxel grid of image '{image_path}' (image vs labelmap): "
            f"{'; '.join(problems)}. Export the segmentation with this image as its reference geometry."
        )


def align_to_image(image: sitk.Image, label: sitk.Image, image_path: str, label_path: str) -> sitk.Image:
    """The labelmap on the image's grid. A labelmap holding the same voxels stored in
    another axis order (e.g. a NIfTI with a flipped y axis next to a DICOM series) is
    re-indexed exactly (``grid.lattice_permutation``); any other difference is refused
    by ``check_same_grid``. Geometry within tolerance is replaced by the image's own, exactly."""
    if image_grid_problems(image, label) and image.GetDimension() == 3 and label.GetDimension() == 3:
        mapping = lattice_permutation(Grid.of(label), Grid.of(image))
        if mapping is not None:
            moved = permute_onto(sitk.GetArrayFromImage(label).transpose(2, 1, 0), mapping)
            label = Grid.of(image).image_from_xyz(moved)
    check_same_grid(image, label, image_path, label_path)
    if label.GetOrigin() != image.GetOrigin() or label.GetSpacing() != image.GetSpacing() \
            or label.GetDirection() != image.GetDirection():
        label = sitk.Image(label)
        label.CopyInformation(image)
    return label
