"""Is a file complete? Read to its end, not trusted from its first bytes.

A gzip stream cut short still decompresses its first half, and a reader that
stops at the voxels it needs fills the rest with zeros: a truncated download or
a write that hit a full disk then passes as data. ``check_complete`` reads a
file as far as its format says it goes (a gzip stream to its end, the bytes a
NIfTI or NRRD header announces, every member of a zip, a JSON document) and
raises ``IncompleteFile`` with the reason. Used after every write
(``paths.write_atomically``) and before images are read (``data.images``).
"""

import gzip
import json
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

PathLike = Union[str, Path]


class IncompleteFile(Exception):
    """What was written is not a complete file of its kind (reason in the message)."""


class WrongFormat(IncompleteFile):
    """The file does not even start as its name says (not cut short: another kind of file)."""


def compound_suffix(name: str) -> str:
    """``.nii.gz``, ``.seg.nrrd``, ``.tar.gz`` as one suffix; otherwise the last one."""
    lower = name.lower()
    for suffix in (".nii.gz", ".seg.nrrd", ".tar.gz"):
        if lower.endswith(suffix):
            return name[-len(suffix):]
    return Path(name).suffix


def _read_all(stream, chunk: int = 1 << 20) -> Tuple[bytes, int]:
    """The first 4 KiB of a stream and its total length, reading it to the end."""
    head, total = b"", 0
    while True:
        block = stream.read(chunk)
        if not block:
            return head, total
        if len(head) < 4096:
            head += block[: 4096 - len(head)]
        total += len(block)


def _nifti_expected_size(head: bytes) -> Optional[int]:
    """Header + voxel bytes a NIfTI-1 header announces (None for NIfTI-2 or odd headers)."""
    if len(head) < 348:
        raise IncompleteFile("ends inside its NIfTI header")
    for order in "<>":
        if struct.unpack(order + "i", head[:4])[0] == 348:
            break
    else:
        if struct.unpack("<i", head[:4])[0] == 540 or struct.unpack(">i", head[:4])[0] == 540:
            return None
        raise WrongFormat("does not start with a NIfTI header")
    dims = struct.unpack(order + "8h", head[40:56])
    bitpix = struct.unpack(order + "h", head[72:74])[0]
    offset = struct.unpack(order + "f", head[108:112])[0]
    if not 1 <= dims[0] <= 7 or bitpix <= 0:
        return None
    voxels = 1
    for size in dims[1: dims[0] + 1]:
        voxels *= max(int(size), 1)
    return int(offset) + voxels * bitpix // 8


_NRRD_TYPE_BYTES = {"uchar": 1, "unsigned char": 1, "uint8": 1, "char": 1, "signed char": 1, "int8": 1,
                    "short": 2, "ushort": 2, "unsigned short": 2, "int16": 2, "uint16": 2, "int": 4, "uint": 4,
                    "unsigned int": 4, "int32": 4, "uint32": 4, "float": 4, "double": 8, "longlong": 8,
                    "ulonglong": 8, "int64": 8, "uint64": 8}


