"""What the panel follows of background work: a fine-tuning job, a prediction process.

Plain state built from the job's events (no Qt, no ``slicer`` import): the status
line with ETA, the percentage, the final model or the error message to show.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from TransferSegLib.model_card import ModelCard

STOPPED = "Stopped. The last checkpoint is kept in the job folder."


def read_model_card(model_dir) -> Dict[str, Any]:
    """A fine-tuned model's ``model.json`` (name, labels, metrics) without loading torch."""
    return ModelCard.load(model_dir).to_dict()


def _kind(event: Dict[str, Any]) -> str:
    return str(event.get("kind") or event.get("event") or "")


@dataclass
class TrainingRun:
    """A fine-tuning job as the panel follows it."""

    job: Any
    directory: Path
    output: Path
    labels: List[str]
    plot: Optional[Any] = None  # a plot.TrainingPlot
    state: str = "running"  # running, finished, failed, cancelled
    model: Optional[str] = None
    error: Optional[str] = None
    metrics: Dict[str, Any] = field(default_factory=dict)
    progress: Dict[str, Any] = field(default_factory=dict)
    validation: Dict[str, Any] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    strategy: str = ""  # what ran, from the started event ("full (auto)")
    waiting: str = ""  # while queued behind another job on the device: whom it waits for

    @property
    def queued(self) -> bool:
        return self.running and bool(self.waiting)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def status_line(self) -> str:
        if self.state == "finished":
            dice = self.validation.get("mean_dice")
            score = f", validation Dice {dice:.3f}" if isinstance(dice, (int, float)) else ""
            return f"Done{score}. Model: {self.model}"
        if self.state in ("failed", "cancelled"):
            return self.error or self.state.capitalize()
        if self.waiting:
            return self.waiting
        if not self.progress:
            return "Starting (loading the base model and cases)…"
        parts = [f"iteration {self.progress.get('iteration', 0)}"]
        total = self.progress.get("total_iterations")
        if total:
            parts[0] += f"/{total}"
        if isinstance(self.progress.get("loss"), (int, float)):
            parts.append(f"loss {self.progress['loss']:.3f}")
        if isinstance(self.validation.get("mean_dice"), (int, float)):
            parts.append(f"Dice {self.validation['mean_dice']:.3f}")
        eta = self.progress.get("eta_s")
        if isinstance(eta, (int, float)):
            parts.append(f"about {_duration(eta)} left")
        if self.strategy:
            parts.insert(0, f"strategy {self.strategy}")
        return ", ".join(parts)

    def apply(self, event: Dict[str, Any]) -> None:
        """Update the state (and the plot) from one job event."""
        kind = _kind(event)
        if self.plot is not None:
            self.plot.add_event(dict(event, kind=kind))
        if kind == "queued":  # the worker found the device busy: it waits (our own words if we have them)
            self.waiting = self.waiting or str(event.get("message") or "Waiting for the device.")
        elif kind in ("started", "progress", "validation", "error", "failed", "cancelled", "finished"):
            self.waiting = ""
        if kind == "started":
            auto = event.get("strategy_requested") == "auto"
            self.strategy = f"{event.get('strategy', '')}{' (auto)' if auto else ''}"
        elif kind == "progress":
            self.progress = dict(event)
        elif kind == "validation":
            self.validation = dict(event)
        elif kind == "warning":
            self.warnings.append(str(event.get("message", "")))
        elif kind == "finished":
            self.state, self.model = "finished", str(event.get("model") or self.output)
            self.metrics = dict(event.get("metrics") or {})
        elif kind in ("error", "failed"):
            self.state, self.error = "failed", describe_error(event)
        elif kind == "cancelled":
            self.state, self.error = "cancelled", STOPPED

    def check_worker(self, status: Any) -> None:
        """A worker that died without a last event (killed, crashed) must not look busy forever."""
        state = str(getattr(status, "state", status) or "")
        if state in ("failed", "error", "crashed", "died", "lost"):
            self.state = "failed"
            message = str(getattr(status, "message", "") or "")
            self.error = describe_error({"message": message, "hint": getattr(status, "hint", "")}) if message else (
                f"The training process stopped without a result (killed, or out of memory?). "
                f"Its log is in {self.directory}.")
        elif state in ("cancelled", "canceled"):
            self.state, self.error = "cancelled", STOPPED
        elif state in ("finished", "done", "succeeded") and self.model is None:
            self.state, self.model = "finished", str(self.output)

    def percent(self) -> int:
        if self.state == "finished":
            return 100
        return int(max(0, min(100, round(float(self.progress.get("percent") or 0)))))


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def describe_error(event: Dict[str, Any]) -> str:
    """An error event as one message for the user: what happened, then what to do."""
    message = str(event.get("message") or "The job failed.")
    hint = event.get("hint")
    return f"{message} {hint}" if hint and str(hint) not in message else message


@dataclass
class PredictionRun:
    process: Any  # a process.CommandProcess
    volume: Any
    model_dir: Path
    model_name: str
    labels: List[str]
    output: Path
    channels: List[Any] = field(default_factory=list)  # volumes of channels 2, 3... (multi-channel models)
    channel_names: List[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


