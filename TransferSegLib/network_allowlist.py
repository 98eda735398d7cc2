"""Which network classes a spec may name: the allow-list between a JSON file and running code.

A network spec (``_target_`` + arguments) is read from files that travel between
sites: a colleague's model folder, a downloaded MONAI bundle. Naming a dotted path
must never be a way to call an arbitrary function (a download helper that writes
to any path, the job launcher that runs a command). So a target is admitted only
when it resolves to

- a *class* subclassing ``torch.nn.Module`` whose ``__module__`` is one of MONAI's
  network modules (``monai.networks.nets`` and below): checked on the object,
  not on the spelling of the name, so a function or a class merely imported into
  such a module is refused; and it is built without fetching anything
  (``pretrained``-style arguments must be off: weights come from the model's own
  checkpoint, read with ``weights_only=True``);
- one of TransferSeg's own network classes (``PROJECT_NETWORKS``); those that load
  a network *file* named in their arguments only when the spec comes from a trusted
  source: the shipped catalog, a model the user registered with ``models add``,
  or a file of an installed package that the shipped catalog names. A
  ``model.json`` or a bundle saying so is never enough.

Everything else is a ``ModelError`` naming the file and the target.
"""

import importlib
import inspect
import json
import re
from typing import Any, Dict, Set, Tuple

from TransferSegLib.errors import ModelError
from TransferSegLib.paths import shipped_catalog_path

MONAI_NETWORKS = "monai.networks.nets"

#: TransferSeg's own network classes, each with whether it needs a trusted source:
#: True for one that runs a network file its arguments name (TorchScript), False
#: for one made of layers only, as safe to build from any file as a MONAI class.
PROJECT_NETWORKS = {
    "TransferSegLib.models.checkpoints.TorchScriptNetwork": True,
    "TransferSegLib.training.medicalnet.MedicalNetUNet": False,
    # nnU-Net's U-Nets from a plans file: layers only, their class names through nnunet_network's own allow-list
    "TransferSegLib.training.nnunet_network.NnunetNetwork": False,
}

#: Arguments of the file a project network loads; a model folder may name a file
#: only if the shipped catalog names the same one.
_FILE_ARGUMENTS = ("path", "package", "resource")

#: Constructor arguments with which a MONAI class downloads or reads weights by itself.
_FETCHING_ARGUMENT = re.compile(r"^pretrained|url$|repo_id|^filename$|^weights$")

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def full_target(target: str) -> str:
    """``UNet`` → ``monai.networks.nets.UNet``; dotted names unchanged."""
    target = str(target).strip()
    return target if "." in target else f"{MONAI_NETWORKS}.{target}"


def _refuse(where: str, target: str, why: str) -> ModelError:
    return ModelError(
        f"Refusing the network '{target}' named in '{where}': {why} TransferSeg builds only MONAI network classes "
        f"(monai.networks.nets) and its own network wrappers from trusted sources; a model file cannot name other "
        f"code. Get the model from its publisher, or ask whoever sent it which MONAI network it uses."
    )


def _import(target: str, where: str) -> Any:
    module_name, _, attribute = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"The network '{target}' named in '{where}' does not exist in the installed {_monai_version()}: {exc}. "
            f"Update MONAI or pick another model."
        ) from exc


def _monai_version() -> str:
    try:
        import monai

        return "monai " + monai.__version__
    except ImportError:  # pragma: no cover - monai is a hard dependency
        return "(no monai)"


def _is_monai_network(obj: Any) -> bool:
    from torch import nn

    module = str(getattr(obj, "__module__", ""))
    return (inspect.isclass(obj) and issubclass(obj, nn.Module)
            and (module == MONAI_NETWORKS or module.startswith(MONAI_NETWORKS + ".")))


def _check_no_fetch(cls: type, args: Dict[str, Any], target: str, where: str) -> None:
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - every MONAI network has a Python signature
        return
    for parameter in parameters:
        if not _FETCHING_ARGUMENT.search(parameter.name):
            continue
        value = args.get(parameter.name, parameter.default)
        if value is not inspect.Parameter.empty and value:
            raise _refuse(where, target, f"with '{parameter.name}' = {value!r} it would download or read weights "
                                         f"by itself (set it to false/null; the model's checkpoint holds the weights).")


def catalog_named_files() -> Set[Tuple[str, str, str]]:
    """(target, package, resource) of every project network the shipped catalog names."""
    try:
        data = json.loads(shipped_catalog_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    named = set()
    for entry in data.get("models", []) if isinstance(data, dict) else []:
        network = entry.get("network") if isinstance(entry, dict) else None
        if isinstance(network, dict) and PROJECT_NETWORKS.get(network.get("_target_")) and not network.get("path"):
            named.add((str(network["_target_"]), str(network.get("package") or ""), str(network.get("resource") or "")))
    return named


def _named_by_catalog(target: str, args: Dict[str, Any]) -> bool:
    if args.get("path"):
        return False
    key = (target, str(args.get("package") or ""), str(args.get("resource") or ""))
    return bool(key[1] and key[2]) and key in catalog_named_files()


def check_target(target: str, args: Dict[str, Any], where: str, trusted: bool = False) -> str:
    """The checks a spec's spelling allows, without importing anything (torch-free: ``specs.NetworkSpec``
    runs them as soon as a file is read); returns the full target. ``network_class`` adds the checks on the
    class itself before anything is built."""
    if not isinstance(target, str) or not target.strip():
        raise _refuse(where, repr(target), "the '_target_' is not a class name.")
    target = full_target(target)
    if not _DOTTED.match(target):
        raise _refuse(where, target, "it is not a dotted Python name.")
    if target in PROJECT_NETWORKS:
        if PROJECT_NETWORKS[target] and not (trusted or _named_by_catalog(target, args)):
            files = {k: args[k] for k in _FILE_ARGUMENTS if args.get(k)}
            raise _refuse(where, target, f"it runs the network file {files or 'named in its arguments'}, and only "
                                         f"the shipped catalog, an installed package the catalog names, or a model "
                                         f"you registered yourself ('transferseg models add') may name such a file.")
        return target
    if not target.startswith(MONAI_NETWORKS + "."):
        raise _refuse(where, target, "it is not in MONAI's network modules.")
    return target


def network_class(target: str, args: Dict[str, Any], where: str, trusted: bool = False) -> type:
    """The class a spec's ``_target_`` names, if the allow-list admits it; otherwise a ``ModelError``.

    ``where`` is the file the spec came from; ``trusted`` is True only for the
    shipped catalog and models the user registered (never read from the file).
    """
    from torch import nn

    target = check_target(target, args, where, trusted)
    if target in PROJECT_NETWORKS:
        cls = _import(target, where)
        if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):  # pragma: no cover - a wrong table entry
            raise _refuse(where, target, "it is not a network class.")
        return cls
    obj = _import(target, where)
    if not _is_monai_network(obj):
        kind = "a class" if inspect.isclass(obj) else type(obj).__name__
        raise _refuse(where, target, f"it is {kind} defined in '{getattr(obj, '__module__', '?')}', not a network "
                                     f"class (torch.nn.Module) defined in MONAI's network modules.")
    _check_no_fetch(obj, args, target, where)
    return obj
