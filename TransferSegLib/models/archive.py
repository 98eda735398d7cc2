"""Safe extraction of downloaded .zip and .tar(.gz) archives (MONAI bundles, model packs).

An archive from the internet is untrusted input: a member may try to write outside
the target folder (absolute paths, ``..``, links pointing out), create device files,
or expand to far more bytes than it declared (a zip bomb). Every member is checked
before anything is written, sizes are counted while writing, and extraction happens
in a temporary folder beside ``dest`` that is renamed into place only when complete.
"""

import gzip
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, List, Optional

from TransferSegLib.errors import DownloadError

_CHUNK_BYTES = 1 << 20
_FOUR_GIB = 4 * 1024 ** 3


@dataclass
class _Member:
    """One archive entry in a format-neutral form."""

    name: str  # normalized relative POSIX path
    kind: str  # "file", "dir", "symlink", "hardlink"
    size: int  # declared size in bytes
    link: str = ""  # target of a link, as written in the archive
    open: Optional[Callable[[], IO[bytes]]] = None


def _refuse(archive: Path, member: str, why: str) -> DownloadError:
    return DownloadError(f"Refusing to extract archive {archive}: member '{member}' {why}. "
                         "The archive may be damaged or malicious; get it again from its publisher.")


def _normalized(archive: Path, raw: str) -> str:
    """A member name as a clean relative path, or an error if it is absolute or climbs out."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, raw, "has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, raw, "climbs out of the target folder with '..'")
    if not parts:
        raise _refuse(archive, raw, "has an empty name")
    return "/".join(parts)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> List[_Member]:
    members = []
    for info in zf.infolist():
        name = _normalized(archive, info.filename)
        # Only zips made on Unix (create_system 3) carry a file type in the high bits.
        file_type = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
        if info.is_dir():
            members.append(_Member(name, "dir", 0))
        elif file_type == stat.S_IFLNK:
            if info.file_size > 4096:
                raise _refuse(archive, info.filename, "is a link with an implausibly long target")
            members.append(_Member(name, "symlink", info.file_size, link=zf.read(info).decode("utf-8", "replace")))
        elif file_type not in (0, stat.S_IFREG):
            raise _refuse(archive, info.filename, "is a device, pipe or other special file")
        else:
            members.append(_Member(name, "file", info.file_size, open=lambda info=info: zf.open(info)))
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile) -> List[_Member]:
    members = []
    for info in tf.getmembers():
        name = _normalized(archive, info.name)
        if info.isdir():
            members.append(_Member(name, "dir", 0))
        elif info.issym():
            members.append(_Member(name, "symlink", 0, link=info.linkname))
        elif info.islnk():
            members.append(_Member(name, "hardlink", 0, link=info.linkname))
        elif info.isreg():
            members.append(_Member(name, "file", info.size, open=lambda info=info: tf.extractfile(info)))
        else:
            raise _refuse(archive, info.name, "is a device, pipe or other special file")
    return members


def _check_members(archive: Path, members: List[_Member], max_total_bytes: int, max_files: int) -> None:
    """All checks that need no writing: counts, declared sizes, links, paths through links."""
    if len(members) > max_files:
        raise _refuse(archive, members[max_files].name, f"is past the limit of {max_files} entries")
    declared = 0
    for member in members:
        declared += member.size
        if declared > max_total_bytes:
            raise _refuse(archive, member.name, f"takes the declared size past the limit of {max_total_bytes} bytes")
    links = {m.name for m in members if m.kind in ("symlink", "hardlink")}
    regular = {m.name for m in members if m.kind == "file"}
    for member in members:
        parents = member.name.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in links:
                raise _refuse(archive, member.name, "would be written through a link")
        if member.kind == "symlink":
            target = member.link.replace("\\", "/")
            if not target or target.startswith("/") or (len(target) > 1 and target[1] == ":"):
                raise _refuse(archive, member.name, f"is a link to the absolute path '{member.link}'")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), target))
            if resolved == ".." or resolved.startswith("../"):
                raise _refuse(archive, member.name, f"is a link pointing outside the target folder ('{member.link}')")
        elif member.kind == "hardlink":
            try:
                target = _normalized(archive, member.link)
            except DownloadError:
                raise _refuse(archive, member.name, f"is a hard link pointing outside the target folder "
                                                    f"('{member.link}')") from None
            if target not in regular:
                raise _refuse(archive, member.name, f"is a hard link to '{member.link}', which is not a file "
                                                    "of the archive")


def _copy_counted(archive: Path, member: _Member, path: Path, budget: List[int]) -> None:
    """Write one file, stopping as soon as the archive as a whole passes its byte limit."""
    with member.open() as src, open(path, "wb") as dst:
        while True:
            block = src.read(_CHUNK_BYTES)
            if not block:
                break
            budget[0] -= len(block)
            if budget[0] < 0:
                raise _refuse(archive, member.name, "expands past the size limit (a zip bomb?)")
            dst.write(block)


def _write_members(archive: Path, members: List[_Member], root: Path, max_total_bytes: int) -> List[Path]:
    written: List[Path] = []
    budget = [max_total_bytes]
    for member in members:
        path = root.joinpath(*member.name.split("/"))
        if member.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
        elif member.kind == "file":
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise _refuse(archive, member.name, "is a file with the name of a folder")
            _copy_counted(archive, member, path, budget)
            written.append(path)
    # Links last, so that nothing is ever written through one.
    for member in members:
        path = root.joinpath(*member.name.split("/"))
        if member.kind == "hardlink":
            budget[0] -= (root.joinpath(*_normalized(archive, member.link).split("/"))).stat().st_size
            if budget[0] < 0:
                raise _refuse(archive, member.name, "expands past the size limit")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root.joinpath(*_normalized(archive, member.link).split("/")), path)
            written.append(path)
        elif member.kind == "symlink":
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(member.link, path)
            written.append(path)
    # Checked for real once all links exist: a chain of links can leave the folder
    # even when each one, read alone, points inside.
    real_root = os.path.realpath(root)
    for member in members:
        if member.kind == "symlink":
            real = os.path.realpath(root.joinpath(*member.name.split("/")))
            if os.path.commonpath([real_root, real]) != real_root:
                raise _refuse(archive, member.name, f"is a link resolving outside the target folder ('{member.link}')")
    return written


def safe_extract(archive: Path, dest: Path, max_total_bytes: int = _FOUR_GIB, max_files: int = 10000) -> List[Path]:
    """Extract a .zip or .tar(.gz/.bz2/.xz) archive into the new folder ``dest``.

    The format is recognized from the content, not the file name. Raises
    ``DownloadError`` naming the archive and the offending member for absolute paths,
    ``..`` escapes, links leaving ``dest``, device files, more than ``max_files``
    entries, or more than ``max_total_bytes`` declared or actually written; nothing is
    left behind then. ``dest`` must not exist yet. Returns the extracted files and
    links (final paths under ``dest``) in archive order (links last).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DownloadError(f"Archive {archive} does not exist; download it first.")
    if dest.exists():
        raise DownloadError(f"Cannot extract {archive} into {dest}: that folder already exists. "
                            "Remove it first or choose another folder.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = _zip_members(archive, zf)
                _check_members(archive, members, max_total_bytes, max_files)
                written = _write_members(archive, members, temp, max_total_bytes)
        elif tarfile.is_tarfile(str(archive)):
            with tarfile.open(archive) as tf:
                members = _tar_members(archive, tf)
                _check_members(archive, members, max_total_bytes, max_files)
                written = _write_members(archive, members, temp, max_total_bytes)
        else:
            raise DownloadError(f"{archive} is neither a zip nor a tar archive; it may be an incomplete download "
                                "or an error page: delete it and download it again.")
        os.rename(temp, dest)
    except (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as error:
        shutil.rmtree(temp, ignore_errors=True)
        raise DownloadError(f"Archive {archive} is damaged ({type(error).__name__}: {error}); "
                            "delete it and download it again.") from error
    except OSError as error:
        shutil.rmtree(temp, ignore_errors=True)
        raise DownloadError(f"Cannot extract {archive} into {dest}: {error}. "
                            "Check the free disk space and the folder's permissions.") from error
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return [dest / path.relative_to(temp) for path in written]
