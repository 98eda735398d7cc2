"""Safe checkpoint loading: plain weights only, keys mapped onto the network's own.

Published checkpoints come in many layouts: a bare state_dict, one wrapped in
``{"state_dict": ...}`` / ``{"net": ...}`` with optimizer state beside it, keys
prefixed ``module.`` by DataParallel or ``backbone.`` by a wrapper model, or
renamed since (MONAI's Swin MLP ``fc1`` → ``linear1``). ``load_state_dict`` turns
any of them into a state_dict keyed like the network's, guided by a ``KeyMap``,
and reports what was loaded, missing, unexpected or of another shape.

Safety: checkpoints are opened with ``torch.load(weights_only=True)``, which
refuses pickles that would construct arbitrary Python objects (and so run code
chosen by whoever made the file). Such a checkpoint is refused with an
explanation instead of being opened "unsafely".

TorchScript archives are a separate case: ``torch.jit.load`` rebuilds a network
from TorchScript code, not from pickled Python objects. TransferSeg opens one
only as the architecture of a ``TorchScriptNetwork`` whose file the user chose to
trust by installing the package that ships it (e.g. deepbet from PyPI) or by
registering it themselves; a TorchScript file offered as plain weights is refused.
"""

import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from TransferSegLib.errors import ModelError
from TransferSegLib.models.packages import installed_package_file
from TransferSegLib.specs import KeyMap
from TransferSegLib.training.networks import class_axis, network_parts

Shape = Tuple[int, ...]


@dataclass
class LoadReport:
    """What ``load_state_dict`` made of a checkpoint.

    ``shape_mismatch`` maps a key to (checkpoint shape, network shape). Head
    tensors that differ only in their class axis are still returned (the head is
    adapted by label name later); any other mismatch is an error when loading is
    strict and is otherwise left out of the result.
    """

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatch: Dict[str, Tuple[Shape, Shape]] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.loaded)} tensors loaded, {len(self.missing)} missing (freshly initialized), "
                f"{len(self.unexpected)} unused, {len(self.shape_mismatch)} of another shape")


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (``torch.jit.save``): a zip holding ``code/`` and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _unsafe_globals(path: Path) -> List[str]:
    """The Python objects a pickle would construct, when this torch can tell without loading it."""
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if finder is None:
        return []
    try:
        return list(finder(str(path)))
    except Exception:  # a damaged or non-zip file: the caller's message covers it
        return []


