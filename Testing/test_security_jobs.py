"""Jobs always end in a state that ``status``, ``cancel`` and ``resume`` understand, and a busy device queues.

Real worker processes on the CPU. A full disk is a real tmpfs holding the job
folder where the machine allows mounting one; the front-end side of a full disk
(a worker that died, a state that cannot be written) is injected in this process.
"""

import errno
import io
import os
import signal
import time

import pytest

from TransferSegLib.cli import main
from TransferSegLib.errors import OutputError
from TransferSegLib.jobs import api, events, state as job_state
from TransferSegLib.jobs.api import Job, list_jobs, resume_job, start_job
from TransferSegLib.jobs.lock import DeviceLock, lock_holder
from TransferSegLib.jobs.state import read_state
from jobs_fixtures import stop_jobs, tiny_spec, wait_for_event, write_tiny_cases
from security_fixtures import fill, job_disk  # noqa: F401 - a fixture


@pytest.fixture()
def cases(tmp_path):
    return write_tiny_cases(tmp_path / "cases")


@pytest.fixture()
def jobs():
    started = []
    yield started
    stop_jobs(started)


def _wait_state(job, wanted, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = job.status()
        if status.state == wanted or (status.terminal and wanted != status.state):
            return status
        time.sleep(0.1)
    return job.status()


def test_a_job_on_a_busy_device_waits_queued_and_can_be_cancelled_there(tmp_path, cases, jobs, capsys):
    with DeviceLock("cpu", str(tmp_path / "another-job")):
        job = start_job(tiny_spec(cases, tmp_path / "model"), tmp_path / "jobs" / "waiting")  # no DeviceBusy
        jobs.append(job)
        wait_for_event(job, lambda e: e["kind"] == "queued")
        status = job.status()
        assert status.state == "queued" and "another-job" in status.message and status.alive
        assert [s.state for s in list_jobs(tmp_path / "jobs")] == ["queued"]
        capsys.readouterr()
        assert main(["job", "list", "--root", str(tmp_path / "jobs")]) == 0
        listed = capsys.readouterr().out
        assert "queued" in listed and "waiting" in listed
        status = job.cancel(timeout=60)
    assert status.state == "cancelled" and "queued" in status.message
    assert not (tmp_path / "model").exists() and lock_holder("cpu") is None


def test_three_jobs_on_one_device_queue_and_all_finish(tmp_path, cases, jobs):
    started = [start_job(tiny_spec(cases, tmp_path / f"model{i}", iterations=4), tmp_path / f"job{i}")
               for i in range(3)]
    jobs.extend(started)
    seen_queued = False
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = [j.status().state for j in started]
        seen_queued = seen_queued or "queued" in states and "running" in states
        if all(s == "finished" for s in states) or any(s in ("failed", "cancelled") for s in states):
            break
        time.sleep(0.2)
    assert [j.status().state for j in started] == ["finished"] * 3, [j.status().message for j in started]
    assert seen_queued  # they took turns on the one device, none was refused
    assert all((tmp_path / f"model{i}" / "model.json").is_file() for i in range(3))
    kinds = [[e["kind"] for e in j.events()] for j in started]
    assert sum("queued" in k for k in kinds) >= 1 and all("error" not in k for k in kinds)


def test_a_job_whose_folder_fills_up_ends_failed_and_resumes_when_space_is_back(tmp_path, cases, jobs, job_disk):
    job = start_job(tiny_spec(cases, tmp_path / "model", iterations=40, checkpoint_every=5, progress_every=0.0),
                    job_disk / "job")
    jobs.append(job)
    wait_for_event(job, lambda e: e["kind"] == "progress")
    fill(job_disk, leave_bytes=0)  # the worker's next event or checkpoint finds the disk full
    status = job.wait(timeout=240)
    assert status.state == "failed", (status.state, status.message)
    assert "disk is full" in status.message and status.error_type == "OutputError", status.message
    assert "unexpected" not in status.hint
    assert job.cancel().terminal  # nothing left to cancel, and no exception
    (job_disk / "filler.bin").unlink()
    resumed = resume_job(job.directory)
    jobs.append(resumed)
    status = resumed.wait(timeout=300)
    assert status.state == "finished", status.message
    assert (tmp_path / "model" / "model.json").is_file()


def test_a_dead_worker_on_a_full_disk_is_shown_ended_and_cancel_and_resume_still_work(tmp_path, cases, jobs,
                                                                                       monkeypatch):
    job = start_job(tiny_spec(cases, tmp_path / "model", iterations=100000), tmp_path / "job")
    jobs.append(job)
    wait_for_event(job, lambda e: e["kind"] == "progress")
    os.kill(read_state(job.directory).pid, signal.SIGKILL)
    job.process.wait(30)

    def disk_full(*args, **kwargs):
        raise OutputError(f"Cannot write in '{job.directory}': the disk is full")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(job.directory / "events.jsonl"))
    monkeypatch.setattr(job_state, "write_text_atomically", disk_full)
    monkeypatch.setattr(job_state, "_overwrite_in_place", disk_full)
    monkeypatch.setattr(api, "write_text_atomically", disk_full)
    monkeypatch.setattr(events.EventWriter, "event", no_space)
    status = job.status()  # the disk refuses every write: the end is shown, not lost, and nothing raises
    assert status.state == "failed" and status.error_type == "WorkerDied"
    assert read_state(job.directory).state == "running"  # the file could not be updated
    assert job.cancel().terminal
    monkeypatch.undo()
    later = Job.attach(job.directory).status()  # another front end, with space again: it records the end
    assert later.state == "failed" and read_state(job.directory).state == "failed"
    resumed = resume_job(job.directory)
    jobs.append(resumed)
    assert resumed.status().state in ("queued", "running", "finished")
    resumed.cancel(timeout=120)
    assert resumed.status().terminal


def test_events_are_never_left_half_written(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    writer = events.EventWriter(path)
    writer.event("progress", iteration=1)
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, data[: len(data) // 2])
    monkeypatch.setattr(events.os, "write", short_write)
    with pytest.raises(OSError):
        writer.event("progress", iteration=2)
    monkeypatch.undo()
    writer.event("progress", iteration=3)
    assert [e["iteration"] for e in events.read_events(path)] == [1, 3]
    assert io.open(path, "rb").read().count(b"\n") == 2
