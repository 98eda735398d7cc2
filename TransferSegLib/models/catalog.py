"""The base-model catalog: which pretrained networks a user can start from, and getting them.

Entries come from four sources, all described by the same ``CatalogEntry``:
``catalog`` (``Resources/Models/catalog.json``, shipped: weights downloaded on
demand and verified against their published checksum), ``package`` (a network
file shipped inside an installed Python package, e.g. deepbet), ``user`` (a local
checkpoint plus a spec, registered with ``transferseg models add``) and ``bundle``
(a MONAI bundle registered by path). User entries live in
``<cache_dir>/user_models.json`` so that they survive upgrades of TransferSeg.

Listing needs no torch: only JSON files are read, so the Slicer panel can show
the catalog before the heavy dependencies are installed.
"""

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from TransferSegLib.models.base_model import BaseModel, KeyMap
from TransferSegLib.paths import shipped_catalog_path, write_atomically, write_json_atomically
from TransferSegLib.models.download import cache_dir, download, file_checksum, is_offline, parse_checksum, use_local_file
from TransferSegLib.errors import DownloadError, ModelError
from TransferSegLib.training.networks import NetworkSpec
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.models import totalsegmentator
from TransferSegLib.models.nnunet import catalog_fields, is_nnunet_folder

CATALOG_FORMAT = "transferseg-catalog"
CATALOG_VERSION = 1
USER_FORMAT = "transferseg-user-models"
SOURCES = ("catalog", "package", "user", "bundle", "nnunet", "totalseg")
#: Sources whose weights are a local file or folder named by ``checkpoint``.
LOCAL_SOURCES = ("user", "bundle", "nnunet", "totalseg")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class CatalogEntry:
    """One base model as the catalog describes it (see docs/architecture.md).

    ``sha256`` also takes ``md5:<hex>`` / ``sha1:<hex>`` (what MONAI's model zoo
    publishes); None means the publisher gives no checksum and the download is
    refused unless the user allows unverified files. ``checkpoint`` is the local
    file (user models) or bundle path (bundles); ``package`` + ``resource`` name a
    file inside an installed distribution.
    """

    name: str
    network: NetworkSpec
    labels: List[str]
    recipe: Recipe
    patch_size: Tuple[int, int, int]
    title: str = ""
    description: str = ""
    version: str = ""
    modality: str = "CT"
    license: str = ""
    non_commercial: bool = False
    url: Optional[str] = None
    sha256: Optional[str] = None
    size_bytes: Optional[int] = None
    archive: Optional[str] = None
    weights_path_in_archive: Optional[str] = None
    key_map: KeyMap = field(default_factory=KeyMap)
    encoder_only: bool = False
    reference: str = ""
    source: str = "catalog"
    package: Optional[str] = None
    resource: Optional[str] = None
    checkpoint: Optional[str] = None
    notes: str = ""
    card: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "the catalog", trusted: bool = False) -> "CatalogEntry":
        if not isinstance(data, dict):
            raise ModelError(f"An entry in {where} is not a JSON object: {data!r}.")
        name = str(data.get("name", ""))
        what = f"Model '{name}' in {where}"
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"{what} has unknown fields {sorted(unknown)}.")
        missing = [k for k in ("name", "network", "labels", "recipe", "patch_size") if k not in data]
        if missing:
            raise ModelError(f"{what} lacks the fields {missing}.")
        if not _NAME.match(name):
            raise ModelError(f"{what}: a name may hold only letters, digits, '.', '_' and '-'.")
        values = dict(data)
        try:
            values["network"] = NetworkSpec.from_dict(data["network"], origin=where, trusted=trusted)
            values["recipe"] = Recipe.from_dict(data["recipe"])
            values["key_map"] = KeyMap.from_dict(data.get("key_map"))
            values["labels"] = [str(n) for n in data["labels"]]
            patch = tuple(int(v) for v in data["patch_size"])
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{what} is malformed: {exc}") from exc
        except ModelError as exc:
            raise ModelError(f"{what}: {exc}") from exc
        if len(patch) != 3 or min(patch) <= 0:
            raise ModelError(f"{what}: patch_size must be three positive integers, got {data['patch_size']!r}.")
        values["patch_size"] = patch
        if values.get("source", "catalog") not in SOURCES:
            raise ModelError(f"{what}: unknown source '{values['source']}' (use one of {', '.join(SOURCES)}).")
        if values.get("archive") not in (None, "zip", "tar.gz"):
            raise ModelError(f"{what}: archive must be null, 'zip' or 'tar.gz'.")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["network"] = self.network.to_dict()
        data["recipe"] = self.recipe.to_dict()
        data["key_map"] = self.key_map.to_dict()
        data["patch_size"] = list(self.patch_size)
        return data

    @property
    def verified(self) -> bool:
        return bool(self.sha256)

    def weights_file(self, cache_root: Optional[Path] = None) -> Optional[Path]:
        """Where the weights are (or will be) on this computer; None if unknown."""
        if self.source == "package":
            return installed_package_file(self.package or "", self.resource or "")
        if self.source in LOCAL_SOURCES:
            return Path(self.checkpoint).expanduser() if self.checkpoint else None
        if not self.url:
            return None
        folder = cache_dir(cache_root) / "models" / self.name
        if self.archive:
            return folder / "files" / (self.weights_path_in_archive or "")
        return folder / _url_file_name(self.url, self.name)

    def cached(self, cache_root: Optional[Path] = None) -> bool:
        """True when the model can be used without network access."""
        path = self.weights_file(cache_root)
        return path is not None and path.exists()

    def status(self, cache_root: Optional[Path] = None) -> str:
        """A short word for listings: downloaded, to download, unverified, installed, not installed, local, missing."""
        if self.source == "package":
            return "installed" if self.cached(cache_root) else "not installed"
        if self.source in LOCAL_SOURCES:
            return "local" if self.cached(cache_root) else "missing"
        if self.cached(cache_root):
            return "downloaded"
        return "to download" if self.verified else "unverified"

    def to_base_model(self, weights: Optional[Path]) -> BaseModel:
        card = dict(self.card)
        card.update({k: v for k, v in (("title", self.title), ("description", self.description),
                                       ("version", self.version), ("reference", self.reference),
                                       ("notes", self.notes), ("url", self.url)) if v})
        return BaseModel(name=self.name, network=self.network, labels=list(self.labels), recipe=self.recipe,
                         patch_size=self.patch_size, modality=self.modality, license=self.license,
                         non_commercial=self.non_commercial, weights=weights, key_map=self.key_map,
                         source=self.source, card=card, encoder_only=self.encoder_only)


