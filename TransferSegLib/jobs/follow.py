"""Following a job on a terminal until it ends (``transferseg finetune``, ``job watch``, ``job resume``)."""

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol

from TransferSegLib.jobs.status import JobStatus


class EventPrinter(Protocol):
    """What shows a job's events to a person (``progress.ProgressPrinter`` on a terminal)."""

    def show(self, event: Dict[str, Any]) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


class FollowedJob(Protocol):
    """What following needs of a job (``jobs.api.Job``; a Protocol so this module does not import it)."""

    directory: Path

    def wait(self, timeout: Optional[float] = None, interval: float = 0.2,
             on_events: Optional[Callable[[List[Dict[str, Any]]], Any]] = None) -> JobStatus: ...

    def cancel(self, timeout: Optional[float] = None) -> JobStatus: ...

    def kill(self) -> None: ...

    def status(self) -> JobStatus: ...

    def poll(self) -> List[Dict[str, Any]]: ...


def follow_job(job: FollowedJob, printer: EventPrinter, cancel_on_interrupt: bool = True) -> int:
    """Show a job's events until it ends; the exit code its end state stands for.

    With ``cancel_on_interrupt``, Ctrl-C (or SIGTERM, e.g. from a batch scheduler)
    cancels the job, since the worker runs in its own session and would outlive us.
    """
    show = lambda events: [printer.show(e) for e in events]  # noqa: E731
    restore = _interrupt_on_sigterm() if cancel_on_interrupt else None
    try:
        status = job.wait(on_events=show)
    except KeyboardInterrupt:
        if not cancel_on_interrupt:
            printer.close()
            printer.note(f"stopped watching; the job goes on ({job.directory})")
            return 130
        printer.note("stopping: saving a checkpoint (Ctrl-C again to stop at once)")
        try:
            status = job.cancel(timeout=120)
        except KeyboardInterrupt:
            job.kill()
            status = job.status()
        show(job.poll())
    finally:
        if restore is not None:
            restore()
    printer.close()
    return exit_code_for(status)


def _interrupt_on_sigterm() -> Optional[Callable[[], None]]:
    """Make SIGTERM behave like Ctrl-C in this (main) thread; returns what puts the old handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def exit_code_for(status: JobStatus) -> int:
    if status.state == "finished":
        return 0
    if status.state == "cancelled":
        return 3
    if status.state == "failed":
        return status.exit_code if status.exit_code and status.exit_code > 0 else 1
    return 4  # still running (watch stopped by a timeout)
