"""MONAI bundles in: a bundle (folder or zip) as a base model (``bundle_export`` writes them).

A bundle (``configs/metadata.json`` + ``configs/inference.json`` + ``models/model.pt``)
is the MONAI ecosystem's model format, so it is how TransferSeg takes models from
the model zoo and how it hands fine-tuned ones to MONAI Label, Auto3DSeg or
``python -m monai.bundle run``.

Import reads the configuration as data: a downloaded bundle is untrusted, and its
``$`` expressions are Python that MONAI would ``eval``. Only ``@`` references and
``$`` literals are resolved; anything else is refused with a message naming the
field. Export writes a configuration made of standard MONAI transforms that
reproduce TransferSeg's own preprocessing, sliding window and inverse.
"""

import ast
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from TransferSegLib.data.recipe import Recipe
from TransferSegLib.data.steps import IntensityStep
from TransferSegLib.errors import ModelError
from TransferSegLib.models.archive import safe_extract
from TransferSegLib.models.base_model import BaseModel
from TransferSegLib.models.bundle_steps import INTENSITY_TRANSFORMS, steps_of_transform
from TransferSegLib.models.download import cache_dir, file_checksum
from TransferSegLib.specs import KeyMap, NetworkSpec
from TransferSegLib.network_allowlist import network_class

#: Arguments that older MONAI networks took and current ones refuse; they carry no weights.
_REMOVED_ARGS = {"SwinUNETR": ("img_size",)}


class _Unresolvable(Exception):
    pass


# ---------------------------------------------------------------------------
# Import


def bundle_root(path: Path, cache_root: Optional[Path] = None) -> Path:
    """The folder holding ``configs/`` of a bundle folder or zip (zips are extracted safely, once)."""
    path = Path(path).expanduser()
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ModelError(f"'{path}' is neither a MONAI bundle folder nor a zip file.")
        target = cache_dir(cache_root) / "bundles" / f"{path.stem}-{file_checksum(path)[:12]}"
        if not target.is_dir():
            safe_extract(path, target)
        path = target
    if (path / "configs").is_dir():
        return path
    inner = [p.parent.parent for p in path.glob("*/configs/metadata.json")]
    if len(inner) == 1:
        return inner[0]
    raise ModelError(f"'{path}' is not a MONAI bundle: it has no configs/metadata.json.")


