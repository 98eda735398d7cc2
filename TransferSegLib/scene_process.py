"""A command of the ``transferseg`` CLI run in the background for the Slicer panel.

Prediction can take minutes and needs torch: it runs in its own process (in
Slicer: ``PythonSlicer``), so the application stays responsive and a crash or an
out-of-memory kill cannot take the user's scene with it. The panel polls it from
a timer; cancelling kills the whole process tree (``PythonSlicer`` is a launcher
whose child is the real interpreter). Needs no ``slicer`` import.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .errors import JobError, TransferSegError

LIBRARY_PARENT = str(Path(__file__).resolve().parent.parent)


def default_python() -> str:
    """The interpreter for workers: Slicer's ``PythonSlicer`` inside Slicer, else this one."""
    return shutil.which("PythonSlicer") or sys.executable


def worker_environment() -> dict:
    """This process's environment with TransferSegLib importable by the worker."""
    env = dict(os.environ)
    paths = [LIBRARY_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != LIBRARY_PARENT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class CommandProcess:
    """``python -m TransferSegLib.cli ARGS`` with its output in a log file."""

    def __init__(self, args: Sequence[str], log_path: Path, python: Optional[str] = None):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.python = python or default_python()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [self.python, "-m", "TransferSegLib.cli"] + self.args
        with open(self.log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=worker_environment(), cwd=str(self.log_path.parent),
                )
            except OSError as exc:
                raise JobError(
                    f"Cannot start '{self.python}' for 'transferseg {self.args[0]}': {exc}. "
                    f"Check that Slicer's Python (PythonSlicer) is installed next to Slicer."
                ) from exc
        self.cancelled = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> Optional[int]:
        """The exit code once finished, else None."""
        return self.process.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.cancel()
            raise JobError(f"'transferseg {self.args[0]}' did not finish within {timeout:.0f} s and was stopped.") from exc

    def cancel(self) -> None:
        """Stop the process and every process it started."""
        self.cancelled = True
        if self.process.poll() is not None:
            return
        kill_tree(self.process.pid)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the OS refused to kill
            self.process.kill()

    def log_tail(self, lines: int = 20) -> List[str]:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.strip().splitlines()[-lines:]

    def failure(self) -> TransferSegError:
        """The error to show for a failed run: the CLI's own message when it printed one."""
        tail = self.log_tail()
        messages = [line[len("error: "):] for line in tail if line.startswith("error: ")]
        if messages:
            return TransferSegError(messages[-1])
        if self.cancelled:
            return TransferSegError(f"'transferseg {self.args[0]}' was cancelled.")
        code = self.process.returncode
        if code is not None and code < 0 or code in (137, -9):
            hint = "It was killed, most often for lack of memory: close other programs or use a smaller image."
        else:
            hint = "See the log for details."
        last = tail[-1] if tail else "(no output)"
        return TransferSegError(
            f"'transferseg {self.args[0]}' failed (exit code {code}): {last}. {hint} Log: {self.log_path}"
        )


def kill_tree(pid: int) -> None:
    """Kill a process and all its descendants (children first, so none is re-parented and lost)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            family = parent.children(recursive=True) + [parent]
        except psutil.NoSuchProcess:
            return
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=10)
        return
    try:  # pragma: no cover - psutil is a dependency; this keeps cancel working without it
        os.kill(pid, 9)
    except OSError:
        pass
