"""What a data-efficiency experiment runs, as plain data (no torch): stored in a job, rebuilt on resume.

``evaluation.experiment`` runs it; the command line builds it from its options
(whose defaults are this dataclass's), and an experiment job stores it in its
``spec.json``.
"""

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from TransferSegLib.errors import CaseError, ConfigError
from TransferSegLib.specs import STRATEGIES, Case, TrainConfig, check_strategy


def _experiment_train() -> TrainConfig:
    # Only the budget differs from fine-tuning's defaults: a run must be what the product does.
    return TrainConfig(time_budget=60.0)


@dataclass
class ExperimentSpec:
    """A data-efficiency experiment: ``strategies`` × training-set ``sizes`` × ``repeats`` random subsets.

    Runs train on subsets of ``pool`` and are scored on ``test_cases``; with
    ``leave_one_out`` each pool case is instead the test case once (a fold), trained
    on subsets of the others. ``train`` is the budget of each run. Stored as a
    background job's ``experiment`` (``to_dict``/``from_dict``), so a resumed job
    rebuilds exactly the same runs.
    """

    name: str
    pool: List[Case]
    labels: List[str]
    output: str
    test_cases: List[Case] = field(default_factory=list)
    leave_one_out: bool = False
    base: str = "default"
    strategies: List[str] = field(default_factory=lambda: list(STRATEGIES))
    sizes: List[int] = field(default_factory=lambda: [1, 2, 3, 5, 10])
    repeats: int = 3
    train: TrainConfig = field(default_factory=_experiment_train)
    seed: int = 0
    device: str = "auto"
    patch_size: Optional[Tuple[int, int, int]] = None  # None: the base model's

    def __post_init__(self) -> None:
        self.pool = [c if isinstance(c, Case) else Case.from_dict(c) for c in self.pool]
        self.test_cases = [c if isinstance(c, Case) else Case.from_dict(c) for c in self.test_cases]
        if isinstance(self.train, dict):
            self.train = TrainConfig.from_dict(self.train)
        self.labels = [str(n) for n in self.labels]
        self.strategies = [check_strategy(s) for s in self.strategies]
        self.sizes = [int(s) for s in self.sizes]
        if self.patch_size is not None:
            self.patch_size = tuple(int(v) for v in self.patch_size)  # type: ignore[assignment]

    def folds(self) -> List[Dict[str, List[Case]]]:
        """``[{"pool": [...], "test": [...]}]``: one fold, or one per pool case with ``leave_one_out``."""
        if self.leave_one_out:
            return [{"pool": [c for j, c in enumerate(self.pool) if j != i], "test": [case]}
                    for i, case in enumerate(self.pool)]
        return [{"pool": self.pool, "test": self.test_cases}]

    def check(self) -> None:
        """What needs no torch and no image reading: a complete spec whose files exist."""
        if not self.labels:
            raise ConfigError(f"Experiment '{self.name}' names no target classes (--labels).")
        if not self.output:
            raise ConfigError(f"Experiment '{self.name}' has no output folder (--output).")
        if not self.pool:
            raise CaseError("No cases: give --dataset, --sample-data or --add-case.")
        if not self.test_cases and not self.leave_one_out:
            raise CaseError("Give held-out --test-image/--test-label pairs or --leave-one-out.")
        if not self.strategies or not self.sizes or min(self.sizes) < 1 or self.repeats < 1:
            raise ConfigError("An experiment needs at least one strategy, sizes of at least 1 and repeats >= 1.")
        self.train.check()
        for case in self.pool + self.test_cases:
            for what, path in case.missing_files():
                raise CaseError(f"The experiment's case '{case.name}': the {what} file '{path}' does not exist.")

    def to_dict(self) -> Dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["pool"] = [c.to_dict() for c in self.pool]
        data["test_cases"] = [c.to_dict() for c in self.test_cases]
        data["train"] = self.train.to_dict()
        data["patch_size"] = list(self.patch_size) if self.patch_size else None
        return copy.deepcopy(data)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ExperimentSpec":
        if not isinstance(data, dict):
            raise ConfigError(f"An experiment must be an object of named settings, got {data!r}.")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"Unknown experiment field '{unknown[0]}'; known: {', '.join(known)}.")
        missing = [k for k in ("name", "pool", "labels", "output") if k not in data]
        if missing:
            raise ConfigError(f"The experiment lacks {', '.join(repr(m) for m in missing)}.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"The experiment is malformed: {exc}") from exc
