"""nnU-Net v2 checkpoints: read safely, turned into a base model, a network, or a fold ensemble.

``checkpoint_final.pth`` is nnU-Net's ``torch.save`` of a dict: the weights under
``network_weights``, beside training state whose logs hold numpy scalars. It is
read with ``torch.load(weights_only=True)``, admitting exactly the numpy objects
nnU-Net writes (``numpy_globals``: the scalar constructor and dtypes, under numpy
2's and numpy 1's names); anything else in the pickle is refused. nnU-Net itself
loads these files with ``weights_only=False``; TransferSeg never does.
"""

import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from TransferSegLib.errors import ModelError
from TransferSegLib.models.base_model import BaseModel, KeyMap
from TransferSegLib.models.nnunet import guess_modality, network_spec, nnunet_recipe, read_nnunet_folder
from TransferSegLib.training.networks import build_network
from TransferSegLib.training.nnunet_network import from_nnunet_keys


def numpy_globals() -> List[Any]:
    """The numpy objects nnU-Net's checkpoints pickle (numpy 2 names, and numpy 1's for older files)."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: List[Any] = [scalar, np.dtype, (scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in ("Float32DType", "Float64DType", "Int64DType") if hasattr(dtypes, n)]
    return allowed


def read_nnunet_checkpoint(path: Path) -> Dict[str, Any]:
    """nnU-Net's checkpoint dict, read with ``weights_only=True``."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(numpy_globals()):
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"Refusing to load '{path}': besides weights it holds Python objects that are not the numpy "
                         f"values nnU-Net writes ({exc}). TransferSeg only loads weights (weights_only=True).") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the nnU-Net checkpoint '{path}': {exc}. The file may be truncated.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("network_weights"), dict):
        raise ModelError(f"'{path}' is not an nnU-Net v2 checkpoint (no 'network_weights').")
    return data


def nnunet_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """The checkpoint's weights keyed like ``NnunetNetwork.state_dict()``."""
    return from_nnunet_keys(read_nnunet_checkpoint(path)["network_weights"])


def nnunet_base_model(path: Path, folds: Optional[Sequence[str]] = None, name: str = "",
                      license_text: str = "", non_commercial: bool = False,
                      labels: Optional[Sequence[str]] = None) -> BaseModel:
    """An nnU-Net folder (or fold folder) as a base model; its weights are the first selected fold's.

    ``labels`` renames the classes (TotalSegmentator's class table), one name per output channel."""
    folder = read_nnunet_folder(path, folds)
    checkpoint = read_nnunet_checkpoint(folder.checkpoint(folder.folds[0]))
    recipe = nnunet_recipe(folder, checkpoint.get("inference_allowed_mirroring_axes"))
    own = folder.labels
    if labels and len(labels) != len(own):
        raise ModelError(f"'{path}' predicts {len(own)} classes but {len(labels)} names were given for them.")
    labels = list(labels) if labels else own
    assert recipe.nnunet is not None
    return BaseModel(
        name=name or folder.name, network=network_spec(recipe.nnunet, len(labels)), labels=labels, recipe=recipe,
        patch_size=recipe.nnunet.patch_size, modality=guess_modality(recipe.nnunet.channel_names),
        license=license_text or folder.license, non_commercial=non_commercial,
        weights=folder.checkpoint(folder.folds[0]),
        key_map=KeyMap(wrapper_keys=["network_weights"], strip_prefixes=[], add_prefix="network."),
        source="nnunet", card={"nnunet": folder.describe(), "cleanup": _no_cleanup(labels)},
    )


def _no_cleanup(labels: Sequence[str]) -> Dict[str, Any]:
    """nnUNetv2_predict applies no postprocessing (``nnUNetv2_apply_postprocessing`` is a separate, optional
    step whose decisions live in a pickle, not read here): predicting the folder as it is keeps every component."""
    return {"largest_component": {name: {"keep_largest": False, "decided_by": "nnU-Net (no postprocessing)"}
                                  for name in labels[1:]}}


class NnunetEnsemble(nn.Module):
    """Several folds of one nnU-Net model: the mean of their logits (what ``nnUNetv2_predict`` averages)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.members[0](x)
        for member in self.members[1:]:
            total = total + member(x)
        return total / len(self.members)


def load_nnunet_model(path: Path, folds: Optional[Sequence[str]] = None,
                      device: str = "cpu") -> Tuple[nn.Module, BaseModel]:
    """The network of an nnU-Net folder with its weights (several folds: an ensemble), ready to predict."""
    info = nnunet_base_model(path, folds)
    folder = read_nnunet_folder(path, folds)
    members = []
    for fold in folder.folds:
        network = build_network(info.network)
        try:
            network.load_state_dict(nnunet_state_dict(folder.checkpoint(fold)), strict=True)
        except RuntimeError as exc:
            raise ModelError(f"The weights in '{folder.checkpoint(fold)}' do not fit the network its plans.json "
                             f"describes: {exc}") from exc
        members.append(network)
    model: nn.Module = members[0] if len(members) == 1 else NnunetEnsemble(members)
    model.to(device)
    model.eval()
    info.card["nnunet"]["ensembled_folds"] = list(folder.folds)
    return model, info
