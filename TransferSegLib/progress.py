"""Terminal progress for long work: one updating line with percent, ETA, loss and Dice.

Fed with the same events the job worker writes to events.jsonl, so the foreground
command, ``job watch`` and the Slicer panel all show the same figures. Used as a
``Reporter`` (``event(kind, **fields)``) in-process, or with ``show(event)`` for
events read back from a job folder. No tqdm: the line is rebuilt from each event,
so a watcher that attaches late shows the right figures at once.
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


def format_run(fields: Dict[str, Any]) -> str:
    """'fold 0 full         n=1 r=0: Dice 0.803 [17 s]': one finished run of an experiment."""
    state = "skipped (done)" if fields.get("skipped") else f"{fields.get('train_seconds') or 0:.0f} s"
    return (f"fold {fields.get('fold')} {fields.get('strategy', ''):12s} n={fields.get('size')} "
            f"r={fields.get('repeat')}: Dice {fields.get('mean_dice') or 0:.3f} [{state}]")


def _strategy(fields: Dict[str, Any]) -> str:
    """'full (auto: the base model records no experiment: ...)' or just the strategy asked for."""
    if fields.get("strategy_requested") == "auto":
        return f"{fields.get('strategy')} (auto: {fields.get('strategy_reason')})"
    return str(fields.get("strategy"))


def _cleanup(decisions: Any) -> str:
    """'; largest component kept for liver (anatomy)' from a finished event's clean-up decisions."""
    if not isinstance(decisions, dict) or not decisions:
        return ""
    kept = [f"{name} ({d.get('decided_by')})" for name, d in decisions.items() if isinstance(d, dict) and d.get("keep_largest")]
    return f"; largest component kept for {', '.join(kept) if kept else 'no class'}"


def format_progress(fields: Dict[str, Any], last_dice: Optional[float]) -> str:
    """'[#####-----]  52.5% it 21/40 loss 0.5625 dice 0.69 ETA 00:21 (0.90 it/s)'."""
    percent = float(fields.get("percent") or 0.0)
    filled = max(0, min(20, int(round(percent / 5))))
    total = fields.get("total_iterations")
    it = f"it {fields.get('iteration', 0)}" + (f"/{total}" if total else "")
    loss = fields.get("loss")
    parts = [f"[{'#' * filled}{'-' * (20 - filled)}] {percent:5.1f}%", it]
    if isinstance(loss, (int, float)):
        parts.append(f"loss {loss:.4f}")
    if last_dice is not None:
        parts.append(f"val dice {last_dice:.3f}")
    parts.append(f"ETA {_duration(fields.get('eta_s'))}")
    if fields.get("its_per_s"):
        parts.append(f"({fields['its_per_s']:.2f} it/s)")
    if fields.get("data_wait_pct") is not None:
        parts.append(f"data wait {fields['data_wait_pct']:.0f}%")
    if fields.get("peak_gpu_memory_gb") is not None:
        parts.append(f"GPU {fields['peak_gpu_memory_gb']:.1f} GB")
    return "  ".join(parts)


class ProgressPrinter:
    """A Reporter that renders events on a terminal (a plain log when not a TTY).

    On a TTY progress rewrites one line; elsewhere (a log file, CI) one progress
    line in ``min_interval_lines`` is printed, plus the last one.
    """

    def __init__(self, stream: Optional[TextIO] = None, min_interval_lines: int = 10) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_dice: Optional[float] = None
        self._open_line = False
        self._count = 0
        self._every = max(1, min_interval_lines)

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

    def note(self, text: str) -> None:
        """A line of the caller's own (job folder, stop requests) between the events."""
        self._line(text)

    def show(self, event: Dict[str, Any]) -> None:
        """Render one event as read from events.jsonl."""
        fields = {k: v for k, v in event.items() if k not in ("kind", "time")}
        self.event(str(event.get("kind", "")), **fields)

    def event(self, kind: str, **fields: Any) -> None:
        if kind == "progress":
            self._count += 1
            if self.tty or self._count % self._every == 1 or fields.get("percent") == 100.0:
                self._line(format_progress(fields, self.last_dice), transient=True)
        elif kind == "validation":
            self.last_dice = fields.get("mean_dice")
            dice = ", ".join(f"{k} {v:.3f}" for k, v in (fields.get("dice") or {}).items() if isinstance(v, (int, float)))
            self._line(f"validation at iteration {fields.get('iteration')}: {dice}")
        elif kind == "started":
            memory = f", {fields['memory_gb']} GB" if fields.get("memory_gb") else ""
            self._line(f"training on {fields.get('device_name', fields.get('device'))}{memory}: "
                       f"{len(fields.get('cases', []))} case(s), labels {', '.join(fields.get('labels', [])[1:])}, "
                       f"strategy {_strategy(fields)}, base {fields.get('base')}")
        elif kind == "queued":
            self._line(f"queued: {fields.get('message', '')}")
            if fields.get("base_part"):
                self._line(str(fields["base_part"]))
        elif kind == "warning":
            self._line(f"warning: {' '.join(str(fields.get('message')).split())}")
        elif kind == "info":
            self._line(str(fields.get("message")))
        elif kind == "error":
            text = f"error: {fields.get('message')}"
            if fields.get("hint"):
                text += f"\n  hint: {fields['hint']}"
            for line in fields.get("stderr_tail") or []:
                text += f"\n  | {line}"
            self._line(text)
        elif kind == "cancelled":
            text = f"cancelled: {fields.get('message') or 'stopped'}"
            if fields.get("hint"):
                text += f"\n  {fields['hint']}"
            self._line(text)
        elif kind == "run":
            self._line(format_run(fields))
        elif kind == "finished" and fields.get("report"):
            self._line(f"finished: {fields.get('runs')} runs; report {fields['report']}")
        elif kind == "finished":
            dice = ""
            metrics = fields.get("metrics") or {}
            if isinstance(metrics.get("best_mean_dice"), (int, float)):
                dice = f" (best validation Dice {metrics['best_mean_dice']:.3f})"
            self._line(f"finished: model {fields.get('model')}{dice}{_cleanup(fields.get('largest_component'))}")

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False
