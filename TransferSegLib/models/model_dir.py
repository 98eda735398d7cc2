"""The fine-tuned model folder: ``model.json`` + ``model.pt``, written atomically.

A user's previous model is their work: a new one is written to a temporary
sibling folder and only swapped in once complete, so a crash or a cancel never
leaves a half-written model where a good one was.
"""

import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

from TransferSegLib import __version__
from TransferSegLib.models.base_model import BaseModel, load_model_dir
from TransferSegLib.errors import ModelError
from TransferSegLib.training.networks import build_network

MODEL_FORMAT = "transferseg-model"
MODEL_VERSION = 1


def save_model_dir(output: Path, state_dict: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    """Write a model folder at ``output``, replacing an existing one only when complete."""
    output = Path(output).expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() and not (output / "model.json").is_file() and any(output.iterdir()):
        raise ModelError(
            f"'{output}' exists and is not a TransferSeg model folder: refusing to replace it. "
            f"Choose another --output."
        )
    record = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "transferseg": __version__}
    record["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record.update(meta)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=str(output.parent)))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model folder is meant to be shared
    try:
        torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, tmp / "model.pt")
        (tmp / "model.json").write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        backup = None
        if output.exists():
            backup = output.with_name(f".{output.name}.previous")
            if backup.exists():
                shutil.rmtree(backup)
            os.replace(output, backup)
        os.replace(tmp, output)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def load_model(model_dir: Path, device: str = "cpu") -> Tuple[nn.Module, BaseModel]:
    """Build the network of a model folder and load its weights (weights only)."""
    info = load_model_dir(Path(model_dir))
    model = build_network(info.network)
    state = torch.load(info.weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"The weights in '{info.weights}' do not fit the network in model.json: {exc}") from exc
    model.to(device)
    model.eval()
    return model, info
