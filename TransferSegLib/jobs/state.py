"""``state.json``: where a job stands (queued, running, cancelling, cancelled, failed, finished).

Written atomically (temporary file + ``os.replace``) so a reader never sees half
of it. Writers are few and take turns: the front end writes ``queued``; the worker
writes ``running`` and the end state; a front end writes ``failed`` only after it
has seen that the worker process is gone without having written an end state.
``cancelling`` is not written while the worker runs (that would race with the
worker's own writes); it is derived from the cancel request file.
"""

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from TransferSegLib.errors import JobError, OutputError
from TransferSegLib.jobs.layout import STATE, now_iso
from TransferSegLib.paths import output_error, write_text_atomically

STATES = ("queued", "running", "cancelling", "cancelled", "failed", "finished")
TERMINAL = ("cancelled", "failed", "finished")


@dataclass
class JobState:
    """The contents of ``state.json``. ``pid``/``host`` are the worker's, once it runs."""

    state: str = "queued"
    pid: Optional[int] = None
    host: str = ""
    pid_created: Optional[float] = None  # the process's start time: tells a reused pid apart
    attempt: int = 1
    created: str = ""
    started: Optional[str] = None
    updated: str = ""
    ended: Optional[str] = None
    device: Optional[str] = None
    iteration: Optional[int] = None
    exit_code: Optional[int] = None
    message: str = ""
    error_type: Optional[str] = None
    hint: str = ""
    stderr_tail: List[str] = field(default_factory=list)
    model: Optional[str] = None
    metrics: Dict[str, Any] = field(default_factory=dict)
    peak_gpu_memory_gb: Optional[float] = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "JobState":
        known = {f.name for f in fields(cls)}
        # Extra keys (a newer worker) are kept out rather than refused: state is output, not input.
        values = {k: v for k, v in data.items() if k in known}
        return cls(**values)


def this_host() -> str:
    return socket.gethostname()


def state_path(job_dir: Union[str, Path]) -> Path:
    return Path(job_dir) / STATE


def read_state(job_dir: Union[str, Path]) -> JobState:
    path = state_path(job_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise JobError(f"'{job_dir}' is not a job folder: it has no {STATE}.") from exc
    except (OSError, ValueError) as exc:
        raise JobError(f"Cannot read '{path}': {exc}.") from exc
    if not isinstance(data, dict) or data.get("state") not in STATES:
        raise JobError(f"'{path}' does not describe a job state (state={data.get('state') if isinstance(data, dict) else data!r}).")
    return JobState.from_dict(data)


def write_state(job_dir: Union[str, Path], state: JobState, attempts: int = 3) -> JobState:
    if state.state not in STATES:
        raise JobError(f"Unknown job state '{state.state}'.")
    now = now_iso()
    state.updated = now
    state.created = state.created or now
    if state.terminal and not state.ended:
        state.ended = now
    path = state_path(job_dir)
    for attempt in range(attempts):
        try:
            write_text_atomically(path, json.dumps(state.to_dict(), indent=2) + "\n")
            return state
        except OutputError:
            if not state.terminal:
                raise  # only an end state is worth a fallback: it is what status, cancel and resume read
            if attempt + 1 < attempts:
                time.sleep(0.2 * (attempt + 1))
    _overwrite_in_place(path, state)
    return state


def _overwrite_in_place(path: Path, state: JobState) -> None:
    """Last resort on a full disk: the end state, shortened, written over the old ``state.json``'s own blocks.

    Not atomic (a reader may see it half-written for an instant and then read it
    again), but a job left "running" forever is worse. Raises ``OutputError`` if
    even that fails; the front ends then derive the end from the dead worker.
    """
    short = JobState(**dict(state.to_dict(), stderr_tail=[], metrics={}, message=state.message[:300],
                            hint=state.hint[:200]))
    data = (json.dumps(short.to_dict(), separators=(",", ":")) + "\n").encode("utf-8")
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise output_error(path, exc) from exc


def update_state(job_dir: Union[str, Path], **changes: Any) -> JobState:
    """Read, change and write back (for the one writer whose turn it is)."""
    try:
        state = read_state(job_dir)
    except JobError:
        state = JobState()
    for key, value in changes.items():
        if not hasattr(state, key):
            raise JobError(f"Unknown job state field '{key}'.")
        setattr(state, key, value)
    return write_state(job_dir, state)
