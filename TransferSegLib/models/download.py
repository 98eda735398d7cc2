"""Verified, resumable downloads into the TransferSeg cache, and an offline mode.

Model weights are hundreds of MB fetched over hospital networks: a download is
streamed to ``<dest>.part``, resumed with an HTTP ``Range`` request after a dropped
connection, checked against its published size and checksum, and only then renamed
into place, so the cache never holds a file that has not been verified.
"""

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlparse

from TransferSegLib.errors import DownloadError
from TransferSegLib.paths import write_atomically

#: Progress callback: bytes done so far, total bytes (None when the server does not say).
Progress = Callable[[int, Optional[int]], None]

_CHUNK_BYTES = 1 << 20
# Small network reads: a dropped or stalled connection loses at most this much.
_NETWORK_CHUNK_BYTES = 64 * 1024
_MAX_BACKOFF_S = 30.0
_HEX_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}


@dataclass(frozen=True)
class Checksum:
    """A published digest: ``algorithm`` as hashlib names it, ``digest`` in lower-case hex."""

    algorithm: str
    digest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.digest}"


def parse_checksum(text: str) -> Checksum:
    """Read ``"<hex>"`` (sha256, or md5/sha1/sha512 by length) or ``"md5:<hex>"``-style text.

    The prefixed forms are what MONAI bundle download lists use alongside sha256.
    """
    value = str(text).strip()
    algorithm = None
    if ":" in value:
        algorithm, value = (part.strip() for part in value.split(":", 1))
        algorithm = algorithm.lower().replace("-", "")
    value = value.lower()
    if not re.fullmatch(r"[0-9a-f]+", value):
        raise DownloadError(f"Checksum '{text}' is not hexadecimal; expected 'sha256:<hex>', 'md5:<hex>' or 'sha1:<hex>'.")
    if algorithm is None:
        algorithm = _HEX_LENGTHS.get(len(value))
        if algorithm is None:
            raise DownloadError(f"Checksum '{text}' has {len(value)} hex digits, which matches no known algorithm; "
                                "write it as 'sha256:<hex>'.")
    if algorithm not in hashlib.algorithms_available:
        raise DownloadError(f"Checksum '{text}' uses the unknown algorithm '{algorithm}'; use sha256, sha1 or md5.")
    return Checksum(algorithm, value)


