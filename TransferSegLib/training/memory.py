"""What fits on the device: patch, batch and sliding-window batch from its free memory.

A U-Net's memory is dominated by the feature maps it keeps for the backward pass,
which grow linearly with the patch's voxels. ``activation_bytes_per_voxel`` measures
them once per network by running it on PyTorch's ``meta`` device (shapes only, no
memory, no arithmetic; the weights stay where they are), so the estimate follows the architecture actually used
instead of a table of cards. The choices keep a safety margin because the caching
allocator fragments and cuDNN wants workspace; if a card still runs out, the job
worker's out-of-memory retry halves the batch, then shrinks the patch
(``jobs/worker.py``).

On the CPU nothing is chosen: RAM is large next to these sizes and swapping is
slower than a smaller batch would be worth, so the configured values stand.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

# Keep this share of the free memory for what the estimate does not see
# (allocator fragmentation, cuDNN workspaces, the optimizer's moments).
_USABLE_SHARE = 0.6
# Training keeps every feature map for the backward pass and holds its gradient
# during it; inference frees each layer's input as it goes.
_TRAIN_FACTOR = 2.0
_INFER_FACTOR = 0.5
_MAX_SW_BATCH = 8

_PER_VOXEL_CACHE: Dict[Tuple[int, Tuple[int, int, int]], float] = {}


def free_bytes(device: torch.device) -> Optional[int]:
    """Free memory on a CUDA device (bytes), None for the CPU."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def activation_bytes_per_voxel(model: nn.Module, probe: Sequence[int], amp: bool) -> float:
    """Bytes of feature maps per input voxel for one sample, measured on the meta device."""
    key = (id(model), tuple(int(p) for p in probe))
    if key not in _PER_VOXEL_CACHE:
        elements = [0]

        def count(_module, _inputs, output):
            for tensor in output if isinstance(output, (list, tuple)) else (output,):
                if isinstance(tensor, torch.Tensor):
                    elements[0] += tensor.numel()

        in_channels = _in_channels(model)
        hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
        state = {name: torch.empty_like(t, device="meta")
                 for name, t in list(model.named_parameters()) + list(model.named_buffers())}
        try:
            with torch.no_grad():
                x = torch.empty((1, in_channels) + tuple(int(p) for p in probe), device="meta")
                torch.func.functional_call(model, state, (x,))
        finally:
            for hook in hooks:
                hook.remove()
        voxels = float(torch.tensor([int(p) for p in probe]).prod())
        _PER_VOXEL_CACHE[key] = elements[0] / voxels
    return _PER_VOXEL_CACHE[key] * (2.0 if amp else 4.0)


def _in_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            return int(module.in_channels)
    return 1


@dataclass
class TrainingFit:
    """The patch and batch a training run uses on its device, and why."""

    patch_size: Tuple[int, int, int]
    batch_size: int
    estimated_gb: Optional[float]
    free_gb: Optional[float]
    reason: str


def fit_training(model: nn.Module, patch: Sequence[int], batch: int, device: torch.device, amp: bool,
                 multiple: Sequence[int] = (8, 8, 8), free: Optional[int] = None) -> TrainingFit:
    """The requested patch and batch if they fit in the device's free memory, else a smaller batch,
    then a smaller patch (3/4 per axis, kept a multiple of the network's strides)."""
    patch = tuple(int(p) for p in patch)
    free = free_bytes(device) if free is None else free
    if free is None:
        return TrainingFit(patch, batch, None, None, "CPU: the configured patch and batch")  # type: ignore[arg-type]
    per_voxel = activation_bytes_per_voxel(model, tuple(min(p, 64) for p in patch), amp) * _TRAIN_FACTOR
    params = sum(p.numel() for p in model.parameters()) * 16  # weights, gradients, two Adam moments
    usable = free * _USABLE_SHARE - params

    def need(p: Sequence[int], b: int) -> float:
        return per_voxel * b * float(torch.tensor(list(p)).prod())

    chosen, reason = patch, "fits"
    while need(chosen, batch) > usable and batch > 1:
        batch, reason = batch - 1, "batch lowered to fit the free memory"
    while need(chosen, batch) > usable and any(p > m for p, m in zip(chosen, multiple)):
        chosen = tuple(max(m, int(p * 0.75) // m * m) for p, m in zip(chosen, multiple))
        reason = "patch lowered to fit the free memory"
    return TrainingFit(chosen, batch, round(need(chosen, batch) / 2**30, 2), round(free / 2**30, 2), reason)  # type: ignore[arg-type]


def sliding_window_batch(model: nn.Module, patch: Sequence[int], device: torch.device, amp: bool,
                         requested: int = 0, free: Optional[int] = None) -> int:
    """Windows per forward pass: ``requested`` when given, else what the free GPU memory holds
    (at most 8), and 2 on the CPU (more only adds latency there)."""
    if requested:
        return int(requested)
    free = free_bytes(device) if free is None else free
    if free is None:
        return 2
    per_window = activation_bytes_per_voxel(model, tuple(min(int(p), 64) for p in patch), amp) * _INFER_FACTOR
    per_window *= float(torch.tensor([int(p) for p in patch]).prod())
    return int(max(1, min(_MAX_SW_BATCH, (free * _USABLE_SHARE) // max(per_window, 1.0))))
