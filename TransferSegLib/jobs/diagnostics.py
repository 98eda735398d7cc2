"""What went wrong, in words a user can act on: the ``error`` event of a failed job.

Shared by the worker (which writes the event) and the job API (which records a
job refused before it started), so neither imports the other. Importing this
module does not import torch (an out-of-memory error is recognised only when torch
is already loaded).
"""

import sys
import traceback
from typing import Any, Dict

from TransferSegLib.errors import DownloadError, JobError, TransferSegError

#: Hints added to an error's own message, only where they apply: most messages already say what to do.
HINTS = (
    (DownloadError, lambda exc: True, "Check the network connection, or place the weights file by hand and use --offline."),
    (JobError, lambda exc: "spec.json" in str(exc),
     "Correct spec.json in the job folder, or start the job again from the command line or the Slicer panel."),
)


def describe_failure(exc: BaseException) -> Dict[str, Any]:
    """The ``error`` event for an exception: type, message a user can act on, hint, and a traceback tail for bugs."""
    if is_out_of_memory(exc):
        return {
            "type": "OutOfMemory",
            "message": f"Out of memory even with the smallest batch and patch TransferSeg tries: {_first_line(exc)}",
            "hint": "Close other programs using the GPU, lower --patch-size, or train on the CPU (--device cpu).",
        }
    if isinstance(exc, TransferSegError):
        hint = next((h for cls, applies, h in HINTS if isinstance(exc, cls) and applies(exc)), "")
        return {"type": type(exc).__name__, "message": str(exc), "hint": hint}
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)
    lines = "".join(tail).rstrip().splitlines()[-15:]
    if isinstance(exc, ImportError):
        hint = (f"A package is missing or broken in the Python that runs the worker ({sys.executable}): "
                f"install TransferSeg's requirements there (in Slicer, the module offers to install them).")
    else:
        hint = "This is unexpected: worker.log in the job folder shows where it happened; please report it with that log."
    return {"type": type(exc).__name__, "message": f"{type(exc).__name__}: {_first_line(exc)}", "hint": hint,
            "traceback": lines}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
