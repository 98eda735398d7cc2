"""The fine-tuned model folder: ``model.json`` + ``model.pt``, written atomically.

A user's previous model is their work: a new one is written to a temporary
sibling folder and only swapped in once complete (``paths.replace_folder``), so a
crash or a cancel never leaves a half-written model where a good one was, and a
death in the middle of the swap is repaired by the next save or load.
"""

import datetime
import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from TransferSegLib import __version__
from TransferSegLib.models.base_model import BaseModel, load_model_dir
from TransferSegLib.models.checkpoints import read_checkpoint
from TransferSegLib.errors import ModelError
from TransferSegLib.models.folder_swap import recover_folder, replace_folder, staging_folder
from TransferSegLib.paths import write_atomically, write_text_atomically
from TransferSegLib.models.nnunet import is_nnunet_folder
from TransferSegLib.models.nnunet_weights import load_nnunet_model, nnunet_state_dict
from TransferSegLib.training.networks import build_network

MODEL_FORMAT = "transferseg-model"
MODEL_VERSION = 1


def save_model_dir(output: Path, state_dict: Dict[str, torch.Tensor], meta: Dict[str, Any]) -> Path:
    """Write a model folder at ``output``, replacing an existing one only when complete."""
    output = Path(output).expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(output)
    if output.exists() and not (output / "model.json").is_file() and any(output.iterdir()):
        raise ModelError(
            f"'{output}' exists and is not a TransferSeg model folder: refusing to replace it. "
            f"Choose another --output."
        )
    record = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "transferseg": __version__}
    record["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record.update(meta)
    tmp = staging_folder(output)
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        write_atomically(tmp / "model.pt", lambda temporary: torch.save(weights, str(temporary)))
        write_text_atomically(tmp / "model.json", json.dumps(record, indent=2, sort_keys=False) + "\n")
        replace_folder(tmp, output)
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
        return read_checkpoint(base.weights)
    if base.source == "nnunet":
        return nnunet_state_dict(Path(base.weights))
    from TransferSegLib.models.checkpoints import load_state_dict

    state, _report = load_state_dict(Path(base.weights), base.key_map, build_network(base.network))
    return state


def load_model(model: Union[str, Path], device: str = "cpu",
               folds: Optional[Sequence[str]] = None) -> Tuple[nn.Module, BaseModel]:
    """Build a model's network and load its weights (weights only).

    ``model`` is a model folder, or the name of a base model ('default', a catalog
    or registered name, a MONAI bundle): predicting with the base itself. An nnU-Net
    v2 trained model folder works too: ``folds`` picks its folds (default every fold
    present), ensembled as ``nnUNetv2_predict`` does.
    """
    path = Path(model).expanduser()
    if is_nnunet_folder(path):
        return load_nnunet_model(path, folds, device)
    if folds:
        raise ModelError(f"--fold applies to nnU-Net model folders; '{model}' is not one.")
    if (path / "model.json").is_file() or path.is_dir() and not (path / "configs").is_dir():
        info = load_model_dir(path)
        state = read_checkpoint(info.weights)
    else:
        from TransferSegLib.models.base_model import DEFAULT_NAME, SCRATCH_NAMES, resolve_base_model

        key = str(model).strip()
        if key.lower() not in SCRATCH_NAMES + (DEFAULT_NAME,) and not path.exists():
            from TransferSegLib.models.catalog import find_model

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
