"""How a worker process is started: the command, its environment, its own session.

The worker is ``python -m TransferSegLib run-job DIR`` (``PythonSlicer`` in Slicer),
or ``torchrun`` around it for several processes. It gets its own session (process
group on Windows) so that Ctrl-C in the user's terminal or a closing Slicer does not
hit it: stopping it is the job layer's decision. What was started is recorded in
``launch.json`` so that another front end can tell later whether it still runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from TransferSegLib.jobs.layout import LAUNCH, LOG, now_iso
from TransferSegLib.jobs.processes import process_created
from TransferSegLib.jobs.state import this_host
from TransferSegLib.paths import write_text_atomically

LIBRARY_PARENT = str(Path(__file__).resolve().parent.parent.parent)


def worker_command(job_dir: Path, python: Optional[str] = None, resume: bool = False) -> List[str]:
    command = [python or sys.executable, "-m", "TransferSegLib", "run-job", str(job_dir)]
    return command + (["--resume"] if resume else [])


def worker_environment(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The caller's environment with TransferSegLib importable (Slicer's module path is not on PythonSlicer's)."""
    result = dict(os.environ if env is None else env)
    paths = [p for p in result.get("PYTHONPATH", "").split(os.pathsep) if p and p != LIBRARY_PARENT]
    result["PYTHONPATH"] = os.pathsep.join([LIBRARY_PARENT] + paths)
    result.setdefault("PYTHONUNBUFFERED", "1")
    return result


def launch_worker(job_dir: Path, command: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """Start ``command`` with its output appended to ``worker.log``; raises ``OSError`` if it cannot start."""
    kwargs: Dict[str, Any] = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True
    with open(job_dir / LOG, "ab") as log:
        log.write(f"--- {now_iso()} {' '.join(command)}\n".encode("utf-8"))
        log.flush()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=worker_environment(env), cwd=os.getcwd(), **kwargs)
    record = {"pid": process.pid, "host": this_host(), "pid_created": process_created(process.pid),
              "command": command, "started": now_iso()}
    write_text_atomically(job_dir / LAUNCH, json.dumps(record, indent=2) + "\n")
    return process


def read_launch_record(job_dir: Path) -> Dict[str, Any]:
    try:
        return json.loads((job_dir / LAUNCH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
