"""nnU-Net v2 trained model folders as base models and as models to predict with.

A trained nnU-Net v2 model is a folder ``<Trainer>__<Plans>__<configuration>/``
holding ``plans.json``, ``dataset.json`` and one ``fold_X/checkpoint_final.pth``
per trained fold (X = 0..4 or ``all``). Everything TransferSeg needs is there:
the network (plans' ``architecture``, built by ``training.nnunet_network``), the
preprocessing (the plans themselves, applied by ``data.nnunet_preprocess``), the
classes (``dataset.json`` ``labels``) and the weights.

Folds: ``folds=None`` takes every fold present. Predicting ensembles them as
``nnUNetv2_predict`` does (the mean of their logits); fine-tuning starts from the
first one (point ``--base`` at ``.../fold_X`` to choose). This module reads only
JSON (listings need no torch); ``models.nnunet_weights`` reads the checkpoints.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from TransferSegLib.data.nnunet_recipe import NnunetRecipe
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import ModelError
from TransferSegLib.specs import NetworkSpec

NETWORK_TARGET = "TransferSegLib.training.nnunet_network.NnunetNetwork"
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
_FOLD = re.compile(r"^fold_(all|\d+)$")


@dataclass
class NnunetFolder:
    """A trained nnU-Net v2 model folder, read (JSON only; no weights loaded)."""

    path: Path
    plans: Dict[str, Any]
    dataset: Dict[str, Any]
    configuration: str
    trainer: str
    folds: List[str]
    checkpoint_name: str

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    def checkpoint(self, fold: str) -> Path:
        return self.path / f"fold_{fold}" / self.checkpoint_name

    @property
    def labels(self) -> List[str]:
        return label_names(self.dataset, self.path / "dataset.json")

    @property
    def license(self) -> str:
        return str(self.dataset.get("licence") or self.dataset.get("license") or "")

    def describe(self) -> Dict[str, Any]:
        """What the model card records about the nnU-Net origin of a model."""
        return {"folder": str(self.path), "folds": list(self.folds), "trainer": self.trainer,
                "plans": str(self.plans.get("plans_name", "")), "configuration": self.configuration,
                "checkpoint": self.checkpoint_name,
                "dataset": str(self.plans.get("dataset_name", self.path.parent.name))}


def is_nnunet_folder(path: Path) -> bool:
    """A model folder (plans.json + dataset.json + fold_*) or one of its fold folders."""
    path = Path(path)
    if _FOLD.match(path.name) and path.parent.is_dir():
        path = path.parent
    return (path / "plans.json").is_file() and (path / "dataset.json").is_file() and any(
        p.is_dir() and _FOLD.match(p.name) for p in path.iterdir())


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read '{path}': {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"'{path}' is not a JSON object.")
    return data


def label_names(dataset: Dict[str, Any], where: Path) -> List[str]:
    """Class names by value (background 0 first); region-based models are refused."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelError(f"'{where}' has no 'labels' (name → value).")
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise ModelError(f"The nnU-Net model of '{where}' is region-based (a label's value is a list of classes, "
                         f"e.g. BraTS's overlapping regions): TransferSeg predicts one class per voxel and does not "
                         f"support region-based nnU-Net models.")
    by_value = {}
    for name, value in labels.items():
        if str(name).lower() == "ignore":
            continue  # nnU-Net's ignore label has no output channel
        by_value[int(value)] = str(name)
    if sorted(by_value) != list(range(len(by_value))) or 0 not in by_value:
        raise ModelError(f"The labels of '{where}' must have the values 0..N-1 with background 0, got "
                         f"{sorted(by_value)}.")
    return [by_value[v] for v in range(len(by_value))]


