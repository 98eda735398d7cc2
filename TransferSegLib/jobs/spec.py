"""``spec.json``: what a fine-tuning job must do, as plain versioned JSON.

The spec is written by one program (the command line, the Slicer panel) and read
by another (the worker, possibly a newer or older TransferSeg on another machine),
so it is strict: an unknown field is an error naming the field, not something
silently ignored, and a spec from a newer version is refused with a clear message.
Importing this module does not import torch.
"""

import copy
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import CaseError, ConfigError, JobError, ModelError
from TransferSegLib.evaluation.experiment_spec import ExperimentSpec
from TransferSegLib.jobs.layout import now_iso
from TransferSegLib.paths import write_text_atomically
from TransferSegLib.specs import CASE_FIELDS, DEFAULT_STRATEGY, Case, FinetuneSpec, TrainConfig, check_strategy

SPEC_VERSION = 1
TASKS = ("finetune", "experiment")


def _case_dict(case: Any, where: str) -> Dict[str, Any]:
    """A case as the plain dict spec.json holds (``Case.to_dict``); accepts a ``Case`` or a dict."""
    if isinstance(case, Case):
        return case.to_dict()
    if not isinstance(case, dict):
        raise JobError(f"{where} must be an object with 'image' and 'label', got {case!r}.")
    unknown = sorted(set(case) - set(CASE_FIELDS))
    if unknown:
        raise JobError(f"{where}: unknown field '{unknown[0]}'; a case has the fields {', '.join(CASE_FIELDS)}.")
    if not case.get("image"):
        raise JobError(f"{where} has no 'image'.")
    try:
        return Case.from_dict(dict(case)).to_dict()
    except CaseError as exc:
        raise JobError(f"{where}: {exc}") from exc


def _train_config(train: Any) -> TrainConfig:
    """The job's training settings, typed; a misspelled or impossible setting is a JobError naming it."""
    if isinstance(train, TrainConfig):
        return train
    try:
        return TrainConfig.from_dict(dict(train or {}))
    except (ConfigError, TypeError, ValueError) as exc:
        raise JobError(f"spec.json 'train': {exc}") from exc


def _experiment_spec(experiment: Any) -> ExperimentSpec:
    if isinstance(experiment, ExperimentSpec):
        return experiment
    try:
        return ExperimentSpec.from_dict(experiment)
    except (ConfigError, CaseError) as exc:
        raise JobError(f"spec.json 'experiment': {exc}") from exc


