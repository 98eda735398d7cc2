"""The training loop: patches in, a validated network and checkpoints out.

Small functions composed by one short loop (not a trainer class hierarchy):
budgets by iterations and/or wall-clock seconds, validation with per-class Dice,
early stopping, last/best checkpoints, and an exact resume (weights, optimizer,
iteration, elapsed time and every random generator state are saved).
"""

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from TransferSegLib.training.augment import AugmentConfig
from TransferSegLib.training.batches import BatchSource, WaitShare
from TransferSegLib.errors import TrainingCancelled, TransferSegError
from TransferSegLib.models.checkpoints import read_checkpoint
from TransferSegLib.paths import write_atomically
from TransferSegLib.training.setting_checks import check_train_config
from TransferSegLib.training.losses import partial_label_loss
from TransferSegLib.training.sampling import PreparedCase
from TransferSegLib.training.transfer import StagedSchedule, apply_strategy, freeze_norm_statistics, set_trainable_parts

CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


@dataclass
class TrainConfig:
    """How long and how to train. Sizes are (x, y, z) voxels on the model's grid."""

    patch_size: Tuple[int, int, int] = (64, 64, 32)
    batch_size: int = 2
    iterations: Optional[int] = None
    time_budget: Optional[float] = 300.0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    val_every: int = 50
    patience: int = 10
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    augment: bool = True
    foreground_ratio: float = 0.67
    num_threads: int = 0
    checkpoint_every: int = 50
    progress_every: float = 1.0
    val_overlap: float = 0.25

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["patch_size"] = list(self.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise TransferSegError(f"Unknown training settings {sorted(unknown)}; known: {sorted(known)}.")
        values = dict(data)
        if "patch_size" in values:
            values["patch_size"] = tuple(int(v) for v in values["patch_size"])
        return cls(**values)

    def check(self) -> None:
        """Refuse settings that would crash mid-run or train nonsense (``setting_checks``)."""
        check_train_config(self)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks the first CUDA GPU when there is one, else the CPU."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TransferSegError(
                f"Device '{name}' was asked for but no CUDA GPU is available to PyTorch "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Use --device cpu, "
                f"or install a CUDA build of PyTorch (in Slicer: the PyTorch extension)."
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise TransferSegError(f"GPU {index} does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
        return torch.device(f"cuda:{index}")
    if name == "cpu":
        return torch.device("cpu")
    raise TransferSegError(f"Unknown device '{name}': use auto, cpu, cuda or cuda:N.")


def device_description(device: torch.device) -> Dict[str, Any]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device": str(device), "device_name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)}
    return {"device": "cpu", "device_name": "CPU", "memory_gb": None}


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


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _poly_lr(base_lr: float, progress: float) -> float:
    return base_lr * (1.0 - min(max(progress, 0.0), 0.999)) ** 0.9


def _progress(state: TrainState, config: TrainConfig) -> float:
    parts = []
    if config.iterations:
        parts.append(state.iteration / config.iterations)
    if config.time_budget:
        parts.append(state.elapsed_s / config.time_budget)
    return max(parts) if parts else 0.0


def _save(path: Path, payload: Dict[str, Any]) -> None:
    """A checkpoint under a unique temporary name, checked, then renamed (two runs never share a temporary)."""
    write_atomically(path, lambda temporary: torch.save(payload, str(temporary)))


def _checkpoint_payload(model, optimizer, state: TrainState, np_rng, torch_gen, stage: int) -> Dict[str, Any]:
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "state": asdict(state),
        "numpy_rng": np_rng.bit_generator.state,
        "torch_gen": torch_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "stage": stage,
    }


