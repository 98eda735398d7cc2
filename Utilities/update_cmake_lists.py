#!/usr/bin/env python3
"""Rewrite the file lists of TransferSeg/CMakeLists.txt from the files in the repository.

Slicer installs only what the module's CMakeLists.txt names, file by file, so a new
.py file in TransferSegLib/ or a new resource that is not listed is missing from the
extension users install (an ImportError in their Slicer, never in a checkout). This
script writes the three lists between their ``# BEGIN generated: NAME`` and
``# END generated: NAME`` markers:

- ``MODULE_PYTHON_SCRIPTS``: every .py file under TransferSeg/ (relative to it);
- ``TRANSFERSEG_LIB_PYTHON_SCRIPTS``: every .py file under TransferSegLib/;
- ``MODULE_PYTHON_RESOURCES``: every file under Resources/ except the vendored
  catalog schema (packaging data), and every non-.py file under TransferSegLib/.

Files git ignores and Python caches are left out. Usage, from anywhere::

    python Utilities/update_cmake_lists.py            # rewrite the lists
    python Utilities/update_cmake_lists.py --check    # exit 1 and print the drift
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional

ROOT = Path(__file__).resolve().parent.parent
MODULE_DIR = "TransferSeg"
LIBRARY_DIR = "TransferSegLib"
RESOURCES_DIR = "Resources"
#: Repository files under Resources/ that are not installed with the extension.
NOT_INSTALLED = ("Resources/Schema/",)
CACHE_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints"}
CACHE_NAMES = {".DS_Store", "Thumbs.db"}
LISTS = ("MODULE_PYTHON_SCRIPTS", "TRANSFERSEG_LIB_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES")
COMMAND = "python Utilities/update_cmake_lists.py"


def _is_cache(relative: str) -> bool:
    parts = relative.split("/")
    return bool(CACHE_PARTS.intersection(parts)) or parts[-1] in CACHE_NAMES or relative.endswith((".pyc", ".pyo"))


def repository_files(root: Path = ROOT) -> List[str]:
    """Files under the three packaged folders, as posix paths relative to ``root``.

    Tracked plus untracked-but-not-ignored files according to git (so build outputs
    and scratch files git ignores are not packaged), kept only if they exist; a plain
    walk where git or the repository is not available (an unpacked source archive).
    """
    folders = [MODULE_DIR, LIBRARY_DIR, RESOURCES_DIR]
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", *folders],
            check=True, capture_output=True, timeout=60,
        ).stdout.decode("utf-8").split("\0")
        candidates: Iterable[str] = [p for p in listed if p]
    except (OSError, subprocess.SubprocessError):
        candidates = [
            (Path(dirpath) / name).relative_to(root).as_posix()
            for folder in folders
            for dirpath, _dirs, names in os.walk(root / folder)
            for name in names
        ]
    return sorted({p for p in candidates if not _is_cache(p) and (root / p).is_file()})


def expected_lists(root: Path = ROOT, files: Optional[Iterable[str]] = None) -> Dict[str, List[str]]:
    """What each CMake list must hold, in the paths the CMake file uses."""
    files = list(repository_files(root) if files is None else files)
    module = [p[len(MODULE_DIR) + 1:] for p in files if p.startswith(MODULE_DIR + "/") and p.endswith(".py")]
    library = [p for p in files if p.startswith(LIBRARY_DIR + "/") and p.endswith(".py")]
    resources = [p for p in files if p.startswith(RESOURCES_DIR + "/") and not p.startswith(NOT_INSTALLED)]
    resources += [p for p in files if p.startswith(LIBRARY_DIR + "/") and not p.endswith(".py")]
    return {"MODULE_PYTHON_SCRIPTS": sorted(module), "TRANSFERSEG_LIB_PYTHON_SCRIPTS": sorted(library),
            "MODULE_PYTHON_RESOURCES": sorted(resources)}


def unlisted_module_files(root: Path = ROOT, files: Optional[Iterable[str]] = None) -> List[str]:
    """Files in TransferSeg/ that no list installs: they belong in Resources/ (or are .py)."""
    files = list(repository_files(root) if files is None else files)
    return [p for p in files if p.startswith(MODULE_DIR + "/") and not p.endswith(".py")
            and p != f"{MODULE_DIR}/CMakeLists.txt"]


def _block(name: str) -> "re.Pattern[str]":
    return re.compile(rf"(?P<indent>[ \t]*)# BEGIN generated: {name}\n(?P<body>.*?)"
                      rf"(?P=indent)# END generated: {name}\n", re.S)


def read_lists(text: str) -> Dict[str, List[str]]:
    """The entries between each pair of markers (comments and blank lines skipped)."""
    found = {}
    for name in LISTS:
        match = _block(name).search(text)
        if match is None:
            raise ValueError(f"TransferSeg/CMakeLists.txt has no '# BEGIN generated: {name}' ... "
                             f"'# END generated: {name}' block")
        found[name] = [line.strip() for line in match.group("body").splitlines()
                       if line.strip() and not line.strip().startswith("#")]
    return found


def write_lists(text: str, lists: Dict[str, List[str]]) -> str:
    for name in LISTS:
        pattern = _block(name)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"TransferSeg/CMakeLists.txt has no '# BEGIN generated: {name}' block")
        indent = match.group("indent")
        for entry in lists[name]:
            if any(c in entry for c in ' ;"()#$\\'):
                raise ValueError(f"'{entry}' has a character CMake lists cannot hold unquoted: rename the file.")
        body = "".join(f"{indent}{entry}\n" for entry in lists[name])
        replacement = f"{indent}# BEGIN generated: {name}\n{body}{indent}# END generated: {name}\n"
        text = text[:match.start()] + replacement + text[match.end():]
    return text


def drift(current: Dict[str, List[str]], wanted: Dict[str, List[str]]) -> List[str]:
    """One line per file that is listed but absent, or present but not listed."""
    lines = []
    for name in LISTS:
        have, want = set(current.get(name, [])), set(wanted[name])
        lines += [f"{name}: not listed: {p}" for p in sorted(want - have)]
        lines += [f"{name}: listed but not in the repository: {p}" for p in sorted(have - want)]
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the lists are out of date")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    cmake_file = root / MODULE_DIR / "CMakeLists.txt"
    text = cmake_file.read_text(encoding="utf-8")
    files = repository_files(root)
    wanted = expected_lists(root, files)
    changes = drift(read_lists(text), wanted)
    stray = unlisted_module_files(root, files)
    for path in stray:
        print(f"not installed: {path} (move it to Resources/ and it will be listed)", file=sys.stderr)
    if args.check:
        for line in changes:
            print(line)
        if changes:
            print(f"{cmake_file} is out of date: run '{COMMAND}'.")
        return 1 if changes or stray else 0
    updated = write_lists(text, wanted)
    if updated != text:
        temporary = cmake_file.with_name(cmake_file.name + ".tmp")
        temporary.write_text(updated, encoding="utf-8", newline="\n")
        os.replace(temporary, cmake_file)
    for line in changes:
        print(line)
    counts = ", ".join(f"{len(wanted[name])} {name}" for name in LISTS)
    print(f"{cmake_file.relative_to(root)}: {'updated' if changes else 'already up to date'} ({counts})")
    return 1 if stray else 0


if __name__ == "__main__":
    sys.exit(main())
