"""From a ``--base`` name or path to a base model with its weights on this computer.

``default`` is the shipped model, ``none`` means training from scratch, a path is a
model folder or a MONAI bundle, and any other name is looked up in the catalog;
catalog weights are downloaded (or taken from a local copy) and verified against
their published checksum before anything loads them.
"""

import shutil
from pathlib import Path
from typing import Callable, Optional

from TransferSegLib.errors import DownloadError, ModelError
from TransferSegLib.models.archive import safe_extract
from TransferSegLib.models.base_model import DEFAULT_NAME, SCRATCH_NAMES, BaseModel, default_model_dir, load_model_dir
from TransferSegLib.models.bundle import import_bundle
from TransferSegLib.models.catalog import LOCAL_SOURCES, CatalogEntry, find_model, url_file_name
from TransferSegLib.models.nnunet import is_nnunet_folder
from TransferSegLib.models.nnunet_weights import nnunet_base_model
from TransferSegLib.models.download import cache_dir, download, file_checksum, is_offline, parse_checksum, use_local_file


def resolve_base_model(
    name_or_path: str, offline: bool = False, cache_root: Optional[Path] = None, progress=None
) -> Optional[BaseModel]:
    """Resolve ``--base``: None means train from scratch with the default network."""
    key = str(name_or_path).strip()
    if key.lower() in SCRATCH_NAMES:
        return None
    if key.lower() == DEFAULT_NAME:
        folder = default_model_dir()
        if not (folder / "model.json").is_file():
            raise ModelError(
                f"The shipped default base model is missing from '{folder}'. Reinstall TransferSeg, "
                f"or pick another base model ('transferseg models list') or --base none."
            )
        model = load_model_dir(folder, trusted=True)
        model.source = "shipped"
        return model
    path = Path(key).expanduser()
    if path.exists():
        if path.is_dir() and (path / "model.json").is_file():
            return load_model_dir(path)
        if path.is_dir() and is_nnunet_folder(path):
            return nnunet_base_model(path)
        if path.is_dir() and (path / "configs").is_dir() or path.suffix == ".zip":
            return import_bundle(path)
        raise ModelError(
            f"'{path}' is neither a TransferSeg model folder (model.json + model.pt), an nnU-Net v2 trained model "
            f"folder (plans.json + dataset.json + fold_X/) nor a MONAI bundle (configs/ + models/). To use a bare checkpoint, register it first with "
            f"'transferseg models add --name NAME --checkpoint FILE --spec SPEC.json'."
        )
    return resolve_catalog_model(key, offline=offline, cache_root=cache_root, progress=progress)


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
        downloaded = use_local_file(Path(local_file).expanduser(), folder / url_file_name(entry.url, entry.name),
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
        downloaded = download(entry.url, folder / url_file_name(entry.url, entry.name), sha256=entry.sha256,
                              size=entry.size_bytes, progress=progress, offline=is_offline(offline))
    if not entry.archive:
        return downloaded
    extracted = folder / "files"
    if extracted.exists():
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
        return nnunet_base_model(_local_weights(entry), name=entry.name, license_text=entry.license,
                                 non_commercial=entry.non_commercial, labels=entry.labels)
    if entry.source == "bundle":
        model = import_bundle(_local_weights(entry), cache_root=cache_root)
        model.name = entry.name
        model.source = "bundle"
        return model
    weights = fetch_weights(entry, offline=offline, cache_root=cache_root, progress=progress,
                            allow_unverified=allow_unverified)
    return entry.to_base_model(weights)
