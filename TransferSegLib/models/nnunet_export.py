"""A model fine-tuned from an nnU-Net base, written back as an nnU-Net v2 trained model folder.

A model fine-tuned from an nnU-Net base keeps nnU-Net's network (the plans'
architecture, only the class count changed) and nnU-Net's preprocessing (its
recipe *is* the plans), so nnU-Net can run it: ``export_nnunet`` writes

- ``plans.json``: the base's plans, reduced to the configuration the model uses;
- ``dataset.json``: the base's channels and file ending with the new ``labels``;
- ``fold_all/checkpoint_final.pth``: the weights under nnU-Net's keys
  (``network_weights``) with the entries nnU-Net's predictor reads
  (``trainer_name`` = the stock ``nnUNetTrainer``, ``init_args.configuration``,
  ``inference_allowed_mirroring_axes``);
- ``transferseg.json``: where the model came from (base, strategy, cases).

``nnUNetv2_predict_from_modelfolder -m OUT -f all`` (and SlicerNNUnet) then run it;
``bench/nnunet_agreement.py`` measures that it predicts what ``transferseg
predict`` does. Models of other architectures are refused: nnU-Net can only run
its own networks with its own preprocessing.
"""

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from TransferSegLib.errors import ModelError
from TransferSegLib.models.base_model import load_model_dir
from TransferSegLib.models.nnunet import NETWORK_TARGET
from TransferSegLib.training.nnunet_network import to_nnunet_keys

STOCK_TRAINER = "nnUNetTrainer"


def _plans_for(recipe_plans: Dict[str, Any], configuration: str) -> Dict[str, Any]:
    plans = copy.deepcopy(recipe_plans)
    plans["configurations"] = {configuration: plans["configurations"][configuration]}
    return plans


def export_nnunet(model_dir: Path, out_dir: Path) -> Path:
    """Write ``model_dir`` (fine-tuned from an nnU-Net base) as the nnU-Net v2 model folder ``out_dir``."""
    model_dir = Path(model_dir)
    info = load_model_dir(model_dir)
    nn_recipe = info.recipe.nnunet
    if nn_recipe is None or info.network.target != NETWORK_TARGET:
        raise ModelError(
            f"'{model_dir}' was not fine-tuned from an nnU-Net base (its network is {info.network.target}), so "
            f"nnU-Net cannot run it: nnU-Net runs only its own U-Nets with its own preprocessing. Export it as a "
            f"MONAI bundle instead ('transferseg models export-bundle'), or fine-tune from an nnU-Net model folder.")
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "plans.json").is_file():
        raise ModelError(f"'{out_dir}' exists and is not an nnU-Net model folder: refusing to replace it. "
                         f"Choose another output folder.")
    state = torch.load(str(info.weights), map_location="cpu", weights_only=True)
    weights = to_nnunet_keys(state)
    if not weights:
        raise ModelError(f"The weights in '{info.weights}' are not an nnU-Net network's.")
    plans = _plans_for(nn_recipe.plans, nn_recipe.configuration)
    training = info.card.get("training", {}) if info.card else {}
    dataset = {
        "channel_names": dict(nn_recipe.channel_names),
        "labels": {name: index for index, name in enumerate(info.labels)},
        "numTraining": len(training.get("cases", [])),
        "file_ending": nn_recipe.file_ending,
        "name": info.name,
        "description": f"Fine-tuned with TransferSeg from {info.card.get('base_model', '?')} "
                       f"(strategy {info.card.get('strategy', '?')}).",
        "licence": info.license,
    }
    checkpoint = {
        "network_weights": weights,
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": int(training.get("iterations", 0)),
        "init_args": {"plans": plans, "configuration": nn_recipe.configuration, "fold": "all",
                      "dataset_json": dataset, "device": "cpu"},
        "trainer_name": STOCK_TRAINER,
        "inference_allowed_mirroring_axes": tuple(nn_recipe.mirror_axes) if nn_recipe.mirror_axes is not None else None,
    }
    provenance = {"exported_by": "transferseg models export-nnunet", "model": str(model_dir.resolve()),
                  "base_model": info.card.get("base_model"), "strategy": info.card.get("strategy"),
                  "labels": info.labels, "training": {k: training.get(k) for k in ("iterations", "cases", "validation_cases")},
                  "metrics": info.card.get("metrics")}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=str(out_dir.parent)))
    os.chmod(tmp, 0o755)
    try:
        (tmp / "fold_all").mkdir()
        (tmp / "plans.json").write_text(json.dumps(plans, indent=4) + "\n", encoding="utf-8")
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=4) + "\n", encoding="utf-8")
        (tmp / "transferseg.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        torch.save(checkpoint, str(tmp / "fold_all" / "checkpoint_final.pth"))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