def _url_file_name(url: str, fallback: str) -> str:
    name = Path(urlparse(url).path).name
    return name if name and _NAME.match(name) else fallback + ".pt"


# ---------------------------------------------------------------------------
# Sources


def read_catalog(path: Path) -> List[CatalogEntry]:
    """Entries of a catalog file; a wrong format or version is refused, not guessed at."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"The model catalog '{path}' is missing; reinstall TransferSeg.") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read the model catalog '{path}': {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != CATALOG_FORMAT:
        raise ModelError(f"'{path}' is not a TransferSeg model catalog (format must be '{CATALOG_FORMAT}').")
    if data.get("version") != CATALOG_VERSION:
        raise ModelError(f"The model catalog '{path}' has version {data.get('version')!r}; this TransferSeg reads "
                         f"version {CATALOG_VERSION}. Update TransferSeg.")
    shipped = path.resolve() == shipped_catalog_path().resolve()  # it comes with the code: trusted
    entries = [CatalogEntry.from_dict(e, where=str(path), trusted=shipped) for e in data.get("models", [])]
    _check_unique(entries, str(path))
    return entries


def _check_unique(entries: List[CatalogEntry], where: str) -> None:
    seen = set()
    for entry in entries:
        key = entry.name.lower()
        if key in seen:
            raise ModelError(f"The model name '{entry.name}' appears twice in {where}.")
        seen.add(key)


def installed_package_file(package: str, resource: str) -> Optional[Path]:
    """A file of an installed distribution, found from its file list (without importing it).

    Importing e.g. deepbet would pull in its GUI and image-processing dependencies;
    the distribution metadata says where its files are, also for data folders
    installed beside the package rather than inside it.
    """
    if not package or not resource:
        return None
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    wanted = resource.replace("\\", "/").strip("/")
    for item in dist.files or []:
        if str(item).replace("\\", "/") == wanted:
            path = Path(str(dist.locate_file(item)))
            return path if path.is_file() else None
    return None


def user_models_path(cache_root: Optional[Path] = None) -> Path:
    return cache_dir(cache_root) / "user_models.json"


def read_user_models(cache_root: Optional[Path] = None) -> List[CatalogEntry]:
    path = user_models_path(cache_root)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot read your registered models in '{path}': {exc}. Fix or delete the file.") from exc
    if not isinstance(data, dict) or data.get("format") != USER_FORMAT:
        raise ModelError(f"'{path}' is not a TransferSeg list of user models; delete it and register them again.")
    # The user registered these checkpoints and specs themselves; entries made from bundles stay untrusted.
    return [CatalogEntry.from_dict(e, where=str(path), trusted=isinstance(e, dict) and e.get("source") == "user")
            for e in data.get("models", [])]


def _write_user_models(entries: List[CatalogEntry], cache_root: Optional[Path]) -> None:
    path = user_models_path(cache_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": USER_FORMAT, "version": 1, "models": [e.to_dict() for e in entries]}
    write_json_atomically(path, payload)


def list_models(cache_root: Optional[Path] = None, include_unavailable: bool = False) -> List[CatalogEntry]:
    """Shipped entries, installed-package entries (only if installed, unless
    ``include_unavailable``), then the user's registered models."""
    entries = []
    for entry in read_catalog(shipped_catalog_path()):
        if entry.source == "package" and not include_unavailable and not entry.cached(cache_root):
            continue
        entries.append(entry)
    shipped = {e.name.lower() for e in entries}
    entries += [e for e in read_user_models(cache_root) if e.name.lower() not in shipped]
    known = {e.name.lower() for e in entries}
    entries += [e for e in totalsegmentator_entries() if e.name.lower() not in known]
    return entries


