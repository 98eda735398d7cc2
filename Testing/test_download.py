"""Downloads against a real HTTP server on 127.0.0.1 with fault modes.

Nothing here contacts any other address: the server binds the loopback interface on
an ephemeral port and the client session ignores proxy settings.
"""

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from TransferSegLib.models import download as dl
from TransferSegLib.errors import DownloadError

PAYLOAD = bytes(range(256)) * 1201  # about 300 KiB, not a multiple of the chunk size
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
TRUNCATED_AT = 25 * 4096


class _Handler(BaseHTTPRequestHandler):
    """Serves ``PAYLOAD`` under /<mode>/file.bin; ``mode`` picks a fault."""

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        server = self.server
        mode = self.path.strip("/").split("/")[0]
        with server.lock:
            server.requests.append({"path": self.path, "range": self.headers.get("Range")})
            count = server.counts[mode] = server.counts.get(mode, 0) + 1
        if mode == "missing":
            return self._status(404)
        if mode == "error-then-ok" and count <= 2:
            return self._status(500)
        if mode == "always-error":
            return self._status(503)
        start = 0
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        honour_range = mode not in ("ignore-range",)
        if match and honour_range:
            start = int(match.group(1))
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "truncate-first" and count == 1 or mode == "truncate-always":
            self.wfile.write(body[:TRUNCATED_AT])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "stall-first" and count == 1:
            self.wfile.write(body[:8192])
            self.wfile.flush()
            server.release.wait(3.0)  # longer than the client's read timeout
            self.close_connection = True
            return
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.lock = threading.Lock()
    httpd.requests = []
    httpd.counts = {}
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def session():
    with requests.Session() as s:
        s.trust_env = False  # no proxy from the environment: loopback only
        yield s


@pytest.fixture(autouse=True)
def online(monkeypatch):
    monkeypatch.delenv("TRANSFERSEG_OFFLINE", raising=False)
    # Reads of 4 KiB so that a 300 KiB payload arrives in many chunks.
    monkeypatch.setattr(dl, "_NETWORK_CHUNK_BYTES", 4096)


