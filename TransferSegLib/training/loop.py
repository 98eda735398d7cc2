"""The training loop every training run goes through: fine-tuning, partial-label and self-supervised pretraining.

Small steps composed by one short loop (not a trainer class hierarchy): set up,
resume, then per iteration take a batch, take one optimizer step, report, validate
and keep the best weights, checkpoint. Budgets are in iterations and/or wall-clock
seconds; a resume is exact (weights, optimizer, iteration, elapsed time and every
random generator state are saved). What differs between kinds of training is only
what a batch holds (``next_batch``), what the loss compares (``loss_fn``) and
whether there is a validation score (``validator``).
"""

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from TransferSegLib.errors import TrainingCancelled, TransferSegError
from TransferSegLib.models.checkpoints import read_checkpoint
from TransferSegLib.paths import write_atomically
from TransferSegLib.specs import TrainConfig
from TransferSegLib.training.batches import WaitShare
from TransferSegLib.training.devices import resolve_device
from TransferSegLib.training.transfer import StagedSchedule, apply_strategy, freeze_norm_statistics, set_trainable_parts

CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"
_ALL_PARTS = ("encoder", "decoder", "last_block", "head")


class Reporter:
    """Receives training events. The job worker writes them to events.jsonl."""

    def event(self, kind: str, **fields: Any) -> None:  # pragma: no cover - interface
        pass


@dataclass
class TrainState:
    """What a resumed run continues from."""

    iteration: int = 0
    elapsed_s: float = 0.0
    best_score: float = -1.0
    best_iteration: int = 0
    validations_since_best: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    iterations: int
    elapsed_s: float
    best_score: float
    best_iteration: int
    last_dice: Dict[str, float]
    history: List[Dict[str, Any]]
    stopped_early: bool
    final_loss: float = float("nan")  # the loss of the last iteration


@dataclass
class Batch:
    """One iteration's patches on the training device.

    ``inputs`` (B, C, X, Y, Z) go into the network; ``target`` is what the loss
    compares its output with (labels, or the original intensities); ``annotated``
    (B, classes) and ``region`` (B, 1, X, Y, Z) say which classes and voxels count.
    """

    inputs: torch.Tensor
    target: torch.Tensor
    annotated: Optional[torch.Tensor] = None
    region: Optional[torch.Tensor] = None
    wait_s: Optional[float] = None  # how long the loop waited for it (None: as long as next_batch took)


@dataclass
class Loop:
    """Everything one training run holds between its steps (what a checkpoint saves, and how to step)."""

    model: nn.Module
    config: TrainConfig
    device: torch.device
    optimizer: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler
    use_amp: bool
    reporter: Reporter
    work_dir: Path
    np_rng: np.random.Generator
    torch_gen: torch.Generator
    state: TrainState = field(default_factory=TrainState)
    staged: Optional[StagedSchedule] = None
    stage: int = 1
    start_wall: float = 0.0
    last_report: float = 0.0
    iter_times: List[float] = field(default_factory=list)
    waits: WaitShare = field(default_factory=WaitShare)
    last_dice: Dict[str, float] = field(default_factory=dict)
    loss: float = float("nan")

    @property
    def last_path(self) -> Path:
        return self.work_dir / CHECKPOINT_LAST

    @property
    def best_path(self) -> Path:
        return self.work_dir / CHECKPOINT_BEST

    def progress(self) -> float:
        """How far the budget is used, 0..1 (the larger of iterations and time)."""
        self.state.elapsed_s = time.monotonic() - self.start_wall
        parts = []
        if self.config.iterations:
            parts.append(self.state.iteration / self.config.iterations)
        if self.config.time_budget:
            parts.append(self.state.elapsed_s / self.config.time_budget)
        return max(parts) if parts else 0.0

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


#: ``next_batch(loop)``: the next iteration's batch, drawn with ``loop.np_rng`` / ``loop.torch_gen`` (so that
#: a resume continues the same draws), on ``loop.device``.
NextBatch = Callable[[Loop], Batch]
#: ``loss_fn(outputs, batch)``: the scalar loss of the network's outputs (B, C, X, Y, Z) for a batch.
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
#: ``validator(model)``: Dice per class name on the validation cases.
Validator = Callable[[nn.Module], Dict[str, float]]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _poly_lr(base_lr: float, progress: float) -> float:
    return base_lr * (1.0 - min(max(progress, 0.0), 0.999)) ** 0.9


def _save(path: Path, payload: Dict[str, Any]) -> None:
    """A checkpoint under a unique temporary name, checked, then renamed (two runs never share a temporary)."""
    write_atomically(path, lambda temporary: torch.save(payload, str(temporary)))


