"""Where TransferSeg keeps things on disk: the shipped Resources folder and the user's home folder.

Torch-free and SimpleITK-free, so the Slicer panel and the job layer can import it.
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """The extension's Resources folder (next to the package in a checkout and in Slicer)."""
    for candidate in (PACKAGE_DIR.parent / "Resources", PACKAGE_DIR.parent / "TransferSeg" / "Resources"):
        if candidate.is_dir():
            return candidate
    return PACKAGE_DIR.parent / "Resources"


def transferseg_home() -> Path:
    """The user's TransferSeg folder: ``TRANSFERSEG_HOME`` or ``~/.transferseg``."""
    return Path(os.environ.get("TRANSFERSEG_HOME", "") or "~/.transferseg").expanduser()


def folder_size(path) -> int:
    """Bytes in the files under ``path`` (0 when it does not exist); links are not followed."""
    root = Path(path)
    if not root.exists():
        return 0
    if root.is_file():
        return root.stat().st_size
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def format_size(size: int) -> str:
    """'12.3 MB': decimal units, as disk tools show them."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
