"""The base-model catalog: which pretrained networks a user can start from, and getting them.

Entries come from four sources, all described by the same ``CatalogEntry``:
``catalog`` (``Resources/Models/catalog.json``, shipped: weights downloaded on
demand and verified against their published checksum), ``package`` (a network
file shipped inside an installed Python package, e.g. deepbet), ``user`` (a local
checkpoint plus a spec, registered with ``transferseg models add``) and ``bundle``
(a MONAI bundle registered by path). User entries live in
``<cache_dir>/user_models.json`` so that they survive upgrades of TransferSeg.

Listing needs no torch: only JSON files are read, so the Slicer panel can show
the catalog before the heavy dependencies are installed. Getting a model's weights
is in ``resolve.py``; registering a user's model (which builds its network, so
needs torch) in ``register.py``.
"""

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import ModelError
from TransferSegLib.models import totalsegmentator
from TransferSegLib.models.base_model import BaseModel
from TransferSegLib.models.download import cache_dir
from TransferSegLib.models.nnunet import catalog_fields
from TransferSegLib.models.packages import installed_package_file
from TransferSegLib.paths import shipped_catalog_path, write_json_atomically
from TransferSegLib.specs import KeyMap, NetworkSpec

CATALOG_FORMAT = "transferseg-catalog"
CATALOG_VERSION = 1
USER_FORMAT = "transferseg-user-models"
SOURCES = ("catalog", "package", "user", "bundle", "nnunet", "totalseg")
#: Sources whose weights are a local file or folder named by ``checkpoint``.
LOCAL_SOURCES = ("user", "bundle", "nnunet", "totalseg")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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
        if not NAME_PATTERN.match(name):
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
        return folder / url_file_name(self.url, self.name)

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


def url_file_name(url: str, fallback: str) -> str:
    name = Path(urlparse(url).path).name
    return name if name and NAME_PATTERN.match(name) else fallback + ".pt"


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


def write_user_models(entries: List[CatalogEntry], cache_root: Optional[Path]) -> None:
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
    return CatalogEntry(name=valid_name(name), source=source, checkpoint=str(Path(path)), **fields_)


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


def valid_name(name: str) -> str:
    """``name`` if a model may be called so (letters, digits, '.', '_', '-'); otherwise a ModelError."""
    if not NAME_PATTERN.match(str(name)):
        raise ModelError(f"Model name '{name}' may hold only letters, digits, '.', '_' and '-'.")
    return str(name)