def _check_nrrd(path: Path) -> None:
    """An attached-data NRRD: the header, then all of its raw or gzip data."""
    with open(path, "rb") as stream:
        data = stream.read()
    if not data.startswith(b"NRRD"):
        raise WrongFormat("does not start with a NRRD header")
    end = data.find(b"\n\n")
    if end < 0:
        raise IncompleteFile("ends inside its NRRD header")
    fields: Dict[str, str] = {}
    for line in data[:end].decode("latin-1").splitlines()[1:]:
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.lstrip("=").strip()
    if "data file" in fields or "datafile" in fields:
        return
    body = data[end + 2:]
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("gzip", "gz"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            size = len(inflater.decompress(body)) + len(inflater.flush())
        except zlib.error as exc:
            raise IncompleteFile(f"has damaged gzip data ({exc})") from None
        if not inflater.eof:
            raise IncompleteFile("ends before its gzip data does")
    elif encoding == "raw":
        size = len(body)
    else:
        return
    element = _NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
    try:
        sizes = [int(v) for v in fields.get("sizes", "").split()]
    except ValueError:
        return
    if element and sizes:
        expected = element
        for value in sizes:
            expected *= value
        if size < expected:
            raise IncompleteFile(f"holds {size} of its {expected} data bytes")


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as stream:
        return stream.read(len(magic)) == magic


def check_complete(path: PathLike, name: Optional[str] = None) -> None:
    """Raise ``IncompleteFile`` unless ``path`` (to be called ``name``) is a complete file of its kind."""
    path = Path(path)
    lower = (name or path.name).lower()
    size = path.stat().st_size
    if size == 0:
        raise IncompleteFile("is empty")
    if lower.endswith(".gz"):
        if not _starts_with(path, b"\x1f\x8b"):
            raise WrongFormat("is not gzip-compressed")
        try:
            with gzip.open(str(path), "rb") as stream:
                head, total = _read_all(stream)
        except (OSError, EOFError, zlib.error) as exc:
            raise IncompleteFile(f"is not a complete gzip stream ({exc})") from None
        if lower.endswith(".nii.gz"):
            expected = _nifti_expected_size(head)
            if expected is not None and total < expected:
                raise IncompleteFile(f"holds {total} of the {expected} bytes its NIfTI header announces")
    elif lower.endswith(".nii"):
        with open(path, "rb") as stream:
            expected = _nifti_expected_size(stream.read(348))
        if expected is not None and size < expected:
            raise IncompleteFile(f"holds {size} of the {expected} bytes its NIfTI header announces")
    elif lower.endswith(".nrrd"):
        _check_nrrd(path)
    elif lower.endswith(".zip") or (lower.endswith((".pt", ".pth")) and _starts_with(path, b"PK")):
        try:
            with zipfile.ZipFile(str(path)) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise IncompleteFile(f"is a damaged zip archive ({exc})") from None
        if bad is not None:
            raise IncompleteFile(f"has a damaged member '{bad}'")
    elif lower.endswith(".json"):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IncompleteFile(f"is not complete JSON ({exc})") from None


#: NIfTI datatype codes of floating-point voxels and their numpy types (complex types are not images here).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def nifti_nonfinite_count(path: PathLike) -> int:
    """NaN and infinite voxels in a NIfTI file's raw data (0 for integer data or another format).

    Needed because ITK's NIfTI reader turns NaN into 0 without a word: an image
    whose scanner export failed would otherwise train and predict as if real.
    """
    path = Path(path)
    lower = path.name.lower()
    if not lower.endswith((".nii", ".nii.gz")):
        return 0
    opener = gzip.open if lower.endswith(".gz") else open
    with opener(str(path), "rb") as stream:
        head = stream.read(348)
        if len(head) < 348:
            return 0
        order = "<" if struct.unpack("<i", head[:4])[0] == 348 else ">"
        if struct.unpack(order + "i", head[:4])[0] != 348:
            return 0  # NIfTI-2 or not NIfTI: SimpleITK keeps its NaNs, the read check sees them
        code = _NIFTI_FLOATS.get(struct.unpack(order + "h", head[70:72])[0])
        if code is None:
            return 0
        stream.read(max(int(struct.unpack(order + "f", head[108:112])[0]) - 348, 0))
        import numpy as np  # here only: the write checks (paths.py) stay numpy-free for the torch-free layer

        dtype = np.dtype(order + code)
        count, rest = 0, b""
        while True:
            block = stream.read(1 << 22)
            if not block:
                return count
            block = rest + block
            usable = len(block) - len(block) % dtype.itemsize
            values = np.frombuffer(block[:usable], dtype=dtype)
            count += int(values.size - np.count_nonzero(np.isfinite(values)))
            rest = block[usable:]
