"""The worker's own logic: stop requests, error reports, out-of-memory retries."""

import signal
from types import SimpleNamespace

import pytest
import torch

from TransferSegLib.errors import CaseError, JobError, TransferSegError
from TransferSegLib.jobs.lock import DeviceBusy
from TransferSegLib.jobs.failures import describe_failure, is_out_of_memory
from TransferSegLib.jobs.worker import (JobReporter, StopRequest,
                                        run_with_memory_retries, smaller_settings)


class Recorder:
    def __init__(self):
        self.events = []

    def event(self, kind, **fields):
        self.events.append(dict(fields, kind=kind))


def _spec(batch=4, patch=(96, 96, 64)):
    return SimpleNamespace(train=SimpleNamespace(batch_size=batch, patch_size=patch), patch_size=None)


def test_out_of_memory_retries_halve_the_batch_then_shrink_the_patch_and_say_so():
    spec, recorder = _spec(batch=2), Recorder()
    reporter = JobReporter(recorder)
    seen, changes = [], []

    def run(fspec, resume):
        seen.append((fspec.train.batch_size, tuple(fspec.patch_size or fspec.train.patch_size), resume))
        if len(seen) == 2:
            reporter.event("checkpoint", path="c.pt", iteration=10, which="last")
        if len(seen) < 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "model"

    result = run_with_memory_retries(run, spec, reporter, resume=False, on_change=lambda b, p: changes.append((b, p)))
    assert result == "model"
    assert seen == [(2, (96, 96, 64), False), (1, (96, 96, 64), False), (1, (72, 72, 48), True)]
    warnings = [e for e in recorder.events if e["kind"] == "warning"]
    assert len(warnings) == 2 and "batch size 2 → 1" in warnings[0]["message"] and "GPU memory" in warnings[0]["message"]
    assert "patch 96x96x64 → 72x72x48" in warnings[1]["message"]
    assert changes == [(1, (96, 96, 64)), (1, (72, 72, 48))]


def test_other_errors_and_exhausted_retries_are_not_retried():
    calls = []

    def fails(fspec, resume):
        calls.append(1)
        raise CaseError("bad case")

    with pytest.raises(CaseError):
        run_with_memory_retries(fails, _spec(), JobReporter(Recorder()), False)
    assert len(calls) == 1

    def always_oom(fspec, resume):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError):
        run_with_memory_retries(always_oom, _spec(batch=1, patch=(8, 8, 8)), JobReporter(Recorder()), False)
    assert smaller_settings(1, (8, 8, 8)) is None and smaller_settings(3, (8, 8, 8)) == (1, (8, 8, 8))


def test_errors_become_events_a_user_can_act_on():
    case = describe_failure(CaseError("Labelmap 'x.nii.gz' is empty"))
    # The message says what to do; no generic hint is appended to it.
    assert case["type"] == "CaseError" and "x.nii.gz" in case["message"] and case["hint"] == "" and "traceback" not in case
    busy = describe_failure(DeviceBusy("busy: choose another device"))
    assert busy["type"] == "DeviceBusy" and busy["hint"] == ""
    spec_error = describe_failure(JobError("spec.json 'train': unknown setting"))
    assert "Correct spec.json" in spec_error["hint"] and describe_failure(JobError("The job is running"))["hint"] == ""
    missing = describe_failure(ModuleNotFoundError("No module named 'monai'", name="monai"))
    assert missing["type"] == "ModuleNotFoundError" and "Python that runs the worker" in missing["hint"]
    try:
        {}["key"]
    except KeyError as exc:
        bug = describe_failure(exc)
    assert bug["type"] == "KeyError" and bug["traceback"] and "worker.log" in bug["hint"]
    oom = describe_failure(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert oom["type"] == "OutOfMemory" and "--patch-size" in oom["hint"]
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(TransferSegError("memory"))


def test_a_stop_request_comes_from_the_cancel_file_or_a_signal(tmp_path):
    stop = StopRequest(tmp_path, check_every_s=0.0)
    assert not stop()
    (tmp_path / "cancel.request").write_text("{}")
    assert stop()

    stop = StopRequest(tmp_path / "elsewhere", check_every_s=0.0)
    stop._on_signal(signal.SIGTERM, None)
    assert stop()
    with pytest.raises(KeyboardInterrupt):  # a second request does not wait for the checkpoint
        stop._on_signal(signal.SIGTERM, None)


def test_the_reporter_tracks_the_iteration_and_checkpoints():
    recorder = Recorder()
    reporter = JobReporter(recorder)
    reporter.event("progress", iteration=4, loss=0.3)
    reporter.event("checkpoint", path="/j/checkpoints/checkpoint_last.pt", iteration=5, which="last")
    assert reporter.iteration == 5 and reporter.checkpoints == {"last": "/j/checkpoints/checkpoint_last.pt"}
    assert [e["kind"] for e in recorder.events] == ["progress", "checkpoint"]
