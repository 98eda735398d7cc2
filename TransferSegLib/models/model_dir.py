"""The fine-tuned model folder: ``model.json`` + ``model.pt``, written atomically.

A user's previous model is their work: a new one is written to a temporary
sibling folder and only swapped in once complete, so a crash or a cancel never
leaves a half-written model where a good one was.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Tuple, Union

import torch
from torch import nn

from TransferSegLib.errors import ModelError
from TransferSegLib.model_card import CARD_FILE, ModelCard
from TransferSegLib.models.base_model import DEFAULT_NAME, SCRATCH_NAMES, BaseModel, load_model_dir
from TransferSegLib.models.catalog import find_model
from TransferSegLib.models.checkpoints import load_state_dict
from TransferSegLib.models.resolve import resolve_base_model
from TransferSegLib.training.networks import build_network


def save_model_dir(output: Path, state_dict: Dict[str, torch.Tensor], card: ModelCard) -> Path:
    """Write a model folder at ``output``, replacing an existing one only when complete."""
    output = Path(output).expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() and not (output / CARD_FILE).is_file() and any(output.iterdir()):
        raise ModelError(
            f"'{output}' exists and is not a TransferSeg model folder: refusing to replace it. "
            f"Choose another --output."
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=str(output.parent)))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model folder is meant to be shared
    try:
        torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, tmp / "model.pt")
        card.save(tmp)
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


def base_weights(base: BaseModel) -> Dict[str, torch.Tensor]:
    """A base model's weights as a state_dict of ``build_network(base.network)`` (weights only)."""
    if base.weights is None:
        raise ModelError(f"Base model '{base.name}' has no weights file; download it first "
                         f"('transferseg models download {base.name}').")
    if base.source in ("model-dir", "shipped"):
        return torch.load(base.weights, map_location="cpu", weights_only=True)
    state, _report = load_state_dict(Path(base.weights), base.key_map, build_network(base.network))
    return state


def load_model(model: Union[str, Path], device: str = "cpu") -> Tuple[nn.Module, BaseModel]:
    """Build a model's network and load its weights (weights only).

    ``model`` is a model folder, or the name of a base model ('default', a catalog
    or registered name, a MONAI bundle): predicting with the base itself.
    """
    path = Path(model).expanduser()
    if (path / "model.json").is_file() or path.is_dir() and not (path / "configs").is_dir():
        info = load_model_dir(path)
        state = torch.load(info.weights, map_location="cpu", weights_only=True)
    else:

        key = str(model).strip()
        if key.lower() not in SCRATCH_NAMES + (DEFAULT_NAME,) and not path.exists():
            entry = find_model(key)  # before any download: a backbone cannot predict
            if entry.encoder_only or len(entry.labels) < 2:
                raise ModelError(f"The base model '{entry.name}' has no segmentation head (an encoder or backbone): "
                                 f"fine-tune it on your classes first ('transferseg finetune --base {key}').")
        resolved = resolve_base_model(key)
        if resolved is None:
            raise ModelError(f"'{model}' means training from scratch: it has no weights to predict with. Give a "
                             f"model folder ('transferseg finetune' writes one) or a base model name.")
        if resolved.encoder_only or len(resolved.labels) < 2:
            raise ModelError(f"The base model '{resolved.name}' has no segmentation head (an encoder or backbone): "
                             f"fine-tune it on your classes first ('transferseg finetune --base {model}').")
        info, state = resolved, base_weights(resolved)
    network = build_network(info.network)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"The weights in '{info.weights}' do not fit the network of '{info.name}': {exc}") from exc
    network.to(device)
    network.eval()
    return network, info
