"""Networks built from a spec, and where each architecture's encoder, decoder and head are.

A network spec is data (``_target_`` + arguments, as in MONAI bundles) so that a
catalog entry, a fine-tuned model folder and an exported bundle all describe the
same network the same way. Transfer strategies freeze *parts* of a network; which
parameters form the encoder, the decoder, the last decoder block and the output
head differs per architecture, so that knowledge lives here, next to the builder.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from TransferSegLib.errors import ModelError
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.network_allowlist import network_class
from TransferSegLib.training.nnunet_network import nnunet_part_prefixes, nnunet_patch_multiple


def default_network_spec(in_channels: int = 1, out_channels: int = 2) -> NetworkSpec:
    """The default 3D U-Net: a 4-level DynUNet small enough to train on a CPU.

    Strides (1, 2, 2, 2) mean patch sizes must be multiples of 8 per axis.
    """
    return NetworkSpec(
        "monai.networks.nets.DynUNet",
        {
            "spatial_dims": 3,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "kernel_size": [3, 3, 3, 3],
            "strides": [1, 2, 2, 2],
            "upsample_kernel_size": [2, 2, 2],
            "filters": [16, 32, 64, 128],
            "norm_name": "instance",
            "res_block": True,
        },
    )


def build_network(spec: NetworkSpec) -> nn.Module:
    """Instantiate the network a spec describes (weights freshly initialized).

    Only classes the allow-list admits are built (``network_allowlist``): a spec is
    data from catalogs, model folders and downloaded bundles, never a licence to
    call arbitrary code.
    """
    cls = network_class(spec.target, spec.args, spec.origin or "the network spec", spec.trusted)
    try:
        return cls(**spec.args)
    except TypeError as exc:
        raise ModelError(f"Cannot build {spec.target} with arguments {spec.args}: {exc}") from exc


def patch_multiple(spec: NetworkSpec) -> Tuple[int, int, int]:
    """The number each patch side must be a multiple of for this network."""
    name = spec.class_name
    args = spec.args
    if name == "DynUNet":
        factors = [1, 1, 1]
        for stride in args.get("strides", []):
            s = stride if isinstance(stride, (list, tuple)) else [stride] * 3
            factors = [f * int(x) for f, x in zip(factors, s)]
        return tuple(factors)  # type: ignore[return-value]
    if name == "UNet":
        total = 1
        for stride in args.get("strides", []):
            total *= int(stride if not isinstance(stride, (list, tuple)) else max(stride))
        return (total, total, total)
    if name == "SegResNet":
        m = 2 ** (len(args.get("blocks_down", (1, 2, 2, 4))) - 1)
        return (m, m, m)
    if name in ("SwinUNETR", "SwinUNETRV2"):
        return (32, 32, 32)
    if name == "BasicUNet":
        return (16, 16, 16)
    if name == "MedicalNetUNet":
        return (8, 8, 8)
    if name == "NnunetNetwork":
        return nnunet_patch_multiple(args)  # type: ignore[return-value]
    return (16, 16, 16)


# ---------------------------------------------------------------------------
# Network parts


@dataclass
class NetworkParts:
    """Parameter-name prefixes of a network's parts.

    ``head`` produces the class scores; ``last_block`` is the last decoder block
    before it; ``encoder`` is the contracting path (bottleneck included);
    ``decoder`` is everything else. A parameter belongs to the first matching
    part in the order head, last_block, encoder, decoder.
    """

    encoder: List[str]
    decoder: List[str]
    last_block: List[str]
    head: List[str]

    def part_of(self, param_name: str) -> str:
        for part in ("head", "last_block", "encoder"):
            if any(_has_prefix(param_name, p) for p in getattr(self, part)):
                return part
        return "decoder"


def _has_prefix(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def network_parts(model: nn.Module) -> NetworkParts:
    """Where the encoder, decoder, last block and head of ``model`` are."""
    name = type(model).__name__
    declared = getattr(model, "part_prefixes", None)
    if callable(declared):  # TransferSeg's own networks say where their parts are
        return NetworkParts(**declared())
    if name == "DynUNet":
        n_up = len(model.upsamples)
        return NetworkParts(
            encoder=["input_block", "downsamples", "bottleneck"],
            decoder=["upsamples"],
            last_block=[f"upsamples.{n_up - 1}"],
            head=["output_block", "deep_supervision_heads"],
        )
    if name == "SegResNet":
        n_up = len(model.up_layers)
        return NetworkParts(
            encoder=["convInit", "down_layers"],
            decoder=["up_layers", "up_samples"],
            last_block=[f"up_layers.{n_up - 1}", f"up_samples.{n_up - 1}"],
            head=["conv_final"],
        )
    if name in ("SwinUNETR", "SwinUNETRV2"):
        return NetworkParts(
            encoder=["swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10"],
            decoder=["decoder5", "decoder4", "decoder3", "decoder2", "decoder1"],
            last_block=["decoder1"],
            head=["out"],
        )
    if name == "BasicUNet":
        return NetworkParts(
            encoder=["conv_0", "down_1", "down_2", "down_3", "down_4"],
            decoder=["upcat_4", "upcat_3", "upcat_2", "upcat_1"],
            last_block=["upcat_1"],
            head=["final_conv"],
        )
    if name == "UNet":
        return _unet_parts(model)
    if name == "NnunetNetwork":
        return NetworkParts(**nnunet_part_prefixes(model))
    return _parts_by_order(model)


def _unet_parts(model: nn.Module) -> NetworkParts:
    """MONAI's UNet nests (down, SkipConnection(sub), up) Sequentials, outermost first."""
    encoder: List[str] = []
    decoder: List[str] = []
    prefix = "model"
    node = model.model
    ups: List[str] = []
    while isinstance(node, nn.Sequential) and len(node) == 3:
        encoder.append(f"{prefix}.0")
        ups.append(f"{prefix}.2")
        skip = node[1]
        sub = getattr(skip, "submodule", None)
        if sub is None:
            break
        prefix = f"{prefix}.1.submodule"
        node = sub
    else:
        encoder.append(prefix)  # the bottom block
    decoder.extend(ups)
    head = [ups[0]] if ups else []
    last_block = [ups[1]] if len(ups) > 1 else []
    return NetworkParts(encoder=encoder, decoder=decoder, last_block=last_block, head=head)


