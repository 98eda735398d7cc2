"""Where TransferSeg keeps things on disk, and how a file gets there without ever being half-written.

Torch-free and SimpleITK-free, so the Slicer panel and the job layer can import it.

Every user-visible file is written by ``write_atomically`` (or, for files that
belong together, ``write_group_atomically``): to a unique temporary name in the
same folder, flushed to the disk, checked (not empty; a gzip stream read to its
end; a NIfTI/NRRD header whose data is all there; a zip whose members all pass
their CRC; JSON that parses), and only then renamed over the destination. A full
disk, a read-only place, a missing permission or a path through a file becomes an
``OutputError`` naming the path, and whatever was there before stays as it was.
"""

import errno
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from TransferSegLib.errors import OutputError
from TransferSegLib.file_integrity import IncompleteFile, check_complete, compound_suffix

PACKAGE_DIR = Path(__file__).resolve().parent

PathLike = Union[str, Path]
Writer = Callable[[Path], None]


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


def shipped_catalog_path() -> Path:
    """The model catalog shipped with TransferSeg (trusted: it comes with the code)."""
    return resources_dir() / "Models" / "catalog.json"


# --- errors a user can act on --------------------------------------------------------------------

_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space or choose another place",
    errno.EDQUOT: "your disk quota is used up; free some space or choose another place",
    errno.EROFS: "that place is read-only; choose a folder you can write to",
    errno.EACCES: "you have no permission to write there; choose a folder you own",
    errno.EPERM: "you have no permission to write there; choose a folder you own",
    errno.ENOTDIR: "a part of the path is a file, not a folder; correct the path",
    errno.EISDIR: "it is a folder; give a file name",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter one",
}
_KEPT = "Nothing was replaced: any previous file there is unchanged."


def _low_on_space(folder: Path) -> bool:
    try:
        return shutil.disk_usage(str(folder)).free < 1 << 20
    except OSError:
        return False


def _probe_errno(folder: Path) -> Optional[int]:
    """Why nothing can be written in ``folder``, found by trying (None if a small write works and space is left)."""
    probe = folder / f".transferseg-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(str(probe), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc.errno
    finally:
        remove_quietly(probe)
    return errno.ENOSPC if _low_on_space(folder) else None


def output_error(path: PathLike, exc: BaseException) -> OutputError:
    """An ``OutputError`` for a failed write to ``path``, saying why in the user's terms."""
    code = getattr(exc, "errno", None)
    if code not in _ADVICE:  # many writers (ITK, zlib) report a full disk or a read-only place as a generic failure
        code = _probe_errno(Path(path).parent)
    advice = _ADVICE.get(code)
    lines = str(getattr(exc, "strerror", None) or exc).strip().splitlines()
    detail = lines[0] if lines else type(exc).__name__
    text = f"{advice} ({detail})" if advice else detail
    return OutputError(f"Cannot write '{path}': {text}. {_KEPT}")


# --- atomic writes --------------------------------------------------------------------------------

def temporary_sibling(path: PathLike, tag: str = "tmp") -> Path:
    """A unique hidden name beside ``path`` that keeps its suffix (writers pick the format by it)."""
    path = Path(path)
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.name}.{unique}.{tag}{compound_suffix(path.name)}")


def fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        if directory:
            return  # Windows cannot open folders; their entries are durable anyway
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def make_parent(path: Path) -> None:
    """Create the folders above ``path``; ``OutputError`` if one is a file or cannot be made."""
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path, exc) from exc


def _stage(final: Path, write: Writer, verify: bool) -> Path:
    """Write, flush and check one file under a temporary name; OutputError (temporary removed) if it fails."""
    make_parent(final)
    if final.is_dir():
        raise OutputError(f"Cannot write '{final}': it is a folder; give a file name. {_KEPT}")
    temp = temporary_sibling(final)
    try:
        write(temp)
        if not temp.is_file():
            raise IncompleteFile("was not created by the writer")
        fsync_path(temp)
        if verify:
            check_complete(temp, final.name)
    except IncompleteFile as exc:
        remove_quietly(temp)
        space = " (the disk is full)" if _low_on_space(final.parent) else ""
        raise OutputError(f"Writing '{final}' did not complete: the file {exc}{space}. {_KEPT}") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: how SimpleITK and torch.save report failed writes
        remove_quietly(temp)
        raise output_error(final, exc) from exc
    except BaseException:
        remove_quietly(temp)
        raise
    return temp


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def write_atomically(path: PathLike, write: Writer, verify: bool = True) -> Path:
    """Write one file: ``write(temporary_path)`` produces it, then it replaces ``path`` when complete."""
    return write_group_atomically([(path, write)], verify=verify)[0]