def nnunet_entry(path: Path, name: str, source: str = "nnunet", **extra: Any) -> CatalogEntry:
    """A catalog entry for an nnU-Net v2 trained model folder (JSON files only; the weights stay where they are)."""
    fields_ = catalog_fields(path, extra.pop("labels", None))
    fields_.update(extra)
    return CatalogEntry(name=_valid_name(name), source=source, checkpoint=str(Path(path)), **fields_)


def totalsegmentator_entries(home: Optional[Path] = None) -> List[CatalogEntry]:
    """The TotalSegmentator models installed on this computer (``TOTALSEG_HOME_DIR`` or ~/.totalsegmentator)."""
    return [nnunet_entry(source="totalseg", **row) for row in totalsegmentator.catalog_rows(home)]


def find_model(name: str, cache_root: Optional[Path] = None) -> CatalogEntry:
    entries = list_models(cache_root, include_unavailable=True)
    for entry in entries:
        if entry.name.lower() == str(name).strip().lower():
            return entry
    names = ", ".join(e.name for e in entries)
    raise ModelError(
        f"Unknown base model '{name}': it is not 'default', 'none', a model folder, a MONAI bundle or a catalog "
        f"name. Catalog names: {names}. See 'transferseg models list'."
    )


# ---------------------------------------------------------------------------
# Getting the weights


