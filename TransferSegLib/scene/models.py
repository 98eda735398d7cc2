"""The panel's base-model list: what can be picked, and whether it is ready.

Rows come from the shipped default model, the model catalog (downloadable and
user-added models) and the user's own fine-tuned models, so that "fine-tune
again" and "predict" can start from any earlier round. Reading them needs no
torch: only JSON files are opened, so the list shows before dependencies exist.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from TransferSegLib.errors import ModelError, TransferSegError
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models import catalog
from TransferSegLib.names import BACKGROUND, normalize_label_name


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

    @property
    def classes(self) -> List[str]:
        return [n for n in self.labels if normalize_label_name(n) != BACKGROUND]


def _card(folder: Path) -> dict:
    """The folder's card as a dict; empty when it is damaged (the row still shows, by folder name)."""
    try:
        return ModelCard.load(folder).to_dict()
    except ModelError:
        return {}


def model_folder_row(folder: Path, name: str, source: str) -> ModelRow:
    card = _card(folder)
    return ModelRow(name=name, title=str(card.get("name") or folder.name), modality=str(card.get("modality", "")),
                    labels=list(card.get("labels") or []), license=str(card.get("license", "")),
                    non_commercial=bool(card.get("non_commercial", False)), cached=True, source=source)


def _catalog_rows() -> List[ModelRow]:
    """Catalog models; none (with a log line) when the catalog cannot be read, so the rest still shows."""
    try:
        entries = catalog.list_models()
    except TransferSegError as exc:
        logging.warning(f"TransferSeg: the model catalog is not available ({exc}); showing local models only.")
        return []
    return [ModelRow(name=entry.name, title=entry.title or entry.name, modality=entry.modality,
                     labels=list(entry.labels), license=entry.license, non_commercial=entry.non_commercial,
                     cached=entry.cached(), source=entry.source) for entry in entries]


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
