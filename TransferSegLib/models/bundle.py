"""MONAI bundles in and out: a bundle as a base model, a fine-tuned model as a bundle.

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
import datetime
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from TransferSegLib.models.base_model import BaseModel, KeyMap, load_model_dir
from TransferSegLib.errors import ModelError
from TransferSegLib.inference.cleanup import cleanup_classes, recorded_decisions
from TransferSegLib.training.networks import NetworkSpec
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.data.steps import IntensityStep, describe
from TransferSegLib.models.bundle_steps import (INTENSITY_TRANSFORMS, padding_value, steps_of_transform,
                                                transforms_of_step)
from TransferSegLib.paths import write_atomically

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
        from TransferSegLib.models.archive import safe_extract
        from TransferSegLib.models.download import cache_dir, file_checksum

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
    return NetworkSpec.from_dict(data, origin=str(where)), notes


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
    return BaseModel(
        name=str(metadata.get("name") or root.name).strip().replace(" ", "_"),
        network=network, labels=labels, recipe=recipe, patch_size=_patch_size(config, metadata, config_path),
        modality=str(image_format.get("modality", "CT")), license=license_name, non_commercial=non_commercial,
        weights=weights, key_map=KeyMap(wrapper_keys=["model", "state_dict"], strip_prefixes=["module."]),
        source="bundle", card=card, encoder_only=False,
    )


# ---------------------------------------------------------------------------
# Export


def _preprocessing(recipe: Recipe) -> List[Dict[str, Any]]:
    transforms: List[Dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if recipe.reorients:
        transforms.append({"_target_": "Orientationd", "keys": "image", "axcodes": recipe.orientation})
    if recipe.spacing is not None:
        transforms.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(recipe.spacing), "mode": "bilinear"})
    if recipe.crop_foreground and recipe.crop_select != "above":
        raise ModelError(f"Cannot export the recipe's '{recipe.crop_select}' foreground crop as a MONAI transform.")
    if recipe.crop_foreground and recipe.crop_margin_fraction:
        raise ModelError("Cannot export a foreground crop with a margin fraction as a MONAI transform.")
    if recipe.crop_foreground:
        spacing = recipe.spacing or (1.0, 1.0, 1.0)
        margin = [int(-(-recipe.crop_margin_mm // s)) for s in spacing]
        transforms.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                           "select_fn": f"$lambda x: x > {recipe.crop_threshold!r}", "margin": margin,
                           "allow_smaller": True})
    if recipe.resize is not None:
        transforms.append({"_target_": "Resized", "keys": "image", "spatial_size": list(recipe.resize),
                           "mode": "trilinear" if recipe.resize_mode == "linear" else "nearest-exact"})
    for step in recipe.intensity:
        transforms.extend(transforms_of_step(step))
    return transforms


def _cleanup_transforms(info: BaseModel) -> List[Dict[str, Any]]:
    """The model's per-class largest-component clean-up as MONAI's own transform, so the bundle
    predicts what ``transferseg predict`` does (face connectivity, removed voxels become background)."""
    classes = cleanup_classes(info.labels, recorded_decisions(info.card, f"model '{info.name}'"))
    if not classes:
        return []
    return [{"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": classes,
             "is_onehot": False, "independent": True, "connectivity": 1}]


def inference_config(info: BaseModel, overlap: float = 0.5) -> Dict[str, Any]:
    """``configs/inference.json`` for a model: MONAI transforms only, runnable with
    ``python -m monai.bundle run --config_file configs/inference.json --image IMAGE``."""
    # Sliding-window padding value: what the image's minimum maps to (TransferSeg pads with the image minimum).
    cval = padding_value(info.recipe)
    return {
        "imports": ["$import torch", "$import numpy"],
        "bundle_root": ".",
        "image": "",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": info.network.to_dict(),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(info.recipe)},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(info.patch_size), "sw_batch_size": 2,
                    "overlap": overlap, "mode": "gaussian", "padding_mode": "constant", "cval": cval},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            *_cleanup_transforms(info),
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "resample": False,
             "separate_folder": False, "print_log": False},
        ]},
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "load_weights": "$@network.load_state_dict(torch.load(@checkpoint, map_location=@device, weights_only=True))",
        "sample": "$@preprocessing({'image': @image})",
        "predict": "$@postprocessing(dict(@sample, pred=@inferer(@sample['image'][None].to(@device), @network)[0]))",
        "initialize": ["$torch.set_grad_enabled(False)"],
        "run": ["$@load_weights", "$@network.eval()", "$@predict"],
    }


def _versions() -> Dict[str, str]:
    import monai
    import numpy
    import torch

    return {"monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
            "numpy_version": numpy.__version__}


def metadata(info: BaseModel, meta: Dict[str, Any]) -> Dict[str, Any]:
    """``configs/metadata.json``: MONAI's metadata fields, labels as ``channel_def``."""
    classes = [n for n in info.labels[1:]]
    channel_def = {str(i): name for i, name in enumerate(info.labels)}
    created = str(meta.get("created") or datetime.date.today().isoformat())
    data = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported from TransferSeg ({created})"},
        **_versions(),
        # MONAI's KeepLargestConnectedComponentd (the clean-up) needs scikit-image on the CPU.
        **({"optional_packages_version": {"scikit-image": "0.19"}} if _cleanup_transforms(info) else {}),
        "required_packages_version": {"nibabel": _nibabel_version()},
        "name": info.name,
        "task": f"{info.modality} segmentation of {', '.join(classes) or 'no classes'}",
        "description": f"Fine-tuned by TransferSeg from the base model '{meta.get('base_model', 'unknown')}' "
                       f"with the '{meta.get('strategy', 'unknown')}' strategy.",
        "authors": "TransferSeg user",
        "copyright": "",
        "data_source": "the user's own annotated cases",
        "data_type": "nibabel",
        "image_classes": f"single channel {info.modality} image",
        "label_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(info.labels)),
        "pred_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(info.labels)),
        "eval_metrics": dict(meta.get("metrics") or {}),
        "intended_use": "Research only; not for clinical decisions.",
        "references": ["TransferSeg: fine-tuning pretrained 3D segmentation networks on a few annotated cases."],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield" if info.modality.upper() == "CT" else "magnitude",
                "modality": info.modality, "num_channels": 1, "spatial_shape": list(info.patch_size),
                "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": len(info.labels),
                "spatial_shape": list(info.patch_size), "dtype": "float32", "value_range": [0, 1],
                "is_patch_data": True, "channel_def": channel_def}},
        },
    }
    return data


