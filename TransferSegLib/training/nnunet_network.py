"""nnU-Net v2's networks, built from a plans file's architecture with nnU-Net's own package.

nnU-Net v2 describes its network as data in ``plans.json``: a class name
(``dynamic_network_architectures.architectures.unet.PlainConvUNet`` or
``...ResidualEncoderUNet``), its keyword arguments, and ``_kw_requires_import``,
the arguments that name further classes (``conv_op``, ``norm_op``, ``nonlin``...).
nnU-Net turns every such name into code with ``pydoc.locate``; a model folder is
untrusted data, so here each name must be on an explicit allow-list (the two
architectures, their residual blocks, and torch.nn's convolution, normalization,
dropout and activation classes) and anything else is refused.

``NnunetNetwork`` wraps the built network as ``self.network`` so that a TransferSeg
spec can name it (``_target_`` + arguments, like every other network): its
state_dict keys are nnU-Net's own with the prefix ``network.`` (``NNUNET_PREFIX``).
The network is built without deep supervision (nnU-Net predicts that way); the
decoder's per-stage ``seg_layers`` all remain, so checkpoints load strictly.
"""

import copy
import importlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from TransferSegLib.errors import ModelError

NNUNET_PREFIX = "network."

#: The architectures a plans file may name (dynamic-network-architectures 0.4.x).
ARCHITECTURES = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": ("dynamic_network_architectures.architectures.unet", "PlainConvUNet"),
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": ("dynamic_network_architectures.architectures.unet", "ResidualEncoderUNet"),
}

#: Building blocks a ResidualEncoderUNet's ``block`` argument may name.
BLOCKS = {
    "dynamic_network_architectures.building_blocks.residual.BasicBlockD": ("dynamic_network_architectures.building_blocks.residual", "BasicBlockD"),
    "dynamic_network_architectures.building_blocks.residual.BottleneckD": ("dynamic_network_architectures.building_blocks.residual", "BottleneckD"),
}

#: torch.nn classes a plans file may name, by class name; spelled ``torch.nn.X`` or ``torch.nn.modules.<file>.X``.
TORCH_LAYERS = (
    "Conv1d", "Conv2d", "Conv3d",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm",
    "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
    "LeakyReLU", "ReLU", "PReLU", "ELU", "GELU", "SiLU",
)

DNA_INSTALL = "pip install dynamic-network-architectures (or: pip install 'transferseg[nnunet]')"


def _torch_layer(name: str) -> Optional[type]:
    parts = name.split(".")
    if len(parts) < 3 or parts[:2] != ["torch", "nn"] or parts[-1] not in TORCH_LAYERS:
        return None
    cls = getattr(nn, parts[-1], None)
    if cls is None:
        return None
    if len(parts) == 3:
        return cls
    # torch.nn.modules.conv.Conv3d: the dotted module must be where the class really lives
    if len(parts) == 5 and parts[2] == "modules" and cls.__module__ == ".".join(parts[:4]):
        return cls
    return None


def _import_listed(table: Dict[str, Tuple[str, str]], name: str, what: str, where: str) -> type:
    module_name, attribute = table[name]
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:
        raise ModelError(
            f"The nnU-Net model '{where}' needs nnU-Net's network package for its {what} '{name}': {DNA_INSTALL}."
        ) from exc


