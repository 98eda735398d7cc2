"""The panel's base-model list: what can be picked, and whether it is ready.

Rows come from the shipped default model, the model catalog (downloadable and
user-added models) and the user's own fine-tuned models, so that "fine-tune
again" and "predict" can start from any earlier round. Reading them needs no
torch: only JSON files are opened, so the list shows before dependencies exist.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from TransferSegLib.errors import ModelError, TransferSegError
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models import catalog
from TransferSegLib.names import BACKGROUND, normalize_label_name
from TransferSegLib.scene.channels import channel_labels


@dataclass
class ModelRow:
    """One line of the model table. ``name`` is what ``--base`` / the job spec takes."""

    name: str
    title: str = ""
    modality: str = ""
    labels: List[str] = field(default_factory=list)  # background first
    license: str = ""
    non_commercial: bool = False
    cached: bool = True  # False: must be downloaded first
    source: str = ""
    input_channels: List[str] = field(default_factory=list)  # the model's channel names (may be unnamed: empty)
    channel_count: int = 1  # input channels the network reads

    @property
    def channel_labels(self) -> List[str]:
        """What the panel labels each channel's volume selector with (empty for a one-channel model)."""
        return channel_labels(self.input_channels, self.channel_count) if self.channel_count > 1 else []

    @property
    def classes(self) -> List[str]:
        return [n for n in self.labels if normalize_label_name(n) != BACKGROUND]


def _card(folder: Path) -> dict:
    """The folder's card as a dict; empty when it is damaged (the row still shows, by folder name)."""
    try:
        return ModelCard.load(folder).to_dict()
    except ModelError:
        return {}


def channel_fields(names, network) -> dict:
    """``input_channels`` and ``channel_count`` of a row from a card's or a catalog entry's fields."""
    names = [str(n) for n in (names or [])]
    args = network.get("args", network) if isinstance(network, dict) else getattr(network, "args", {})
    try:
        count = max(1, int(args.get("in_channels", len(names) or 1)))
    except (TypeError, ValueError):
        count = max(1, len(names))
    return {"input_channels": names if len(names) == count else [], "channel_count": count}


def model_folder_row(folder: Path, name: str, source: str) -> ModelRow:
    card = _card(folder)
    return ModelRow(name=name, title=str(card.get("name") or folder.name), modality=str(card.get("modality", "")),
                    labels=list(card.get("labels") or []), license=str(card.get("license", "")),
                    non_commercial=bool(card.get("non_commercial", False)), cached=True, source=source,
                    **channel_fields(card.get("input_channels"), card.get("network") or {}))


def _catalog_rows() -> List[ModelRow]:
    """Catalog models; none (with a log line) when the catalog cannot be read, so the rest still shows."""
    try:
        entries = catalog.list_models()
    except TransferSegError as exc:
        logging.warning(f"TransferSeg: the model catalog is not available ({exc}); showing local models only.")
        return []
    return [ModelRow(name=entry.name, title=entry.title or entry.name, modality=entry.modality,
                     labels=list(entry.labels), license=entry.license, non_commercial=entry.non_commercial,
                     cached=entry.cached(), source=entry.source,
                     **channel_fields(entry.card.get("input_channels"), entry.network)) for entry in entries]


def model_rows(resources: Path, work_root: Path) -> List[ModelRow]:
    """Shipped default first, then the catalog, then the user's fine-tuned models (newest first)."""
    rows: List[ModelRow] = []
    default = resources / "Models" / "default"
    if (default / "model.json").is_file():
        rows.append(model_folder_row(default, "default", "shipped"))
    seen = {r.name for r in rows}
    rows += [r for r in _catalog_rows() if r.name not in seen]
    models = work_root / "models"
    if models.is_dir():
        mine = [f for f in models.iterdir() if (f / "model.json").is_file()]
        for folder in sorted(mine, key=lambda f: f.stat().st_mtime, reverse=True):
            rows.append(model_folder_row(folder, str(folder), "fine-tuned"))
    rows.append(ModelRow(name="none", title="none (train from scratch)", labels=[BACKGROUND], source="scratch"))
    return rows


def model_channels(name: str, resources: Path) -> Tuple[List[str], Optional[int]]:
    """(channel names, channel count) of a base or fine-tuned model, from JSON only (no torch).

    ``name`` is what the panel passes as a base or a model to predict with: ``default``,
    ``none`` (any count: a network built for the cases), a model folder or a catalog
    name. A one-channel model gives ``([], 1)``; a count of None means any (or not known here).
    """
    text = str(name or "").strip()
    if text.lower() in ("none", "scratch"):
        return [], None
    folder = resources / "Models" / "default" if text == "default" else Path(text).expanduser()
    if (folder / "model.json").is_file():
        row = model_folder_row(folder, text, "")
    else:
        row = next((r for r in _catalog_rows() if r.name.lower() == text.lower()), None)
        if row is None:  # a bundle path or an unknown name: the worker checks its channels
            return [], None
    return list(row.input_channels), row.channel_count