def write_group_atomically(items: Sequence[Tuple[PathLike, Writer]], verify: bool = True) -> List[Path]:
    """Write files that belong together (a labelmap and its probabilities): all land, or none does.

    Every file is staged and checked before the first rename; if a rename then
    fails, the destinations already replaced get their previous content back.
    """
    finals = [Path(p).expanduser().absolute() for p, _ in items]
    if len({str(f) for f in finals}) != len(finals):
        raise OutputError(f"Two outputs name the same file ({', '.join(str(f) for f in finals)}); give each its own.")
    staged: List[Tuple[Path, Path]] = []
    try:
        for final, (_, write) in zip(finals, items):
            staged.append((final, _stage(final, write, verify)))
        _replace_all(staged)
    finally:
        for _, temp in staged:
            remove_quietly(temp)
    for folder in {f.parent for f in finals}:
        fsync_path(folder, directory=True)
    return finals


def _replace_all(staged: List[Tuple[Path, Path]]) -> None:
    kept: List[Tuple[Path, Optional[Path]]] = []  # (destination, hard link to its previous content or None)
    try:
        for final, temp in staged:
            previous = None
            if len(staged) > 1 and final.is_file():
                previous = temporary_sibling(final, "previous")
                try:
                    os.link(str(final), str(previous))
                except OSError:
                    previous = None
            try:
                os.replace(str(temp), str(final))
            except OSError:
                if previous is not None:
                    remove_quietly(previous)
                raise
            kept.append((final, previous))
    except OSError as exc:
        for done, previous in kept:
            if previous is not None:
                os.replace(str(previous), str(done))
            else:
                remove_quietly(done)
        raise output_error(staged[len(kept)][0], exc) from exc
    finally:
        for _, previous in kept:
            if previous is not None:
                remove_quietly(previous)


def write_text_atomically(path: PathLike, text: str, verify: bool = True) -> Path:
    """``write_atomically`` for text (UTF-8)."""
    def write(temp: Path) -> None:
        with open(temp, "w", encoding="utf-8") as stream:
            stream.write(text)
    return write_atomically(path, write, verify=verify)


def write_json_atomically(path: PathLike, data: object, indent: Optional[int] = 2) -> Path:
    """``write_atomically`` for a JSON document (checked to parse back)."""
    return write_text_atomically(path, json.dumps(data, indent=indent) + "\n")


# --- outputs that would destroy inputs -------------------------------------------------------------

def _same_place(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(outputs: Dict[str, Optional[PathLike]], inputs: Dict[str, Iterable[PathLike]]) -> None:
    """Refuse, before any work, an output that is one of the inputs, holds one, or repeats another output.

    ``outputs`` maps an option (``--output``) to a path; ``inputs`` maps an option
    to the paths given with it. A folder output (a model folder) is replaced as a
    whole, so an input inside it is refused as well.
    """
    given = [(option, Path(p).expanduser()) for option, p in outputs.items() if p]
    for i, (option, out) in enumerate(given):
        for other_option, other in given[:i]:
            if _same_place(out, other):
                raise OutputError(f"{option} and {other_option} both name '{out}'; give each output its own file.")
        for in_option, paths in inputs.items():
            for raw in paths or ():
                source = Path(raw).expanduser()
                if _same_place(out, source):
                    raise OutputError(f"{option} '{out}' is the {in_option} file: writing there would replace "
                                      f"your input. Choose another {option}.")
                resolved_out = out.resolve()
                if resolved_out in source.resolve().parents and not out.is_file():
                    raise OutputError(f"{option} '{out}' holds the {in_option} '{source}': replacing that folder "
                                      f"would delete your input. Choose another {option}.")
