"""What a job folder holds and where job folders live.

Everything a front end needs to follow a job is a file in its folder, so the same
folder can sit on a shared drive and be run by a worker on another machine.
"""

import datetime
import uuid
from pathlib import Path
from typing import Optional

from TransferSegLib.paths import transferseg_home

SPEC = "spec.json"
EVENTS = "events.jsonl"
STATE = "state.json"
CANCEL = "cancel.request"
LOG = "worker.log"
LAUNCH = "launch.json"  # the front end's record of the process it started
CHECKPOINTS = "checkpoints"


def jobs_root(root: Optional[Path] = None) -> Path:
    return Path(root).expanduser() if root else transferseg_home() / "jobs"


def locks_root() -> Path:
    return transferseg_home() / "locks"


def new_job_directory(root: Optional[Path] = None) -> Path:
    """A fresh, not yet existing ``<root>/<timestamp>-<short id>`` (sorts by start time)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return jobs_root(root) / f"{stamp}-{uuid.uuid4().hex[:6]}"


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
