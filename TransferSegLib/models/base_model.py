"""What a user picks first: a base model, and how a model folder becomes one.

A base model is a network spec, pretrained weights and everything needed to feed
it the same way it was trained (label names, recipe, patch size). Whatever its
source (shipped default, catalog download, MONAI bundle, a previous fine-tune,
an installed package), fine-tuning sees this one dataclass; ``resolve.py`` turns
a ``--base`` name or path into one.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import ModelError
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.folder_swap import recover_folder
from TransferSegLib.paths import resources_dir
from TransferSegLib.specs import KeyMap, NetworkSpec
from TransferSegLib.network_allowlist import network_class

SCRATCH_NAMES = ("none", "scratch")
DEFAULT_NAME = "default"


def default_model_dir() -> Path:
    return resources_dir() / "Models" / "default"


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
    weights = path / "model.pt"
    card = ModelCard.load(path, trusted=trusted)
    if not weights.is_file():
        raise ModelError(
            f"'{path}' is not a complete TransferSeg model folder: it has model.json but no model.pt. "
            f"Point --base/--model at the folder 'transferseg finetune' wrote."
        )
    # The card's spelling passed the allow-list when it was read; the class itself is checked
    # before the weights are touched (a function or a fetching MONAI class is refused here).
    network_class(card.network.target, card.network.args, str(path / "model.json"), trusted)
    return BaseModel(
        name=card.name, network=card.network, labels=list(card.labels), recipe=card.recipe,
        patch_size=card.patch_size, modality=card.modality, license=card.license,
        non_commercial=card.non_commercial, weights=weights, key_map=KeyMap(wrapper_keys=[], strip_prefixes=[]),
        source="model-dir", card=card.to_dict(), encoder_only=card.encoder_only,
    )
