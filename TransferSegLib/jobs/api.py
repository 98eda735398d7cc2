"""Starting, following, cancelling and resuming jobs: what every front end calls.

Nothing here blocks unless asked to (``wait``, ``cancel(timeout=...)``,
``run_job_foreground``) and nothing imports Qt or torch, so the Slicer panel calls
``poll()`` from a timer and stays responsive. A front end that restarts finds its
job again with ``Job.attach(folder)`` (or ``list_jobs()``): everything is in the folder.

Who writes what: the front end writes ``spec.json``, ``launch.json`` and the
``queued`` state; the worker writes events and its states; a front end writes a
``failed`` (or ``cancelled``) end only once it has seen the worker process gone
without an end state (killed, crashed, or failed to start).
"""

import copy
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from TransferSegLib.errors import JobError, OutputError, TransferSegError
from TransferSegLib.jobs.admission import record_refusal, with_absolute_paths
from TransferSegLib.jobs.events import EventReader, read_events
from TransferSegLib.jobs.follow import EventPrinter, follow_job
from TransferSegLib.jobs.launch import launch_worker, read_launch_record, worker_command
from TransferSegLib.jobs.layout import CANCEL, EVENTS, SPEC, jobs_root, new_job_directory, now_iso
from TransferSegLib.jobs.processes import kill_tree, pid_alive, send_terminate
from TransferSegLib.jobs.spec import JobSpec
from TransferSegLib.jobs.state import JobState, read_state, this_host, write_state
from TransferSegLib.jobs.status import EventSummary, JobStatus, record_death
from TransferSegLib.paths import write_text_atomically


