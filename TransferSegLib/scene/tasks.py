"""Short background commands of the panel: model downloads, registering a model, comparing segmentations.

Each is a ``transferseg`` command in a worker process (``process.CommandProcess``),
so torch never enters Slicer's process, the panel keeps responding, and Cancel
kills the process tree at once. A task reads its progress from the command's log
(a download prints ``12.3 / 456.7 MB (2%)``) and its result from its last lines.
No ``slicer`` import.
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from TransferSegLib.errors import TransferSegError
from TransferSegLib.scene.process import CommandProcess

_PERCENT = re.compile(r"\((\d{1,3})%\)")
_MEGABYTES = re.compile(r"([\d.]+) / ([\d.]+) MB")


class BackgroundTask:
    """A ``transferseg`` command running for the panel; ``poll()`` is None while it runs."""

    def __init__(self, kind: str, args: Sequence[str], folder: Path, python: Optional[str] = None,
                 parse: Optional[Callable[[str], Any]] = None, cleanup: bool = False):
        self.kind = kind
        self.folder = Path(folder)
        self.parse = parse
        self.cleanup = cleanup
        self.process = CommandProcess(list(args), self.folder / f"{kind}.log", python=python)
        self.result: Any = None
        self.error: Optional[TransferSegError] = None
        self.done = False

    def _log_text(self) -> str:
        try:
            return self.process.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def percent(self) -> Optional[int]:
        """Progress 0-100 when the command reports it (downloads), else None (the bar shows busy)."""
        return last_percent(self._log_text()[-400:])

    def progress_text(self) -> str:
        found = _MEGABYTES.findall(self._log_text()[-400:])
        return f"{found[-1][0]} of {found[-1][1]} MB" if found else ""

    def poll(self) -> Optional[bool]:
        """None while running; True when it succeeded (``result`` set), False when it failed (``error``)."""
        if self.done:
            return self.error is None
        code = self.process.poll()
        if code is None:
            return None
        self.done = True
        if self.process.cancelled:
            self.error = TransferSegError(f"The {self.kind} was cancelled.")
        elif code != 0:
            self.error = self.process.failure()
        else:
            try:
                self.result = self.parse(self._log_text()) if self.parse else None
            except (ValueError, KeyError, IndexError) as exc:
                self.error = TransferSegError(f"The {self.kind} finished but its answer could not be read ({exc}). "
                                              f"Log: {self.process.log_path}")
        if self.cleanup:
            shutil.rmtree(self.folder, ignore_errors=True)
        return self.error is None

    def cancel(self) -> None:
        self.process.cancel()
        self.done = True
        self.error = TransferSegError(f"The {self.kind} was cancelled.")
        if self.cleanup:
            shutil.rmtree(self.folder, ignore_errors=True)


def last_percent(text: str, pattern: "re.Pattern" = _PERCENT) -> Optional[int]:
    """The last percentage ``pattern`` finds in a command's output (0-100), or None."""
    found = pattern.findall(text)
    return max(0, min(100, int(found[-1]))) if found else None


def log_tail(path: Path, size: int = 2000) -> str:
    """The last ``size`` bytes of a log as text ('' while it does not exist), without reading all of it."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - size))
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def last_json(text: str) -> Any:
    """The JSON document a command printed last (``--json`` output may span lines)."""
    start = text.rfind("\n{")
    start = 0 if start < 0 and text.startswith("{") else start + 1
    if start < 0:
        raise ValueError("no JSON in the output")
    return json.loads(text[start:])


def last_line_value(text: str) -> str:
    """``NAME: VALUE`` of the command's last line (``models download`` / ``models add`` print one)."""
    lines: List[str] = [ln for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    if not lines:
        raise ValueError("no output")
    return lines[-1].split(": ", 1)[-1].strip()


def metric_rows(report: Any) -> List[dict]:
    """Per-class rows {label, dice, hd95} of ``transferseg evaluate --json`` output."""
    rows = []
    for case in report.get("cases", []):
        for item in case.get("classes", []):
            rows.append({"label": item["label"], "dice": item.get("dice"), "hd95": item.get("hd95"),
                         "empty": item.get("empty")})
    return rows
