"""What a failed job tells its user: the ``error`` event's type, message and hint.

An expected error (``TransferSegError``) keeps its own message, which already
says what to do; a hint is added only where it helps. A full disk or a read-only
place is explained as such, never as a bug. Anything else is unexpected: the
message says so and the event carries a traceback tail for a report.
"""

import sys
import traceback
from typing import Any, Dict

from TransferSegLib.errors import DownloadError, JobError, OutputError, TransferSegError
from TransferSegLib.paths import output_error


#: Hints added to an error's own message, only where they apply: most messages already say what to do.
HINTS = (
    (DownloadError, lambda exc: True, "Check the network connection, or place the weights file by hand and use --offline."),
    (JobError, lambda exc: "spec.json" in str(exc),
     "Correct spec.json in the job folder, or start the job again from the command line or the Slicer panel."),
    (OutputError, lambda exc: True,
     "Free some space or choose an output folder you can write to, then resume the job ('transferseg job resume')."),
)


def describe_failure(exc: BaseException) -> Dict[str, Any]:
    """The ``error`` event for an exception: type, message a user can act on, hint, and a traceback tail for bugs."""
    if is_out_of_memory(exc):
        return {
            "type": "OutOfMemory",
            "message": f"Out of memory even with the smallest batch and patch TransferSeg tries: {_first_line(exc)}",
            "hint": "Close other programs using the GPU, lower --patch-size, or train on the CPU (--device cpu).",
        }
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        exc = output_error(exc.filename, exc)  # a full disk or a read-only place while writing: not a bug
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
