"""Where the network looks: the foreground crop box and the resize of that box.

Both are grid operations (the voxels of the crop are a sub-grid; the resized
box is a grid spanning the same physical box with other voxel sizes), so the
resampling code of ``data.preprocess`` runs them forward and backward alike.
"""

from typing import Tuple

import numpy as np

from TransferSegLib.data.recipe import Recipe

Box = Tuple[Tuple[int, int, int], Tuple[int, int, int]]


def _selection(array: np.ndarray, recipe: Recipe) -> np.ndarray:
    """The voxels a recipe's crop keeps, any channel counting (as MONAI's
    ``CropForegroundd`` on a multi-channel image)."""
    channels = array if array.ndim == 4 else array[None]
    if recipe.crop_select == "not_corner":
        corner = channels[:, :1, :1, :1]
        mask = channels != corner
    elif recipe.crop_select == "relative":
        levels = np.array([np.percentile(c, 99.5) for c in channels], np.float64).reshape(-1, 1, 1, 1)
        mask = channels > recipe.crop_threshold * levels
    else:
        mask = channels > recipe.crop_threshold
    return mask.any(axis=0)


def crop_box(array: np.ndarray, recipe: Recipe, spacing) -> Box:
    """Start and stop indices of the recipe's crop on an ``(X, Y, Z)`` or
    ``(C, X, Y, Z)`` array with voxel ``spacing`` (mm); the whole array when the
    recipe does not crop or nothing is selected."""
    shape = tuple(int(s) for s in array.shape[-3:])
    if not recipe.crop_foreground:
        return (0, 0, 0), shape  # type: ignore[return-value]
    mask = _selection(array, recipe)
    if not mask.any():
        return (0, 0, 0), shape  # type: ignore[return-value]
    start, stop = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.nonzero(mask.any(axis=others))[0]
        first, last = int(hits[0]), int(hits[-1]) + 1
        margin = int(np.ceil(recipe.crop_margin_mm / spacing[axis]))
        margin += int(round(recipe.crop_margin_fraction * (last - first)))
        start.append(max(0, first - margin))
        stop.append(min(shape[axis], last + margin))
    return tuple(start), tuple(stop)  # type: ignore[return-value]


def resized_spacing_and_shift(size: Tuple[int, int, int], spacing: Tuple[float, float, float],
                              shape: Tuple[int, int, int]) -> Tuple[Tuple[float, ...], np.ndarray]:
    """Voxel size of a box of ``size`` voxels resized to ``shape`` voxels over the
    same physical extent, and the shift (in mm, along each index axis) of the new
    first voxel centre: half a new voxel minus half an old one (align_corners False)."""
    new_spacing = tuple(float(s) * n / m for s, n, m in zip(spacing, size, shape))
    shift = np.array([(ns - s) / 2.0 for ns, s in zip(new_spacing, spacing)], float)
    return new_spacing, shift