def resolve_class_name(name: Any, argument: str, where: str) -> Optional[type]:
    """The class a plans file names for ``argument``, if the allow-list admits it (None stays None)."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise ModelError(f"The nnU-Net plans of '{where}' give '{argument}' = {name!r}, which is not a class name.")
    layer = _torch_layer(name)
    if layer is not None:
        return layer
    if name in BLOCKS:
        return _import_listed(BLOCKS, name, argument, where)
    raise ModelError(
        f"Refusing the class '{name}' that the nnU-Net plans of '{where}' name for '{argument}': TransferSeg builds "
        f"nnU-Net networks only from torch.nn's convolution, normalization, dropout and activation layers and "
        f"nnU-Net's residual blocks; a model folder cannot name other code."
    )


def architecture_class(name: str, where: str) -> type:
    if name not in ARCHITECTURES:
        raise ModelError(
            f"The nnU-Net model '{where}' uses the network '{name}'. TransferSeg runs nnU-Net's PlainConvUNet and "
            f"ResidualEncoderUNet ({', '.join(ARCHITECTURES)}); other architectures are refused."
        )
    return _import_listed(ARCHITECTURES, name, "network", where)


class NnunetNetwork(nn.Module):
    """An nnU-Net v2 network (``self.network``) built from its plans' architecture.

    ``in_channels`` / ``out_channels`` are nnU-Net's ``input_channels`` /
    ``num_classes``; ``network_class_name``, ``arch_kwargs`` and
    ``kw_requires_import`` are the plans' ``architecture`` entry. Input and output
    are ``(B, C, *patch)`` in the plans' axis order (after ``transpose_forward``).
    """

    def __init__(self, in_channels: int, out_channels: int, network_class_name: str,
                 arch_kwargs: Dict[str, Any], kw_requires_import: Sequence[str] = (),
                 deep_supervision: bool = False, where: str = "the network spec"):
        super().__init__()
        cls = architecture_class(str(network_class_name), where)
        kwargs = copy.deepcopy(dict(arch_kwargs))
        for argument in kw_requires_import:
            if argument in kwargs:
                kwargs[argument] = resolve_class_name(kwargs[argument], argument, where)
        for argument, value in kwargs.items():
            if isinstance(value, str) and "." in value and argument not in kw_requires_import:
                raise ModelError(f"The nnU-Net plans of '{where}' give '{argument}' = '{value}' without listing it "
                                 f"in _kw_requires_import; the plans file is damaged.")
        self.network_class_name = str(network_class_name)
        self.strides = [list(s) if isinstance(s, (list, tuple)) else [int(s)] * 3 for s in kwargs.get("strides", [])]
        try:
            self.network = cls(input_channels=int(in_channels), num_classes=int(out_channels),
                               deep_supervision=bool(deep_supervision), **kwargs)
        except (TypeError, AssertionError, ValueError) as exc:
            raise ModelError(f"Cannot build the nnU-Net network of '{where}' from its plans: {exc}") from exc
        if hasattr(self.network, "initialize"):
            self.network.apply(self.network.initialize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


def nnunet_patch_multiple(args: Dict[str, Any]) -> Tuple[int, ...]:
    """Each patch side must be a multiple of the product of the strides along it."""
    strides = args.get("arch_kwargs", {}).get("strides", [])
    factors = [1, 1, 1]
    for stride in strides:
        s = stride if isinstance(stride, (list, tuple)) else [stride] * 3
        factors = [f * int(x) for f, x in zip(factors, s)]
    return tuple(factors)


def nnunet_part_prefixes(model: NnunetNetwork) -> Dict[str, List[str]]:
    """Encoder, decoder, last block and head of an nnU-Net U-Net (both architectures share the decoder).

    ``encoder`` is the contracting path (stem and stages, bottleneck included);
    the head is every ``decoder.seg_layers`` convolution (one per decoder stage:
    the last gives the prediction, the others are the deep-supervision outputs and
    keep the class count); the last block is the last decoder stage and the
    transposed convolution that feeds it.
    """
    p = NNUNET_PREFIX
    n_up = len(model.network.decoder.stages)
    return {
        "encoder": [p + "encoder"],
        "decoder": [p + "decoder"],
        "last_block": [f"{p}decoder.stages.{n_up - 1}", f"{p}decoder.transpconvs.{n_up - 1}"],
        "head": [p + "decoder.seg_layers"],
    }


def to_nnunet_keys(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A TransferSeg state_dict of an ``NnunetNetwork`` → nnU-Net's ``network_weights`` keys."""
    return {k[len(NNUNET_PREFIX):]: v for k, v in state.items() if k.startswith(NNUNET_PREFIX)}


def from_nnunet_keys(weights: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """nnU-Net's ``network_weights`` → keys of an ``NnunetNetwork``."""
    return {NNUNET_PREFIX + str(k): v for k, v in weights.items()}
