"""Several processes for one job through torchrun: two CPU processes (gloo) on tiny data."""

import io
import json

import pytest
import torch

from jobs_fixtures import tiny_spec, write_tiny_cases
from TransferSegLib.jobs.api import Job, run_job_foreground
from TransferSegLib.jobs.ddp import torchrun_command, weights_fingerprint
from TransferSegLib.progress import ProgressPrinter

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")


def test_two_processes_train_in_lock_step_and_only_rank_0_reports(tmp_path):
    cases = write_tiny_cases(tmp_path / "cases", n=3)
    spec = tiny_spec(cases, tmp_path / "model", iterations=6)
    spec.processes = 2
    out = io.StringIO()
    code = run_job_foreground(spec, tmp_path / "job", printer=ProgressPrinter(out))
    assert code == 0, out.getvalue() + "\n".join(Job.attach(tmp_path / "job").status().stderr_tail)
    events = Job.attach(tmp_path / "job").events()
    assert [e["kind"] for e in events].count("started") == 1  # one job, one voice
    assert any("2 processes" in e.get("message", "") for e in events if e["kind"] == "info")
    rank0 = weights_fingerprint(torch.load(tmp_path / "model" / "model.pt", weights_only=True))
    rank1 = json.loads((tmp_path / "job" / "ddp" / "rank-1" / "fingerprint.json").read_text())["sha256"]
    assert rank0 == rank1  # different patches per rank, averaged gradients: the same weights
    assert not (tmp_path / "job" / "ddp" / "rank-1" / "model").exists()


def test_several_processes_need_an_iteration_budget(tmp_path):
    from TransferSegLib.errors import JobError
    from TransferSegLib.jobs.ddp import DistributedRun

    cases = write_tiny_cases(tmp_path / "cases", n=1)
    spec = tiny_spec(cases, tmp_path / "model", iterations=None, time_budget=60.0).to_finetune_spec()
    with pytest.raises(JobError, match="--iterations"):
        DistributedRun(tmp_path, 0, 0, 2).adapt(spec, tmp_path, None, lambda: False)


def test_the_launcher_is_torchrun_run_as_a_module_of_the_given_python(tmp_path):
    command = torchrun_command(tmp_path, 4, python="/opt/Slicer/bin/PythonSlicer", resume=True)
    assert command[:3] == ["/opt/Slicer/bin/PythonSlicer", "-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in command and "--standalone" in command
    assert command[-3:] == ["run-job", str(tmp_path), "--resume"]
