"""The panel's Jobs section: every fine-tuning job of this machine, and what can be done with each.

Jobs outlive Slicer (they are background processes writing to a job folder), so the
panel lists them from the job folders rather than from what this session started:
attach (follow its progress and plot), cancel, resume (from the last checkpoint),
delete (a finished or stopped job's folder). A busy device names the job holding it,
so the panel can offer to show or cancel that job instead of a shell command (a job
started meanwhile waits for the device, queued).
No ``slicer`` import: plain files and processes.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from TransferSegLib.errors import JobError

RUNNING_STATES = ("queued", "running", "starting")


@dataclass
class JobRow:
    """One line of the Jobs table."""

    directory: str
    name: str
    state: str
    percent: Optional[float] = None
    mean_dice: Optional[float] = None
    device: str = ""
    model: str = ""
    message: str = ""
    created: str = ""

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def resumable(self) -> bool:
        return self.state in ("cancelled", "failed")

    def status_text(self) -> str:
        if self.state == "queued" and self.device:  # behind another job on its device
            return f"waiting for {self.device}"
        if self.running and self.percent is not None:
            return f"{self.state} {self.percent:.0f}%"
        if self.state == "finished" and self.mean_dice is not None:
            return f"finished (Dice {self.mean_dice:.3f})"
        return self.state


@dataclass
class BusyDevice:
    """A device held by a running job: what the panel explains and offers to cancel."""

    device: str
    job: str
    pid: int
    started: str

    def explain(self) -> str:
        return (f"The device '{self.device}' is busy: the job '{Path(self.job).name}' (process {self.pid}, since "
                f"{self.started}) is training on it. Only one job trains on a device at a time, so that neither "
                f"runs out of memory. Wait for it, cancel it, or pick another device.")

    def waiting(self) -> str:
        """The status line of a job queued behind this one: 'Waiting for <device>: <holder>'."""
        return (f"Waiting for {self.device}: the job '{Path(self.job).name}' (process {self.pid}) is training on "
                f"it. This job starts by itself when it ends; Stop cancels this one.")


class JobBoard:
    """The jobs under ``root`` (the home folder's ``jobs``) and the actions on them."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def rows(self) -> List[JobRow]:
        """Every job folder, newest first."""
        from TransferSegLib.jobs.api import list_jobs

        rows = []
        for status in reversed(list_jobs(self.root)):
            rows.append(JobRow(directory=str(status.directory), name=status.name or status.directory.name,
                               state=status.state, percent=status.percent, mean_dice=status.mean_dice,
                               device=str(status.device or ""), model=str(status.model or ""),
                               message=status.message, created=status.created))
        return rows

    def row(self, directory) -> Optional[JobRow]:
        wanted = str(Path(directory))
        return next((r for r in self.rows() if r.directory == wanted), None)

    @staticmethod
    def cancel(directory) -> None:
        """Ask the job's worker to stop at its next iteration (it keeps its last checkpoint)."""
        from TransferSegLib.jobs.api import Job

        Job.attach(Path(directory)).cancel()

    @staticmethod
    def resume(directory, python: Optional[str] = None):
        """Start a cancelled or failed job again from its last checkpoint; returns the engine's Job."""
        from TransferSegLib.jobs.api import resume_job

        return resume_job(Path(directory), python=python)

    def delete(self, directory) -> None:
        """Remove a job folder that is not running (its model folder, if any, is kept)."""
        from TransferSegLib.jobs.api import Job

        folder = Path(directory)
        status = Job.attach(folder).status()
        if not status.terminal:
            raise JobError(f"The job '{folder.name}' is still {status.state}: cancel it first, then delete it.")
        shutil.rmtree(folder)

    @staticmethod
    def busy(device: str) -> Optional[BusyDevice]:
        """The running job holding ``device``, if any (a stale lock of a dead worker is not)."""
        from TransferSegLib.jobs.lock import device_label, lock_holder

        holder = lock_holder(device or "auto")
        if holder is None:
            return None
        return BusyDevice(device_label(holder.device), holder.job, holder.pid, holder.started)
