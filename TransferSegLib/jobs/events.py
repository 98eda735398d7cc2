"""``events.jsonl``: the job's append-only log, one JSON object a line.

Each line is one complete ``write`` followed by flush and fsync, so a reader on the
same machine or on a shared folder sees whole events, and a crash loses at most
the event being written. The reader keeps a byte offset: a poller (the Slicer
timer, ``job watch``) gets only the events it has not seen, and a last line still
being written is left for the next poll instead of failing to parse.

Every event has ``kind`` and ``time`` (seconds since the epoch); the other fields
per kind are listed in docs/architecture.md and docs/jobs.md.
"""

import errno
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

KINDS = ("queued", "started", "progress", "validation", "checkpoint", "info", "warning", "error", "cancelled",
         "finished", "run")
# "queued": waiting for a busy device; "run": one run of an experiment job is done; "info": a line to show that is no warning


def _plain(value: Any) -> Any:
    """JSON-safe values: NaN/inf become null (strict JSON readers reject them), paths become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _plain(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def encode_event(kind: str, fields: Dict[str, Any]) -> bytes:
    record = {"kind": kind, "time": round(time.time(), 3)}
    record.update({k: _plain(v) for k, v in fields.items() if k not in ("kind", "time")})
    return (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")


class EventWriter:
    """Appends events to ``events.jsonl``; usable as the engine's ``Reporter``."""

    def __init__(self, path: Union[str, Path], fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync

    def event(self, kind: str, **fields: Any) -> Dict[str, Any]:
        data = encode_event(kind, fields)
        # O_APPEND and a single write keep lines whole even with two writers
        # (the worker, and a front end recording that the worker died).
        fd = os.open(str(self.path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            written = 0
            try:
                written = os.write(fd, data)
                if written != len(data):  # a full disk took part of the line
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                if self.fsync:
                    os.fsync(fd)
            except OSError:
                if written and os.fstat(fd).st_size == start + written:
                    os.ftruncate(fd, start)  # half an event would swallow the next one
                raise
        finally:
            os.close(fd)
        return json.loads(data)


class EventReader:
    """Reads new events since the last call; tolerant of a half-written last line."""

    def __init__(self, path: Union[str, Path], offset: int = 0):
        self.path = Path(path)
        self.offset = offset
        self.skipped = 0  # complete lines that were not valid JSON (a damaged file)

    def read_new(self) -> List[Dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                if size < self.offset:  # the file was replaced: start over
                    self.offset = 0
                handle.seek(self.offset)
                data = handle.read(size - self.offset)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        complete, self.offset = data[: end + 1], self.offset + end + 1
        events = []
        for line in complete.splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line.decode("utf-8"))
            except ValueError:
                self.skipped += 1
                continue
            if isinstance(event, dict) and "kind" in event:
                events.append(event)
            else:
                self.skipped += 1
        return events


def read_events(path: Union[str, Path], kinds: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """All complete events of a job (optionally only some kinds)."""
    events = EventReader(path).read_new()
    return [e for e in events if kinds is None or e["kind"] in kinds]


def last_event(path: Union[str, Path], kind: str) -> Optional[Dict[str, Any]]:
    found = read_events(path, [kind])
    return found[-1] if found else None
