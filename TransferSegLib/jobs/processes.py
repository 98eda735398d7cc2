"""Operating-system processes: is a recorded worker still alive, and stopping a whole tree.

A pid alone is not an identity: after a crash and a reboot (or just enough time)
the same number belongs to another program. Every pid TransferSeg records comes
with the process's start time, and a pid whose start time differs is treated as
gone. ``PythonSlicer`` is a launcher whose child is the real interpreter, so a
stop always takes the whole tree, children first.
"""

import os
import signal
import sys
import time
from typing import List, Optional

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a dependency; degrade rather than fail in a bare Slicer
    psutil = None  # type: ignore[assignment]


def process_created(pid: int) -> Optional[float]:
    """The start time of ``pid`` (seconds since the epoch), or None if unknown/gone."""
    if psutil is None:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def pid_alive(pid: Optional[int], created: Optional[float] = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when ``created`` is given, is the same process."""
    if not pid:
        return False
    if psutil is None:  # pragma: no cover
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if created is not None and abs(process.create_time() - created) > 1.0:
            return False
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process with that pid: alive, but not ours to judge
        return created is None


def send_terminate(pid: int) -> bool:
    """Ask ``pid`` to stop (SIGTERM; the worker then saves a checkpoint). False if it is gone.

    Windows has no SIGTERM that a process can catch (``os.kill`` there terminates at
    once), so there only the cancel request file is used.
    """
    if sys.platform == "win32":
        return pid_alive(pid)
    try:
        os.kill(pid, signal.SIGTERM)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_tree(pids: List[int], timeout: float = 10.0) -> None:
    """Kill the processes and all their descendants (children first, so none is re-parented and lost)."""
    if psutil is None:  # pragma: no cover
        for pid in pids:
            try:
                os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
            except OSError:
                pass
        return
    family: List["psutil.Process"] = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            family.extend(parent.children(recursive=True))
            family.append(parent)
        except psutil.NoSuchProcess:
            continue
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=timeout)


def descendants(pid: int) -> List[int]:
    """Pids started (directly or not) by ``pid``; empty when it is gone."""
    if psutil is None:  # pragma: no cover
        return []
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_gone(pids: List[int], timeout: float) -> bool:
    """Wait until none of ``pids`` runs; True if they all ended in time."""
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
