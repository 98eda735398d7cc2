"""Disk use of job folders: how much they hold, and removing the ones that are done.

A finished job's model lives in its output folder, not in the job folder, so the
job folder is only a record (spec, events, log). Failed and cancelled jobs keep
their checkpoints for ``job resume``; they are removed only when asked
(``transferseg job clean``). A running or queued job is never touched.
"""

import datetime
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Union

from TransferSegLib.errors import JobError
from TransferSegLib.jobs.layout import EVENTS, SPEC, STATE, jobs_root
from TransferSegLib.jobs.state import read_state
from TransferSegLib.paths import folder_size

TERMINAL_STATES = ("finished", "failed", "cancelled")


@dataclass
class RemovedJob:
    directory: Path
    state: str
    bytes: int


def is_job_folder(directory: Path) -> bool:
    return (directory / SPEC).is_file() or (directory / STATE).is_file() or (directory / EVENTS).is_file()


def _age_days(directory: Path) -> float:
    """Days since the job last wrote anything (its newest record file)."""
    times = [p.stat().st_mtime for p in (directory / STATE, directory / EVENTS, directory / SPEC) if p.exists()]
    newest = max(times) if times else directory.stat().st_mtime
    return (datetime.datetime.now().timestamp() - newest) / 86400.0


def remove_job_folder(directory: Union[str, Path]) -> int:
    """Remove one ended job's folder; returns the bytes freed. Refuses a folder that is not a job's
    or whose job has not ended."""
    directory = Path(directory).expanduser()
    if not directory.exists():
        return 0
    if not is_job_folder(directory):
        raise JobError(f"'{directory}' is not a job folder (no {SPEC}, {STATE} or {EVENTS}); nothing was removed.")
    try:
        state = read_state(directory).state
    except JobError:
        state = "unknown"
    if state not in TERMINAL_STATES and (directory / STATE).exists():
        raise JobError(f"The job in '{directory}' is {state}: cancel it or wait for it before removing its folder.")
    size = folder_size(directory)
    shutil.rmtree(directory)
    return size


def clean_jobs(root: Optional[Union[str, Path]] = None, older_than_days: Optional[float] = None,
               states: Sequence[str] = TERMINAL_STATES, dry_run: bool = False) -> List[RemovedJob]:
    """Remove the ended job folders under ``root`` (default ``~/.transferseg/jobs``).

    ``older_than_days``: only jobs whose last record is older. ``states``: which end
    states qualify (all three by default). Running and queued jobs are kept always.
    """
    folder = jobs_root(Path(root) if root else None)
    if not folder.is_dir():
        return []
    removed = []
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or not is_job_folder(child):
            continue
        try:
            state = read_state(child).state
        except JobError:
            continue  # unreadable state: leave it for a person to look at
        if state not in states or state not in TERMINAL_STATES:
            continue
        if older_than_days is not None and _age_days(child) < older_than_days:
            continue
        size = folder_size(child)
        if not dry_run:
            shutil.rmtree(child)
        removed.append(RemovedJob(child, state, size))
    return removed