def _weights(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def set_up(model: nn.Module, strategy: str, config: TrainConfig, work_dir: Path,
           reporter: Optional[Reporter] = None) -> Loop:
    """Seeds, device, frozen parts, optimizer and mixed precision for a fresh run."""
    config.check()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    torch_gen = torch.Generator().manual_seed(config.seed)
    model.to(device)
    staged = StagedSchedule() if strategy == "staged" else None
    apply_strategy(model, strategy)
    optimizer = torch.optim.AdamW(list(model.parameters()), lr=config.learning_rate, weight_decay=config.weight_decay)
    use_amp = bool(config.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return Loop(model, config, device, optimizer, scaler, use_amp, reporter or Reporter(), work_dir, np_rng,
                torch_gen, staged=staged)


def resume_from_checkpoint(loop: Loop) -> None:
    """Continue exactly where the last checkpoint left off (weights, optimizer, counters, random states)."""
    if not loop.last_path.is_file():
        raise TransferSegError(f"Cannot resume: no checkpoint at '{loop.last_path}'.")
    ckpt = read_checkpoint(loop.last_path)
    loop.model.load_state_dict(ckpt["model"])
    loop.stage = int(ckpt.get("stage", 1))
    if loop.staged is not None and loop.stage == 2:
        set_trainable_parts(loop.model, _ALL_PARTS)
    loop.optimizer.load_state_dict(ckpt["optimizer"])
    loop.state = TrainState(**ckpt["state"])
    loop.np_rng.bit_generator.state = ckpt["numpy_rng"]
    loop.torch_gen.set_state(ckpt["torch_gen"])
    torch.set_rng_state(ckpt["torch_rng"])
    loop.reporter.event("info", message=f"Resumed from iteration {loop.state.iteration} ({loop.last_path}).")


def save_checkpoint(loop: Loop) -> None:
    """The last checkpoint: all a resume needs."""
    loop.state.elapsed_s = time.monotonic() - loop.start_wall
    _save(loop.last_path, {
        "model": _weights(loop.model), "optimizer": loop.optimizer.state_dict(), "state": asdict(loop.state),
        "numpy_rng": loop.np_rng.bit_generator.state, "torch_gen": loop.torch_gen.get_state(),
        "torch_rng": torch.get_rng_state(), "stage": loop.stage,
    })
    loop.reporter.event("checkpoint", path=str(loop.last_path), iteration=loop.state.iteration, which="last")


def schedule(loop: Loop, progress: float) -> None:
    """The learning rate for this point of the budget (poly decay), and the second stage of ``staged``."""
    if loop.staged is not None and loop.stage == 1 and loop.staged.in_second_stage(progress):
        loop.stage = 2
        set_trainable_parts(loop.model, _ALL_PARTS)
        loop.reporter.event("info", message="Staged fine-tuning: head trained; now training all layers at a lower rate.")
    factor = loop.staged.later_lr_factor if loop.stage == 2 and loop.staged else 1.0
    lr = _poly_lr(loop.config.learning_rate * factor, progress)
    for group in loop.optimizer.param_groups:
        group["lr"] = lr


def network_output(outputs: Any) -> torch.Tensor:
    """The full-resolution output of networks that return several (deep supervision)."""
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    if outputs.dim() == 6:  # DynUNet deep supervision stacks outputs
        outputs = outputs[:, 0]
    return outputs


def step(loop: Loop, batch: Batch, loss_fn: LossFn) -> float:
    """One optimizer step on ``batch``; returns the loss."""
    loop.model.train()
    freeze_norm_statistics(loop.model)
    loop.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp):
        outputs = network_output(loop.model(batch.inputs))
    loss = loss_fn(outputs.float(), batch)
    if not torch.isfinite(loss):
        raise TransferSegError(
            f"The loss became {float(loss)} at iteration {loop.state.iteration}: lower the learning rate "
            f"(--learning-rate) or check the images' intensities."
        )
    loop.scaler.scale(loss).backward()
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    return float(loss.detach())


def report_progress(loop: Loop, final: bool = False) -> None:
    now = time.monotonic()
    if final or now - loop.last_report >= loop.config.progress_every or loop.state.iteration == 1:
        loop.last_report = now
        loop.reporter.event("progress", **_progress_fields(loop, final))


def validate_and_keep_best(loop: Loop, validator: Validator, final: bool = False) -> bool:
    """Validate, keep the weights if they are the best so far; True when early stopping says stop.

    The last validation (``final``) only keeps the best: patience no longer applies.
    """
    state = loop.state
    loop.last_dice = validator(loop.model)
    score = float(np.mean(list(loop.last_dice.values()))) if loop.last_dice else 0.0
    state.history.append({"iteration": state.iteration, "loss": loop.loss, "dice": loop.last_dice, "mean_dice": score})
    if score > state.best_score:
        state.best_score, state.best_iteration = score, state.iteration
        state.validations_since_best = 0
        _save(loop.best_path, {"model": _weights(loop.model), "iteration": state.iteration, "score": score})
        loop.reporter.event("checkpoint", path=str(loop.best_path), iteration=state.iteration, which="best")
    elif not final:
        state.validations_since_best += 1
    loop.reporter.event("validation", iteration=state.iteration, dice=loop.last_dice, mean_dice=score,
                        best=state.best_score)
    patience = loop.config.patience
    if not final and patience and state.validations_since_best >= patience:
        loop.reporter.event("info", message=f"Early stopping: no better validation Dice in {patience} validations.")
        return True
    return False


def finish(loop: Loop, validator: Optional[Validator], stopped_early: bool) -> TrainResult:
    """Validate the end state if not done, checkpoint, and leave the best weights in the model."""
    state = loop.state
    validated_last = bool(state.history) and state.history[-1].get("iteration") == state.iteration
    if validator is not None and not stopped_early and not validated_last:
        validate_and_keep_best(loop, validator, final=True)
    report_progress(loop, final=True)
    save_checkpoint(loop)
    if loop.best_path.is_file() and state.best_iteration != state.iteration:
        loop.model.load_state_dict(read_checkpoint(loop.best_path)["model"])
    if loop.device.type == "cuda":
        state.history.append({"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated(loop.device) / 2**30, 2)})
    return TrainResult(iterations=state.iteration, elapsed_s=state.elapsed_s, best_score=state.best_score,
                       best_iteration=state.best_iteration, last_dice=loop.last_dice, history=state.history,
                       stopped_early=stopped_early, final_loss=loop.loss)


def remove_checkpoints(work: Path) -> None:
    """After a finished run only the model folder stays: the loop's checkpoint files go, and their
    folder if nothing else is in it (a caller's own work folder keeps its other files)."""
    for name in (CHECKPOINT_LAST, CHECKPOINT_BEST):
        (work / name).unlink(missing_ok=True)
    try:
        work.rmdir()
    except OSError:
        pass


@torch.enable_grad()  # a host (Slicer, a MONAI bundle run) may have switched autograd off globally
def run_loop(
    model: nn.Module,
    config: TrainConfig,
    work_dir: Path,
    next_batch: NextBatch,
    loss_fn: LossFn,
    strategy: str = "scratch",
    reporter: Optional[Reporter] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    resume: bool = False,
    validator: Optional[Validator] = None,
) -> TrainResult:
    """Train ``model`` in place until the budget is used (or early stopping); the best weights are kept."""
    try:
        loop = set_up(model, strategy, config, work_dir, reporter)
        if resume:
            resume_from_checkpoint(loop)
        should_stop = should_stop or (lambda: False)
        loop.start_wall = time.monotonic() - loop.state.elapsed_s
        stopped_early = False
        while True:
            progress = loop.progress()
            if progress >= 1.0:
                break
            if should_stop():
                save_checkpoint(loop)
                raise TrainingCancelled(f"Training cancelled at iteration {loop.state.iteration}; checkpoint saved.")
            schedule(loop, progress)
            started = time.monotonic()
            batch = next_batch(loop)
            fetched = time.monotonic()
            loop.loss = step(loop, batch, loss_fn)
            loop.state.iteration += 1
            loop.iter_times.append(time.monotonic() - started)
            loop.waits.add(fetched - started if batch.wait_s is None else batch.wait_s, loop.iter_times[-1])
            loop.state.elapsed_s = time.monotonic() - loop.start_wall
            report_progress(loop)
            if validator is not None and loop.state.iteration % config.val_every == 0:
                if validate_and_keep_best(loop, validator):
                    stopped_early = True
                    break
            if loop.state.iteration % config.checkpoint_every == 0:
                save_checkpoint(loop)
        return finish(loop, validator, stopped_early)
    finally:
        close = getattr(next_batch, "close", None)
        if close is not None:
            close()  # background batch makers stop however the run ends


def _progress_fields(loop: Loop, final: bool = False) -> Dict[str, Any]:
    state, config = loop.state, loop.config
    recent = loop.iter_times[-20:]
    its = len(recent) / sum(recent) if recent and sum(recent) > 0 else 0.0
    progress = 1.0 if final else min(loop.progress(), 1.0)
    eta: Optional[float] = None
    if config.time_budget:
        eta = max(0.0, config.time_budget - state.elapsed_s)
    if config.iterations and its > 0:
        by_iter = (config.iterations - state.iteration) / its
        eta = by_iter if eta is None else min(eta, by_iter)
    return {
        "iteration": state.iteration,
        "total_iterations": config.iterations,
        "percent": round(100.0 * progress, 1),
        "epoch": state.iteration // 250,
        "loss": round(loop.loss, 5) if math.isfinite(loop.loss) else None,
        "lr": loop.lr,
        "its_per_s": round(its, 3),
        "eta_s": None if eta is None or final else round(eta, 1),
        "elapsed_s": round(state.elapsed_s, 1),
        "data_wait_pct": loop.waits.percent,  # share of recent step time spent waiting for batches
    }
