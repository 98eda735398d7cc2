"""Separable resampling between two grids that share their direction matrix.

The grid a model sees keeps the oriented input grid's direction (only the
spacing changes), so going between them is three 1D maps, one per axis. Each
axis gets an ``AxisPlan`` (for every target index: the source index below and
the linear weight, or the nearest source index), computed once from the grids.
Applying plans to a block of the target only needs the plans' slices and the
source block they reach (``AxisPlan.part``): the bounded-memory restore in
``inference/restore_blocks.py`` applies the same plans, block by block, and gets
the same numbers as one pass over the whole grid.

Interpolation follows ITK's rules: trilinear, or nearest neighbour with halves
rounding up; target voxels beyond the source's outer voxel centres take the edge
value (the field of view's rim after rounding sizes).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from TransferSegLib.data.grid import Grid


def resampled_grid(oriented: Grid, spacing: Optional[Tuple[float, float, float]]) -> Grid:
    """The grid at ``spacing`` that MONAI's ``Spacing`` would produce.

    The first voxel centre stays where it is and each axis gets
    ``round((n - 1) * s / s' + 1)`` voxels, so a model exported as a MONAI
    bundle sees the same voxels under ``monai.bundle run`` as under
    ``transferseg predict``. The same spacing (to 1e-6 relative) keeps the grid
    unchanged, so such recipes never interpolate.
    """
    if spacing is None or np.allclose(spacing, oriented.spacing, rtol=1e-6, atol=0.0):
        return oriented
    old_size = np.array(oriented.size, float)
    old_spacing = np.array(oriented.spacing, float)
    new_spacing = np.array(spacing, float)
    new_size = np.maximum(1, np.round((old_size - 1) * old_spacing / new_spacing + 1)).astype(int)
    return Grid(tuple(int(s) for s in new_size), tuple(float(s) for s in new_spacing),
                tuple(float(o) for o in oriented.origin), oriented.direction)


def _source_indices(source: Grid, target: Grid) -> List[np.ndarray]:
    """Per axis, the continuous source index of every target voxel centre."""
    offset = np.linalg.solve(source.matrix(), np.subtract(target.origin, source.origin, dtype=float))
    return [(offset[t] + target.spacing[t] * np.arange(target.size[t])) / source.spacing[t] for t in range(3)]


@dataclass
class AxisPlan:
    """One axis of a resampling: target index ``i`` reads source ``low[i]`` (and, when
    linear, ``low[i] + 1`` with ``weight[i]``). ``low`` never decreases along the axis."""

    low: np.ndarray  # intp
    weight: Optional[np.ndarray]  # float32; None for nearest neighbour
    source_size: int

    @property
    def linear(self) -> bool:
        return self.weight is not None

    def reach(self, start: int, stop: int) -> Tuple[int, int]:
        """The source index range ``[lo, hi)`` that target indices ``[start, stop)`` read."""
        lo = int(self.low[start])
        hi = int(self.low[stop - 1]) + (2 if self.linear else 1)
        return lo, min(hi, self.source_size)

    def part(self, start: int, stop: int) -> Tuple["AxisPlan", int]:
        """The plan for target indices ``[start, stop)`` read from the source block that
        begins at the returned offset (the same weights, indices shifted)."""
        lo, hi = self.reach(start, stop)
        weight = None if self.weight is None else self.weight[start:stop]
        return AxisPlan(self.low[start:stop] - lo, weight, hi - lo), lo

    def targets_reading(self, lo: int, hi: int) -> Tuple[int, int]:
        """The target index range whose reads touch source indices ``[lo, hi)``."""
        extra = 1 if self.linear else 0
        start = int(np.searchsorted(self.low, lo - extra, side="left"))
        stop = int(np.searchsorted(self.low, hi - 1, side="right"))
        return start, max(start, stop)


def axis_plans(source: Grid, target: Grid, linear: bool) -> Tuple[List[AxisPlan], List[int]]:
    """Per-axis plans from ``source`` onto ``target`` and the order to apply them
    (shrinking axes first keeps the intermediate arrays small)."""
    plans = []
    for t, where in enumerate(_source_indices(source, target)):
        n = int(source.size[t])
        where = np.clip(where, 0.0, n - 1)
        if linear:
            low = np.minimum(np.floor(where).astype(np.intp), max(n - 2, 0))
            plans.append(AxisPlan(low, (where - low).astype(np.float32), n))
        else:
            plans.append(AxisPlan(np.floor(where + 0.5).astype(np.intp), None, n))
    order = sorted(range(3), key=lambda t: target.size[t] / max(source.size[t], 1))
    return plans, order


def apply_plans(array: np.ndarray, plans: List[AxisPlan], order: List[int]) -> np.ndarray:
    """Resample the last three axes of ``array`` (numpy) with ``plans``."""
    lead = array.ndim - 3
    out = array
    for t in order:
        plan, axis = plans[t], lead + t
        if not plan.linear:
            out = np.take(out, plan.low, axis=axis)
            continue
        shape = [1] * out.ndim
        shape[axis] = -1
        weight = plan.weight.reshape(shape)
        below = np.take(out, plan.low, axis=axis)
        above = np.take(out, np.minimum(plan.low + 1, out.shape[axis] - 1), axis=axis)
        out = below + (above - below) * weight
    return out


def resample_axes(array: np.ndarray, source: Grid, target: Grid, linear: bool) -> np.ndarray:
    """Resample the last three axes of ``array`` from ``source`` onto ``target``."""
    plans, order = axis_plans(source, target, linear)
    return apply_plans(array, plans, order)