def fetch_weights(entry: CatalogEntry, offline: bool = False, cache_root: Optional[Path] = None,
                  progress: Optional[Callable[[int, Optional[int]], None]] = None,
                  allow_unverified: bool = False, local_file: Optional[Path] = None) -> Path:
    """The local weights file of ``entry``, downloaded, verified and extracted if needed.

    ``local_file`` is the published file obtained some other way (a computer without
    network access): it is checked against the catalog's checksum and size exactly
    like a download, then copied into the cache; naming it is the user's consent
    when the publisher gives no checksum.
    """
    if entry.source == "package":
        path = entry.weights_file(cache_root)
        if path is None:
            raise ModelError(f"Model '{entry.name}' comes with the Python package '{entry.package}', which is not "
                             f"installed here. Install it with 'pip install {entry.package}=={entry.version}' and "
                             f"try again.")
        _check_file(entry, path, f"the file installed by {entry.package} {entry.version}",
                    f"Another version of {entry.package} may be installed: 'pip install {entry.package}=={entry.version}'.")
        return path
    if entry.source in LOCAL_SOURCES:
        return _local_weights(entry)
    if not entry.url:
        raise ModelError(f"Model '{entry.name}' has no download URL in the catalog.")
    target = entry.weights_file(cache_root)
    assert target is not None
    folder = cache_dir(cache_root) / "models" / entry.name
    if local_file is not None:
        downloaded = use_local_file(Path(local_file).expanduser(), folder / _url_file_name(entry.url, entry.name),
                                    sha256=entry.sha256, size=entry.size_bytes)
    else:
        if target.is_file() and (entry.archive or not entry.verified):
            # Extracted from a verified archive, or downloaded earlier with the user's explicit consent.
            return target
        if not entry.verified and not allow_unverified:
            raise DownloadError(
                f"The publisher of '{entry.name}' gives no checksum for {entry.url}, so TransferSeg cannot verify "
                f"the download. To use it anyway, pass --allow-unverified (or allow_unverified=True): you trust "
                f"the server then. Or download it yourself and pass it with --file."
            )
        downloaded = download(entry.url, folder / _url_file_name(entry.url, entry.name), sha256=entry.sha256,
                              size=entry.size_bytes, progress=progress, offline=is_offline(offline))
    if not entry.archive:
        return downloaded
    from TransferSegLib.models.archive import safe_extract

    extracted = folder / "files"
    if extracted.exists():
        import shutil

        shutil.rmtree(extracted)  # an earlier extraction without the weights: start clean
    safe_extract(downloaded, extracted)
    if not target.is_file():
        raise ModelError(f"The archive {downloaded} of '{entry.name}' has no '{entry.weights_path_in_archive}'; "
                         f"the catalog entry's weights_path_in_archive is wrong.")
    return target


def _local_weights(entry: CatalogEntry) -> Path:
    path = Path(entry.checkpoint or "").expanduser()
    if not path.exists():
        raise ModelError(f"The file of your model '{entry.name}' is gone: '{path}'. Put it back, or register it "
                         f"again with 'transferseg models add'.")
    if entry.source == "user":
        _check_file(entry, path, "the file registered", "Register it again with 'transferseg models add' if the "
                    "new file is the one you want.")
    return path


def _check_file(entry: CatalogEntry, path: Path, what: str, hint: str) -> None:
    if not entry.sha256 or not path.is_file():
        return
    expected = parse_checksum(entry.sha256)
    if file_checksum(path, expected.algorithm) != expected.digest:
        raise ModelError(f"'{path}' is not {what} as '{entry.name}': its checksum differs. {hint}")


def download_model(name: str, progress: Optional[Callable[[int, Optional[int]], None]] = None,
                   cache_root: Optional[Path] = None, offline: bool = False, allow_unverified: bool = False,
                   local_file: Optional[Path] = None) -> Path:
    """Download (and verify) a catalog model's weights, or take ``local_file`` instead; returns the weights file."""
    return fetch_weights(find_model(name, cache_root), offline=offline, cache_root=cache_root, progress=progress,
                         allow_unverified=allow_unverified, local_file=local_file)