class Job:
    """A job folder and, when this process started it, its worker process."""

    #: After a cancel request, how long the worker may take to save its checkpoint
    #: before ``poll``/``status`` kill its process tree.
    kill_after_s: float = 60.0

    def __init__(self, directory: Union[str, Path], process: Optional[subprocess.Popen] = None):
        self.directory = Path(directory).expanduser().resolve()
        self.process = process
        self._reader = EventReader(self.directory / EVENTS)
        self._summary = EventSummary(self.directory / EVENTS)
        self._spec: Optional[JobSpec] = None
        self._ended: Optional[JobState] = None  # an end this process found but could not write (full disk)

    # --- creating and finding jobs ----------------------------------------------------------

    @classmethod
    def start(cls, spec: Union[JobSpec, Dict[str, Any]], job_dir: Optional[Union[str, Path]] = None,
              python: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> "Job":
        """Write the job folder and launch its worker; returns at once.

        Raises ``JobError``/``CaseError``/``ModelError`` for what can be checked
        without torch (unknown spec field, missing case file, ...), also recorded
        in the folder. A busy device is no error: the worker waits ``queued``.
        """
        directory = Path(job_dir).expanduser().resolve() if job_dir else new_job_directory().resolve()
        if (directory / SPEC).exists() or (directory / EVENTS).exists():
            raise JobError(
                f"The job folder '{directory}' already holds a job. Resume it ('transferseg job resume {directory}') "
                f"or choose a new folder."
            )
        if not isinstance(spec, JobSpec):
            try:
                spec = JobSpec.from_dict(dict(spec))
            except JobError as exc:
                directory.mkdir(parents=True, exist_ok=True)
                (directory / SPEC).write_text(json.dumps(spec, indent=2, default=str) + "\n", encoding="utf-8")
                record_refusal(directory, exc)
                raise
        spec = with_absolute_paths(copy.deepcopy(spec))  # a busy device does not refuse: the worker queues
        directory.mkdir(parents=True, exist_ok=True)
        spec.save(directory / SPEC)
        write_state(directory, JobState(state="queued"))
        try:
            spec.check_inputs()
        except TransferSegError as exc:
            record_refusal(directory, exc)
            raise
        job = cls(directory)
        job._spec = spec
        job._launch(python, env, resume=False)
        return job

    @classmethod
    def attach(cls, directory: Union[str, Path]) -> "Job":
        """Follow an existing job (e.g. after Slicer restarted); ``poll`` replays its events from the start."""
        job = cls(directory)
        if not (job.directory / SPEC).is_file() and not (job.directory / "state.json").is_file():
            raise JobError(f"'{job.directory}' is not a job folder: it has neither {SPEC} nor state.json.")
        return job

    @property
    def spec(self) -> Optional[JobSpec]:
        if self._spec is None:
            try:
                self._spec = JobSpec.load(self.directory / SPEC)
            except JobError:
                return None
        return self._spec

    @property
    def pid(self) -> Optional[int]:
        """The worker's pid once it runs, else the process this front end started."""
        try:
            state = read_state(self.directory)
        except JobError:
            state = JobState()
        if state.pid:
            return state.pid
        launch = self._launch_record()
        return launch.get("pid") if launch else (self.process.pid if self.process else None)

    def _launch(self, python: Optional[str], env: Optional[Dict[str, str]], resume: bool) -> None:
        spec = self.spec
        if spec is not None and spec.processes > 1:
            from TransferSegLib.jobs.ddp import torchrun_command

            command = torchrun_command(self.directory, spec.processes, python, resume)
        else:
            command = worker_command(self.directory, python, resume)
        try:
            self.process = launch_worker(self.directory, command, env)
        except OSError as exc:
            error = JobError(f"Cannot start the worker '{command[0]}': {exc}.")
            record_refusal(self.directory, error,
                            hint="Check the Python interpreter (in Slicer: PythonSlicer next to the Slicer executable).")
            raise error from exc

    def _launch_record(self) -> Dict[str, Any]:
        return read_launch_record(self.directory)

    # --- following ------------------------------------------------------------------------------

    def poll(self) -> List[Dict[str, Any]]:
        """Events written since the last ``poll`` (all of them on the first call)."""
        self._check_worker()
        return self._reader.read_new()

    def events(self) -> List[Dict[str, Any]]:
        """Every complete event so far."""
        return read_events(self.directory / EVENTS)

    def status(self) -> JobStatus:
        self._check_worker()
        return self._status()

    def _status(self) -> JobStatus:
        try:
            state = read_state(self.directory)
        except JobError:
            state = JobState(state="queued")
        if not state.terminal and self._ended is not None:
            state = self._ended
        self._summary.update()
        progress, validation = self._summary.progress, self._summary.validation
        spec = self.spec
        cancel = (self.directory / CANCEL).exists()
        shown = "cancelling" if cancel and state.state in ("queued", "running") else state.state
        ended = state.terminal and state.iteration is not None  # exact; the last progress event may be older
        try:
            age: Optional[float] = max(0.0, time.time() - (self.directory / EVENTS).stat().st_mtime)
        except OSError:
            age = None
        return JobStatus(
            directory=self.directory, state=shown, alive=self._worker_alive(state), pid=state.pid, host=state.host,
            attempt=state.attempt, device=state.device, name=spec.name if spec else "",
            output=spec.output if spec else "", created=state.created, started=state.started, ended=state.ended,
            iteration=state.iteration if ended else progress.get("iteration", state.iteration),
            total_iterations=progress.get("total_iterations"),
            percent=progress.get("percent"), eta_s=progress.get("eta_s"), loss=progress.get("loss"),
            mean_dice=validation.get("mean_dice"), dice=dict(validation.get("dice") or {}), model=state.model,
            message=state.message, error_type=state.error_type, hint=state.hint, stderr_tail=list(state.stderr_tail),
            exit_code=state.exit_code, peak_gpu_memory_gb=state.peak_gpu_memory_gb, cancel_requested=cancel,
            last_event_age_s=age,
        )

    def is_running(self) -> bool:
        return not self.status().terminal

    def wait(self, timeout: Optional[float] = None, interval: float = 0.2,
             on_events: Optional[Callable[[List[Dict[str, Any]]], None]] = None) -> JobStatus:
        """Block until the job ends (or ``timeout`` seconds pass).

        With ``on_events``, new events are handed to it as they come (and are then
        no longer returned by ``poll``); without, ``poll`` still returns them later.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def deliver() -> None:
            if on_events is None:
                self._check_worker()
                return
            events = self.poll()
            if events:
                on_events(events)

        while True:
            deliver()
            status = self._status()
            if status.terminal:
                self._reap_process()
                deliver()
                return self._status()
            if deadline is not None and time.monotonic() > deadline:
                return status
            time.sleep(interval)

    # --- stopping -------------------------------------------------------------------------------

    def cancel(self, timeout: Optional[float] = None) -> JobStatus:
        """Ask the worker to stop at its next iteration (it saves a checkpoint and ends as cancelled).

        Returns at once with ``timeout=None`` (a GUI keeps polling; the process tree
        is killed by ``poll``/``status`` if it has not stopped after ``kill_after_s``).
        With a timeout, waits that long, then kills the process tree.
        """
        try:
            state = read_state(self.directory)
        except JobError:
            state = JobState()
        if state.terminal:
            return self._status()
        request = {"requested": now_iso(), "host": this_host(), "pid": os.getpid()}
        try:
            write_text_atomically(self.directory / CANCEL, json.dumps(request) + "\n")
        except OutputError:
            pass  # a full disk: the signal below still reaches a local worker, and a dead one is recorded as ended
        if state.pid and state.host == this_host():
            send_terminate(state.pid)
        if timeout is None:
            return self.status()
        status = self.wait(timeout)
        if not status.terminal:
            self.kill()
            status = self.wait(10)
        return status

    def kill(self) -> None:
        """Stop the worker and everything it started, now (no checkpoint)."""
        pids = [pid for pid in self._local_pids() if pid_alive(pid)]
        if pids:
            kill_tree(pids)
        self._reap_process()
        self._check_worker()

    def resume(self, python: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> "Job":
        return resume_job(self.directory, python=python, env=env)

    # --- noticing a dead worker -----------------------------------------------------------------

    def _local_pids(self) -> List[int]:
        pids: List[int] = []
        if self.process is not None and self.process.poll() is None:  # a reaped pid may belong to anyone now
            pids.append(self.process.pid)
        launch = self._launch_record()
        if launch.get("pid") and launch.get("host") == this_host() and pid_alive(launch["pid"], launch.get("pid_created")):
            pids.append(int(launch["pid"]))
        try:
            state = read_state(self.directory)
            if state.pid and state.host == this_host() and pid_alive(state.pid, state.pid_created):
                pids.append(state.pid)
        except JobError:
            pass
        return sorted(set(pids))

    def _worker_alive(self, state: JobState) -> Optional[bool]:
        """True/False for a worker of this host; None when it runs elsewhere (only its events tell)."""
        if state.terminal:
            return False
        if self.process is not None and self.process.poll() is None:
            return True
        if state.pid and state.host == this_host() and pid_alive(state.pid, state.pid_created):
            return True
        launch = self._launch_record()
        if launch.get("host") == this_host() and pid_alive(launch.get("pid"), launch.get("pid_created")):
            return True
        known_here = self.process is not None or launch.get("host") == this_host() or (state.pid and state.host == this_host())
        return False if known_here else None

    def _reap_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def _check_worker(self) -> None:
        """Kill a worker that ignores a cancel; record a worker that died without an end state."""
        try:
            state = read_state(self.directory)
        except JobError:
            return
        if state.terminal:
            if self.process is not None:
                self.process.poll()
            return
        alive = self._worker_alive(state)
        if alive:
            requested = _cancel_age_s(self.directory)
            if requested is not None and requested > self.kill_after_s:
                kill_tree(self._local_pids())
                self._reap_process()
            else:
                return
        elif alive is None:
            return
        state = read_state(self.directory)  # the worker writes its end state before it exits
        if state.terminal:
            return
        self._record_death(state)

    def _record_death(self, state: JobState) -> None:
        code = self.process.returncode if self.process is not None else None
        self._summary.update()
        unwritten = record_death(self.directory, state, code, self._summary.progress.get("iteration"))
        if unwritten is not None:
            self._ended = unwritten


def _cancel_age_s(directory: Path) -> Optional[float]:
    try:
        return time.time() - (directory / CANCEL).stat().st_mtime
    except OSError:
        return None


# --- functions the command line and the Slicer Logic call -------------------------------------------

def start_job(spec: Union[JobSpec, Dict[str, Any]], job_dir: Optional[Union[str, Path]] = None,
              python: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> Job:
    """Start ``spec`` in the background (``transferseg finetune --detach``, the Slicer panel)."""
    return Job.start(spec, job_dir, python=python, env=env)


def resume_job(job_dir: Union[str, Path], python: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> Job:
    """Continue a cancelled or failed job from its last checkpoint (same seed: same trajectory)."""
    job = Job.attach(job_dir)
    status = job.status()
    if not status.terminal:
        raise JobError(f"The job '{job.directory}' is still {status.state}; cancel it first or wait for it.")
    if status.state == "finished":
        raise JobError(f"The job '{job.directory}' has finished (model: {status.model}); start a new job to train again.")
    state = read_state(job.directory)
    (job.directory / CANCEL).unlink(missing_ok=True)
    write_state(job.directory, JobState(state="queued", attempt=state.attempt + 1, created=state.created,
                                        iteration=state.iteration))
    try:  # poll() reports this attempt's events only; events() still has them all
        job._reader.offset = (job.directory / EVENTS).stat().st_size
    except OSError:
        pass
    job._launch(python, env, resume=True)
    return job


def list_jobs(root: Optional[Union[str, Path]] = None) -> List[JobStatus]:
    """Every job folder under ``root`` (default ``~/.transferseg/jobs``), oldest first."""
    folder = jobs_root(Path(root) if root else None)
    if not folder.is_dir():
        return []
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and (child / "state.json").is_file():
            try:
                found.append(Job.attach(child).status())
            except JobError:
                continue
    return found


def run_job_foreground(spec: Union[JobSpec, Dict[str, Any]], job_dir: Optional[Union[str, Path]] = None,
                       printer: Optional[EventPrinter] = None, python: Optional[str] = None) -> int:
    """Run a job with its progress on the terminal; Ctrl-C cancels (checkpoint kept), twice kills.

    Returns the exit code: 0 finished, 3 cancelled, else the failure's code.
    """
    from TransferSegLib.progress import ProgressPrinter

    printer = printer or ProgressPrinter()
    job = start_job(spec, job_dir, python=python)
    printer.note(f"job folder: {job.directory}")
    return follow_job(job, printer, cancel_on_interrupt=True)