def _nibabel_version() -> str:
    try:
        import nibabel

        return str(nibabel.__version__)
    except ImportError:
        return "required"


def _readme(info: BaseModel, meta: Dict[str, Any]) -> str:
    recipe = info.recipe
    lines = [
        f"# {info.name}", "",
        f"A {info.modality} segmentation model fine-tuned with TransferSeg from the base model "
        f"'{meta.get('base_model', 'unknown')}' (strategy '{meta.get('strategy', 'unknown')}').", "",
        "## Labels", "", *[f"- {i}: {name}" for i, name in enumerate(info.labels)], "",
        "## Preprocessing", "",
        f"- orientation {recipe.orientation}; spacing {list(recipe.spacing) if recipe.spacing else 'unchanged'} mm",
        f"- intensity: {describe(recipe.intensity)}",
        f"- sliding window {list(info.patch_size)}, gaussian blending, overlap 0.5; softmax, argmax, back to the "
        f"input grid", "",
        "## Run", "",
        "Needs monai, nibabel and fire (`pip install monai nibabel fire`).", "",
        "```", "python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\",
        "    --image /path/to/image.nii.gz --output_dir ./eval", "```", "",
    ]
    if info.network.target.startswith("TransferSegLib."):
        lines += ["The network is a TransferSeg class: install TransferSeg (and the package its network comes "
                  "from) in the Python that runs this bundle.", ""]
    if info.non_commercial:
        lines += ["**The base model's license forbids commercial use; so does this derived model's.**", ""]
    if meta.get("metrics"):
        lines += ["## Validation", "", "```", json.dumps(meta["metrics"], indent=2), "```", ""]
    lines += ["Research use only; not a medical device."]
    return "\n".join(lines) + "\n"


def _license_text(info: BaseModel, meta: Dict[str, Any]) -> str:
    base = meta.get("base_model", "unknown")
    text = (f"This model was fine-tuned from the base model '{base}'"
            f"{' (license: ' + info.license + ')' if info.license else ''}.\n"
            "Its weights are a derivative of the base model's weights and carry the base model's license terms.\n")
    if info.non_commercial:
        text += "The base model's license is non-commercial: commercial use of this model is not permitted.\n"
    return text


def export_bundle(model_dir: Path, out: Path) -> Path:
    """Write a fine-tuned model folder as a MONAI bundle folder at ``out`` (or a zip
    when ``out`` ends in ``.zip``); nothing is left at ``out`` unless complete."""
    info = load_model_dir(Path(model_dir))
    meta = dict(info.card)
    out = Path(out).expanduser().resolve()
    if out.exists():
        raise ModelError(f"'{out}' already exists; choose another output path or remove it first.")
    as_zip = out.suffix == ".zip"
    name = out.stem if as_zip else out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=str(out.parent)))
    try:
        root = temp / name
        for sub in ("configs", "models", "docs"):
            (root / sub).mkdir(parents=True)
        (root / "configs" / "metadata.json").write_text(json.dumps(metadata(info, meta), indent=4) + "\n",
                                                        encoding="utf-8")
        (root / "configs" / "inference.json").write_text(json.dumps(inference_config(info), indent=4) + "\n",
                                                         encoding="utf-8")
        shutil.copyfile(info.weights, root / "models" / "model.pt")
        (root / "docs" / "README.md").write_text(_readme(info, meta), encoding="utf-8")
        (root / "LICENSE").write_text(_license_text(info, meta), encoding="utf-8")
        if as_zip:
            def pack(archive: Path) -> None:
                with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                    for file in sorted(root.rglob("*")):
                        if file.is_file():
                            zf.write(file, file.relative_to(temp).as_posix())
            write_atomically(out, pack)
        else:
            os.chmod(root, 0o755)
            os.replace(root, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out
