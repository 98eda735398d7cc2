"""Terminal progress for long work: one updating line with percent, ETA, loss and Dice.

Fed with the same events the job worker writes to events.jsonl, so the foreground
command, ``job watch`` and the Slicer panel all show the same figures.
"""

import sys
from typing import Any, Dict, Optional, TextIO


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_progress(fields: Dict[str, Any], last_dice: Optional[float]) -> str:
    """'[#####-----]  52.5% it 21/40 loss 0.5625 dice 0.69 ETA 00:21 (0.90 it/s)'."""
    percent = float(fields.get("percent") or 0.0)
    filled = int(round(percent / 5))
    total = fields.get("total_iterations")
    it = f"it {fields.get('iteration', 0)}" + (f"/{total}" if total else "")
    loss = fields.get("loss")
    parts = [f"[{'#' * filled}{'-' * (20 - filled)}] {percent:5.1f}%", it]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if last_dice is not None:
        parts.append(f"val dice {last_dice:.3f}")
    parts.append(f"ETA {_duration(fields.get('eta_s'))}")
    if fields.get("its_per_s"):
        parts.append(f"({fields['its_per_s']:.2f} it/s)")
    return "  ".join(parts)


class ProgressPrinter:
    """A Reporter that renders events on a terminal (a plain log when not a TTY)."""

    def __init__(self, stream: Optional[TextIO] = None, min_interval_lines: int = 10) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_dice: Optional[float] = None
        self._open_line = False
        self._count = 0
        self._every = min_interval_lines

    def _line(self, text: str, transient: bool = False) -> None:
        if self.tty and transient:
            self.stream.write("\r\033[K" + text)
            self._open_line = True
        else:
            if self._open_line:
                self.stream.write("\n")
                self._open_line = False
            self.stream.write(text + "\n")
        self.stream.flush()

    def event(self, kind: str, **fields: Any) -> None:
        if kind == "progress":
            self._count += 1
            if self.tty or self._count % self._every == 1 or fields.get("percent") == 100.0:
                self._line(format_progress(fields, self.last_dice), transient=True)
        elif kind == "validation":
            self.last_dice = fields.get("mean_dice")
            dice = ", ".join(f"{k} {v:.3f}" for k, v in (fields.get("dice") or {}).items())
            self._line(f"validation at iteration {fields.get('iteration')}: {dice}")
        elif kind == "started":
            self._line(f"training on {fields.get('device_name', fields.get('device'))}: {len(fields.get('cases', []))} case(s), "
                       f"labels {', '.join(fields.get('labels', [])[1:])}, strategy {fields.get('strategy')}, base {fields.get('base')}")
        elif kind == "warning":
            self._line(f"warning: {fields.get('message')}")
        elif kind == "error":
            self._line(f"error: {fields.get('message')}" + (f"\n  hint: {fields['hint']}" if fields.get("hint") else ""))
        elif kind == "finished":
            self._line(f"finished: model {fields.get('model')}")

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False