def file_checksum(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks so multi-GB checkpoints fit in memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problem(path: Path, sha256: Optional[str] = None, size: Optional[int] = None) -> Optional[str]:
    """Why ``path`` is not the expected file (missing, wrong size, wrong checksum), or None if it is."""
    path = Path(path)
    if not path.is_file():
        return "is missing"
    actual_size = path.stat().st_size
    if size is not None and actual_size != int(size):
        return f"has {actual_size} bytes instead of {int(size)}"
    if sha256:
        expected = parse_checksum(sha256)
        got = file_checksum(path, expected.algorithm)
        if got != expected.digest:
            return f"has {expected.algorithm} {got}, expected {expected.digest}"
    return None


def is_offline(offline: bool = False) -> bool:
    """Offline when asked, or when the environment says ``TRANSFERSEG_OFFLINE=1`` (also true/yes/on)."""
    return bool(offline) or os.environ.get("TRANSFERSEG_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir(cache_root: Optional[Path] = None) -> Path:
    """The cache folder: ``cache_root`` if given (Slicer passes its own), else
    ``$TRANSFERSEG_CACHE``, else ``~/.cache/transferseg``. Not created here."""
    if cache_root:
        return Path(cache_root).expanduser()
    env = os.environ.get("TRANSFERSEG_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "transferseg"


class _Retry(Exception):
    """A transient failure (connection, 5xx, stall, truncated body): try again."""


def _offline_error(url: str, dest: Path, problem: str) -> DownloadError:
    return DownloadError(
        f"TransferSeg is offline (offline option or TRANSFERSEG_OFFLINE=1) and the cached file {dest} {problem}. "
        f"Download {url} on a computer with network access, then copy it to {dest} "
        "(or import it with TransferSegLib.models.download.use_local_file, which checks its checksum).")


def _content_range_start(header: str) -> Optional[int]:
    match = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _content_range_total(header: str) -> Optional[int]:
    match = re.match(r"\s*bytes\s+\d+-\d+/(\d+)", header or "")
    return int(match.group(1)) if match else None


def _fetch(session, url: str, part: Path, offset: int, size: Optional[int], progress: Optional[Progress],
           timeout: float) -> None:
    """One request: append to (or restart) ``part``. Raises ``_Retry`` for transient failures."""
    import requests
    import urllib3

    # identity: a transparently gzipped body would break byte offsets and sizes.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as error:
        raise DownloadError(f"Cannot download '{url}': {error}. Check the URL in the model catalog.") from error
    except requests.RequestException as error:
        raise _Retry(f"cannot reach the server ({type(error).__name__}: {error})") from error

    with response:
        status = response.status_code
        if status in (404, 410):
            raise DownloadError(f"{url} is not there (HTTP {status}). The file may have moved: update the catalog "
                                "entry, or download it yourself and import it as a local file.")
        if status == 416:
            part.unlink()
            raise _Retry("the server could not resume the partial file (HTTP 416); starting again")
        if status == 429 or status >= 500:
            raise _Retry(f"server error HTTP {status} {response.reason or ''}".rstrip())
        if status >= 400:
            raise DownloadError(f"The server refused {url} (HTTP {status} {response.reason or ''}). "
                                "It may need a login or a license acceptance: download it in a browser and import "
                                "it as a local file.")
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        content_range = response.headers.get("Content-Range", "")
        if status == 206 and offset:
            start = _content_range_start(content_range)
            if start != offset:
                part.unlink()
                raise _Retry(f"the server resumed at byte {start} instead of {offset}; starting again")
            total = _content_range_total(content_range) or (offset + length if length is not None else None)
            mode = "ab"
        else:
            # A 200 answer to a Range request: the server sends the whole file again.
            offset, mode = 0, "wb"
            total = _content_range_total(content_range) if status == 206 else length
        if size is not None and total is not None and total != int(size):
            raise DownloadError(f"The server offers {total} bytes for {url} but the catalog expects {int(size)}: "
                                "the file has changed. Check the catalog entry before trusting it.")

        done = offset
        try:
            fh = open(part, mode)
        except OSError as error:
            raise DownloadError(f"Cannot write {part}: {error}. Choose another cache folder "
                                "(TRANSFERSEG_CACHE) or free some disk space.") from error
        with fh:
            try:
                for chunk in response.iter_content(_NETWORK_CHUNK_BYTES):
                    if not chunk:
                        continue
                    try:
                        fh.write(chunk)
                    except OSError as error:
                        raise DownloadError(f"Cannot write {part}: {error}. Free some disk space or choose another "
                                            "cache folder (TRANSFERSEG_CACHE).") from error
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total if total is not None else size)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
                raise _Retry(f"the connection dropped after {done} bytes ({type(error).__name__})") from error
        expected_total = total if total is not None else size
        if expected_total is not None and done < expected_total:
            raise _Retry(f"the server sent {done} of {expected_total} bytes")


def download(url: str, dest: Path, sha256: Optional[str] = None, size: Optional[int] = None,
             progress: Optional[Progress] = None, timeout: float = 30, retries: int = 3, offline: bool = False,
             session=None, backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` and return ``dest`` once it verifies.

    A ``dest`` that already matches ``sha256``/``size`` is returned without network
    access (with neither given, any existing file is accepted). ``sha256`` also takes
    ``"md5:<hex>"``/``"sha1:<hex>"``. Transient failures (connection errors, HTTP 5xx,
    no data for ``timeout`` seconds, a short body) are retried ``retries`` times with
    exponential ``backoff`` seconds, resuming from ``dest.part``. An exception raised
    by ``progress`` (e.g. a cancel) propagates and keeps the partial file for a later
    resume. ``session`` is a ``requests.Session`` (one is made if None).
    """
    dest = Path(dest)
    if sha256:
        parse_checksum(sha256)  # a malformed catalog checksum fails before any network use
    if dest.exists():
        problem = file_problem(dest, sha256, size)
        if problem is None:
            return dest
    else:
        problem = "is missing"
    if is_offline(offline):
        raise _offline_error(url, dest, problem)

    import requests

    own_session = session is None
    session = session or requests.Session()
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = 0
    restarted_after_mismatch = False
    try:
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if size is not None and offset > int(size):
                part.unlink()
                offset = 0
            if size is None or offset < int(size) or offset == 0:
                try:
                    _fetch(session, url, part, offset, size, progress, timeout)
                except _Retry as reason:
                    failures += 1
                    if failures > retries:
                        raise DownloadError(f"Downloading {url} failed {failures} times; last: {reason}. "
                                            f"Check the network and try again (the {part.stat().st_size if part.exists() else 0} "
                                            f"bytes already received in {part} will be reused).") from None
                    time.sleep(min(backoff * 2 ** (failures - 1), _MAX_BACKOFF_S))
                    continue
            problem = file_problem(part, sha256, size)
            if problem is None:
                os.replace(part, dest)
                return dest
            part.unlink()
            if offset > 0 and not restarted_after_mismatch:
                # The partial file may be from an older version of the file: one clean attempt.
                restarted_after_mismatch = True
                continue
            raise DownloadError(f"The file downloaded from {url} {problem}; it was deleted. Try again; if it keeps "
                                "failing the file on the server has changed or is damaged: get it from its "
                                "publisher and check the catalog entry's checksum.")
    finally:
        if own_session:
            session.close()


def cached_download(url: str, filename: Optional[str] = None, sha256: Optional[str] = None,
                    size: Optional[int] = None, cache_root: Optional[Path] = None, subdir: str = "downloads",
                    **kwargs) -> Path:
    """``download`` into ``cache_dir(cache_root)/subdir/filename`` (name from the URL by default)."""
    name = filename or Path(urlparse(url).path).name
    if not name:
        raise DownloadError(f"Cannot tell a file name from '{url}'; give one.")
    return download(url, cache_dir(cache_root) / subdir / name, sha256=sha256, size=size, **kwargs)


def use_local_file(src: Path, dest: Path, sha256: Optional[str] = None, size: Optional[int] = None) -> Path:
    """Copy a file the user obtained themselves into the cache, verified like a download.

    For computers without network access: the same checksum guards the file whatever
    way it arrived. ``src`` is left untouched.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise DownloadError(f"Local file {src} does not exist; check the path.")
    problem = file_problem(src, sha256, size)
    if problem is not None:
        raise DownloadError(f"Local file {src} {problem}, so it is not the expected file; "
                            "get the published version of the file.")
    if dest.exists() and dest.resolve() == src.resolve():
        return dest
    def copy(temp: Path) -> None:
        shutil.copyfile(src, temp)
        problem = file_problem(temp, sha256, size)
        if problem is not None:
            raise DownloadError(f"Copying {src} to {dest} gave a file that {problem}; check the disk and try again.")
    return write_atomically(dest, copy)