@torch.enable_grad()  # a host (Slicer, a MONAI bundle run) may have switched autograd off globally
def train(
    model: nn.Module,
    train_cases: List[PreparedCase],
    val_cases: List[PreparedCase],
    labels: Sequence[str],
    strategy: str,
    config: TrainConfig,
    work_dir: Path,
    reporter: Optional[Reporter] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    resume: bool = False,
    predict_fn: Optional[Callable[[nn.Module, np.ndarray], np.ndarray]] = None,
) -> TrainResult:
    """Train ``model`` in place; the best weights (by validation Dice) are loaded at the end.

    ``predict_fn(model, image (X,Y,Z)) -> labels (X,Y,Z)`` runs validation inference.
    """
    config.check()
    reporter = reporter or Reporter()
    should_stop = should_stop or (lambda: False)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    torch_gen = torch.Generator().manual_seed(config.seed)
    for case in train_cases:
        case.index_foreground(np.random.default_rng(config.seed))

    model.to(device)
    staged = StagedSchedule() if strategy == "staged" else None
    trainable = apply_strategy(model, strategy)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters()], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    stage = 1
    state = TrainState()
    last_path = work_dir / CHECKPOINT_LAST
    best_path = work_dir / CHECKPOINT_BEST
    if resume:
        if not last_path.is_file():
            raise TransferSegError(f"Cannot resume: no checkpoint at '{last_path}'.")
        ckpt = read_checkpoint(last_path)
        model.load_state_dict(ckpt["model"])
        stage = int(ckpt.get("stage", 1))
        if staged is not None and stage == 2:
            set_trainable_parts(model, ("encoder", "decoder", "last_block", "head"))
        optimizer.load_state_dict(ckpt["optimizer"])
        state = TrainState(**ckpt["state"])
        np_rng.bit_generator.state = ckpt["numpy_rng"]
        torch_gen.set_state(ckpt["torch_gen"])
        torch.set_rng_state(ckpt["torch_rng"])
        reporter.event("info", message=f"Resumed from iteration {state.iteration} ({last_path}).")

    use_amp = bool(config.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    aug = AugmentConfig.for_labels(labels) if config.augment else None
    start_wall = time.monotonic() - state.elapsed_s
    last_report = 0.0
    last_dice: Dict[str, float] = {}
    stopped_early = False
    loss_value = float("nan")
    iter_times: List[float] = []
    waits = WaitShare()
    # Batch i depends on (seed, i) only, so a resumed run draws what an uninterrupted one would.
    source = BatchSource(train_cases, config.patch_size, config.batch_size, config.foreground_ratio, config.seed,
                         device, aug, start=state.iteration)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def save_last() -> None:
        state.elapsed_s = time.monotonic() - start_wall
        _save(last_path, _checkpoint_payload(model, optimizer, state, np_rng, torch_gen, stage))
        reporter.event("checkpoint", path=str(last_path), iteration=state.iteration, which="last")

    while True:
        state.elapsed_s = time.monotonic() - start_wall
        progress = _progress(state, config)
        if progress >= 1.0:
            break
        if should_stop():
            source.close()
            save_last()
            raise TrainingCancelled(f"Training cancelled at iteration {state.iteration}; checkpoint saved.")
        if staged is not None and stage == 1 and staged.in_second_stage(progress):
            stage = 2
            set_trainable_parts(model, ("encoder", "decoder", "last_block", "head"))
            reporter.event("info", message="Staged fine-tuning: head trained; now training all layers at a lower rate.")
        lr = _poly_lr(config.learning_rate * (staged.later_lr_factor if stage == 2 and staged else 1.0), progress)
        for group in optimizer.param_groups:
            group["lr"] = lr

        t0 = time.monotonic()
        batch = source.next()
        x, y, r, a = batch.images, batch.labels, batch.regions, batch.annotated
        model.train()
        freeze_norm_statistics(model)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            if logits.dim() == 6:  # DynUNet deep supervision stacks outputs
                logits = logits[:, 0]
        loss = partial_label_loss(logits.float(), y, a, r)
        if not torch.isfinite(loss):
            source.close()
            raise TransferSegError(
                f"The loss became {float(loss)} at iteration {state.iteration}: lower the learning rate "
                f"(--learning-rate) or check the images' intensities."
            )
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_value = float(loss.detach())
        state.iteration += 1
        iter_times.append(time.monotonic() - t0)
        waits.add(batch.wait_s, iter_times[-1])
        state.elapsed_s = time.monotonic() - start_wall

        now = time.monotonic()
        if now - last_report >= config.progress_every or state.iteration == 1:
            last_report = now
            reporter.event("progress", **_progress_fields(state, config, loss_value, lr, iter_times),
                           data_wait_pct=waits.percent)

        if val_cases and predict_fn is not None and state.iteration % config.val_every == 0:
            last_dice = validate(model, val_cases, labels, predict_fn)
            score = float(np.mean(list(last_dice.values()))) if last_dice else 0.0
            improved = score > state.best_score
            state.history.append({"iteration": state.iteration, "loss": loss_value, "dice": last_dice, "mean_dice": score})
            if improved:
                state.best_score, state.best_iteration = score, state.iteration
                state.validations_since_best = 0
                _save(best_path, {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "iteration": state.iteration, "score": score})
                reporter.event("checkpoint", path=str(best_path), iteration=state.iteration, which="best")
            else:
                state.validations_since_best += 1
            reporter.event("validation", iteration=state.iteration, dice=last_dice, mean_dice=score, best=state.best_score)
            if config.patience and state.validations_since_best >= config.patience:
                stopped_early = True
                reporter.event("info", message=f"Early stopping: no better validation Dice in {config.patience} validations.")
                break
        if state.iteration % config.checkpoint_every == 0:
            save_last()

    source.close()
    validated_last = bool(state.history) and state.history[-1].get("iteration") == state.iteration
    if val_cases and predict_fn is not None and not stopped_early and not validated_last:
        last_dice = validate(model, val_cases, labels, predict_fn)
        score = float(np.mean(list(last_dice.values()))) if last_dice else 0.0
        state.history.append({"iteration": state.iteration, "loss": loss_value, "dice": last_dice, "mean_dice": score})
        reporter.event("validation", iteration=state.iteration, dice=last_dice, mean_dice=score, best=max(score, state.best_score))
        if score > state.best_score:
            state.best_score, state.best_iteration = score, state.iteration
            _save(best_path, {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "iteration": state.iteration, "score": score})
    reporter.event("progress", **_progress_fields(state, config, loss_value, optimizer.param_groups[0]["lr"], iter_times, final=True),
                   data_wait_pct=waits.percent)
    save_last()
    if best_path.is_file() and state.best_iteration != state.iteration:
        model.load_state_dict(read_checkpoint(best_path)["model"])
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if peak is not None:
        state.history.append({"peak_gpu_memory_gb": round(peak, 2)})
    return TrainResult(
        iterations=state.iteration,
        elapsed_s=state.elapsed_s,
        best_score=state.best_score,
        best_iteration=state.best_iteration,
        last_dice=last_dice,
        history=state.history,
        stopped_early=stopped_early,
    )


def _progress_fields(state: TrainState, config: TrainConfig, loss: float, lr: float, iter_times: List[float], final: bool = False) -> Dict[str, Any]:
    recent = iter_times[-20:]
    its = len(recent) / sum(recent) if recent and sum(recent) > 0 else 0.0
    progress = 1.0 if final else min(_progress(state, config), 1.0)
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
        "loss": round(loss, 5) if math.isfinite(loss) else None,
        "lr": lr,
        "its_per_s": round(its, 3),
        "eta_s": None if eta is None or final else round(eta, 1),
        "elapsed_s": round(state.elapsed_s, 1),
    }


def validate(
    model: nn.Module,
    cases: List[PreparedCase],
    labels: Sequence[str],
    predict_fn: Callable[[nn.Module, np.ndarray], np.ndarray],
) -> Dict[str, float]:
    """Mean Dice per foreground label over the cases that annotate it."""
    sums: Dict[str, List[float]] = {}
    model.eval()
    for case in cases:
        pred = predict_fn(model, case.image)
        for index, name in enumerate(labels):
            if index == 0 or not case.annotated[index]:
                continue
            ref = case.label == index
            if case.region is not None:
                keep = case.region
                ref, p = ref & keep, (pred == index) & keep
            else:
                p = pred == index
            denom = int(ref.sum()) + int(p.sum())
            dice = 1.0 if denom == 0 else 2.0 * float((ref & p).sum()) / denom
            sums.setdefault(name, []).append(dice)
    return {name: round(float(np.mean(v)), 4) for name, v in sums.items()}
