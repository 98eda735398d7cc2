"""What a front end shows of a job: ``JobStatus``, and the words for a worker that died.

A status is ``state.json`` plus the latest progress and validation events, read
incrementally so a GUI timer can ask for it every second at little cost.
"""

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from TransferSegLib.errors import OutputError
from TransferSegLib.jobs.events import EventReader, EventWriter
from TransferSegLib.jobs.layout import CANCEL, EVENTS, LOG
from TransferSegLib.jobs.state import JobState, write_state

STDERR_TAIL_LINES = 20


def log_tail(job_dir: Path, lines: int = STDERR_TAIL_LINES) -> List[str]:
    """The last lines the worker wrote to stdout/stderr (``worker.log``)."""
    path = Path(job_dir) / LOG
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


@dataclass
class JobStatus:
    """A job as a front end shows it: ``state.json`` plus the latest progress and validation."""

    directory: Path
    state: str
    alive: Optional[bool] = None  # None: the worker runs on another host, liveness unknown here
    pid: Optional[int] = None
    host: str = ""
    attempt: int = 1
    device: Optional[str] = None
    name: str = ""
    output: str = ""
    created: str = ""
    started: Optional[str] = None
    ended: Optional[str] = None
    iteration: Optional[int] = None
    total_iterations: Optional[int] = None
    percent: Optional[float] = None
    eta_s: Optional[float] = None
    loss: Optional[float] = None
    mean_dice: Optional[float] = None
    dice: Dict[str, float] = field(default_factory=dict)
    model: Optional[str] = None
    message: str = ""
    error_type: Optional[str] = None
    hint: str = ""
    stderr_tail: List[str] = field(default_factory=list)
    exit_code: Optional[int] = None
    peak_gpu_memory_gb: Optional[float] = None
    cancel_requested: bool = False
    last_event_age_s: Optional[float] = None

    @property
    def terminal(self) -> bool:
        return self.state in ("cancelled", "failed", "finished")

    def summary(self) -> str:
        """One line for ``job list``."""
        parts = [f"{self.state:<10}", self.directory.name]
        if self.percent is not None and not self.terminal:
            parts.append(f"{self.percent:5.1f}%")
        if self.mean_dice is not None:
            parts.append(f"Dice {self.mean_dice:.3f}")
        if self.device:
            parts.append(self.device)
        if self.state == "failed" and self.message:
            parts.append(self.message[:80])
        elif self.state == "finished" and self.model:
            parts.append(self.model)
        return "  ".join(parts)


class EventSummary:
    """The latest progress/validation of a job, kept up to date incrementally."""

    def __init__(self, events_path: Path):
        self.reader = EventReader(events_path)
        self.progress: Dict[str, Any] = {}
        self.validation: Dict[str, Any] = {}

    def update(self) -> None:
        for event in self.reader.read_new():
            if event["kind"] == "progress":
                self.progress = event
            elif event["kind"] == "validation":
                self.validation = event


def death_message(code: Optional[int], state: JobState, directory: Path, iteration: Optional[int]) -> Tuple[str, str]:
    """(message, hint) for a worker gone without an end state: a signal usually means the OOM killer."""
    if iteration is not None:
        when = f"at iteration {iteration}"
    else:
        when = "before it started" if state.state == "queued" else "before the first training iteration"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"The worker was killed ({name}) {when}."
        hint = ("Most often the system ran out of memory (lower --batch-size or --patch-size) or the process was ended "
                f"by hand. Resume from the last checkpoint with 'transferseg job resume {directory}'.")
    elif code is not None:
        what = f"The worker exited with code {code} {when} without reporting a result."
        hint = "The last lines of worker.log (below) show why; a missing package or a broken Python is the usual cause."
    else:
        what = f"The worker process ended {when} without reporting a result."
        hint = f"The last lines of worker.log (below) show why. Resume with 'transferseg job resume {directory}'."
    return what, hint


def record_death(directory: Path, state: JobState, code: Optional[int], iteration: Optional[int]) -> Optional[JobState]:
    """A worker gone without an end state: the end is written first (any front end may; all write the same),
    then one front end adds the event. Returns the end state when a full disk kept it from being written
    (the front end shows it from memory), else None."""
    tail = log_tail(directory)
    if (directory / CANCEL).exists():
        message = "Stopped." if state.state == "running" else "Stopped before training started."
        event: Dict[str, Any] = {"kind": "cancelled", "message": message, "iteration": iteration, "exit_code": code}
        state.state, state.message, state.exit_code = "cancelled", message, code
    else:
        message, hint = death_message(code, state, directory, iteration)
        event = {"kind": "error", "type": "WorkerDied", "message": message, "hint": hint, "exit_code": code,
                 "stderr_tail": tail}
        state.state, state.message, state.hint, state.error_type = "failed", message, hint, "WorkerDied"
        state.exit_code, state.stderr_tail = code, tail
    state.iteration = iteration
    unwritten: Optional[JobState] = None
    try:
        write_state(directory, state)
    except (OutputError, OSError):
        unwritten = state
    try:  # several front ends may notice at once: one adds the event
        fd = os.open(str(directory / f".ended-attempt-{state.attempt}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        EventWriter(directory / EVENTS).event(event.pop("kind"), **event)
    except OSError:
        pass
    return unwritten
