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
