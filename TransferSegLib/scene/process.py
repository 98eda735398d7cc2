"""A command of the ``transferseg`` CLI run in the background for the Slicer panel.

Prediction can take minutes and needs torch: it runs in its own process (in
Slicer: ``PythonSlicer``), so the application stays responsive and a crash or an
out-of-memory kill cannot take the user's scene with it. The panel polls it from
a timer; cancelling kills the whole process tree (``PythonSlicer`` is a launcher
whose child is the real interpreter), with the job layer's helpers. Needs no
``slicer`` import.
"""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from TransferSegLib.errors import JobError, TransferSegError
from TransferSegLib.jobs.launch import worker_environment
from TransferSegLib.jobs.processes import kill_tree


def default_python() -> str:
    """The interpreter for workers: Slicer's ``PythonSlicer`` inside Slicer, else this one."""
    return shutil.which("PythonSlicer") or sys.executable


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
        """Stop the process and every process it started, without making the caller wait.

        The tree is killed (SIGKILL); the exit is reaped by a later ``poll`` if it has
        not happened within a second, so Cancel in the panel never blocks.
        """
        self.cancelled = True
        if self.process.poll() is not None:
            return
        kill_tree([self.process.pid], timeout=1.0)
        try:
            self.process.wait(1.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - reaped by a later poll()
            pass

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
