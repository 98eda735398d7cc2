"""A prediction back onto the input grid in bounded memory, block by block, on the device.

Restoring every class's probabilities onto a full-size CT at once costs
classes × voxels × 4 bytes (29 × 78.6 M × 4 = 9 GB for a 512×512×300 scan, more in
the resampling passes). Here memory grows with the volume only:

- ``restore_labels``: the labelmap is built block by block of the input grid. An
  input voxel interpolates the 2×2×2 model voxels of its cell, so each class's
  restored value lies between its minimum and maximum over the cell; a class
  whose maximum stays below another class's minimum cannot win there. Only the
  classes that can win somewhere in a block are resampled for it, and a block
  with a single such class (inside an organ, in the background) takes it without
  resampling. The labels equal the argmax of the whole-volume restore
  (``data.preprocess.restore_labelmap``), value for value, at a fraction of the work.
- ``restored_slabs``: all classes' probabilities, one slab of input slices at a
  time, for the optional probability and uncertainty outputs.

Blocks are resampled with the same per-axis plans as the whole-volume restore
(``data/resample.py``): with numpy on the CPU, as torch operations on a GPU when
the probabilities live there. The only full-size array is the uint8 labelmap,
allocated once in the layout SimpleITK stores.
"""

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from TransferSegLib.data.preprocess import PreprocessInfo
from TransferSegLib.data.resample import AxisPlan, apply_plans, axis_plans

Box = Tuple[Tuple[int, int, int], Tuple[int, int, int]]
# Slab working set per restored voxel and channel: the source block, the two
# neighbour reads and the result of a pass, the running best and the labels.
_BYTES_PER_VOXEL = 4 * 6
DEFAULT_BUDGET_BYTES = 256 * 2**20
# Values lie in [0, 1]; three interpolation passes in float32 move them by a few 1e-8.
_TIE_MARGIN = 1e-5


@dataclass
class _Plan:
    info: PreprocessInfo
    plans: Optional[List[AxisPlan]]  # None: the model saw the oriented grid itself
    order: List[int]

    @classmethod
    def of(cls, info: PreprocessInfo) -> "_Plan":
        if not info.was_resampled:
            return cls(info, None, [0, 1, 2])
        plans, order = axis_plans(info.resampled, info.oriented, linear=True)
        return cls(info, plans, order)

    def source_box(self, box: Box) -> Tuple[Box, List[AxisPlan]]:
        """The resampled-grid block that target ``box`` reads, and the plans onto it."""
        start, stop = box
        if self.plans is None:
            return box, []
        parts = [self.plans[t].part(start[t], stop[t]) for t in range(3)]
        lo = tuple(offset for _, offset in parts)
        hi = tuple(offset + plan.source_size for plan, offset in parts)
        return (lo, hi), [plan for plan, _ in parts]  # type: ignore[return-value]

    def target_box(self, source: Box) -> Optional[Box]:
        """The oriented-grid box whose voxels read anything inside resampled-grid ``source``."""
        lo, hi = source
        if self.plans is None:
            return source
        ranges = [self.plans[t].targets_reading(lo[t], hi[t]) for t in range(3)]
        if any(b <= a for a, b in ranges):
            return None
        return tuple(a for a, _ in ranges), tuple(b for _, b in ranges)  # type: ignore[return-value]


def _apply(block: torch.Tensor, plans: List[AxisPlan], order: Sequence[int]) -> torch.Tensor:
    """``data.resample.apply_plans`` as torch operations on ``block``'s device."""
    out = block
    for t in order:
        plan, axis = plans[t], 1 + t
        low = torch.from_numpy(plan.low).to(block.device)
        if not plan.linear:
            out = out.index_select(axis, low)
            continue
        shape = [1] * out.dim()
        shape[axis] = -1
        weight = torch.from_numpy(plan.weight).to(block.device).reshape(shape)
        below = out.index_select(axis, low)
        above = out.index_select(axis, torch.clamp(low + 1, max=out.shape[axis] - 1))
        out = above.sub_(below).mul_(weight).add_(below)  # below + (above - below) * weight
    return out


