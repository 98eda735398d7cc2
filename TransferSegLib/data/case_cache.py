"""Preprocessed training cases, cached per (case files, recipe, target labels).

Fine-tuning again after correcting one case should only re-read and re-preprocess
that case. Each prepared case (the network's image, labels, region mask and which
classes it annotates) is stored under ``<cache>/cases/<key>.npz`` where the key
hashes what the arrays depend on: every input file's path, size and modification
time (a DICOM folder: each of its files), the label names and annotated classes,
the target label list, the recipe, and ``FORMAT`` (bumped when preprocessing
changes meaning). A changed or moved file gives a new key; the old entry ages out.

Entries are written atomically; reading one refreshes its time, and after every
write the least recently used entries beyond ``max_bytes`` are removed.
``entries`` and ``clean`` are what ``transferseg cache list|clean`` show and do.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from TransferSegLib.models.download import cache_dir

FORMAT = 1
DEFAULT_MAX_BYTES = 10 * 2**30
_ARRAYS = ("image", "label", "annotated", "region")


def cases_cache_dir(cache_root: Optional[Path] = None) -> Path:
    return cache_dir(cache_root) / "cases"


def file_fingerprint(path: Optional[str]) -> Any:
    """Path, size and modification time of a file, or of every file in a folder."""
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    if not p.exists():
        return [str(p), None]  # reading the case will say what is missing
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return [str(p)] + [[str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    stat = p.stat()
    return [str(p), stat.st_size, stat.st_mtime_ns]


def case_key(files: Dict[str, Optional[str]], selection: Dict[str, Any], labels: Sequence[str],
             recipe: Dict[str, Any]) -> str:
    """The cache key of one prepared case (see the module docstring)."""
    record = {"format": FORMAT, "files": {k: file_fingerprint(v) for k, v in sorted(files.items())},
              "selection": selection, "labels": list(labels), "recipe": recipe}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:32]


@dataclass
class CacheEntry:
    key: str
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch
    name: str


def load(key: str, cache_root: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The arrays stored under ``key`` (``name`` and ``image``, ``label``, ``annotated``,
    ``region`` (None when absent)), or None when not cached or unreadable."""
    path = cases_cache_dir(cache_root) / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays: Dict[str, Any] = {k: data[k] for k in _ARRAYS if k in data.files}
            arrays["name"] = str(data["name"])
    except (OSError, ValueError, KeyError):
        path.unlink(missing_ok=True)  # a damaged entry is rebuilt
        return None
    arrays.setdefault("region", None)
    os.utime(path)  # least recently used goes first
    return arrays


def store(key: str, name: str, arrays: Dict[str, Optional[np.ndarray]], cache_root: Optional[Path] = None,
          max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Write one prepared case atomically, then keep the cache within ``max_bytes``."""
    folder = cases_cache_dir(cache_root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.npz"
    tmp = folder / f".tmp-{key}-{os.getpid()}.npz"
    present = {k: v for k, v in arrays.items() if v is not None}
    try:
        np.savez(tmp, name=np.array(name), **present)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    clean(max_bytes=max_bytes, cache_root=cache_root, keep=(key,))
    return path


def entries(cache_root: Optional[Path] = None) -> List[CacheEntry]:
    """Every cached case, most recently used first."""
    folder = cases_cache_dir(cache_root)
    found = []
    for path in folder.glob("*.npz") if folder.is_dir() else []:
        if path.name.startswith(".tmp-"):
            continue
        try:
            stat = path.stat()
            with np.load(path, allow_pickle=False) as data:
                name = str(data["name"]) if "name" in data.files else ""
        except (OSError, ValueError):
            name = "(unreadable)"
            stat = path.stat()
        found.append(CacheEntry(path.stem, path, stat.st_size, stat.st_mtime, name))
    return sorted(found, key=lambda e: -e.last_used)


def clean(max_bytes: Optional[int] = None, older_than_s: Optional[float] = None, cache_root: Optional[Path] = None,
          keep: Sequence[str] = ()) -> List[CacheEntry]:
    """Remove cached cases: all of them (no limits given), those unused for ``older_than_s``,
    and the least recently used beyond ``max_bytes``; never those in ``keep``. Returns the removed."""
    removed = []
    now = time.time()
    total = 0
    for entry in entries(cache_root):  # most recent first
        total += entry.bytes
        drop = max_bytes is None and older_than_s is None
        drop = drop or (older_than_s is not None and now - entry.last_used > older_than_s)
        drop = drop or (max_bytes is not None and total > max_bytes)
        if drop and entry.key not in keep:
            entry.path.unlink(missing_ok=True)
            removed.append(entry)
            total -= entry.bytes
    return removed
