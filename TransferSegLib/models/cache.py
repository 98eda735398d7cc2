"""What the download cache holds (``TRANSFERSEG_CACHE``, else ``~/.cache/transferseg``), and emptying it.

Downloaded base models (``models/<name>/``) can be fetched again, so cleaning
removes them, and partial downloads. Files of models a user registered
(``user/``, ``user_models.json``) are the only copy of something the user made:
they are listed but never removed here (``transferseg models remove NAME`` does).
"""

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from TransferSegLib.errors import ModelError
from TransferSegLib.models.download import cache_dir
from TransferSegLib.paths import folder_size

DOWNLOADS = "models"
REGISTERED = ("user", "user_models.json")


@dataclass
class CacheItem:
    """One thing in the cache: ``kind`` is download, partial download, registered or other."""

    name: str
    kind: str
    path: Path
    bytes: int

    @property
    def removable(self) -> bool:
        return self.kind in ("download", "partial download")


def _is_partial(folder: Path) -> bool:
    return any(p.name.endswith((".part", ".partial", ".tmp")) for p in folder.rglob("*"))


def list_cache(cache_root: Optional[Path] = None) -> List[CacheItem]:
    """Everything in the cache folder, downloads first, each with its size."""
    root = cache_dir(cache_root)
    if not root.is_dir():
        return []
    items: List[CacheItem] = []
    downloads = root / DOWNLOADS
    if downloads.is_dir():
        for folder in sorted(downloads.iterdir()):
            kind = "partial download" if folder.is_dir() and _is_partial(folder) else "download"
            items.append(CacheItem(folder.name, kind, folder, folder_size(folder)))
    for entry in sorted(root.iterdir()):
        if entry.name == DOWNLOADS:
            continue
        kind = "registered" if entry.name in REGISTERED else "other"
        items.append(CacheItem(entry.name, kind, entry, folder_size(entry)))
    return items


def clean_cache(names: Sequence[str] = (), cache_root: Optional[Path] = None, include_other: bool = False,
                dry_run: bool = False) -> List[CacheItem]:
    """Remove downloaded models (all, or those in ``names``) and partial downloads; returns what went.

    ``include_other`` also removes entries the cache holds besides downloads and registered
    models (e.g. data other tools cached there). Registered models are never removed.
    """
    items = list_cache(cache_root)
    wanted = {n.lower() for n in names}
    if wanted:
        known = {i.name.lower() for i in items}
        unknown = sorted(n for n in names if n.lower() not in known)
        if unknown:
            raise ModelError(f"The cache holds no {', '.join(repr(n) for n in unknown)}; "
                             f"'transferseg cache list' shows what it holds.")
        registered = [i.name for i in items if i.name.lower() in wanted and not i.removable and i.kind == "registered"]
        if registered:
            raise ModelError(f"{', '.join(registered)}: files of models you registered are not cache; remove a model "
                             f"with 'transferseg models remove NAME'.")
    removed = []
    for item in items:
        chosen = item.name.lower() in wanted if wanted else (item.removable or (include_other and item.kind == "other"))
        if not chosen:
            continue
        if not dry_run:
            if item.path.is_dir():
                shutil.rmtree(item.path)
            else:
                item.path.unlink()
        removed.append(item)
    return removed
