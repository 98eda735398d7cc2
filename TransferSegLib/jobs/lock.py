"""One job per device: a lock file per (host, device) in ``<TRANSFERSEG_HOME>/locks``.

Two trainings on one 8 GB GPU both run out of memory, and two on a CPU both
crawl; a second start gets a clear refusal naming the job in the way. A lock
records the holder's pid, start time, host and job folder; a lock whose process
is gone (crash, ``kill -9``, reboot) is stale and is taken over. The host is part
of the file name, so a home folder shared between machines keeps their locks
apart and a host only ever judges its own locks.
"""

import json
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from TransferSegLib.errors import JobError
from TransferSegLib.jobs.layout import locks_root, now_iso
from TransferSegLib.jobs.processes import pid_alive, process_created
from TransferSegLib.jobs.state import this_host


def device_key(device: str) -> str:
    """A stable name for a device without importing torch: ``cpu``, ``cuda0`` (the physical GPU).

    ``cuda:N`` counts GPUs after ``CUDA_VISIBLE_DEVICES``; the key uses the physical
    index so two jobs with different visible sets still share one lock per GPU.
    ``auto`` is guessed (the worker, which resolves it with torch, has the final word).
    """
    name = (device or "auto").strip().lower()
    if name == "auto":
        name = "cuda:0" if _cuda_likely() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        physical = visible[index] if "CUDA_VISIBLE_DEVICES" in os.environ and index < len(visible) else str(index)
        return "cuda" + re.sub(r"[^A-Za-z0-9_-]", "_", physical)
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _cuda_likely() -> bool:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None


@dataclass
class LockInfo:
    device: str
    pid: int
    host: str
    pid_created: Optional[float]
    started: str
    job: str

    def describe(self) -> str:
        return f"job '{self.job}' (pid {self.pid} on {self.host}, since {self.started})"


class DeviceBusy(JobError):
    """The device is held by another running job."""


class DeviceLock:
    """Held by the worker for the whole training; released on exit, judged stale after a crash."""

    def __init__(self, device: str, job_dir: str, root: Optional[Path] = None):
        self.device = device_key(device)
        self.job_dir = str(job_dir)
        self.root = Path(root) if root else locks_root()
        self.path = self.root / f"{this_host()}--{self.device}.lock"
        self.held = False

    def acquire(self) -> "DeviceLock":
        """Take the lock or raise ``DeviceBusy`` naming the holder."""
        self.root.mkdir(parents=True, exist_ok=True)
        info = LockInfo(self.device, os.getpid(), this_host(), process_created(os.getpid()), now_iso(), self.job_dir)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")
        try:
            for _ in range(5):
                if _link_exclusive(tmp, self.path):
                    self.held = True
                    return self
                holder = read_lock(self.path)
                if holder is not None and holder.pid == os.getpid() and holder.host == this_host():
                    self.held = True
                    return self
                if holder is not None and not is_stale(holder):
                    raise DeviceBusy(
                        f"The device '{device_label(self.device)}' is busy: {holder.describe()} is training on it. "
                        f"Wait for it, cancel it ('transferseg job cancel {holder.job}'), or choose another device (--device)."
                    )
                _remove_stale(self.path)
            raise DeviceBusy(f"Could not take the lock '{self.path}' for device '{self.device}': it keeps changing.")
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        holder = read_lock(self.path)
        if holder is not None and holder.pid == os.getpid() and holder.host == this_host():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.held = False

    def __enter__(self) -> "DeviceLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def device_label(key: str) -> str:
    return "cpu" if key == "cpu" else key.replace("cuda", "cuda:", 1) if key.startswith("cuda") else key


def _link_exclusive(source: Path, target: Path) -> bool:
    """Create ``target`` with ``source``'s full content, atomically; False if it exists.

    A hard link never shows a half-written lock; where links are not supported
    (some network or FAT drives) an exclusive create is the fallback.
    """
    try:
        os.link(str(source), str(target))
        return True
    except FileExistsError:
        return False
    except OSError:
        try:
            fd = os.open(str(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(source.read_bytes())
        return True


def read_lock(path: Path) -> Optional[LockInfo]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return LockInfo(**{k: data.get(k) for k in LockInfo.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        # Unreadable: treat as held by nobody we can name; a damaged lock must not block forever.
        return LockInfo("?", 0, this_host(), None, "", "?")


def is_stale(info: LockInfo) -> bool:
    """A lock of this host whose process is gone (or whose pid now belongs to another process)."""
    if info.host != this_host():
        return False
    return not pid_alive(info.pid, info.pid_created)


def _remove_stale(path: Path) -> None:
    # Rename first: of two processes removing the same stale lock, only one succeeds,
    # and neither can delete a fresh lock the other has just created.
    aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.replace(str(path), str(aside))
    except FileNotFoundError:
        return
    holder = read_lock(aside)
    if holder is not None and not is_stale(holder):  # lost a race: put the live lock back
        _link_exclusive(aside, path)
    aside.unlink()


def lock_holder(device: str, root: Optional[Path] = None) -> Optional[LockInfo]:
    """Who holds ``device`` on this host (None when free or when the holder is gone)."""
    lock = DeviceLock(device, "", root)
    holder = read_lock(lock.path)
    if holder is None or is_stale(holder):
        return None
    return holder