def read_nnunet_folder(path: Path, folds: Optional[Sequence[str]] = None) -> NnunetFolder:
    """Read a trained nnU-Net v2 model folder (or one fold folder of it)."""
    path = Path(path).expanduser().resolve()
    if _FOLD.match(path.name) and folds is None:
        folds = [path.name[len("fold_"):]]
        path = path.parent
    if not is_nnunet_folder(path):
        raise ModelError(f"'{path}' is not an nnU-Net v2 trained model folder: it needs plans.json, dataset.json "
                         f"and fold_X/checkpoint_final.pth (the folder <Trainer>__<Plans>__<configuration> that "
                         f"nnUNetv2_train writes).")
    plans = _read_json(path / "plans.json")
    dataset = _read_json(path / "dataset.json")
    parts = path.name.split("__")
    trainer = parts[0] if len(parts) == 3 else "nnUNetTrainer"
    configuration = parts[2] if len(parts) == 3 else ""
    configs = plans.get("configurations", {})
    if configuration not in configs:
        if len(configs) != 1:
            raise ModelError(f"Cannot tell which configuration of '{path / 'plans.json'}' the model in '{path}' uses: "
                             f"the folder name should be <Trainer>__<Plans>__<configuration>.")
        configuration = next(iter(configs))
    present = sorted((p.name[len("fold_"):] for p in path.iterdir() if p.is_dir() and _FOLD.match(p.name)),
                     key=lambda f: (f == "all", int(f) if f.isdigit() else 0))
    wanted = [str(f) for f in folds] if folds else present
    checkpoint_name = next((c for c in CHECKPOINTS if all((path / f"fold_{f}" / c).is_file() for f in wanted)), "")
    missing = [f for f in wanted if f not in present]
    if missing or not checkpoint_name:
        raise ModelError(f"The nnU-Net model '{path}' has no checkpoint for fold(s) {missing or wanted} "
                         f"(folds with a checkpoint: {', '.join(present) or 'none'}).")
    return NnunetFolder(path, plans, dataset, configuration, trainer, wanted, checkpoint_name)


def nnunet_recipe(folder: NnunetFolder, mirror_axes: Optional[Sequence[int]] = None) -> Recipe:
    """TransferSeg's recipe for the folder: nnU-Net's own preprocessing from its plans."""
    channels = folder.dataset.get("channel_names") or folder.dataset.get("modality") or {"0": "CT"}
    nn_recipe = NnunetRecipe(plans=folder.plans, configuration=folder.configuration,
                             channel_names={str(k): str(v) for k, v in channels.items()},
                             file_ending=str(folder.dataset.get("file_ending", ".nii.gz")),
                             mirror_axes=list(mirror_axes) if mirror_axes is not None else None)
    return Recipe.for_nnunet(nn_recipe)


def network_spec(recipe: NnunetRecipe, num_classes: int) -> NetworkSpec:
    architecture = recipe.config["architecture"]
    return NetworkSpec(NETWORK_TARGET, {
        "in_channels": recipe.num_channels,
        "out_channels": int(num_classes),
        "network_class_name": str(architecture["network_class_name"]),
        "arch_kwargs": dict(architecture["arch_kwargs"]),
        "kw_requires_import": list(architecture.get("_kw_requires_import", [])),
    })


def guess_modality(channels: Dict[str, str]) -> str:
    """CT, MR or the channel names: what the model card shows as its modality."""
    names = [str(v).strip().lower() for v in channels.values()]
    if names and all(n in ("ct", "ct image") for n in names):
        return "CT"
    if names and all(any(m in n for m in ("mr", "t1", "t2", "flair", "adc", "dwi")) for n in names):
        return "MR"
    return "+".join(str(v) for v in channels.values())[:16] or "CT"


def catalog_fields(path: Path, labels: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """What a catalog entry says about an nnU-Net folder (read from its JSON files only)."""
    folder = read_nnunet_folder(path)
    recipe = nnunet_recipe(folder)
    assert recipe.nnunet is not None
    names = list(labels) if labels else folder.labels
    return {"network": network_spec(recipe.nnunet, len(names)), "labels": names, "recipe": recipe,
            "patch_size": recipe.nnunet.patch_size, "modality": guess_modality(recipe.nnunet.channel_names),
            "title": folder.name, "license": folder.license, "card": {"nnunet": folder.describe()}}
