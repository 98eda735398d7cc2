"""``model.json``: the card of a model folder, as one typed dataclass every reader and writer uses.

The card says what network the weights belong to, which classes its output
channels are (background first), how images must be fed to it (the recipe), what
it was trained from and how well it did. The fine-tuning and pretraining code
write it, the base-model resolver, the predictor and the Slicer panel read it; all
go through ``ModelCard.load`` / ``ModelCard.save`` so that one set of checks
decides what a usable card is. Importing this module needs no torch, SimpleITK or
numpy: the panel lists model folders before the heavy dependencies are installed.
"""

import datetime
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from TransferSegLib import __version__
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import ModelError
from TransferSegLib.names import BACKGROUND, normalize_label_name
from TransferSegLib.paths import write_text_atomically
from TransferSegLib.specs import NetworkSpec

MODEL_FORMAT = "transferseg-model"
MODEL_VERSION = 1
CARD_FILE = "model.json"
_REQUIRED = ("network", "labels", "recipe", "patch_size")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ModelCard:
    """What ``model.json`` holds.

    ``labels`` name the output channels, background first. An ``encoder_only`` card
    (self-supervised pretraining) has no trained head: its labels are just
    background, and fine-tuning re-learns the head. ``metrics`` and ``training`` are
    reports (validation Dice, iterations, history), kept as written. ``extra`` holds
    fields a newer TransferSeg wrote, so that reading and saving a card loses nothing.
    """

    name: str
    network: NetworkSpec
    labels: List[str]
    recipe: Recipe
    patch_size: Tuple[int, int, int]
    input_channels: List[str] = field(default_factory=list)  # channel names, in the network's input order
    modality: str = "CT"
    license: str = ""
    non_commercial: bool = False
    base_model: str = "none"
    strategy: str = ""
    strategy_choice: Dict[str, Any] = field(default_factory=dict)  # what was asked for ("auto") and why this ran
    best_strategy: Optional[Dict[str, Any]] = None  # the best strategy an experiment found for this model's classes
    cleanup: Dict[str, Any] = field(default_factory=dict)  # post-processing decided on validation (inference.cleanup)
    encoder_only: bool = False
    metrics: Dict[str, Any] = field(default_factory=dict)
    training: Dict[str, Any] = field(default_factory=dict)
    format: str = MODEL_FORMAT
    version: int = MODEL_VERSION
    transferseg: str = __version__
    created: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = [str(n) for n in self.labels]
        if self.encoder_only and not self.labels:
            self.labels = [BACKGROUND]
        if not self.labels or normalize_label_name(self.labels[0]) != BACKGROUND:
            raise ModelError(f"Model '{self.name}': the label list {self.labels} does not start with "
                             f"'{BACKGROUND}'; the model card is damaged.")
        patch = tuple(int(v) for v in self.patch_size)
        if len(patch) != 3 or min(patch) < 1:
            raise ModelError(f"Model '{self.name}': patch_size must be three positive integers, got {self.patch_size!r}.")
        self.patch_size = patch  # type: ignore[assignment]
        self.input_channels = [str(n) for n in self.input_channels]

    @property
    def classes(self) -> List[str]:
        """The foreground classes (the labels without background)."""
        return self.labels[1:]

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"format": self.format, "version": self.version, "transferseg": self.transferseg,
                                "created": self.created}
        for f in fields(self):
            if f.name not in data and f.name != "extra":
                data[f.name] = getattr(self, f.name)
        data["network"] = self.network.to_dict()
        data["recipe"] = self.recipe.to_dict()
        data["patch_size"] = list(self.patch_size)
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "model.json", default_name: str = "",
                  trusted: bool = False) -> "ModelCard":
        """Check and type a card; ``where`` names the file in every error. ``trusted`` only for the
        shipped model (``network_allowlist``): never read from the card itself."""
        if not isinstance(data, dict):
            raise ModelError(f"'{where}' must hold a JSON object, got {type(data).__name__}.")
        if data.get("format") != MODEL_FORMAT:
            raise ModelError(f"'{where}' is not a TransferSeg model description (format={data.get('format')!r}).")
        version = data.get("version", MODEL_VERSION)
        if not isinstance(version, int) or version > MODEL_VERSION:
            raise ModelError(f"'{where}' has card version {version!r}; this TransferSeg reads up to version "
                             f"{MODEL_VERSION}. Update TransferSeg to use this model.")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ModelError(f"'{where}' lacks the fields {missing}; the model folder is incomplete.")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["name"] = str(data.get("name") or default_name or "model")
        values["extra"] = {k: v for k, v in data.items() if k not in known}
        try:
            values["network"] = NetworkSpec.from_dict(data["network"], origin=where, trusted=trusted)
            values["recipe"] = Recipe.from_dict(data["recipe"])
            return cls(**values)
        except ModelError as exc:
            raise (exc if where in str(exc) else ModelError(f"'{where}': {exc}")) from None
        except (TypeError, ValueError) as exc:
            raise ModelError(f"'{where}' is malformed: {exc}") from exc

    @classmethod
    def load(cls, folder: Union[str, Path], trusted: bool = False) -> "ModelCard":
        """The card of the model folder ``folder``; a missing or damaged card is a ModelError naming it."""
        path = Path(folder) / CARD_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"'{folder}' is not a TransferSeg model folder: it has no {CARD_FILE}. Point "
                             f"--base/--model at the folder 'transferseg finetune' wrote.") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"Cannot read '{path}': {exc}") from exc
        return cls.from_dict(data, where=str(path), default_name=Path(folder).name, trusted=trusted)

    def save(self, folder: Union[str, Path]) -> Path:
        """Write ``folder/model.json`` atomically (stamping ``created`` if unset); returns its path."""
        if not self.created:
            self.created = _now()
        path = Path(folder) / CARD_FILE
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