def _parts_by_order(model: nn.Module) -> NetworkParts:
    """Fallback for unknown architectures (TorchScript models included).

    Uses parameter registration order: the last module owning parameters is the
    head, the modules holding the last ~15 % of parameters before it are the last
    block, the first half of the parameters is the encoder.
    """
    owners: List[Tuple[str, int]] = []
    for pname, param in model.named_parameters():
        owner = pname.rsplit(".", 1)[0] if "." in pname else pname
        if owners and owners[-1][0] == owner:
            owners[-1] = (owner, owners[-1][1] + param.numel())
        else:
            owners.append((owner, param.numel()))
    if not owners:
        return NetworkParts([], [], [], [])
    total = sum(n for _, n in owners)
    head = [owners[-1][0]]
    last_block: List[str] = []
    acc = 0
    for owner, n in reversed(owners[:-1]):
        if acc >= 0.15 * total:
            break
        last_block.append(owner)
        acc += n
    encoder: List[str] = []
    acc = 0
    for owner, n in owners:
        if acc >= 0.5 * total or owner in last_block or owner in head:
            break
        encoder.append(owner)
        acc += n
    rest = [o for o, _ in owners if o not in encoder and o not in last_block and o not in head]
    return NetworkParts(encoder=encoder, decoder=rest, last_block=last_block, head=head)


def class_axis(module: nn.Module, tensor_name: str = "weight") -> int:
    """The axis of a head tensor that holds one entry per class: 0, except a transposed conv's weight (1).

    TorchScript modules are recognised by the name of the class they were scripted from.
    """
    kind = str(getattr(module, "original_name", type(module).__name__))
    return 1 if tensor_name == "weight" and kind.startswith("ConvTranspose") else 0


def head_modules(model: nn.Module, parts: NetworkParts) -> List[Tuple[str, nn.Module]]:
    """The (name, module) pairs inside the head, in registration order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if name and any(_has_prefix(name, p) for p in parts.head)
    ]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_names_in(model: nn.Module, prefixes: Sequence[str]) -> List[str]:
    return [n for n, _ in model.named_parameters() if any(_has_prefix(n, p) for p in prefixes)]


def describe(model: nn.Module) -> Dict[str, int]:
    """Parameter counts per part (for logs and the model card)."""
    parts = network_parts(model)
    counts: Dict[str, int] = {"encoder": 0, "decoder": 0, "last_block": 0, "head": 0}
    for pname, param in model.named_parameters():
        counts[parts.part_of(pname)] += param.numel()
    counts["total"] = sum(counts.values())
    return counts


def state_dict_cpu(model: nn.Module) -> Dict[str, torch.Tensor]:
    """A detached CPU copy of the weights, safe to save while training goes on."""
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
