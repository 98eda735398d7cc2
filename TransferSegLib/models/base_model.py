"""What a user picks first: a base model, resolved from a name or a path.

A base model is a network spec, pretrained weights and everything needed to feed
it the same way it was trained (label names, recipe, patch size). Whatever its
source (shipped default, catalog download, MONAI bundle, a previous fine-tune,
an installed package), fine-tuning sees this one dataclass.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from TransferSegLib.errors import ModelError
from TransferSegLib.models.nnunet import is_nnunet_folder
from TransferSegLib.training.networks import NetworkSpec
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.models.folder_swap import recover_folder
from TransferSegLib.paths import resources_dir

SCRATCH_NAMES = ("none", "scratch")
DEFAULT_NAME = "default"


def default_model_dir() -> Path:
    return resources_dir() / "Models" / "default"


@dataclass
class KeyMap:
    """How a published checkpoint's keys become the network's state_dict keys."""

    wrapper_keys: List[str] = field(default_factory=lambda: ["state_dict", "model", "network_weights", "net"])
    strip_prefixes: List[str] = field(default_factory=lambda: ["module.", "model.", "backbone."])
    add_prefix: str = ""
    rename: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "wrapper_keys": list(self.wrapper_keys),
            "strip_prefixes": list(self.strip_prefixes),
            "add_prefix": self.add_prefix,
            "rename": dict(self.rename),
        }

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> "KeyMap":
        data = dict(data or {})
        unknown = set(data) - {"wrapper_keys", "strip_prefixes", "add_prefix", "rename"}
        if unknown:
            raise ModelError(f"Unknown key_map fields {sorted(unknown)}.")
        result = cls()
        for key, value in data.items():
            setattr(result, key, value)
        return result


@dataclass
class BaseModel:
    """A pretrained network and how to feed it."""

    name: str
    network: NetworkSpec
    labels: List[str]
    recipe: Recipe
    patch_size: Tuple[int, int, int]
    modality: str = "CT"
    license: str = ""
    non_commercial: bool = False
    weights: Optional[Path] = None
    key_map: KeyMap = field(default_factory=KeyMap)
    source: str = "catalog"
    card: Dict[str, Any] = field(default_factory=dict)
    encoder_only: bool = False


def load_model_dir(path: Path, trusted: bool = False) -> BaseModel:
    """A fine-tuned model folder (``model.json`` + ``model.pt``) as a base model.

    ``trusted`` only for the folder shipped with TransferSeg: any other folder is
    data from whoever made it, and its network must pass the allow-list as such.
    """
    path = Path(path)
    try:
        recover_folder(path)  # a save that died mid-swap left the previous model aside: put it back
    except OSError:
        pass  # a read-only place (the shipped model) has nothing to repair
    meta_path = path / "model.json"
    weights = path / "model.pt"
    if not meta_path.is_file() or not weights.is_file():
        raise ModelError(
            f"'{path}' is not a TransferSeg model folder: it needs model.json and model.pt. "
            f"Point --base/--model at the folder 'transferseg finetune' wrote."
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read '{meta_path}': {exc}") from exc
    if meta.get("format") != "transferseg-model":
        raise ModelError(f"'{meta_path}' is not a TransferSeg model description (format={meta.get('format')!r}).")
    try:
        return BaseModel(
            name=str(meta.get("name") or path.name),
            network=NetworkSpec.from_dict(meta["network"], origin=str(meta_path), trusted=trusted),
            labels=list(meta["labels"]),
            recipe=Recipe.from_dict(meta["recipe"]),
            patch_size=tuple(int(v) for v in meta["patch_size"]),  # type: ignore[arg-type]
            modality=str(meta.get("modality", "CT")),
            license=str(meta.get("license", "")),
            non_commercial=bool(meta.get("non_commercial", False)),
            weights=weights,
            key_map=KeyMap(wrapper_keys=[], strip_prefixes=[]),
            source="model-dir",
            card=meta,
            encoder_only=bool(meta.get("encoder_only", False)),
        )
    except KeyError as exc:
        raise ModelError(f"'{meta_path}' lacks the field {exc}; the model folder is incomplete.") from exc


def resolve_base_model(
    name_or_path: str, offline: bool = False, cache_root: Optional[Path] = None, progress=None
) -> Optional[BaseModel]:
    """Resolve ``--base``: None means train from scratch with the default network."""
    key = str(name_or_path).strip()
    if key.lower() in SCRATCH_NAMES:
        return None
    if key.lower() == DEFAULT_NAME:
        folder = default_model_dir()
        if not (folder / "model.json").is_file():
            raise ModelError(
                f"The shipped default base model is missing from '{folder}'. Reinstall TransferSeg, "
                f"or pick another base model ('transferseg models list') or --base none."
            )
        model = load_model_dir(folder, trusted=True)
        model.source = "shipped"
        return model
    path = Path(key).expanduser()
    if path.exists():
        if path.is_dir() and (path / "model.json").is_file():
            return load_model_dir(path)
        if path.is_dir() and is_nnunet_folder(path):
            from TransferSegLib.models.nnunet_weights import nnunet_base_model

            return nnunet_base_model(path)
        if path.is_dir() and (path / "configs").is_dir() or path.suffix == ".zip":
            from TransferSegLib.models.bundle import import_bundle

            return import_bundle(path)
        raise ModelError(
            f"'{path}' is neither a TransferSeg model folder (model.json + model.pt), an nnU-Net v2 trained model "
            f"folder (plans.json + dataset.json + fold_X/) nor a MONAI bundle (configs/ + models/). To use a bare checkpoint, register it first with "
            f"'transferseg models add --name NAME --checkpoint FILE --spec SPEC.json'."
        )
    try:
        from TransferSegLib.models.catalog import resolve_catalog_model
    except ImportError:
        raise ModelError(
            f"Unknown base model '{key}': it is not 'default', 'none', a model folder or a MONAI bundle."
        ) from None
    return resolve_catalog_model(key, offline=offline, cache_root=cache_root, progress=progress)
