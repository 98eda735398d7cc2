"""``transferseg models show``: a model's card as a person reads it (``--json`` keeps the raw form).

One card for every kind of model a user can name: the built-in names ``default``
(the shipped base model) and ``none`` (no pretrained weights), a model folder
(``model.json``, e.g. a previous fine-tune), and catalog or registered entries.
Only JSON is read: showing a card needs no torch and downloads nothing.
"""

import json
import textwrap
from pathlib import Path
from typing import Any, Dict, List

from TransferSegLib.errors import ModelError

_NONE_CARD = {
    "name": "none", "source": "built in",
    "description": "No pretrained weights: TransferSeg's default network (MONAI DynUNet) starts from random "
                   "weights. Use it with --strategy scratch, as the baseline a transfer has to beat.",
    "labels": [], "license": "Apache-2.0 (TransferSeg)",
}


def _default_dir() -> Path:
    from TransferSegLib.paths import resources_dir

    return resources_dir() / "Models" / "default"


def builtin_rows() -> List[List[str]]:
    """The 'default' and 'none' rows of ``models list`` (same columns as catalog rows)."""
    default = _model_folder_card(_default_dir(), "default") if (_default_dir() / "model.json").is_file() else {}
    labels = [n for n in default.get("labels", []) if str(n).lower() != "background"]
    license_text = default.get("license", "")
    rows = [["default", "shipped", str(default.get("modality", "CT")),
             "see its card" if license_text.startswith("see ") or not license_text else license_text,
             "installed" if default else "missing", short_classes(labels)],
            ["none", "built in", "any", _NONE_CARD["license"], "always", "none: random weights (--strategy scratch)"]]
    return rows


def short_classes(labels: List[str], shown: int = 4) -> str:
    """'28: spleen, kidney_right, kidney_left, gallbladder, ...': whole names only."""
    names = [n for n in labels if str(n).lower() != "background"]
    if not names:
        return "no head (encoder/backbone)"
    return f"{len(names)}: " + ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _model_folder_card(folder: Path, name: str) -> Dict[str, Any]:
    try:
        data = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the model card '{folder / 'model.json'}': {exc}") from exc
    data = dict(data, shown_as=name, path=str(folder))
    data.setdefault("source", "shipped" if name == "default" else "model folder")
    if not data.get("license") and (folder / "README.md").is_file():
        data["license"] = f"see {folder / 'README.md'}"
    return data


