"""Before a worker starts: the spec's paths made absolute, the device checked, a refusal recorded.

A job the front end refuses still leaves its reason in the job folder (events.jsonl
and state.json), so the panel and ``transferseg job list`` show why. Importing this
module does not import torch.
"""

from pathlib import Path
from typing import Optional

from TransferSegLib.jobs.diagnostics import describe_failure
from TransferSegLib.jobs.events import EventWriter
from TransferSegLib.jobs.layout import EVENTS
from TransferSegLib.jobs.lock import DeviceBusy, device_label, lock_holder
from TransferSegLib.jobs.spec import JobSpec
from TransferSegLib.jobs.state import JobState, write_state


def record_refusal(directory: Path, exc: BaseException, hint: Optional[str] = None) -> None:
    """A job that cannot start still leaves its reason in events.jsonl and state.json."""
    failure = describe_failure(exc)
    if hint:
        failure["hint"] = hint
    failure.pop("traceback", None)
    EventWriter(directory / EVENTS).event("error", **failure)
    write_state(directory, JobState(state="failed", message=failure["message"], error_type=failure["type"],
                                    hint=failure["hint"], exit_code=getattr(exc, "exit_code", 2)))


def with_absolute_paths(spec: JobSpec) -> JobSpec:
    """Paths as the worker will see them: absolute, since it may not share the caller's folder."""
    def absolute(value: Optional[str]) -> Optional[str]:
        return str(Path(value).expanduser().absolute()) if value else value

    for case in spec.cases + spec.val_cases:
        for key in ("image", "label", "region"):
            case[key] = absolute(case.get(key))
        if case.get("channels"):
            case["channels"] = [absolute(p) for p in case["channels"]]
    if spec.output:
        spec.output = str(absolute(spec.output))
    base = Path(spec.base).expanduser()
    if base.exists():
        spec.base = str(base.absolute())
    return spec


def check_device_free(device: Optional[str]) -> None:
    """Refuse at once when another job of this host trains on ``device`` (the worker checks again)."""
    holder = lock_holder(device or "auto")
    if holder is not None:
        raise DeviceBusy(
            f"The device '{device_label(holder.device)}' is busy: {holder.describe()} is training on it. "
            f"Wait for it, cancel it ('transferseg job cancel {holder.job}'), or choose another device (--device)."
        )
