"""nnU-Net's way back for the labelmap alone, a slab at a time: the same labels in a fraction of the time and memory.

``data.nnunet_preprocess.restore_logits`` does what nnU-Net's export does: every
class's logits resampled linearly (``scipy.ndimage.zoom``, order 1, edge-aligned
grids, edges repeated) onto the whole crop, a softmax, the argmax. On a 512×512×300
CT that is classes × 78.6 M floats several times over (5.4 GB for five classes)
and most of the prediction's time, in a generic interpolation routine.

A labelmap needs none of that at once. Linear resampling along all axes together
is the same arithmetic as one linear pass per axis, and the softmax does not move
the argmax, so here the crop is walked in slabs of its first (transposed) axis:
each slab's logits are resampled by three separable passes of precomputed
indices and weights (``AxisPlan``), and the slab's argmax lands in the uint8
labelmap, the only full-size array. nnU-Net's separate low-resolution axis (order
0 along it, ``order_z`` 0) is a nearest-neighbour pass with its own index rule.
The labels equal the argmax of ``restore_logits`` (``Testing/test_nnunet_restore.py``);
only classes tied to float32 rounding could differ.
"""

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from TransferSegLib.data.nnunet_preprocess import NnunetPreprocessInfo, separate_z_axis
from TransferSegLib.errors import CaseError

SLAB_BUDGET_BYTES = 128 * 2**20  # working set of one slab (all classes, float32, a few copies)


@dataclass
class AxisPlan:
    """One axis of the resampling: output voxel ``i`` reads source ``low[i]`` and ``low[i] + 1``
    with weight ``weight[i]`` on the second (linear), or ``low[i]`` alone (``weight`` None)."""

    low: np.ndarray
    weight: Optional[np.ndarray]

    @classmethod
    def linear(cls, source: int, target: int) -> "AxisPlan":
        """``zoom(order=1, grid_mode=True, mode='nearest')`` along one axis: centres of edge-aligned voxels,
        the edge value repeated beyond the first and last centre."""
        if source == target:
            return cls(np.arange(target, dtype=np.intp), None)
        where = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
        where = np.clip(where, 0.0, source - 1)
        low = np.minimum(np.floor(where).astype(np.intp), max(source - 2, 0))
        weight = (where - low).astype(np.float32)
        if source == 1:
            weight[:] = 0.0
        return cls(low, weight)

    @classmethod
    def nearest(cls, source: int, target: int) -> "AxisPlan":
        """``nnunet_preprocess._along_axis_nearest``: nnU-Net's order-0 pass along its low-resolution axis."""
        where = (np.arange(target) + 0.5) * (source / target) - 0.5
        return cls(np.clip(np.floor(where + 0.5), 0, source - 1).astype(np.intp), None)

    def rows(self, start: int, stop: int) -> "AxisPlan":
        return AxisPlan(self.low[start:stop], None if self.weight is None else self.weight[start:stop])

    def apply(self, values: np.ndarray, axis: int) -> np.ndarray:
        below = np.take(values, self.low, axis=axis)
        if self.weight is None:
            return below
        above = np.take(values, np.minimum(self.low + 1, values.shape[axis] - 1), axis=axis)
        shape = [1] * values.ndim
        shape[axis] = -1
        above -= below
        above *= self.weight.reshape(shape)
        above += below
        return above


def axis_plans(info: NnunetPreprocessInfo, network_shape) -> List[AxisPlan]:
    """Per transposed axis, the pass from the network's grid onto the crop (the plans' probability resampling)."""
    recipe = info.recipe
    order, order_z, force = recipe.resampling("probabilities")
    if order != 1:
        raise CaseError(f"nnU-Net plans resampling probabilities with order {order} are not supported for the "
                        f"labelmap restore (stock plans use 1).")
    crop = info.crop_shape
    if tuple(network_shape) == tuple(crop):
        return [AxisPlan.linear(n, n) for n in crop]
    separate = separate_z_axis(recipe.spacing, info.spacing_transposed, force)
    plans = []
    for axis, (source, target) in enumerate(zip(network_shape, crop)):
        if axis == separate and source != target:
            if order_z != 0:
                raise CaseError(f"nnU-Net plans asking for order_z={order_z} are not supported (stock plans use 0).")
            plans.append(AxisPlan.nearest(source, target))
        else:
            plans.append(AxisPlan.linear(source, target))
    return plans


def _first_argmax(values: np.ndarray, out: np.ndarray) -> None:
    """``argmax`` along axis 0 (first index on ties) into ``out``, one class at a time (contiguous passes)."""
    best = values[0].copy()
    out[...] = 0
    for k in range(1, values.shape[0]):
        wins = values[k] > best
        np.copyto(best, values[k], where=wins)
        out[wins] = k


def restore_labels(logits: np.ndarray, info: NnunetPreprocessInfo,
                   budget_bytes: int = SLAB_BUDGET_BYTES) -> np.ndarray:
    """UInt8 labels ``(Z, Y, X)`` on the input grid (SimpleITK's layout) from logits ``(C, *network_shape)``."""
    if logits.ndim != 4 or logits.shape[0] > 256:
        raise ValueError(f"logits must be (C, D0, D1, D2) with at most 256 classes, got {logits.shape}")
    plans = axis_plans(info, logits.shape[1:])
    crop = info.crop_shape
    out = np.zeros(info.shape_before_crop, np.uint8)
    region = out[tuple(slice(s, e) for s, e in info.box)]
    plane = crop[1] * crop[2]
    step = max(1, int(budget_bytes // max(logits.shape[0] * plane * 4 * 3, 1)))
    for a in range(0, crop[0], step):
        b = min(crop[0], a + step)
        first = plans[0].rows(a, b)
        lo = int(first.low.min())
        hi = int(first.low.max()) + 2
        source = np.asarray(logits[:, lo:hi], dtype=np.float32)
        first = AxisPlan(first.low - lo, first.weight)
        slab = plans[2].apply(plans[1].apply(first.apply(source, 1), 2), 3)
        _first_argmax(slab, region[a:b])
        del slab
    return np.ascontiguousarray(np.transpose(out, info.recipe.transpose_backward))