def card_data(name: str) -> Dict[str, Any]:
    """The raw card of ``name``: built-in name, model folder, or catalog/registered entry."""
    key = str(name).strip()
    if key.lower() in ("none", "scratch"):
        return dict(_NONE_CARD)
    if key.lower() == "default":
        folder = _default_dir()
        if not (folder / "model.json").is_file():
            raise ModelError(f"The shipped default base model is missing from '{folder}'. Reinstall TransferSeg.")
        return _model_folder_card(folder, "default")
    path = Path(key).expanduser()
    if (path / "model.json").is_file():
        return _model_folder_card(path, key)
    from TransferSegLib.models.catalog import find_model

    entry = find_model(key)
    data = entry.to_dict()
    data["status"] = entry.status()
    weights = entry.weights_file()
    data["weights_file"] = str(weights) if weights else None
    return data


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_compact(v)}" for k, v in value.items() if v not in (None, "", [], {}))
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) for v in value):
            return " x ".join(f"{v:g}" for v in value)
        return "; ".join(_compact(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _step_text(step: Dict[str, Any]) -> str:
    """One intensity step ('window -175..250 -> 0..1', 'zscore over nonzero'); old single objects too."""
    op = str(step.get("op") or step.get("kind") or "?")
    text = op
    if step.get("low") is not None and step.get("high") is not None and op in ("window", "clip", "percentile"):
        text += f" {step['low']:g}..{step['high']:g}"
    if step.get("over") not in (None, "all") or step.get("nonzero"):
        text += f" over {step.get('over') or 'nonzero'}"
    if step.get("out_min") is not None and step.get("out_max") is not None and op in ("window", "rescale", "percentile"):
        text += f" -> {step['out_min']:g}..{step['out_max']:g}"
    return text


def _recipe_text(recipe: Dict[str, Any]) -> str:
    parts = []
    if recipe.get("orientation"):
        parts.append(f"orientation {recipe['orientation']}")
    parts.append(f"spacing {_compact(recipe['spacing'])} mm" if recipe.get("spacing") else "spacing as stored")
    steps = recipe.get("intensity")
    steps = steps if isinstance(steps, list) else [steps] if isinstance(steps, dict) else []
    if steps:
        parts.append("intensity " + ", then ".join(_step_text(s) for s in steps if isinstance(s, dict)))
    if recipe.get("crop_foreground"):
        parts.append(f"crop to the foreground (> {recipe.get('crop_threshold', '?')}, margin "
                     f"{recipe.get('crop_margin_mm', '?')} mm)")
    if recipe.get("resize"):
        parts.append(f"resize to {_compact(recipe['resize'])} ({recipe.get('resize_mode', '')})")
    return "; ".join(parts)


def _training_lines(data: Dict[str, Any]) -> List[tuple]:
    lines = []
    training = data.get("training") or {}
    if data.get("base_model") or data.get("strategy"):
        what = f"from base '{data.get('base_model', '?')}' with strategy {data.get('strategy', '?')}"
        if training.get("iterations"):
            what += f", {training['iterations']} iterations ({training.get('elapsed_s', '?')} s)"
        if training.get("cases"):
            what += f" on {', '.join(training['cases'])}"
        lines.append(("training", what))
    metrics = data.get("metrics") or {}
    if isinstance(metrics.get("best_mean_dice"), (int, float)):
        where = " (measured on the training cases)" if metrics.get("validation_on_training_cases") else ""
        lines.append(("validation", f"best mean Dice {metrics['best_mean_dice']:.3f}{where}"))
    dice = metrics.get("validation_dice") or {}
    if dice:
        lines.append(("per class", ", ".join(f"{k} {v:.2f}" for k, v in dice.items() if isinstance(v, (int, float)))))
    best = data.get("best_strategy")
    if isinstance(best, dict) and best.get("strategy"):
        where = f"; inherited from '{best['inherited_from']}'" if best.get("inherited_from") else ""
        lines.append(("auto strategy", f"{best['strategy']} ({best.get('evidence') or 'recorded'}{where})"))
    kept = ((data.get("cleanup") or {}).get("largest_component") or {}) if isinstance(data.get("cleanup"), dict) else {}
    if kept:
        lines.append(("largest component", ", ".join(
            f"{name} {'kept' if d.get('keep_largest') else 'not kept'} ({d.get('decided_by', '?')})"
            for name, d in kept.items() if isinstance(d, dict))))
    for key in ("strategy_evidence", "evidence", "postprocessing"):
        if data.get(key):
            lines.append((key.replace("_", " "), _compact(data[key])))
    return lines


def format_card(data: Dict[str, Any], width: int = 100) -> str:
    """The card as aligned 'field  value' lines, long values wrapped at spaces."""
    title = data.get("shown_as") or data.get("name", "?")
    if data.get("shown_as") and data.get("name") and data["name"] != data["shown_as"]:
        title += f" ({data['name']})"
    rows: List[tuple] = []
    source = str(data.get("source", ""))
    if data.get("path"):
        source += f": {data['path']}"
    elif data.get("url"):
        source += f": {data['url']}"
    rows.append(("source", source))
    if data.get("status"):
        rows.append(("status", data["status"] + (f" ({data['weights_file']})" if data.get("weights_file") else "")))
    for key in ("title", "description"):
        if data.get(key):
            rows.append((key, str(data[key])))
    if data.get("modality"):
        rows.append(("modality", data["modality"]))
    labels = [n for n in data.get("labels", []) if str(n).lower() != "background"]
    rows.append(("classes", f"{len(labels)}: {', '.join(labels)}" if labels else "none (no segmentation head)"))
    rows.append(("license", (data.get("license") or "not stated") + (" (non-commercial)" if data.get("non_commercial") else "")))
    network = data.get("network") or {}
    if network:
        target = str(network.get("_target_", "?")).rsplit(".", 1)[-1]
        rows.append(("network", f"{target}, {network.get('in_channels', '?')} in / {network.get('out_channels', '?')} out channels"))
    if data.get("recipe"):
        rows.append(("recipe", _recipe_text(data["recipe"])))
        if data["recipe"].get("source"):
            rows.append(("recipe from", str(data["recipe"]["source"])))
    if data.get("patch_size"):
        rows.append(("patch", _compact(data["patch_size"]) + " voxels"))
    rows.extend(_training_lines(data))
    if data.get("reference"):
        rows.append(("reference", data["reference"]))
    label_width = max(len(k) for k, _ in rows)
    out = [title]
    for key, value in rows:
        wrapped = textwrap.wrap(str(value), max(30, width - label_width - 4), break_long_words=False,
                                break_on_hyphens=False) or [""]
        out.append(f"  {key:<{label_width}}  {wrapped[0]}")
        out.extend(f"  {'':<{label_width}}  {line}" for line in wrapped[1:])
    return "\n".join(out)
