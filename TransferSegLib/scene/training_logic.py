"""The Logic's fine-tuning part: export the cases, start the job, follow it, and the Jobs section's actions.

Only the export runs in Slicer's process (one read per segmentation layer, see
``segmentations``); training is a job of the job layer, started with ``python``
(``PythonSlicer`` in Slicer). A busy device does not refuse the start: the job waits
``queued`` until the job holding the device ends (the job layer's queue), and the
run says at once whom it waits for (``JobBoard.busy``), so the panel can show it
with a button to follow or cancel that job, and Stop cancels the waiting one.
"""

import datetime
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from TransferSegLib.errors import CaseError, JobError, ModelError, TransferSegError
from TransferSegLib.names import normalize_label_name
from TransferSegLib.paths import resources_dir
from TransferSegLib.scene.cases import SceneCase, training_labels
from TransferSegLib.scene.channels import check_channel_count
from TransferSegLib.scene.export import export_cases
from TransferSegLib.scene.jobs import JobBoard
from TransferSegLib.scene.models import model_channels
from TransferSegLib.scene.plot import TrainingPlot
from TransferSegLib.scene.runs import TrainingRun, read_model_card
from TransferSegLib.specs import AUTO, DEFAULT_STRATEGY, TrainConfig, check_strategy



def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "model"


def validation_note(cases: Sequence[SceneCase]) -> str:
    """What the validation Dice will be measured on, in the panel's words (never a silent hold-out)."""
    held = [c.name for c in cases if c.validation]
    trained = [c for c in cases if not c.validation]
    if held and trained:
        return f"Validation on {', '.join(held)} (not trained on); early stopping watches its Dice."
    if held:
        return "Every case is ticked for validation: untick at least one to train on."
    return ("Validation on the training case(s) themselves (tick 'validation' on a case to hold it out): the Dice "
            "shows how well the model fits them, not how it generalizes.")


def check_case_channels(cases: Sequence[SceneCase], base: str) -> None:
    """Every case gives one volume per input channel of the base model (a scratch model: the same count)."""
    names, count = model_channels(base, resources_dir())
    for case in cases:
        check_channel_count(base, names, count, len(case.volumes), f"the case '{case.name}'")
    counts = sorted({len(c.volumes) for c in cases})
    if len(counts) > 1:
        raise CaseError(f"The cases have different numbers of channels ({', '.join(map(str, counts))}): give every "
                        f"case the same channels, or train one model per kind of case.")