def _read_config(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ModelError(f"'{path}' is YAML and PyYAML is not installed: 'pip install pyyaml'.") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the bundle file '{path}': {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"The bundle file '{path}' must hold a JSON/YAML object.")
    return data


def _lookup(config: Dict[str, Any], ref: str) -> Any:
    node: Any = config
    for part in ref.split("#"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _Unresolvable(f"@{ref}")
    return node


def _resolve(value: Any, config: Dict[str, Any], depth: int = 0) -> Any:
    """``@`` references and ``$`` literals resolved; other expressions raise ``_Unresolvable``."""
    if depth > 20:
        raise _Unresolvable("a reference cycle")
    if isinstance(value, str):
        if value.startswith("@"):
            return _resolve(_lookup(config, value[1:]), config, depth + 1)
        if value.startswith("%"):
            raise _Unresolvable(value)
        if value.startswith("$"):
            try:
                return ast.literal_eval(value[1:].strip())
            except (ValueError, SyntaxError):
                raise _Unresolvable(value) from None
        return value
    if isinstance(value, dict):
        return {k: _resolve(v, config, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, config, depth + 1) for v in value]
    return value


def _resolved(config: Dict[str, Any], value: Any, what: str, where: Path) -> Any:
    try:
        return _resolve(value, config)
    except _Unresolvable as exc:
        raise ModelError(
            f"The {what} in '{where}' uses the expression {exc}, which TransferSeg does not evaluate (a bundle's "
            f"Python expressions are not run on import). Edit the bundle's inference config to give literal values."
        ) from None


def _network_spec(config: Dict[str, Any], where: Path) -> Tuple[NetworkSpec, List[str]]:
    if "network_def" not in config:
        raise ModelError(f"'{where}' has no 'network_def': TransferSeg cannot tell which network the bundle holds.")
    data = _resolved(config, config["network_def"], "network_def", where)
    if not isinstance(data, dict) or "_target_" not in data:
        raise ModelError(f"The network_def in '{where}' is not a '_target_' + arguments object.")
    target = str(data["_target_"])
    if target.startswith("TransferSegLib."):
        raise ModelError(f"The bundle '{where}' names the TransferSeg class '{target}': such networks (TorchScript "
                         f"files) are only run from installed packages or models you register yourself.")
    notes = []
    for arg in _REMOVED_ARGS.get(target.rsplit(".", 1)[-1], ()):
        if arg in data:
            data = {k: v for k, v in data.items() if k != arg}
            notes.append(f"dropped the network argument '{arg}', which current MONAI no longer takes")
    spec = NetworkSpec.from_dict(data, origin=str(where))
    network_class(spec.target, spec.args, str(where))  # the class itself, before the weights are looked at
    return spec, notes


def _shallow(config: Dict[str, Any], value: Any, what: str, where: Path) -> Any:
    """Follow ``@`` references at the top of ``value`` only (its other fields are read one by one)."""
    for _ in range(20):
        if not (isinstance(value, str) and value[:1] in "@$%"):
            return value
        value = _resolved(config, value, what, where) if value[:1] != "@" else _lookup_or_fail(config, value, where)
    return value


def _lookup_or_fail(config: Dict[str, Any], ref: str, where: Path) -> Any:
    try:
        return _lookup(config, ref[1:])
    except _Unresolvable:
        raise ModelError(f"'{where}' refers to '{ref}', which it does not define.") from None


def _transform_list(config: Dict[str, Any], where: Path) -> List[Dict[str, Any]]:
    pre = _shallow(config, config.get("preprocessing"), "preprocessing", where)
    items = _shallow(config, pre.get("transforms", []) if isinstance(pre, dict) else pre, "preprocessing", where)
    items = items if isinstance(items, list) else []
    items = [_shallow(config, t, "preprocessing", where) for t in items]
    return [t for t in items if isinstance(t, dict)]


def _recipe(config: Dict[str, Any], where: Path) -> Tuple[Recipe, List[str]]:
    """The recipe a bundle's preprocessing amounts to, and what could not be carried over."""
    orientation, spacing, notes = None, None, []
    steps: List[IntensityStep] = []
    crop: Dict[str, Any] = {"crop_foreground": False}  # the publisher's recipe, nothing added
    for transform in _transform_list(config, where):
        kind = str(transform.get("_target_", "")).rsplit(".", 1)[-1]

        def field(name: str, default: Any = None) -> Any:
            return _resolved(config, transform.get(name, default), f"{kind} argument '{name}'", where)

        if kind in ("Orientationd", "Orientation"):
            orientation = str(field("axcodes", "RAS"))
        elif kind in ("Spacingd", "Spacing"):
            pixdim = field("pixdim")
            spacing = [float(pixdim)] * 3 if isinstance(pixdim, (int, float)) else [float(v) for v in pixdim][:3]
        elif kind in INTENSITY_TRANSFORMS:
            steps.extend(steps_of_transform(kind, field, notes))
        elif kind in ("CropForegroundd", "CropForeground"):
            crop = _crop(transform.get("select_fn"), field("margin", 0), spacing, kind, notes)
        elif kind not in ("LoadImaged", "EnsureChannelFirstd", "EnsureTyped", "EnsureType", "ToTensord",
                          "CastToTyped", "Identityd", "AddChanneld"):
            notes.append(f"the bundle's {kind} has no counterpart in TransferSeg's recipe")
    return Recipe(orientation=orientation or "stored", spacing=spacing, intensity=steps, **crop), notes


def _crop(select_fn: Any, margin: Any, spacing: Optional[List[float]], kind: str, notes: List[str]) -> Dict[str, Any]:
    """A ``CropForegroundd`` as a recipe crop, read from its text (never evaluated).

    Only the ``$lambda x: x > T`` form TransferSeg exports is understood; MONAI's
    default (``x > 0``) when there is none. Margins in voxels become millimetres.
    """
    if select_fn is None:
        threshold = 0.0
    else:
        match = re.fullmatch(r"\$\s*lambda\s+(\w+)\s*:\s*\1\s*>\s*(-?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*", str(select_fn))
        if match is None:
            notes.append(f"the bundle's {kind} selects with '{select_fn}', which TransferSeg cannot read; not cropped")
            return {"crop_foreground": False}
        threshold = float(match.group(2))
    voxels = float(max(margin)) if isinstance(margin, (list, tuple)) and margin else float(margin or 0)
    return {"crop_foreground": True, "crop_threshold": threshold,
            "crop_margin_mm": voxels * (min(spacing) if spacing else 1.0)}


def _patch_size(config: Dict[str, Any], metadata: Dict[str, Any], where: Path) -> Tuple[int, int, int]:
    inferer = _shallow(config, config.get("inferer", {}), "inferer", where)
    roi = _resolved(config, inferer.get("roi_size"), "inferer roi_size", where) if isinstance(inferer, dict) else None
    if roi is None:
        roi = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {}).get("spatial_shape")
    if isinstance(roi, int):
        roi = [roi] * 3
    try:
        patch = tuple(int(v) for v in roi)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ModelError(f"Cannot tell the patch size of the bundle '{where}': its SlidingWindowInferer has no "
                         f"literal roi_size.") from None
    if len(patch) != 3:
        raise ModelError(f"The bundle '{where}' has a {len(patch)}D roi_size; TransferSeg handles 3D networks only.")
    return patch  # type: ignore[return-value]


def _labels(metadata: Dict[str, Any]) -> List[str]:
    pred = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    channels = pred.get("channel_def") or {}
    try:
        return [str(channels[k]) for k in sorted(channels, key=lambda k: int(k))]
    except ValueError:
        return []


def _license(root: Path) -> Tuple[str, bool]:
    path = root / "LICENSE"
    text = path.read_text(encoding="utf-8", errors="replace")[:4000] if path.is_file() else ""
    lowered = text.lower()
    non_commercial = "noncommercial" in lowered or "non-commercial" in lowered
    if "apache license" in lowered:
        return "Apache-2.0", non_commercial
    if "mit license" in lowered:
        return "MIT", non_commercial
    return ("see LICENSE in the bundle" if text else "unknown: the bundle has no LICENSE"), non_commercial


def import_bundle(path: Path, cache_root: Optional[Path] = None) -> BaseModel:
    """A MONAI bundle (folder or zip) as a base model: labels from ``channel_def``,
    network from ``network_def``, recipe from the preprocessing transforms, patch
    size from the inferer's ``roi_size``, weights from ``models/model.pt``."""
    root = bundle_root(Path(path), cache_root)
    metadata = _read_config(root / "configs" / "metadata.json") if (root / "configs" / "metadata.json").is_file() else {}
    config_path = next((root / "configs" / n for n in ("inference.json", "inference.yaml", "inference.yml")
                        if (root / "configs" / n).is_file()), None)
    if config_path is None:
        raise ModelError(f"The bundle '{root}' has no configs/inference.json: TransferSeg needs it to know the "
                         f"network and its preprocessing.")
    config = _read_config(config_path)
    weights = root / "models" / "model.pt"
    if not weights.is_file():
        hint = (" It lists its weights in large_files.yml: fetch them with 'python -m monai.bundle download' or "
                "download models/model.pt by hand." if (root / "large_files.yml").is_file() else "")
        only_ts = " It only has models/model.ts (TorchScript), which TransferSeg does not load as weights." \
            if (root / "models" / "model.ts").is_file() else ""
        raise ModelError(f"The bundle '{root}' has no models/model.pt.{only_ts}{hint}")
    network, net_notes = _network_spec(config, config_path)
    recipe, recipe_notes = _recipe(config, config_path)
    labels = _labels(metadata)
    notes = net_notes + recipe_notes
    if labels and labels[0].lower() != "background":
        notes.append("the outputs have no background channel (independent sigmoid outputs); the head is not reused")
    image_format = metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
    license_name, non_commercial = _license(root)
    card = dict(metadata)
    card.update(bundle_root=str(root), import_notes=notes)
    channel_def = image_format.get("channel_def") or {}
    if int(image_format.get("num_channels") or 1) > 1 and channel_def and "input_channels" not in card:
        # the channels' names, in the network's order, so that cases are matched to them by name
        card["input_channels"] = [str(channel_def[k]) for k in sorted(channel_def, key=lambda k: int(k))]
    return BaseModel(
        name=str(metadata.get("name") or root.name).strip().replace(" ", "_"),
        network=network, labels=labels, recipe=recipe, patch_size=_patch_size(config, metadata, config_path),
        modality=str(image_format.get("modality", "CT")), license=license_name, non_commercial=non_commercial,
        weights=weights, key_map=KeyMap(wrapper_keys=["model", "state_dict"], strip_prefixes=["module."]),
        source="bundle", card=card, encoder_only=False,
    )
