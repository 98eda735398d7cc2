"""The arithmetic of intensity steps (``data.steps`` says what each one means).

Arrays are float ``(X, Y, Z)`` or ``(C, X, Y, Z)``; the output is float32 of the
same shape. Statistics are computed in float64 (a 256^3 sum in float32 loses
digits); the per-voxel arithmetic stays float32 to keep memory at one copy.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np

from TransferSegLib.errors import ModelError
from TransferSegLib.data.steps import IntensityStep


def _mask(values: np.ndarray, over: str) -> Optional[np.ndarray]:
    if over == "nonzero":
        return values != 0
    if over == "positive":
        return values > 0
    return None


def _selected(values: np.ndarray, over: str) -> np.ndarray:
    mask = _mask(values, over)
    return values.ravel() if mask is None else values[mask]


def _parameters(step: IntensityStep, source: np.ndarray) -> Tuple[float, ...]:
    """The numbers a step takes from the data (empty for fixed steps)."""
    if step.op in ("clip", "window", "affine"):
        return ()
    values = _selected(source, step.over)
    if values.size == 0:
        return ()
    if step.op == "zscore":
        std = float(values.std(dtype=np.float64))
        return float(values.mean(dtype=np.float64)), (std if std > 0 else 1.0)
    if step.op == "rescale":
        return float(values.min()), float(values.max())
    low, high = np.percentile(values.astype(np.float64, copy=False), [step.low, step.high])
    return float(low), float(high)


def _linear(x: np.ndarray, a: float, b: float, out_min: float, out_max: float, clamp: bool) -> np.ndarray:
    """``[a, b]`` onto ``[out_min, out_max]``; an empty input range gives ``out_min``."""
    if b - a == 0:
        return np.full_like(x, out_min)
    y = (x - np.float32(a)) * np.float32((out_max - out_min) / (b - a)) + np.float32(out_min)
    return np.clip(y, min(out_min, out_max), max(out_min, out_max)) if clamp else y


def _apply(step: IntensityStep, x: np.ndarray, params: Tuple[float, ...]) -> np.ndarray:
    op = step.op
    if op == "clip":
        low = -np.inf if step.low is None else step.low
        high = np.inf if step.high is None else step.high
        return np.clip(x, low, high).astype(np.float32, copy=False)
    if op == "window":
        clipped = np.clip(x, step.low, step.high) if step.clamp else x
        return _linear(clipped, step.low, step.high, step.out_min, step.out_max, step.clamp)  # type: ignore[arg-type]
    if op == "affine":
        return x * np.float32(step.scale) + np.float32(step.offset)
    if not params:  # no voxel to take statistics from: leave the values alone (as MONAI does)
        return x
    if op == "rescale":
        return _linear(x, params[0], params[1], step.out_min, step.out_max, False)  # type: ignore[arg-type]
    if op == "percentile":
        if step.out_min is None:
            return np.clip(x, params[0], params[1]).astype(np.float32, copy=False)
        return _linear(x, params[0], params[1], step.out_min, step.out_max, step.clamp)  # type: ignore[arg-type]
    mean, std = params
    normalized = (x - np.float32(mean)) / np.float32(std)
    if step.over == "all" or step.outside == "normalize":
        return normalized
    if step.outside == "keep":
        return np.where(_mask(x, step.over), normalized, x).astype(np.float32, copy=False)
    zeros = x == 0
    noise = np.random.default_rng(step.seed).standard_normal(x.shape).astype(np.float32)
    return np.where(zeros, noise, normalized).astype(np.float32, copy=False)


def _groups(step: IntensityStep, channels: int) -> List[List[int]]:
    selected = list(range(channels)) if step.channels is None else list(step.channels)
    missing = [c for c in selected if c >= channels]
    if missing:
        raise ModelError(f"The recipe's '{step.op}' intensity step applies to channel(s) {missing}, but the input "
                         f"has {channels} channel(s): give the case every channel the model expects.")
    return [[c] for c in selected] if step.channel_wise else [selected]


def apply_steps(array: np.ndarray, steps: Sequence[IntensityStep], whole: Optional[np.ndarray] = None) -> np.ndarray:
    """``array`` after ``steps`` in order.

    ``whole`` is the same image before cropping (same leading channel axes), needed
    by steps with ``stats: image``; it is carried through the earlier steps with
    the same parameters so that those statistics see the values they would in the
    publisher's pipeline.
    """
    single = array.ndim != 4  # (X, Y, Z) or any array of one channel; (C, X, Y, Z) has channels
    out = np.array(array, dtype=np.float32, copy=True)
    out = out[None] if single else out
    last_whole = max((i for i, s in enumerate(steps) if s.stats == "image"), default=-1)
    full: Optional[np.ndarray] = None
    if last_whole >= 0:
        if whole is None:
            raise ValueError("a step takes its statistics from the whole image, but no whole image was given")
        full = np.array(whole, dtype=np.float32, copy=True)
        full = full[None] if single else full
    for index, step in enumerate(steps):
        for group in _groups(step, out.shape[0]):
            source = full[group] if step.stats == "image" and full is not None else out[group]
            params = _parameters(step, source)
            out[group] = _apply(step, out[group], params)
            if full is not None and index < last_whole:
                full[group] = _apply(step, full[group], params)
        if index >= last_whole:
            full = None
    return out[0] if single else out
