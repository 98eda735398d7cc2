"""Training settings checked before a run: every value's type and range, with the option that sets it.

Settings arrive from the command line, the Slicer panel and hand-edited
``spec.json`` files; a zero ``val_every`` or a NaN learning rate must be a clear
refusal at the start, not a ZeroDivisionError or a silently diverging run an hour
later. Torch-free.
"""

import math
from typing import Any, Optional

from TransferSegLib.errors import TransferSegError


def check_train_config(config: Any) -> None:
    """Refuse settings of a ``TrainConfig`` that would crash mid-run or train nonsense, naming option and range."""
    if config.iterations is None and config.time_budget is None:
        raise TransferSegError("Give a time budget (--time-budget SECONDS) or a number of --iterations.")
    for name, option, low in (("batch_size", "--batch-size", 1), ("val_every", "--val-every", 1),
                              ("checkpoint_every", "checkpoint_every", 1), ("patience", "--patience", 0),
                              ("num_threads", "--threads", 0), ("seed", "--seed", 0)):
        whole_number(getattr(config, name), option, low, 2 ** 32 - 1 if name == "seed" else None)
    if config.iterations is not None:
        whole_number(config.iterations, "--iterations", 1)
    if config.time_budget is not None:
        finite_number(config.time_budget, "--time-budget", low=0.0, low_open=True)
    finite_number(config.learning_rate, "--learning-rate", low=0.0, low_open=True, high=10.0)
    finite_number(config.weight_decay, "weight_decay", low=0.0, high=1.0)
    finite_number(config.foreground_ratio, "foreground_ratio", low=0.0, high=1.0)
    finite_number(config.val_overlap, "val_overlap", low=0.0, high=1.0, high_open=True)
    finite_number(config.progress_every, "progress_every", low=0.0)
    check_patch_size(config.patch_size)
    for name in ("amp", "augment"):
        if not isinstance(getattr(config, name), bool):
            raise TransferSegError(f"The training setting '{name}' must be true or false "
                                   f"(got {getattr(config, name)!r}).")


def check_patch_size(patch: Any) -> None:
    """Three whole numbers of at least 1 voxel (the network's multiple is checked where the network is known)."""
    if not isinstance(patch, (list, tuple)) or len(patch) != 3:
        raise TransferSegError(f"--patch-size needs three whole numbers X Y Z (got {patch!r}).")
    for side in patch:
        whole_number(side, "--patch-size", 1)


def whole_number(value: Any, option: str, low: int, high: Optional[int] = None) -> None:
    """``value`` an int (not a bool, not a float) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise TransferSegError(f"{option} must be a whole number {bound} (got {value!r}).")


def finite_number(value: Any, option: str, low: float, high: Optional[float] = None, low_open: bool = False,
                  high_open: bool = False) -> None:
    """``value`` a finite number in [low, high] (an open end excludes the bound); NaN and infinity refused."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        span = f"{'greater than' if low_open else 'at least'} {low:g}"
        if high is not None:
            span += f" and {'below' if high_open else 'at most'} {high:g}"
        raise TransferSegError(f"{option} must be a number {span} (got {value!r}).")