def _source_block(probs: torch.Tensor, channels: Sequence[int], info: PreprocessInfo, box: Box) -> torch.Tensor:
    """Channels of the un-cropped resampled grid inside ``box`` (float32): the
    prediction where the crop has it, background (channel 0 = 1, others 0) elsewhere."""
    lo, hi = box
    size = [b - a for a, b in zip(lo, hi)]
    block = torch.zeros([len(channels)] + size, dtype=torch.float32, device=probs.device)
    for n, c in enumerate(channels):
        if c == 0:
            block[n] = 1.0
    inner_lo = [max(a, s) for a, s in zip(lo, info.crop_start)]
    inner_hi = [min(b, e) for b, e in zip(hi, info.crop_stop)]
    if all(b > a for a, b in zip(inner_lo, inner_hi)):
        dst = tuple(slice(a - o, b - o) for a, b, o in zip(inner_lo, inner_hi, lo))
        src = tuple(slice(a - s, b - s) for a, b, s in zip(inner_lo, inner_hi, info.crop_start))
        index = torch.as_tensor(list(channels), device=probs.device)
        block[(slice(None),) + dst] = probs[(slice(None),) + src].index_select(0, index).float()
    return block


def restore_block(probs: torch.Tensor, info: PreprocessInfo, channels: Sequence[int], box: Box,
                  plan: Optional[_Plan] = None) -> torch.Tensor:
    """``channels`` of the prediction restored onto oriented-grid ``box``: ``(len(channels), *box size)``."""
    plan = plan or _Plan.of(info)
    source, plans = plan.source_box(box)
    block = _source_block(probs, channels, info, source)
    return _resample(block, plans, plan.order) if plans else block


def _network_to_crop(probs: torch.Tensor, info: PreprocessInfo) -> torch.Tensor:
    """Probabilities on the network's grid → the crop box's grid: the recipe's resize
    undone (linear, at model resolution), or as they are when it has none."""
    if tuple(probs.shape[1:]) != tuple(info.network_shape):
        raise ValueError(f"probabilities of shape {tuple(probs.shape)} do not match the preprocessed shape "
                         f"{info.network_shape}")
    if info.resized is None:
        return probs
    plans, order = axis_plans(info.resized, info.cropped(), linear=True)
    return _apply(probs.float(), plans, order)


def _block_edge(classes: int, budget_bytes: int) -> int:
    """Edge of the cubic output blocks: every class of a block within the budget, at most
    32 (small blocks have fewer candidates)."""
    return int(max(1, min(32, (budget_bytes / max(classes * _BYTES_PER_VOXEL, 1)) ** (1.0 / 3.0))))


