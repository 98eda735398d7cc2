"""Transfer strategies: which pretrained weights to keep, adapt, freeze or train.

Humpire-Mamani et al. (2023) found that freezing most of a base 3D U-Net and
fine-tuning only the last decoder block and the head beats retraining everything
when few cases are annotated, and that keeping the pretrained head channels of
classes the base model already knows (instead of a random head) helps. Both ideas
live here: ``adapt_head`` matches output channels by label name, and
``apply_strategy`` freezes exactly the parts a strategy names.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from TransferSegLib.errors import ModelError
from TransferSegLib.names import index_by_name, normalize_label_name
from TransferSegLib.specs import check_strategy
from TransferSegLib.training.networks import NetworkParts, class_axis, head_modules, network_parts

#: What each strategy trains (the rest is frozen). ``staged`` trains the head
#: first, then everything at a lower rate (see ``StagedSchedule``).
TRAINED_PARTS: Dict[str, Tuple[str, ...]] = {
    "scratch": ("encoder", "decoder", "last_block", "head"),
    "full": ("encoder", "decoder", "last_block", "head"),
    "decoder": ("decoder", "last_block", "head"),
    "last-layers": ("last_block", "head"),
    "staged": ("head",),
}


@dataclass
class HeadAdaptation:
    """What ``adapt_head`` did, for logs and the model card."""

    kept: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    adapted_tensors: Dict[str, List[int]] = field(default_factory=dict)  # tensor → class axes


def adapt_head(
    model: nn.Module,
    base_state: Dict[str, torch.Tensor],
    base_labels: Sequence[str],
    target_labels: Sequence[str],
    parts: Optional[NetworkParts] = None,
) -> HeadAdaptation:
    """Load ``base_state`` into ``model`` whose head has ``target_labels`` channels.

    Channels whose label name exists in ``base_labels`` get the pretrained weights
    bit for bit; new labels keep the model's fresh initialization. All non-head
    tensors are loaded as they are (shapes must match). ``model`` must already be
    built with ``len(target_labels)`` output channels.
    """
    parts = parts or network_parts(model)
    base_index = index_by_name(base_labels)
    mapping: List[Optional[int]] = [base_index.get(normalize_label_name(n)) for n in target_labels]
    report = HeadAdaptation(
        kept=[n for n, m in zip(target_labels, mapping) if m is not None],
        new=[n for n, m in zip(target_labels, mapping) if m is None],
        dropped=[n for n in base_labels if normalize_label_name(n) not in index_by_name(target_labels)],
    )
    n_base = len(base_labels)
    target_state = model.state_dict()
    new_state: Dict[str, torch.Tensor] = {}
    head_axes: Dict[str, List[int]] = {}
    for mod_name, module in head_modules(model, parts):
        # Modules are inspected in the *target* model, whose class count may differ:
        # compare against the base state's shapes to find the class axes.
        for tensor_name, axis in _output_axes_from_base(module, mod_name, base_state, n_base, len(target_labels)):
            head_axes.setdefault(f"{mod_name}.{tensor_name}", []).append(axis)
    for key, target_tensor in target_state.items():
        if key not in base_state:
            new_state[key] = target_tensor
            continue
        base_tensor = base_state[key]
        axes = head_axes.get(key)
        if axes:
            new_state[key] = _map_channels(base_tensor, target_tensor, axes, mapping)
            report.adapted_tensors[key] = list(axes)
        elif base_tensor.shape == target_tensor.shape:
            new_state[key] = base_tensor
        else:
            raise ModelError(
                f"Pretrained tensor '{key}' has shape {tuple(base_tensor.shape)} but the network "
                f"expects {tuple(target_tensor.shape)}: the base model's network spec does not "
                f"match its weights."
            )
    model.load_state_dict(new_state)
    return report


_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _output_axes_from_base(
    module: nn.Module, mod_name: str, base_state: Dict[str, torch.Tensor], n_base: int, n_target: int
) -> List[Tuple[str, int]]:
    """Class axes of a head module, found from the base checkpoint's shapes.

    An input axis counts as a class axis only when it has the class count in both
    networks: a head convolution whose input features happen to number as many
    as the base model's classes (nnU-Net's 4-feature seg layer of a 4-class model)
    is not fed class scores.
    """
    axes: List[Tuple[str, int]] = []
    weight = base_state.get(f"{mod_name}.weight")
    if isinstance(module, _CONVOLUTIONS) and weight is not None:
        out_axis = class_axis(module)  # one entry per output class
        in_axis = 1 - out_axis  # a head that also reads the class scores (deep supervision, cascades)
        if weight.shape[out_axis] == n_base:
            axes.append(("weight", out_axis))
            if f"{mod_name}.bias" in base_state:
                axes.append(("bias", 0))
        if (weight.shape[in_axis] == n_base and module.weight.shape[in_axis] == n_target
                and (out_axis == 1 or module.groups == 1)):
            axes.append(("weight", in_axis))
    else:
        for tensor_name in ("weight", "bias", "running_mean", "running_var"):
            tensor = base_state.get(f"{mod_name}.{tensor_name}")
            if tensor is not None and tensor.dim() == 1 and tensor.shape[0] == n_base:
                axes.append((tensor_name, 0))
    return axes


def _map_channels(
    base: torch.Tensor, target: torch.Tensor, axes: List[int], mapping: List[Optional[int]]
) -> torch.Tensor:
    """Copy base channels into the target tensor along every class axis."""
    result = target.clone()
    src_index = [i for i, m in enumerate(mapping) if m is not None]
    base_index = [m for m in mapping if m is not None]
    if not src_index:
        return result
    if len(axes) == 1:
        axis = axes[0]
        result.index_copy_(axis, torch.tensor(src_index), base.index_select(axis, torch.tensor(base_index)))
        return result
    # Class axes on both sides (a labels→labels conv): copy the matched block.
    a0, a1 = axes[0], axes[1]
    block = base.index_select(a0, torch.tensor(base_index)).index_select(a1, torch.tensor(base_index))
    tmp = result.index_select(a0, torch.tensor(src_index))
    tmp.index_copy_(a1, torch.tensor(src_index), block)
    result.index_copy_(a0, torch.tensor(src_index), tmp)
    return result


def load_pretrained(model: nn.Module, base_state: Dict[str, torch.Tensor], strict_encoder: bool = True) -> List[str]:
    """Load weights whose labels need no adaptation (same classes, or encoder-only).

    Returns the names of tensors left at their fresh initialization.
    """
    target = model.state_dict()
    missing: List[str] = []
    merged = {}
    for key, tensor in target.items():
        if key in base_state and base_state[key].shape == tensor.shape:
            merged[key] = base_state[key]
        else:
            merged[key] = tensor
            missing.append(key)
    model.load_state_dict(merged)
    return missing


def apply_strategy(model: nn.Module, strategy: str, parts: Optional[NetworkParts] = None) -> Dict[str, int]:
    """Freeze everything the strategy does not train; returns trainable counts per part."""
    strategy = check_strategy(strategy, allow_auto=False)
    parts = parts or network_parts(model)
    return set_trainable_parts(model, TRAINED_PARTS[strategy], parts)


def set_trainable_parts(model: nn.Module, trained: Sequence[str], parts: Optional[NetworkParts] = None) -> Dict[str, int]:
    parts = parts or network_parts(model)
    counts: Dict[str, int] = {"encoder": 0, "decoder": 0, "last_block": 0, "head": 0}
    for name, param in model.named_parameters():
        part = parts.part_of(name)
        param.requires_grad_(part in trained)
        if param.requires_grad:
            counts[part] += param.numel()
    return counts


def freeze_norm_statistics(model: nn.Module) -> None:
    """Keep running statistics of frozen normalization layers fixed.

    A frozen BatchNorm that keeps updating its running mean/variance in train()
    mode silently changes the frozen features; call after ``model.train()``.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = [p for p in module.parameters(recurse=False)]
            if params and not any(p.requires_grad for p in params):
                module.eval()


