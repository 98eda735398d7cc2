"""An experiment as a background job: a real worker runs it, a `run` event per run, cancel and resume.

Resume is the experiment's own: finished runs keep their result.json and are
skipped, the run that was stopped is done again.
"""

import json

import pytest

from jobs_fixtures import stop_jobs, wait_for_event, write_tiny_cases
from TransferSegLib.cli import main as cli_main
from TransferSegLib.errors import CaseError, JobError
from TransferSegLib.jobs.api import Job, resume_job
from TransferSegLib.jobs.spec import JobSpec


@pytest.fixture
def jobs():
    started = []
    yield started
    stop_jobs(started)


def _argv(tmp_path, iterations):
    (i0, l0), (i1, l1), (i2, l2) = write_tiny_cases(tmp_path / "data", n=3)
    return ["experiment", "--name", "mini", "--add-case", i0, l0, "blob", "--add-case", i1, l1, "blob",
            "--test-image", i2, "--test-label", l2, "--labels", "blob", "--base", "none",
            "--strategies", "scratch", "--sizes", "1,2", "--repeats", "2", "--iterations", str(iterations),
            "--patch-size", "16", "16", "16", "--device", "cpu", "--output", str(tmp_path / "exp"),
            "--job-dir", str(tmp_path / "job")]


def test_an_experiment_job_reports_each_run_and_writes_the_report(tmp_path, jobs, capsys):
    assert cli_main(_argv(tmp_path, 2) + ["--detach"]) == 0
    job = Job.attach(tmp_path / "job")
    jobs.append(job)
    status = job.wait(timeout=300)
    assert status.state == "finished", status.message
    runs = [e for e in job.events() if e["kind"] == "run"]
    # Size 1 drawn twice from the two pool cases, size 2 once (only one subset exists).
    assert sorted((e["size"], e["repeat"]) for e in runs) == [(1, 0), (1, 1), (2, 0)]
    assert [e for e in job.events() if e["kind"] == "finished"][-1]["report"].endswith("report.md")
    assert len([e for e in job.events() if e["kind"] == "finished"]) == 1  # the runs' own are not the job's
    assert (tmp_path / "exp" / "report.md").is_file()
    stored = json.loads((tmp_path / "job" / "spec.json").read_text())
    assert stored["task"] == "experiment" and "job_dir" not in stored["experiment"]
    assert stored["experiment"]["sizes"] == [1, 2] and len(stored["experiment"]["pool"]) == 2  # resolved, typed


def test_a_cancelled_experiment_job_resumes_with_the_runs_already_done(tmp_path, jobs):
    assert cli_main(_argv(tmp_path, 60) + ["--detach"]) == 0
    job = Job.attach(tmp_path / "job")
    jobs.append(job)
    wait_for_event(job, lambda e: e["kind"] == "run", timeout=300)  # one run done ...
    wait_for_event(job, lambda e: e["kind"] == "progress", timeout=300)  # ... the next one training
    assert job.cancel(timeout=120).state == "cancelled"
    done = [p.parent.name for p in (tmp_path / "exp" / "runs").glob("*/result.json")]
    assert 1 <= len(done) < 3
    again = resume_job(tmp_path / "job")
    jobs.append(again)
    assert again.wait(timeout=600).state == "finished"
    runs = [e for e in again.events() if e["kind"] == "run"]
    skipped = {(e["size"], e["repeat"]) for e in runs if e["skipped"]}
    assert len(skipped) == len(done) and len(list((tmp_path / "exp" / "runs").glob("*/result.json"))) == 3


def test_an_experiment_spec_with_an_unknown_field_or_a_missing_file_is_refused(tmp_path):
    pool = [{"image": str(tmp_path / "a.nii.gz"), "label": str(tmp_path / "a_seg.nii.gz")}]
    experiment = {"name": "x", "pool": pool, "labels": ["blob"], "output": str(tmp_path), "leave_one_out": True}
    with pytest.raises(JobError, match="Unknown experiment field 'repetitions'"):
        JobSpec(task="experiment", experiment=dict(experiment, repetitions=3))
    with pytest.raises(CaseError, match="a.nii.gz"):
        JobSpec(task="experiment", experiment=experiment).check_inputs()
    with pytest.raises(JobError, match="needs 'experiment'"):
        JobSpec(task="experiment")