def read_checkpoint(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with errors a user can act on."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Checkpoint '{path}' does not exist.")
    if is_torchscript(path):
        raise ModelError(
            f"'{path}' is a TorchScript archive, not a file of plain weights. TransferSeg only runs TorchScript "
            f"networks from installed packages or ones you register yourself (a spec with _target_ "
            f"'TransferSegLib.models.checkpoints.TorchScriptNetwork'); otherwise save the weights with "
            f"torch.save(model.state_dict(), 'weights.pt')."
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = _unsafe_globals(path)
        listing = f" It needs: {', '.join(needed[:8])}." if needed else ""
        raise ModelError(
            f"Refusing to load '{path}': the checkpoint contains Python objects, not only weights, and unpickling "
            f"them could run arbitrary code.{listing} TransferSeg only loads plain weights. If you trust the file, "
            f"re-save its weights in Python with torch.save(model.state_dict(), 'weights.pt') and use that file."
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"Cannot read checkpoint '{path}': {_reason(exc)}. The file may be truncated or not a PyTorch checkpoint; "
            f"download it again."
        ) from exc


def _reason(exc: BaseException) -> str:
    """PyTorch's first line, without its advice to load with ``weights_only=False`` (which would run the file)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else type(exc).__name__


def _tensor_items(obj: Any) -> Dict[str, torch.Tensor]:
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}


def unwrap_state_dict(obj: Any, key_map: KeyMap, where: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint, descending through wrapper keys (``state_dict``, ``net``, ...)."""
    seen = 0
    while isinstance(obj, dict) and seen < 8:
        tensors = _tensor_items(obj)
        if tensors:
            return tensors
        inner = next((obj[k] for k in key_map.wrapper_keys if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    top = sorted(str(k) for k in obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise ModelError(
        f"No weights found in {where}: its top-level entries are {top}, and none of the wrapper keys "
        f"{key_map.wrapper_keys} holds a state_dict. Add the right wrapper key to the model's key_map."
    )


def _stripped_variants(key: str, prefixes: List[str]) -> List[str]:
    """``key`` and the keys left after stripping listed prefixes one after another, shortest last."""
    variants = [key]
    current = key
    for _ in range(4):
        nxt = next((current[len(p):] for p in prefixes if p and current.startswith(p)), None)
        if nxt is None or not nxt:
            break
        variants.append(nxt)
        current = nxt
    return variants


def _renamed(key: str, rename: Dict[str, str]) -> str:
    for old, new in rename.items():
        key = key.replace(old, new)
    return key


def map_keys(state: Dict[str, torch.Tensor], key_map: KeyMap, known: Optional[set] = None) -> Dict[str, torch.Tensor]:
    """Rename checkpoint keys to network keys: strip prefixes, replace key fragments
    (``rename``: old fragment → new), add a prefix.

    Prefixes are stripped only as far as needed: with the network's keys ``known``
    the first variant that names a network tensor wins, so a network whose own keys
    start with ``model.`` (MONAI's UNet) keeps them.
    """
    result: Dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        variants = _stripped_variants(key, list(key_map.strip_prefixes))
        candidates = []
        for variant in variants:
            renamed = _renamed(variant, dict(key_map.rename))
            candidates.append(key_map.add_prefix + renamed)
            if key_map.add_prefix:
                candidates.append(renamed)
        chosen = next((c for c in candidates if known is not None and c in known), None)
        if chosen is None:
            chosen = key_map.add_prefix + _renamed(variants[-1], dict(key_map.rename))
        result.setdefault(chosen, tensor)
    return result


def _class_axis(model: nn.Module, key: str) -> int:
    """The axis holding one entry per class in a head tensor: 0, except a transposed conv's weight (1)."""
    owner, _, tensor_name = key.rpartition(".")
    try:
        module = model.get_submodule(owner) if owner else model
    except AttributeError:
        return 0
    return class_axis(module, tensor_name)


def _only_classes_differ(got: Shape, want: Shape, axis: int) -> bool:
    if len(got) != len(want) or got == want:
        return False
    return [i for i, (a, b) in enumerate(zip(got, want)) if a != b] == [axis]


def load_state_dict(path: Path, key_map: KeyMap, model: nn.Module,
                    strict_shapes: bool = True) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """Read ``path`` and return (state_dict keyed like ``model.state_dict()``, report).

    Missing keys (e.g. the decoder of an encoder-only checkpoint) are only
    reported. A checkpoint matching no tensor at all is an error: its key map is wrong.
    """
    path = Path(path)
    if isinstance(model, TorchScriptNetwork) and is_torchscript(path):
        raw: Any = _torchscript_state(path)
    else:
        raw = read_checkpoint(path)
    state = unwrap_state_dict(raw, key_map, where=f"'{path}'")
    target = model.state_dict()
    mapped = map_keys(state, key_map, set(target))
    parts = network_parts(model)
    report = LoadReport()
    result: Dict[str, torch.Tensor] = {}
    bad: List[str] = []
    for key, tensor in mapped.items():
        if key not in target:
            report.unexpected.append(key)
            continue
        got, want = tuple(tensor.shape), tuple(target[key].shape)
        if got == want:
            result[key] = tensor
            report.loaded.append(key)
            continue
        report.shape_mismatch[key] = (got, want)
        if parts.part_of(key) == "head" and _only_classes_differ(got, want, _class_axis(model, key)):
            result[key] = tensor
        else:
            bad.append(key)
    report.missing = [k for k in target if k not in result]
    if bad and strict_shapes:
        examples = "; ".join(f"{k}: {report.shape_mismatch[k][0]} vs {report.shape_mismatch[k][1]}" for k in bad[:3])
        raise ModelError(
            f"The weights in '{path}' do not fit the network {type(model).__name__}: {len(bad)} tensors have another "
            f"shape ({examples}). The model's network spec does not match its checkpoint."
        )
    if not report.loaded:
        sample = ", ".join(list(state)[:4])
        raise ModelError(
            f"None of the {len(state)} tensors in '{path}' matches the network {type(model).__name__} "
            f"(checkpoint keys look like: {sample}; network keys like: {', '.join(list(target)[:3])}). "
            f"Fix the model's key_map (wrapper_keys, strip_prefixes, add_prefix, rename)."
        )
    return result, report


# ---------------------------------------------------------------------------
# TorchScript networks


def _torchscript_state(path: Path) -> Dict[str, torch.Tensor]:
    module = torch.jit.load(str(path), map_location="cpu")
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _module_at(root: nn.Module, dotted: str) -> nn.Module:
    module = root
    for part in dotted.split("."):
        if not hasattr(module, part):
            raise ModelError(f"The TorchScript network has no module '{dotted}' to use as its head.")
        module = getattr(module, part)
    return module


class TorchScriptNetwork(nn.Module):
    """A TorchScript network made trainable and given a head of any class count.

    The file comes from ``path`` or from an installed package (``package`` +
    ``resource``, the file's path inside the distribution), e.g. deepbet's
    ``data/models/model.pt``. ``head`` names the output convolution; when
    ``out_channels`` differs from its class count its weights are replaced by
    freshly initialized ones of the new size. ``output="softmax"`` declares that
    the scripted forward ends in a softmax: its log is returned, which softmax maps
    back to the same probabilities, so training and inference can treat it as logits.
    ``patch_multiple`` documents the size multiple the network needs.
    """

    def __init__(self, path: str = "", package: str = "", resource: str = "", in_channels: int = 1,
                 out_channels: int = 0, head: str = "", output: str = "logits", patch_multiple: int = 16):
        super().__init__()
        if output not in ("logits", "softmax"):
            raise ModelError(f"TorchScript network output must be 'logits' or 'softmax', not '{output}'.")
        file = self._locate(path, package, resource)
        try:
            self.net = torch.jit.load(str(file), map_location="cpu")
        except RuntimeError as exc:
            raise ModelError(f"Cannot load the TorchScript network '{file}': {exc}") from exc
        self.output = output
        self.in_channels = int(in_channels)
        self.patch_multiple = int(patch_multiple)
        if head and out_channels:
            self._resize_head(head, int(out_channels))
        for param in self.net.parameters():
            param.requires_grad_(True)
        self.train()

    @staticmethod
    def _locate(path: str, package: str, resource: str) -> Path:
        if path:
            file = Path(path).expanduser()
            if not file.is_file():
                raise ModelError(f"TorchScript network file '{file}' does not exist.")
            return file
        if not (package and resource):
            raise ModelError("A TorchScript network needs 'path', or 'package' and 'resource'.")
        file = installed_package_file(package, resource)
        if file is None:
            raise ModelError(
                f"The network file '{resource}' of the Python package '{package}' is not installed. "
                f"Install the package (pip install {package}) in the Python that runs TransferSeg."
            )
        return file

    def _resize_head(self, head: str, count: int) -> None:
        module = _module_at(self.net, head)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            raise ModelError(f"The TorchScript module '{head}' has no weight: it cannot be the network's head.")
        axis = class_axis(module)
        if weight.shape[axis] == count:
            return
        shape = list(weight.shape)
        shape[axis] = count
        new_weight = torch.empty(shape, dtype=weight.dtype)
        nn.init.kaiming_uniform_(new_weight, a=math.sqrt(5))
        module.weight = nn.Parameter(new_weight)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            fan_in = new_weight.shape[1] * new_weight[0, 0].numel()  # PyTorch's rule for (transposed) convs
            bound = 1.0 / math.sqrt(max(fan_in, 1))
            module.bias = nn.Parameter(torch.empty(count, dtype=bias.dtype).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.output == "softmax":
            out = torch.log(out.float().clamp_min(1e-12))
        return out
