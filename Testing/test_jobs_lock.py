"""One job per device: refusal naming the holder, stale locks taken over."""

import json
import subprocess
import sys

from TransferSegLib.jobs.lock import DeviceLock, device_key, lock_holder, read_lock


def test_a_second_lock_on_the_same_device_is_refused_naming_the_holder(tmp_path):
    with DeviceLock("cpu", "/jobs/first", tmp_path):
        other = DeviceLock("cpu", "/jobs/second", tmp_path)
        other.held = False
        # Same process re-acquiring is allowed (an out-of-memory retry keeps its lock) ...
        assert other.acquire().held
        other.held = False
        # ... a different process is refused.
        result = subprocess.run(
            [sys.executable, "-c", "import sys; from TransferSegLib.jobs.lock import DeviceLock; "
             f"DeviceLock('cpu', '/jobs/second', r'{tmp_path}').acquire()"], capture_output=True, text=True)
        assert result.returncode != 0
        assert "busy" in result.stderr and "/jobs/first" in result.stderr
        assert lock_holder("cpu", tmp_path).job == "/jobs/first"
    assert lock_holder("cpu", tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_other_devices_are_independent(tmp_path):
    with DeviceLock("cpu", "a", tmp_path), DeviceLock("cuda:1", "b", tmp_path):
        assert lock_holder("cuda:1", tmp_path).job == "b"
        assert lock_holder("cuda:0", tmp_path) is None


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    lock = DeviceLock("cpu", "new", tmp_path)
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    lock.path.write_text(json.dumps({"device": "cpu", "pid": done.pid, "host": lock.path.name.split("--")[0],
                                     "pid_created": None, "started": "", "job": "crashed"}))
    assert lock_holder("cpu", tmp_path) is None
    with lock:
        assert read_lock(lock.path).job == "new"


def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    import os

    lock = DeviceLock("cpu", "new", tmp_path)
    lock.path.parent.mkdir(parents=True, exist_ok=True)
    # This very process, but "started" a day earlier: the recorded process is gone.
    info = {"device": "cpu", "pid": os.getpid(), "host": lock.path.name.split("--")[0], "pid_created": 1.0,
            "started": "", "job": "old"}
    lock.path.write_text(json.dumps(info))
    assert lock_holder("cpu", tmp_path) is None


def test_device_keys_name_the_physical_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert device_key("cuda:1") == "cuda3" and device_key("cuda") == "cuda2"
    assert device_key("cpu") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device_key("auto") == "cpu"