def resolve_catalog_model(name: str, offline: bool = False, cache_root: Optional[Path] = None,
                          progress: Optional[Callable[[int, Optional[int]], None]] = None,
                          allow_unverified: bool = False) -> BaseModel:
    """A catalog, package, user or bundle model by name, with its weights on disk."""
    entry = find_model(name, cache_root)
    if entry.source in ("nnunet", "totalseg"):
        from TransferSegLib.models.nnunet_weights import nnunet_base_model

        return nnunet_base_model(_local_weights(entry), name=entry.name, license_text=entry.license,
                                 non_commercial=entry.non_commercial, labels=entry.labels)
    if entry.source == "bundle":
        from TransferSegLib.models.bundle import import_bundle

        model = import_bundle(_local_weights(entry), cache_root=cache_root)
        model.name = entry.name
        model.source = "bundle"
        return model
    weights = fetch_weights(entry, offline=offline, cache_root=cache_root, progress=progress,
                            allow_unverified=allow_unverified)
    return entry.to_base_model(weights)


# ---------------------------------------------------------------------------
# User models


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
        from TransferSegLib.models.nnunet_weights import load_nnunet_model

        load_nnunet_model(path)  # registered only if it loads
        entry = nnunet_entry(path, name or path.parent.name, description=f"nnU-Net v2 model folder {path}")
    elif is_bundle:
        from TransferSegLib.models.bundle import import_bundle

        base = import_bundle(path, cache_root=cache_root)
        name = name or base.name
        entry = CatalogEntry(name=_valid_name(name), network=base.network, labels=list(base.labels),
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
        data.update(name=_valid_name(name or path.stem), source="user", checkpoint=str(path))
        data["sha256"] = "sha256:" + file_checksum(path)
        data["size_bytes"] = path.stat().st_size
        entry = CatalogEntry.from_dict(data, where=f"the spec for '{path.name}'", trusted=True)
        _check_loads(entry, path)
    if entry.name.lower() in {e.name.lower() for e in read_catalog(shipped_catalog_path())}:
        raise ModelError(f"'{entry.name}' is the name of a catalog model; choose another --name.")
    others = [e for e in read_user_models(cache_root) if e.name.lower() != entry.name.lower()]
    _write_user_models(others + [entry], cache_root)
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
    import torch

    from TransferSegLib.models.checkpoints import map_keys, read_checkpoint, unwrap_state_dict
    from TransferSegLib.training.networks import build_network
    from TransferSegLib.training.transfer import inflate_2d_to_3d

    path = Path(checkpoint_2d).expanduser().resolve()
    data = _read_spec(spec)
    entry = CatalogEntry.from_dict(dict(data, name=_valid_name(name), source="user"),
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
    _write_user_models(kept, cache_root)


def _valid_name(name: str) -> str:
    if not _NAME.match(str(name)):
        raise ModelError(f"Model name '{name}' may hold only letters, digits, '.', '_' and '-'.")
    return str(name)


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
    from TransferSegLib.models.checkpoints import load_state_dict
    from TransferSegLib.training.networks import build_network

    model = build_network(entry.network)
    if entry.labels and not entry.encoder_only and entry.network.out_channels not in (0, len(entry.labels)):
        raise ModelError(f"The spec names {len(entry.labels)} labels but its network has "
                         f"{entry.network.out_channels} output channels.")
    _state, report = load_state_dict(path, entry.key_map, model)
    if report.missing and not entry.encoder_only:
        raise ModelError(f"'{path}' lacks {len(report.missing)} of the network's tensors (e.g. {report.missing[0]}). "
                         f"If it holds only an encoder, set \"encoder_only\": true in the spec.")