@dataclass
class JobSpec:
    """One fine-tuning job. ``device`` and ``seed`` are also kept in ``train`` (they must agree)."""

    base: str = "default"
    cases: List[Dict[str, Any]] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)
    strategy: str = DEFAULT_STRATEGY
    output: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    val_cases: List[Dict[str, Any]] = field(default_factory=list)
    device: Optional[str] = None
    seed: Optional[int] = None
    name: str = ""
    recipe: Optional[Dict[str, Any]] = None
    patch_size: Optional[List[int]] = None
    offline: bool = False
    keep_checkpoints: bool = False  # keep the job's checkpoints after it finished (failed/cancelled: always kept)
    processes: int = 1  # data-parallel processes (one per GPU) started through torchrun
    task: str = "finetune"
    # task "experiment": the experiment, cases resolved; a resumed job rebuilds the same runs
    # from it and skips those already done.
    experiment: Optional[ExperimentSpec] = None
    version: int = SPEC_VERSION
    created: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise JobError(f"Unknown task '{self.task}': this TransferSeg runs {', '.join(TASKS)} jobs.")
        if not isinstance(self.version, int) or self.version < 1:
            raise JobError(f"'version' must be a positive integer, got {self.version!r}.")
        if self.version > SPEC_VERSION:
            raise JobError(
                f"The job spec has version {self.version} but this TransferSeg reads up to version {SPEC_VERSION}: "
                f"update TransferSeg on the machine running the job."
            )
        try:
            self.strategy = check_strategy(self.strategy)
        except ConfigError as exc:
            raise JobError(str(exc)) from exc
        self.base = str(self.base)
        self.cases = [_case_dict(c, f"cases[{i}]") for i, c in enumerate(self.cases or [])]
        self.val_cases = [_case_dict(c, f"val_cases[{i}]") for i, c in enumerate(self.val_cases or [])]
        self.labels = [str(n) for n in (self.labels or [])]
        self.train = _train_config(self.train)
        # Top-level device/seed win over the train settings; either may be given.
        self.device = str(self.device or self.train.device or "auto")
        self.seed = int(self.seed if self.seed is not None else self.train.seed or 0)
        self.train.device, self.train.seed = self.device, self.seed
        if hasattr(self.recipe, "to_dict"):
            self.recipe = self.recipe.to_dict()  # type: ignore[union-attr]
        if self.patch_size is not None:
            self.patch_size = [int(v) for v in self.patch_size]
            if len(self.patch_size) != 3:
                raise JobError(f"'patch_size' must be three numbers (x, y, z), got {self.patch_size}.")
        self.output = str(self.output or "")
        if self.task == "experiment":
            if not self.experiment:
                raise JobError("An experiment job needs 'experiment': what 'transferseg experiment' runs.")
            self.experiment = _experiment_spec(self.experiment)
        elif self.experiment is not None:
            raise JobError(f"'experiment' belongs to experiment jobs, not to a '{self.task}' job.")
        if not isinstance(self.processes, int) or self.processes < 1:
            raise JobError(f"'processes' must be a whole number of at least 1, got {self.processes!r}.")
        self.created = self.created or now_iso()

    # --- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["train"] = self.train.to_dict()
        data["experiment"] = self.experiment.to_dict() if self.experiment is not None else None
        return copy.deepcopy(data)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "spec.json") -> "JobSpec":
        """Parse ``data``; an unknown or misspelled field is a ``JobError`` naming it."""
        if not isinstance(data, dict):
            raise JobError(f"{source} must hold a JSON object, got {type(data).__name__}.")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise JobError(
                f"{source}: unknown field '{unknown[0]}'" + (f" (and {', '.join(unknown[1:])})" if unknown[1:] else "")
                + f". Known fields: {', '.join(known)}. Check the spelling, or update TransferSeg if the spec is newer."
            )
        try:
            return cls(**data)
        except JobError as exc:
            raise JobError(f"{source}: {exc}") from exc
        except TypeError as exc:
            raise JobError(f"{source}: {exc}") from exc

    def save(self, path: Union[str, Path]) -> None:
        """Write atomically: a reader never sees half a spec."""
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "JobSpec":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise JobError(f"Cannot read the job spec '{path}': {exc}.") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise JobError(f"The job spec '{path}' is not valid JSON: {exc}.") from exc
        return cls.from_dict(data, source=str(path))

    # --- the engine's view ------------------------------------------------------------------

    @classmethod
    def from_finetune_spec(cls, spec: FinetuneSpec) -> "JobSpec":
        """A job spec from the engine's ``FinetuneSpec`` (what ``transferseg finetune`` parses)."""
        recipe = spec.recipe.to_dict() if getattr(spec, "recipe", None) is not None else None
        patch = list(spec.patch_size) if getattr(spec, "patch_size", None) else None
        return cls(
            base=spec.base, cases=list(spec.cases), labels=list(spec.labels), strategy=spec.strategy,
            output=str(spec.output), train=copy.deepcopy(spec.train), val_cases=list(spec.val_cases),
            device=spec.train.device, seed=spec.train.seed, name=getattr(spec, "name", ""),
            recipe=recipe, patch_size=patch, offline=bool(getattr(spec, "offline", False)),
            keep_checkpoints=bool(getattr(spec, "keep_checkpoints", False)),
        )

    def to_finetune_spec(self):
        """The engine's ``FinetuneSpec``."""
        config = copy.deepcopy(self.train)
        config.device, config.seed = str(self.device), int(self.seed or 0)
        recipe = Recipe.from_dict(self.recipe) if self.recipe else None
        patch = tuple(self.patch_size) if self.patch_size else None
        return FinetuneSpec(
            base=self.base, cases=[Case.from_dict(dict(c)) for c in self.cases], labels=list(self.labels),
            strategy=self.strategy, output=self.output, train=config,
            val_cases=[Case.from_dict(dict(c)) for c in self.val_cases], recipe=recipe,
            patch_size=patch, name=self.name, offline=self.offline,  # type: ignore[arg-type]
            keep_checkpoints=self.keep_checkpoints,
        )

    # --- cheap checks a front end can afford ---------------------------------------------

    def check_inputs(self) -> None:
        """Fail in milliseconds on what needs no torch: no cases, missing files, no output, a missing model path.

        The worker repeats the full checks (reading every image) before training.
        """
        if self.experiment is not None:
            self.experiment.check()
            return
        try:
            self.train.check()
        except ConfigError as exc:
            raise JobError(f"spec.json 'train': {exc}") from exc
        if not self.cases:
            raise CaseError("The job has no training cases: give --image/--label pairs or --dataset dataset.json.")
        if not self.output:
            raise JobError("The job has no 'output': give the model folder to write (--output).")
        for group, cases in (("cases", self.cases), ("val_cases", self.val_cases)):
            for i, case in enumerate(cases):
                for key in ("image", "label", "region"):
                    value = case.get(key)
                    if value and not Path(value).expanduser().exists():
                        where = Path(value).expanduser()
                        looked = "" if where.is_absolute() else f" (looked for it at '{where.resolve()}')"
                        raise CaseError(
                            f"{group}[{i}] ('{case.get('name') or Path(case['image']).name}'): the {key} file "
                            f"'{value}' does not exist{looked}. Check the path."
                        )
                if not case.get("label"):
                    raise CaseError(f"{group}[{i}] ('{case['image']}') has no labelmap: training cases need one.")
        self._check_base()

    def _check_base(self) -> None:
        key = self.base.strip()
        if key.lower() in ("none", "scratch", "default"):
            return
        looks_like_path = any(sep in key for sep in ("/", "\\")) or key.startswith((".", "~")) or key.endswith(".zip")
        if looks_like_path and not Path(key).expanduser().exists():
            raise ModelError(
                f"The base model '{key}' does not exist: give a model folder, a MONAI bundle, a catalog name "
                f"('transferseg models list') or 'none' to train from scratch."
            )