class TrainingLogic:
    """Mixed into ``TransferSegLogic``: needs ``self.python``, ``self.work_root``, ``self.training``."""

    python: str
    work_root: Path
    training: Optional[TrainingRun]

    @property
    def jobs(self) -> JobBoard:
        return JobBoard(self.work_root / "jobs")

    def start_finetune(
        self,
        cases: Sequence[SceneCase],
        base: str = "default",
        strategy: str = DEFAULT_STRATEGY,
        time_budget_s: Optional[float] = TrainConfig.time_budget,
        iterations: Optional[int] = None,
        device: str = "auto",
        labels: Optional[Sequence[str]] = None,
        name: str = "",
        seed: int = 0,
        train: Optional[Dict[str, Any]] = None,
        plot: bool = True,
    ) -> TrainingRun:
        """Export the cases and start a fine-tuning job; returns at once (queued while the device is busy).

        ``labels`` default to the ticked segment names of all cases, in order; when
        ``base`` is a model folder (fine-tuning again) its classes keep their values.
        Cases ticked ``validation`` are held out for the validation Dice; with none,
        validation runs on the training cases (``validation_note`` says which).
        """
        if self.training is not None and self.training.running:
            raise JobError(f"A fine-tuning job is already running ({self.training.directory}): stop it first.")
        strategy = check_strategy(strategy)
        if str(base).strip().lower() in ("none", "scratch") and strategy not in ("scratch", AUTO):
            raise ModelError(f"Without a base model there are no pretrained weights for the '{strategy}' strategy: "
                             f"pick a base model, or the 'scratch' strategy.")
        train_cases = [c for c in cases if not c.validation]
        if cases and not train_cases:
            raise JobError(validation_note(cases))
        check_case_channels(cases, str(base))
        busy = self.jobs.busy(device)  # not a refusal: the worker waits for the device, queued
        previous: List[str] = []
        if Path(str(base)).is_dir() and (Path(str(base)) / "model.json").is_file():
            # Keep the previous model's order for the classes the cases still annotate.
            ticked = {normalize_label_name(n) for case in cases for n in case.segments}
            previous = [n for n in read_model_card(base)["labels"][1:] if normalize_label_name(n) in ticked]
        target = list(labels) if labels else training_labels(cases, previous)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        model_name = name or f"{'-'.join(_slug(n) for n in target[:3])}-{stamp}"
        directory = self.work_root / "jobs" / f"{stamp}-{_slug(model_name)}"
        while directory.exists():
            directory = directory.with_name(directory.name + "x")
        try:
            exported, target = export_cases(list(cases), directory / "cases", target)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)  # nothing half-written is left behind
            raise
        held = [e for e, c in zip(exported, cases) if c.validation]
        trained = [e for e, c in zip(exported, cases) if not c.validation]
        output = self.work_root / "models" / _slug(model_name)
        for round_number in range(2, 1000):  # each round keeps its own model folder
            if not output.exists():
                break
            output = output.with_name(f"{_slug(model_name)}-{round_number}")
        settings = dict(train or {})
        settings.setdefault("time_budget", time_budget_s)
        settings.setdefault("iterations", iterations)
        patch_size = settings.pop("patch_size", None)  # overrides the base model's patch size
        config = TrainConfig.from_dict(settings)
        from TransferSegLib.jobs.api import start_job
        from TransferSegLib.jobs.spec import JobSpec

        # No silent hold-out: without chosen validation cases, validate on the training cases (the engine
        # does that by itself below 3 cases; from 3 on it would hold 20 % out, so they are passed explicitly).
        validate_on = held or (list(trained) if len(trained) >= 3 else [])
        spec = JobSpec(base=str(base), cases=trained, val_cases=validate_on, labels=target,
                       strategy=strategy, output=str(output), train=config, device=device, seed=seed,
                       name=model_name, patch_size=list(patch_size) if patch_size else None)
        job = start_job(spec, directory, python=self.python)
        self.training = TrainingRun(job=job, directory=Path(directory), output=output, labels=target,
                                    plot=TrainingPlot(f"TransferSeg {model_name}") if plot else None,
                                    waiting=busy.waiting() if busy is not None else "")
        return self.training

    def attach_training(self, directory) -> TrainingRun:
        """Follow a job started earlier (e.g. before Slicer restarted); replays its events."""
        from TransferSegLib.jobs.api import Job

        if self.training is not None and Path(self.training.directory) == Path(directory):
            return self.training
        return self._follow(Job.attach(Path(directory)), Path(directory))

    def _follow(self, job, directory: Path) -> TrainingRun:
        spec = getattr(job, "spec", None)
        run = TrainingRun(job=job, directory=directory, output=Path(getattr(spec, "output", "") or directory),
                          labels=list(getattr(spec, "labels", []) or []),
                          plot=TrainingPlot(f"TransferSeg {getattr(spec, 'name', '') or directory.name}"))
        self.training = run
        self.poll_training()
        return run

    def resume_training(self, directory) -> TrainingRun:
        """Continue a cancelled or failed job from its last checkpoint and follow it."""
        if self.training is not None and self.training.running:
            raise JobError(f"A fine-tuning job is already followed ({self.training.directory}): stop it first.")
        job = self.jobs.resume(directory, python=self.python)  # its poll() reports this attempt's events only
        return self._follow(job, Path(directory))

    def cancel_job(self, directory) -> None:
        """Stop the job in ``directory``, whether this session started it or not."""
        if self.training is not None and Path(self.training.directory) == Path(directory):
            self.cancel_training()
        else:
            self.jobs.cancel(directory)

    def delete_job(self, directory) -> None:
        if self.training is not None and Path(self.training.directory) == Path(directory) and self.training.running:
            raise JobError("This job is running: cancel it first, then delete it.")
        self.jobs.delete(directory)
        if self.training is not None and Path(self.training.directory) == Path(directory):
            self.training = None

    def poll_training(self) -> List[Dict[str, Any]]:
        """New events of the running job, applied to its state and plot (call from a timer)."""
        run = self.training
        if run is None:
            return []
        events = run.job.poll()
        for event in events:
            run.apply(event)
        if run.running and not events:
            run.check_worker(run.job.status())
        return events

    def cancel_training(self) -> None:
        if self.training is not None and self.training.running:
            self.training.job.cancel()

    def wait_for_training(self, timeout: Optional[float] = None, interval: float = 0.5,
                          on_events: Optional[Callable[[List[Dict[str, Any]]], None]] = None) -> TrainingRun:
        """Block until the job ends (console and self-test use; the panel polls instead)."""
        if self.training is None:
            raise JobError("No fine-tuning job was started.")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            events = self.poll_training()
            if on_events is not None and events:
                on_events(events)
            if not self.training.running:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel_training()
                raise JobError(f"The fine-tuning job did not finish within {timeout:.0f} s and was stopped.")
            time.sleep(interval)
        if self.training.state == "failed":
            raise TransferSegError(self.training.error or "Fine-tuning failed.")
        return self.training
