"""The fine-tuned model folder: ``model.json`` + ``model.pt``, written atomically.

A user's previous model is their work: a new one is written to a temporary
sibling folder and only swapped in once complete (``paths.replace_folder``), so a
crash or a cancel never leaves a half-written model where a good one was, and a
death in the middle of the swap is repaired by the next save or load.
"""

import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from TransferSegLib.errors import ModelError
from TransferSegLib.model_card import CARD_FILE, ModelCard
from TransferSegLib.models.base_model import DEFAULT_NAME, SCRATCH_NAMES, BaseModel, load_model_dir
from TransferSegLib.models.catalog import find_model
from TransferSegLib.models.checkpoints import load_state_dict, read_checkpoint
from TransferSegLib.models.folder_swap import recover_folder, replace_folder, staging_folder
from TransferSegLib.models.nnunet import is_nnunet_folder
from TransferSegLib.models.nnunet_weights import load_nnunet_model, nnunet_state_dict
from TransferSegLib.models.resolve import resolve_base_model
from TransferSegLib.paths import write_atomically
from TransferSegLib.training.networks import build_network


def save_model_dir(output: Path, state_dict: Dict[str, torch.Tensor], card: ModelCard) -> Path:
    """Write a model folder at ``output``, replacing an existing one only when complete."""
    output = Path(output).expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(output)
    if output.exists() and not (output / CARD_FILE).is_file() and any(output.iterdir()):
        raise ModelError(
            f"'{output}' exists and is not a TransferSeg model folder: refusing to replace it. "
            f"Choose another --output."
        )
    tmp = staging_folder(output)
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        write_atomically(tmp / "model.pt", lambda temporary: torch.save(weights, str(temporary)))
        card.save(tmp)
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
