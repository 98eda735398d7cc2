"""Background jobs end to end: real worker processes running the real engine on the CPU."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from jobs_fixtures import stop_jobs, tiny_spec, wait_for_event, write_tiny_cases
from TransferSegLib.cli import main
from TransferSegLib.errors import CaseError, JobError, ModelError
from TransferSegLib.jobs.api import Job, list_jobs, run_job_foreground, start_job
from TransferSegLib.jobs.events import read_events
from TransferSegLib.jobs.lock import lock_holder
from TransferSegLib.jobs.processes import pid_alive
from TransferSegLib.jobs.state import read_state
from TransferSegLib.progress import ProgressPrinter


@pytest.fixture()
def jobs():
    started = []
    yield started
    stop_jobs(started)


@pytest.fixture()
def cases(tmp_path):
    return write_tiny_cases(tmp_path / "cases")


def _dead_pid():
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def _job_folder(tmp_path, state):
    from TransferSegLib.jobs.spec import JobSpec
    from TransferSegLib.jobs.state import write_state

    folder = tmp_path / "job"
    folder.mkdir()
    JobSpec(output=str(tmp_path / "m")).save(folder / "spec.json")
    write_state(folder, state)
    return folder


def test_a_worker_that_died_unseen_is_recorded_failed_once_whoever_looks(tmp_path):
    from TransferSegLib.jobs.state import JobState, this_host

    folder = _job_folder(tmp_path, JobState(state="running", pid=_dead_pid(), host=this_host()))
    (folder / "worker.log").write_text("Traceback (most recent call last):\nMemoryError\n")
    first, second = Job.attach(folder), Job.attach(folder)
    assert first.status().state == "failed" and second.status().state == "failed"
    errors = read_events(folder / "events.jsonl", ["error"])
    assert len(errors) == 1 and errors[0]["type"] == "WorkerDied" and errors[0]["stderr_tail"][-1] == "MemoryError"
    assert [e["kind"] for e in second.poll()] == ["error"]


def test_a_job_running_on_another_host_is_followed_not_judged(tmp_path):
    from TransferSegLib.jobs.state import JobState

    folder = _job_folder(tmp_path, JobState(state="running", pid=_dead_pid(), host="gpu-node-7"))
    status = Job.attach(folder).status()
    assert status.state == "running" and status.alive is None
    Job.attach(folder).cancel()  # a shared folder: the remote worker sees the request file
    assert (folder / "cancel.request").exists() and Job.attach(folder).status().state == "cancelling"


def test_cancelling_a_job_whose_worker_never_started_ends_it_cancelled(tmp_path):
    from TransferSegLib.jobs.state import JobState, this_host

    folder = _job_folder(tmp_path, JobState(state="queued"))
    (folder / "launch.json").write_text(json.dumps({"pid": _dead_pid(), "host": this_host(), "pid_created": None}))
    assert Job.attach(folder).cancel().state == "cancelled"
    assert [e["kind"] for e in read_events(folder / "events.jsonl")] == ["cancelled"]


def test_a_folder_that_is_not_a_job_is_refused(tmp_path):
    with pytest.raises(JobError, match="not a job folder"):
        Job.attach(tmp_path)


def _worker_pids(job):
    launch = json.loads((job.directory / "launch.json").read_text())
    return [launch["pid"], read_state(job.directory).pid]


def test_events_stream_while_the_worker_runs_and_cancel_stops_it_with_a_checkpoint(tmp_path, cases, jobs):
    job = start_job(tiny_spec(cases, tmp_path / "model", iterations=100000), tmp_path / "job")
    jobs.append(job)
    seen = []
    wait_for_event(job, lambda e: e["kind"] == "progress" and e["iteration"] >= 2, seen=seen)
    started = next(e for e in seen if e["kind"] == "started")
    assert started["device"] == "cpu" and started["device_name"] and started["labels"] == ["background", "blob"]
    # the first event comes before torch is loaded (the worker's own sys.modules), so it does not wait for it
    assert seen[0]["kind"] == "info" and seen[0]["phase"] == "starting" and seen[0]["torch_loaded"] is False
    assert seen[0]["pid"] == read_state(job.directory).pid and seen.index(started) > 0
    progress = [e for e in seen if e["kind"] == "progress"]
    for key in ("iteration", "percent", "epoch", "loss", "lr", "its_per_s", "eta_s", "elapsed_s"):
        assert key in progress[-1], key
    assert any(e["kind"] == "warning" and "CPU" in e["message"] for e in seen)  # no GPU: said so
    lines = (job.directory / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines][: len(seen)] == [e["kind"] for e in seen]
    status = job.status()
    assert status.state == "running" and status.alive and status.iteration >= 2
    pids = _worker_pids(job)

    asked = time.monotonic()
    status = job.cancel(timeout=60)
    took = time.monotonic() - asked
    assert status.state == "cancelled", status
    assert took < 30
    assert (job.directory / "checkpoints" / "checkpoint_last.pt").is_file()
    cancelled = [e for e in job.poll() if e["kind"] == "cancelled"]
    assert cancelled and cancelled[0]["checkpoint"].endswith("checkpoint_last.pt")
    assert job.status().iteration == cancelled[0]["iteration"] == status.iteration  # one count everywhere
    assert not any(pid_alive(pid) for pid in pids)  # the whole process tree is gone
    assert lock_holder("cpu") is None
    assert not (tmp_path / "model").exists()  # no partial model


def test_a_busy_device_queues_a_second_job_and_a_killed_worker_is_reported_failed(tmp_path, cases, jobs):
    previous = tmp_path / "model"
    previous.mkdir()
    (previous / "model.json").write_text('{"format": "transferseg-model"}')
    (previous / "model.pt").write_bytes(b"the user's previous model")
    job = start_job(tiny_spec(cases, previous, iterations=100000), tmp_path / "job-a")
    jobs.append(job)
    wait_for_event(job, lambda e: e["kind"] == "progress")

    second = start_job(tiny_spec(cases, tmp_path / "model-b"), tmp_path / "job-b")  # waits, is not refused
    jobs.append(second)
    queued = wait_for_event(second, lambda e: e["kind"] == "queued")
    assert str(job.directory) in queued["message"] and second.status().state == "queued"
    assert second.cancel(timeout=60).state == "cancelled" and not (tmp_path / "model-b").exists()

    os.kill(read_state(job.directory).pid, signal.SIGKILL)
    status = job.wait(timeout=60)
    assert status.state == "failed" and status.error_type == "WorkerDied"
    assert "SIGKILL" in status.message
    assert any("TransferSeg worker pid" in line for line in status.stderr_tail)
    errors = [e for e in job.events() if e["kind"] == "error"]
    assert len(errors) == 1 and errors[0]["stderr_tail"]
    assert (previous / "model.pt").read_bytes() == b"the user's previous model"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert lock_holder("cpu") is None  # the dead worker's lock is stale
    assert Job.attach(job.directory).status().state == "failed"  # recorded once, seen by anyone


def test_resume_after_cancel_finishes_on_the_same_trajectory(tmp_path, cases, jobs, capsys):
    iterations = 16
    out = io.StringIO()
    code = run_job_foreground(tiny_spec(cases, tmp_path / "reference", iterations=iterations), tmp_path / "job-ref",
                              printer=ProgressPrinter(out))
    assert code == 0, out.getvalue()
    assert "finished: model" in out.getvalue() and "it 16/16" in out.getvalue()

    job = start_job(tiny_spec(cases, tmp_path / "resumed", iterations=iterations), tmp_path / "job")
    jobs.append(job)
    wait_for_event(job, lambda e: e["kind"] == "progress")
    worker = read_state(job.directory).pid
    os.kill(worker, signal.SIGSTOP)  # hold it mid-run so the cancel lands before the end on any machine
    try:
        (job.directory / "cancel.request").write_text("{}")
    finally:
        os.kill(worker, signal.SIGCONT)
    status = job.wait(timeout=120)
    assert status.state == "cancelled", status
    stopped_at = status.iteration
    assert 1 <= stopped_at < iterations

    assert main(["job", "resume", str(job.directory)]) == 0
    status = Job.attach(job.directory).status()
    assert status.state == "finished" and status.attempt == 2 and status.iteration == iterations
    assert any(e["kind"] == "info" and "Resumed from iteration" in e["message"] for e in job.events())
    reference = torch.load(tmp_path / "reference" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.allclose(reference[key].float(), resumed[key].float(), atol=1e-6), key


def test_a_spec_with_an_unknown_field_fails_in_the_worker_before_training(tmp_path, cases):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    spec = tiny_spec(cases, tmp_path / "model").to_dict()
    spec["learning_rat"] = 0.1
    (job_dir / "spec.json").write_text(json.dumps(spec))
    result = subprocess.run([sys.executable, "-m", "TransferSegLib", "run-job", str(job_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    errors = read_events(job_dir / "events.jsonl", ["error"])
    assert errors[0]["type"] == "JobError" and "learning_rat" in errors[0]["message"] and errors[0]["hint"]
    assert not read_events(job_dir / "events.jsonl", ["started", "progress"])
    assert read_state(job_dir).state == "failed"

    with pytest.raises(JobError, match="learning_rat"):  # the front end refuses it too, and records it
        start_job(spec, tmp_path / "job-2")
    assert read_events(tmp_path / "job-2" / "events.jsonl", ["error"])[0]["type"] == "JobError"


def test_a_missing_case_file_or_model_folder_is_refused_at_start_and_recorded(tmp_path, cases):
    spec = tiny_spec(cases, tmp_path / "model")
    spec.cases[1]["label"] = str(tmp_path / "nowhere" / "label.nii.gz")
    with pytest.raises(CaseError, match="label.nii.gz"):
        start_job(spec, tmp_path / "job")
    error = read_events(tmp_path / "job" / "events.jsonl", ["error"])[0]
    assert error["type"] == "CaseError" and "nowhere" in error["message"] and error["hint"] == ""
    assert read_state(tmp_path / "job").state == "failed"
    assert not (tmp_path / "job" / "launch.json").exists()  # no worker was started

    result = subprocess.run([sys.executable, "-m", "TransferSegLib", "run-job", str(tmp_path / "job")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2  # the worker checks again before importing torch
    assert read_events(tmp_path / "job" / "events.jsonl", ["error"])[-1]["type"] == "CaseError"

    spec = tiny_spec(cases, tmp_path / "model")
    spec.base = str(tmp_path / "no-such-model-folder")
    with pytest.raises(ModelError, match="no-such-model-folder"):
        start_job(spec, tmp_path / "job-2")


def test_an_unknown_catalog_model_fails_in_the_worker_before_training(tmp_path, cases, jobs):
    spec = tiny_spec(cases, tmp_path / "model")
    spec.base = "no-such-model-anywhere"
    job = start_job(spec, tmp_path / "job")
    jobs.append(job)
    status = job.wait(timeout=120)
    assert status.state == "failed" and status.error_type == "ModelError"
    assert "no-such-model-anywhere" in status.message
    assert not [e for e in job.events() if e["kind"] in ("started", "progress")]


def test_a_worker_that_cannot_import_is_reported_failed_with_its_stderr(tmp_path, cases, jobs):
    broken = tmp_path / "broken-python"
    broken.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import transferseg_missing_dependency' \"$@\"\n")
    broken.chmod(0o755)
    job = start_job(tiny_spec(cases, tmp_path / "model"), tmp_path / "job", python=str(broken))
    jobs.append(job)
    status = job.wait(timeout=60)
    assert status.state == "failed" and status.exit_code == 1
    assert any("transferseg_missing_dependency" in line for line in status.stderr_tail)
    assert "exited with code 1" in status.message


def test_command_line_detach_status_watch_and_list(tmp_path, cases, capsys):
    job_dir = tmp_path / "job"
    (image, label), _ = cases
    code = main(["finetune", "--base", "none", "--strategy", "scratch", "--image", image, "--label", label,
                 "--labels", "blob", "--iterations", "3", "--patch-size", "16", "16", "16", "--batch-size", "1",
                 "--no-augment", "--threads", "1", "--device", "cpu", "--output", str(tmp_path / "model"),
                 "--job-dir", str(job_dir), "--detach"])
    assert code == 0
    assert str(job_dir) in capsys.readouterr().out
    try:
        assert main(["job", "watch", str(job_dir)]) == 0
        err = capsys.readouterr().err
        assert "finished: model" in err
        assert main(["job", "status", str(job_dir), "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["state"] == "finished" and status["model"] == str(tmp_path / "model")
        assert main(["job", "list"]) == 0  # the default root is empty: this job has its own folder
        assert "no jobs" in capsys.readouterr().out
        assert main(["job", "list", "--root", str(tmp_path)]) == 0
        assert "finished" in capsys.readouterr().out
        assert [s.state for s in list_jobs(tmp_path)] == ["finished"]
        assert main(["job", "cancel", str(job_dir)]) == 0
        assert "already ended" in capsys.readouterr().out
    finally:
        stop_jobs([Job.attach(job_dir)])


def test_ctrl_c_in_the_foreground_cancels_the_job_and_keeps_a_checkpoint(tmp_path, cases, jobs):
    class CtrlCAtFirstProgress(ProgressPrinter):
        """A user pressing Ctrl-C while the progress line is shown (Python turns SIGINT into this)."""

        pressed = False

        def show(self, event):
            super().show(event)
            if event["kind"] == "progress" and not self.pressed:
                self.pressed = True
                raise KeyboardInterrupt

    out = io.StringIO()
    code = run_job_foreground(tiny_spec(cases, tmp_path / "model", iterations=100000), tmp_path / "job",
                              printer=CtrlCAtFirstProgress(out))
    jobs.append(Job.attach(tmp_path / "job"))
    assert code == 3, out.getvalue()
    text = out.getvalue()
    assert "stopping: saving a checkpoint" in text and "cancelled: Training cancelled at iteration" in text
    assert "job resume" in text
    assert read_state(tmp_path / "job").state == "cancelled"
    assert (tmp_path / "job" / "checkpoints" / "checkpoint_last.pt").is_file()