@dataclass
class StagedSchedule:
    """``staged``: the head alone first, then every part at a lower learning rate."""

    head_fraction: float = 0.3
    later_lr_factor: float = 0.1

    def in_second_stage(self, progress: float) -> bool:
        return progress >= self.head_fraction


def inflate_2d_to_3d(
    state_2d: Dict[str, torch.Tensor], model_3d: nn.Module, depth_mode: str = "center"
) -> List[str]:
    """Initialize a 3D network from the matching 2D network's weights.

    A 2D kernel (out, in, kh, kw) becomes a 3D kernel (out, in, kd, kh, kw) either
    repeated along depth and divided by kd (``average``: same response on a volume
    constant along depth) or placed at the central depth slice (``center``: the 3D
    network initially acts slice-wise like the 2D one). Non-kernel tensors (biases,
    norms) are copied. Returns the names of 3D tensors that had no 2D counterpart.
    """
    if depth_mode not in ("center", "average"):
        raise ModelError(f"Unknown inflation mode '{depth_mode}': use 'center' or 'average'.")
    target = model_3d.state_dict()
    merged: Dict[str, torch.Tensor] = {}
    missing: List[str] = []
    for key, tensor3 in target.items():
        tensor2 = state_2d.get(key)
        if tensor2 is None:
            merged[key] = tensor3
            missing.append(key)
        elif tensor2.shape == tensor3.shape:
            merged[key] = tensor2.clone()
        elif tensor2.dim() == 4 and tensor3.dim() == 5 and tuple(tensor2.shape[:2]) == tuple(tensor3.shape[:2]):
            merged[key] = _inflate_kernel(tensor2, tensor3.shape, depth_mode)
        else:
            raise ModelError(
                f"Cannot inflate 2D tensor '{key}' {tuple(tensor2.shape)} to 3D {tuple(tensor3.shape)}: "
                f"the 2D and 3D networks differ in more than their dimension."
            )
    model_3d.load_state_dict(merged)
    return missing


def _inflate_kernel(kernel_2d: torch.Tensor, shape_3d: torch.Size, depth_mode: str) -> torch.Tensor:
    """(O, I, a, b) → (O, I, a, b, d): MONAI 3D tensors are (X, Y, Z), the new axis is the last."""
    out, inp, kx, ky, kz = shape_3d
    if tuple(kernel_2d.shape[2:]) != (kx, ky):
        raise ModelError(f"2D kernel {tuple(kernel_2d.shape)} does not match the 3D kernel {tuple(shape_3d)}.")
    if depth_mode == "average":
        return kernel_2d.unsqueeze(-1).repeat(1, 1, 1, 1, kz) / float(kz)
    result = torch.zeros(shape_3d, dtype=kernel_2d.dtype)
    result[..., kz // 2] = kernel_2d
    return result