def _get(server, session, mode: str, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("timeout", 5.0)  # only the stall test needs a short one
    kwargs.setdefault("backoff", 0.01)
    return dl.download(f"{server.base}/{mode}/file.bin", dest, session=session, **kwargs)


def test_download_verifies_and_renames_into_place(server, session, tmp_path):
    seen = []
    dest = _get(server, session, "ok", tmp_path / "sub" / "model.pt", sha256=SHA256, size=len(PAYLOAD),
                progress=lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "model.pt.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_cached_file_that_verifies_is_not_downloaded_again(server, session, tmp_path):
    dest = tmp_path / "model.pt"
    dest.write_bytes(PAYLOAD)
    _get(server, session, "ok", dest, sha256=SHA256)
    assert server.requests == []


def test_corrupt_cached_file_is_replaced(server, session, tmp_path):
    dest = tmp_path / "model.pt"
    dest.write_bytes(b"garbage")
    _get(server, session, "ok", dest, sha256=SHA256)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("checksum", [
    "md5:" + hashlib.md5(PAYLOAD).hexdigest(),
    "sha1:" + hashlib.sha1(PAYLOAD).hexdigest(),
    "SHA256:" + SHA256.upper(),
])
def test_prefixed_checksums_of_monai_bundles_are_accepted(server, session, tmp_path, checksum):
    assert _get(server, session, "ok", tmp_path / "f.bin", sha256=checksum).read_bytes() == PAYLOAD


def test_wrong_checksum_deletes_the_file_and_says_expected_and_got(server, session, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        _get(server, session, "ok", tmp_path / "f.bin", sha256=wrong)
    assert wrong in str(info.value) and SHA256 in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_url_is_not_retried(server, session, tmp_path):
    with pytest.raises(DownloadError, match="not there"):
        _get(server, session, "missing", tmp_path / "f.bin", retries=5)
    assert len(server.requests) == 1


def test_server_errors_are_retried_until_ok(server, session, tmp_path):
    dest = _get(server, session, "error-then-ok", tmp_path / "f.bin", sha256=SHA256, retries=3)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 3


def test_persistent_server_errors_give_up_after_the_retries(server, session, tmp_path):
    with pytest.raises(DownloadError, match="failed 3 times"):
        _get(server, session, "always-error", tmp_path / "f.bin", retries=2)
    assert len(server.requests) == 3
    assert not (tmp_path / "f.bin").exists()


def test_truncated_body_is_resumed_with_a_range_request(server, session, tmp_path):
    dest = _get(server, session, "truncate-first", tmp_path / "f.bin", sha256=SHA256, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0]["range"] is None
    assert server.requests[1]["range"] == f"bytes={TRUNCATED_AT}-"


def test_always_truncated_body_finally_fails_and_keeps_the_partial_file(server, session, tmp_path):
    with pytest.raises(DownloadError, match="will be reused"):
        _get(server, session, "truncate-always", tmp_path / "f.bin", size=len(PAYLOAD), retries=2)
    assert len(server.requests) == 3
    assert not (tmp_path / "f.bin").exists()
    assert (tmp_path / "f.bin.part").exists()


def test_stalled_connection_times_out_and_resumes(server, session, tmp_path):
    dest = _get(server, session, "stall-first", tmp_path / "f.bin", sha256=SHA256, timeout=0.3)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[1]["range"] == "bytes=8192-"


def test_interrupted_download_resumes_from_the_partial_file(server, session, tmp_path):
    class Cancelled(Exception):
        pass

    def cancel_after_first_chunk(done, total):
        raise Cancelled()

    dest = tmp_path / "f.bin"
    with pytest.raises(Cancelled):
        _get(server, session, "ok", dest, sha256=SHA256, progress=cancel_after_first_chunk)
    part = tmp_path / "f.bin.part"
    received = part.stat().st_size
    assert 0 < received < len(PAYLOAD) and not dest.exists()
    _get(server, session, "ok", dest, sha256=SHA256)
    assert server.requests[-1]["range"] == f"bytes={received}-"
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, session, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:5000])
    dest = _get(server, session, "ignore-range", tmp_path / "f.bin", sha256=SHA256)
    assert server.requests[0]["range"] == "bytes=5000-"
    assert dest.read_bytes() == PAYLOAD


def test_stale_partial_file_from_another_version_is_downloaded_again(server, session, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"x" * 5000)
    dest = _get(server, session, "ok", tmp_path / "f.bin", sha256=SHA256)
    assert dest.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == ["bytes=5000-", None]


def test_size_different_from_the_catalog_is_refused(server, session, tmp_path):
    with pytest.raises(DownloadError, match="expects 10"):
        _get(server, session, "ok", tmp_path / "f.bin", size=10)


def test_offline_never_touches_the_network(server, session, tmp_path, monkeypatch):
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        _get(server, session, "ok", dest, sha256=SHA256, offline=True)
    assert str(dest) in str(info.value) and "use_local_file" in str(info.value)
    monkeypatch.setenv("TRANSFERSEG_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline"):
        _get(server, session, "ok", dest, sha256=SHA256)
    assert server.requests == []


def test_offline_returns_a_cached_file_that_verifies(server, session, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(PAYLOAD)
    assert _get(server, session, "ok", dest, sha256=SHA256, offline=True) == dest
    dest.write_bytes(PAYLOAD[:-1])
    with pytest.raises(DownloadError, match="offline"):
        _get(server, session, "ok", dest, sha256=SHA256, offline=True)
    assert server.requests == []


def test_use_local_file_copies_and_verifies(tmp_path):
    src = tmp_path / "from_usb.pt"
    src.write_bytes(PAYLOAD)
    dest = dl.use_local_file(src, tmp_path / "cache" / "model.pt", sha256=SHA256)
    assert dest.read_bytes() == PAYLOAD and src.exists()
    with pytest.raises(DownloadError, match="not the expected file"):
        dl.use_local_file(src, tmp_path / "cache" / "other.pt", sha256="1" * 64)
    assert not (tmp_path / "cache" / "other.pt").exists()


def test_cache_dir_follows_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERSEG_CACHE", str(tmp_path / "env"))
    assert dl.cache_dir() == tmp_path / "env"
    assert dl.cache_dir(tmp_path / "slicer") == tmp_path / "slicer"
    monkeypatch.delenv("TRANSFERSEG_CACHE")
    assert dl.cache_dir() == Path.home() / ".cache" / "transferseg"


def test_cached_download_names_the_file_from_the_url(server, session, tmp_path):
    path = dl.cached_download(f"{server.base}/ok/weights.pt", sha256=SHA256, cache_root=tmp_path, session=session,
                              timeout=5.0)
    assert path == tmp_path / "downloads" / "weights.pt"


def test_malformed_checksum_is_refused_before_downloading(server, session, tmp_path):
    with pytest.raises(DownloadError, match="hex"):
        _get(server, session, "ok", tmp_path / "f.bin", sha256="not-a-checksum")
    assert server.requests == []
