"""events.jsonl and state.json: whole lines, incremental reads, atomic state."""

import json
import os

import pytest

from TransferSegLib.errors import JobError
from TransferSegLib.jobs.events import EventReader, EventWriter, read_events
from TransferSegLib.jobs.state import JobState, read_state, update_state, write_state


def test_a_poller_gets_only_new_events(tmp_path):
    path = tmp_path / "events.jsonl"
    writer, reader = EventWriter(path), EventReader(path)
    assert reader.read_new() == []  # no file yet
    writer.event("started", device="cpu")
    writer.event("progress", iteration=1, loss=0.5)
    assert [e["kind"] for e in reader.read_new()] == ["started", "progress"]
    assert reader.read_new() == []
    writer.event("progress", iteration=2, loss=0.4)
    new = reader.read_new()
    assert [e["iteration"] for e in new] == [2] and new[0]["time"] > 0


def test_a_half_written_last_line_waits_for_the_next_poll(tmp_path):
    path = tmp_path / "events.jsonl"
    EventWriter(path).event("progress", iteration=1)
    line = json.dumps({"kind": "progress", "iteration": 2})
    with open(path, "a") as handle:
        handle.write(line[:10])
    reader = EventReader(path)
    assert [e["iteration"] for e in reader.read_new()] == [1]
    with open(path, "a") as handle:
        handle.write(line[10:] + "\n")
    assert [e["iteration"] for e in reader.read_new()] == [2]


def test_non_finite_numbers_and_odd_values_are_written_as_strict_json(tmp_path):
    path = tmp_path / "events.jsonl"
    EventWriter(path).event("progress", loss=float("nan"), lr=float("inf"), path=tmp_path, shape=(1, 2))
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    event = json.loads(text)
    assert event["loss"] is None and event["lr"] is None and event["path"] == str(tmp_path) and event["shape"] == [1, 2]


def test_a_damaged_line_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "started"}\nnot json\n{"kind": "finished"}\n')
    reader = EventReader(path)
    assert [e["kind"] for e in reader.read_new()] == ["started", "finished"] and reader.skipped == 1
    assert [e["kind"] for e in read_events(path, ["finished"])] == ["finished"]


def test_a_replaced_events_file_is_read_from_the_start(tmp_path):
    path = tmp_path / "events.jsonl"
    EventWriter(path).event("progress", iteration=1)
    EventWriter(path).event("progress", iteration=2)
    reader = EventReader(path)
    reader.read_new()
    path.write_text('{"kind": "started"}\n')
    assert [e["kind"] for e in reader.read_new()] == ["started"]


def test_state_is_written_atomically_with_timestamps(tmp_path):
    write_state(tmp_path, JobState(state="running", pid=os.getpid()))
    state = update_state(tmp_path, state="finished", model="m")
    assert read_state(tmp_path).state == "finished" and state.ended and state.created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary left behind


def test_a_folder_without_state_or_with_a_bad_one_is_a_job_error(tmp_path):
    with pytest.raises(JobError, match="not a job folder"):
        read_state(tmp_path)
    (tmp_path / "state.json").write_text('{"state": "sleeping"}')
    with pytest.raises(JobError, match="sleeping"):
        read_state(tmp_path)
    with pytest.raises(JobError, match="Unknown job state"):
        write_state(tmp_path, JobState(state="sleeping"))
