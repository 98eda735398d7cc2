"""Registering a user's own base model: a local checkpoint with a spec, a MONAI bundle, 2D weights inflated to 3D.

The network is built and the weights loaded before anything is registered (so this
module needs torch), so a registered model is known to load. Registered models are
listed in the user's ``user_models.json`` next to the download cache (see
``catalog.py``), which survives upgrades of TransferSeg.
"""

import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from TransferSegLib.errors import ModelError
from TransferSegLib.models.bundle import import_bundle
from TransferSegLib.models.catalog import (
    CatalogEntry, nnunet_entry, read_catalog, read_user_models, valid_name, write_user_models,
)
from TransferSegLib.models.checkpoints import load_state_dict, map_keys, read_checkpoint, unwrap_state_dict
from TransferSegLib.models.download import cache_dir, file_checksum
from TransferSegLib.models.nnunet import is_nnunet_folder
from TransferSegLib.models.nnunet_weights import load_nnunet_model
from TransferSegLib.paths import shipped_catalog_path, write_atomically
from TransferSegLib.specs import KeyMap
from TransferSegLib.training.networks import build_network
from TransferSegLib.training.transfer import inflate_2d_to_3d


def add_user_model(path, name: Optional[str] = None, spec: Any = None, cache_root: Optional[Path] = None) -> str:
    """Register a local checkpoint (with a spec: a JSON file or dict) or a MONAI bundle under ``name``.

    The network is built and the weights loaded before anything is registered, so
    a registered model is known to load. Returns the name to pass as ``--base``.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise ModelError(f"'{path}' does not exist.")
    is_bundle = (path.is_dir() and (path / "configs").is_dir()) or path.suffix == ".zip"
    if is_nnunet_folder(path):
        load_nnunet_model(path)  # registered only if it loads
        entry = nnunet_entry(path, name or path.parent.name, description=f"nnU-Net v2 model folder {path}")
    elif is_bundle:
        base = import_bundle(path, cache_root=cache_root)
        name = name or base.name
        entry = CatalogEntry(name=valid_name(name), network=base.network, labels=list(base.labels),
                             recipe=base.recipe, patch_size=base.patch_size, title=str(base.card.get("name", name)),
                             modality=base.modality, license=base.license, non_commercial=base.non_commercial,
                             key_map=base.key_map, source="bundle", checkpoint=str(path), encoder_only=base.encoder_only)
    else:
        if path.is_dir():
            raise ModelError(f"'{path}' is a folder but not a MONAI bundle (no configs/): give a checkpoint file.")
        if spec is None:
            raise ModelError(f"Registering the checkpoint '{path}' needs a spec (--spec SPEC.json) describing its "
                             f"network, labels, recipe and patch size.")
        data = _read_spec(spec)
        data.update(name=valid_name(name or path.stem), source="user", checkpoint=str(path))
        data["sha256"] = "sha256:" + file_checksum(path)
        data["size_bytes"] = path.stat().st_size
        entry = CatalogEntry.from_dict(data, where=f"the spec for '{path.name}'", trusted=True)
        _check_loads(entry, path)
    if entry.name.lower() in {e.name.lower() for e in read_catalog(shipped_catalog_path())}:
        raise ModelError(f"'{entry.name}' is the name of a catalog model; choose another --name.")
    others = [e for e in read_user_models(cache_root) if e.name.lower() != entry.name.lower()]
    write_user_models(others + [entry], cache_root)
    return entry.name


def add_inflated_model(checkpoint_2d, spec: Any, name: str, depth_mode: str = "center",
                       cache_root: Optional[Path] = None) -> str:
    """Register a 3D network whose weights come from a 2D network (cross-dimensional transfer).

    ``spec`` describes the 3D network (``spatial_dims`` 3) of the same class and
    widths as the 2D one the checkpoint belongs to; its ``key_map`` reads the 2D
    file. Each 2D kernel becomes a 3D one (``center``: on the middle slice, so the
    3D network starts out acting slice by slice; ``average``: spread over depth).
    The inflated weights are written into the cache, then registered like any
    checkpoint, so ``--base NAME`` fine-tunes from them.
    """
    path = Path(checkpoint_2d).expanduser().resolve()
    data = _read_spec(spec)
    entry = CatalogEntry.from_dict(dict(data, name=valid_name(name), source="user"),
                                   where=f"the spec for the inflated '{name}'", trusted=True)
    if int(entry.network.args.get("spatial_dims", 3)) != 3:
        raise ModelError(f"The spec for '{name}' must describe the 3D network (spatial_dims 3); the 2D weights "
                         f"come from '{path.name}'.")
    model = build_network(entry.network)
    known = set(model.state_dict())
    state_2d = map_keys(unwrap_state_dict(read_checkpoint(path), entry.key_map, where=f"'{path}'"), entry.key_map,
                        known=known)
    missing = inflate_2d_to_3d(state_2d, model, depth_mode=depth_mode)
    if len(missing) == len(known):
        raise ModelError(f"None of the tensors in '{path}' match the 3D network of the spec (e.g. it expects "
                         f"'{sorted(known)[0]}', the file has '{sorted(state_2d)[0] if state_2d else 'nothing'}'). "
                         f"Use the same network class and widths, or give the spec a key_map.")
    out = cache_dir(cache_root) / "user" / f"{entry.name}-inflated-3d.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    write_atomically(out, lambda temporary: torch.save(state, str(temporary)))
    card = dict(data.get("card") or {}, inflated_from=str(path), depth_mode=depth_mode,
                tensors_without_2d_counterpart=missing)
    spec_3d = dict(data, key_map=KeyMap().to_dict(), card=card,
                   description=data.get("description") or f"3D network inflated from the 2D weights {path.name}")
    return add_user_model(out, name=entry.name, spec=spec_3d, cache_root=cache_root)


def remove_user_model(name: str, cache_root: Optional[Path] = None) -> None:
    entries = read_user_models(cache_root)
    kept = [e for e in entries if e.name.lower() != name.lower()]
    if len(kept) == len(entries):
        raise ModelError(f"'{name}' is not one of your registered models ('transferseg models list').")
    write_user_models(kept, cache_root)


def _read_spec(spec: Any) -> Dict[str, Any]:
    if isinstance(spec, dict):
        return dict(spec)
    try:
        data = json.loads(Path(spec).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the spec '{spec}': {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"The spec '{spec}' must be a JSON object with network, labels, recipe and patch_size.")
    return data


def _check_loads(entry: CatalogEntry, path: Path) -> None:
    model = build_network(entry.network)
    if entry.labels and not entry.encoder_only and entry.network.out_channels not in (0, len(entry.labels)):
        raise ModelError(f"The spec names {len(entry.labels)} labels but its network has "
                         f"{entry.network.out_channels} output channels.")
    _state, report = load_state_dict(path, entry.key_map, model)
    if report.missing and not entry.encoder_only:
        raise ModelError(f"'{path}' lacks {len(report.missing)} of the network's tensors (e.g. {report.missing[0]}). "
                         f"If it holds only an encoder, set \"encoder_only\": true in the spec.")