def _cell_extremes(block: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per class, the maximum and minimum over each cell (voxels ``i..i+1`` along every
    axis; cells at the far edge repeat it), as three separable passes each."""
    high = low = block
    for axis in (1, 2, 3):
        n = block.shape[axis]
        ahead = torch.cat([high.narrow(axis, 1, n - 1), high.narrow(axis, n - 1, 1)], axis) if n > 1 else high
        high = torch.maximum(high, ahead)
        ahead = torch.cat([low.narrow(axis, 1, n - 1), low.narrow(axis, n - 1, 1)], axis) if n > 1 else low
        low = torch.minimum(low, ahead)
    return high, low


def _candidates(block: torch.Tensor) -> torch.Tensor:
    """The classes that can win somewhere in the target voxels reading ``block``.

    A target voxel interpolates the 2×2×2 source voxels of its cell, so each class's
    value lies between that class's minimum and maximum over the cell. A class whose
    cell maximum stays below another class's cell minimum loses the voxel. A margin of
    ``_TIE_MARGIN`` keeps classes that float32 rounding could lift to a tie."""
    high, low = _cell_extremes(block)
    floor = low.max(0).values  # per cell: the least the cell's best class gets
    return torch.nonzero((high >= floor - _TIE_MARGIN).flatten(1).any(1)).flatten()


def _first_argmax(values: torch.Tensor) -> torch.Tensor:
    """Index of the largest value along axis 0, the first on ties (as ``numpy.argmax``),
    as a running maximum: contiguous passes instead of a strided reduction."""
    best = values[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=values.device)
    for k in range(1, values.shape[0]):
        wins = values[k] > best
        best = torch.where(wins, values[k], best)
        index.masked_fill_(wins, k)
    return index


def _resample(values: torch.Tensor, plans: List[AxisPlan], order: Sequence[int]) -> torch.Tensor:
    """Apply the plans: numpy's ``take`` on the CPU (torch's index_select is many times slower
    there), torch on a GPU; the same operations either way."""
    if values.device.type == "cpu":
        return torch.from_numpy(apply_plans(values.numpy(), plans, list(order)))
    return _apply(values, plans, order)


def _slab_length(plane_voxels: int, channels: int, budget_bytes: int) -> int:
    return max(1, int(budget_bytes // max(plane_voxels * channels * _BYTES_PER_VOXEL, 1)))


def label_blocks(probs: torch.Tensor, info: PreprocessInfo, budget_bytes: int = DEFAULT_BUDGET_BYTES,
                 ) -> Iterator[Tuple[Box, torch.Tensor, List[AxisPlan], torch.Tensor]]:
    """The oriented grid in blocks: ``(box, source block of every class, plans onto the box,
    candidate classes)``; the other classes cannot win anywhere in the block (``_candidates``)."""
    probs = _network_to_crop(probs, info)
    plan = _Plan.of(info)
    classes = int(probs.shape[0])
    everything = list(range(classes))
    size = tuple(info.oriented.size)
    edge = _block_edge(classes, budget_bytes)
    for x in range(0, size[0], edge):
        for y in range(0, size[1], edge):
            for z in range(0, size[2], edge):
                box: Box = ((x, y, z), (min(size[0], x + edge), min(size[1], y + edge), min(size[2], z + edge)))
                source, plans = plan.source_box(box)
                block = _source_block(probs, everything, info, source)
                yield box, block, plans, _candidates(block)


def restore_labels(probs: torch.Tensor, info: PreprocessInfo, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> np.ndarray:
    """UInt8 labels on the input grid as a ``(Z, Y, X)`` array (SimpleITK's layout).

    ``probs``: ``(C, X, Y, Z)`` probabilities on the network's grid that sum
    to one over classes (float32 or float16, any device). Equal to the argmax of the
    whole-volume restore; ``budget_bytes`` bounds the working set of one block. Only a
    block's candidates are resampled, and a block with one candidate (inside an organ,
    in the background) takes it without resampling at all.
    """
    if probs.dim() != 4 or probs.shape[0] > 256:
        raise ValueError(f"probabilities must be (C, X, Y, Z) with at most 256 classes, got {tuple(probs.shape)}")
    order = _Plan.of(info).order
    out = np.zeros(tuple(info.original.size)[::-1], np.uint8)
    oriented = info.reorientation.apply(out.transpose(2, 1, 0))  # a view: writes land in ``out``
    for box, block, plans, candidates in label_blocks(probs, info, budget_bytes):
        where = tuple(slice(a, b) for a, b in zip(*box))
        if len(candidates) == 1:
            oriented[where] = int(candidates[0])
            continue
        values = block.index_select(0, candidates)
        if plans:
            values = _resample(values, plans, order)
        winner = _first_argmax(values).long()
        oriented[where] = candidates.to(torch.uint8)[winner].cpu().numpy()
    return out


def restored_slabs(probs: torch.Tensor, info: PreprocessInfo,
                   budget_bytes: int = DEFAULT_BUDGET_BYTES) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """All classes restored onto the input grid, a slab of its slices at a time:
    ``(z0, z1, (C, X, Y, z1 - z0) float32)`` in the input's own index order, slabs in any order."""
    probs = _network_to_crop(probs, info)
    plan = _Plan.of(info)
    reorientation = info.reorientation
    along = list(reorientation.axes).index(2)  # the oriented axis that runs along the input's z
    size = tuple(info.oriented.size)
    plane = int(np.prod(size)) // size[along]
    step = _slab_length(plane, probs.shape[0], budget_bytes)
    inverse = [int(a) for a in np.argsort(reorientation.axes)]
    flips = [1 + t for t in range(3) if reorientation.flips[t]]
    channels = list(range(probs.shape[0]))
    n = size[along]
    for a in range(0, n, step):
        b = min(n, a + step)
        lo, hi = [0, 0, 0], list(size)
        lo[along], hi[along] = a, b
        slab = restore_block(probs, info, channels, (tuple(lo), tuple(hi)), plan)  # type: ignore[arg-type]
        if flips:
            slab = slab.flip(flips)
        slab = slab.permute([0] + [1 + t for t in inverse])
        z0, z1 = (n - b, n - a) if reorientation.flips[along] else (a, b)
        yield z0, z1, slab
