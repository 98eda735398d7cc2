"""Before a worker starts: the spec's paths made absolute, a refusal recorded.

A job the front end refuses still leaves its reason in the job folder (events.jsonl
and state.json), so the panel and ``transferseg job list`` show why. Importing this
module does not import torch.
"""

from pathlib import Path
from typing import Optional

from TransferSegLib.jobs.failures import describe_failure
from TransferSegLib.jobs.events import EventWriter
from TransferSegLib.jobs.layout import EVENTS
from TransferSegLib.jobs.spec import JobSpec
from TransferSegLib.jobs.state import JobState, write_state


def record_refusal(directory: Path, exc: BaseException, hint: Optional[str] = None) -> None:
    """A job that cannot start still leaves its reason in events.jsonl and state.json."""
    failure = describe_failure(exc)
    if hint:
        failure["hint"] = hint
    failure.pop("traceback", None)
    write_state(directory, JobState(state="failed", message=failure["message"], error_type=failure["type"],
                                    hint=failure["hint"], exit_code=getattr(exc, "exit_code", 2)))
    try:
        EventWriter(directory / EVENTS).event("error", **failure)
    except OSError:
        pass  # the state above says it


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

