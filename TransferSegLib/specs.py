"""The contract layer: plain data that crosses from one face of TransferSeg to another.

A network spec, a checkpoint's key map, the training settings, a case as files and
the transfer strategies are read by the command line, the job worker, the model
catalog and the Slicer panel alike. They live here, with no torch, SimpleITK or
numpy import, so that a Slicer without the heavy dependencies (and the job layer
that starts a worker) can build, check and store them. Each is defined once; every
other module imports it from here.
"""

import copy
import dataclasses
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from TransferSegLib.data.label_selection import REFUSE, check_unselected
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import CaseError, ConfigError, ModelError
from TransferSegLib.network_allowlist import check_target

#: The transfer strategies a run can train with, from "train everything" to "train the head only first".
STRATEGIES: Tuple[str, ...] = ("scratch", "full", "decoder", "last-layers", "staged")
#: What a user may ask for: a strategy, or ``auto`` (the base model's recorded best; ``training.choices``).
AUTO = "auto"
STRATEGY_CHOICES: Tuple[str, ...] = (AUTO,) + STRATEGIES
DEFAULT_STRATEGY = AUTO


def check_strategy(strategy: str, allow_auto: bool = True) -> str:
    """The canonical name of ``strategy`` (``last_layers`` → ``last-layers``); an unknown one is a ConfigError."""
    key = str(strategy).strip().lower().replace("_", "-")
    if key == "last-layer":
        key = "last-layers"
    known = STRATEGY_CHOICES if allow_auto else STRATEGIES
    if key not in known:
        raise ConfigError(f"Unknown strategy '{strategy}'. Choose one of: {', '.join(known)}.")
    return key


@dataclass
class NetworkSpec:
    """A network as data: the class to build (``_target_``) and its constructor arguments.

    ``origin`` names the file the spec was read from (for messages). ``trusted`` is
    True only for specs from the shipped catalog or models the user registered;
    neither is written to disk, so a ``model.json`` cannot declare itself trusted.
    """

    target: str
    args: Dict[str, Any] = field(default_factory=dict)
    origin: str = field(default="", compare=False, repr=False)
    trusted: bool = field(default=False, compare=False, repr=False)

    def to_dict(self) -> Dict[str, Any]:
        result = {"_target_": self.target}
        result.update(copy.deepcopy(self.args))
        return result

    @classmethod
    def from_dict(cls, data: Dict[str, Any], origin: str = "", trusted: bool = False) -> "NetworkSpec":
        """A spec from its JSON form, its target checked against the allow-list at once.

        Checking here (not only when building) refuses a hostile ``model.json`` or
        bundle before anything else is read from it or written because of it; the
        check on the class itself follows when the network is built.
        """
        where = origin or "the network spec"
        if not isinstance(data, dict) or "_target_" not in data:
            raise ModelError(f"The network in '{where}' is not a '_target_' + arguments object.")
        args = {k: v for k, v in data.items() if k != "_target_"}
        check_target(data["_target_"], args, where, trusted)
        return cls(target=str(data["_target_"]), args=args, origin=origin, trusted=trusted)

    @property
    def class_name(self) -> str:
        return self.target.rsplit(".", 1)[-1]

    @property
    def out_channels_key(self) -> str:
        """The argument that sets the number of output classes for this class."""
        return "num_classes" if self.class_name == "BasicUNet" and "num_classes" in self.args else "out_channels"

    @property
    def out_channels(self) -> int:
        return int(self.args.get(self.out_channels_key, 0))

    def with_out_channels(self, count: int) -> "NetworkSpec":
        args = copy.deepcopy(self.args)
        args[self.out_channels_key] = int(count)
        return dataclasses.replace(self, args=args)


_KEY_MAP_FIELDS = ("wrapper_keys", "strip_prefixes", "add_prefix", "rename")


@dataclass
class KeyMap:
    """How a published checkpoint's keys become the network's state_dict keys."""

    wrapper_keys: List[str] = field(default_factory=lambda: ["state_dict", "model", "network_weights", "net"])
    strip_prefixes: List[str] = field(default_factory=lambda: ["module.", "model.", "backbone."])
    add_prefix: str = ""
    rename: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "wrapper_keys": list(self.wrapper_keys),
            "strip_prefixes": list(self.strip_prefixes),
            "add_prefix": self.add_prefix,
            "rename": dict(self.rename),
        }

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> "KeyMap":
        data = dict(data or {})
        unknown = set(data) - set(_KEY_MAP_FIELDS)
        if unknown:
            raise ModelError(f"Unknown key_map fields {sorted(unknown)}.")
        result = cls()
        for key, value in data.items():
            setattr(result, key, value)
        return result


@dataclass
class TrainConfig:
    """How long and how to train: the one place these settings and their defaults are defined.

    The command line's options, the job spec and the Slicer panel read their defaults
    from here. Sizes are (x, y, z) voxels on the model's grid; ``time_budget`` is in
    seconds of wall-clock time, ``iterations`` a count; training stops at whichever
    comes first (at least one must be set).
    """

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
        data["patch_size"] = [int(v) for v in self.patch_size]
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"Training settings must be an object of named values, got {data!r}.")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"Unknown training settings {sorted(unknown)}; known: {sorted(known)}.")
        values = dict(data)
        if values.get("patch_size") is not None:
            values["patch_size"] = tuple(int(v) for v in values["patch_size"])
        return cls(**values)

    def check(self) -> None:
        """Refuse settings that would crash mid-run or train nonsense, naming the option (``check_train_config``)."""
        check_train_config(self)


_CHANNEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,39}")  # T1c, FLAIR, CT, PET_SUV; not a path


def parse_image_argument(text: str) -> Tuple[List[str], List[str]]:
    """``a.nii.gz`` or ``a,b,...`` or ``NAME=a,NAME=b,...`` → (paths, names); names
    are empty when none are given and must be given for all files or none. A file that
    exists is one channel, whatever its name holds (``scan,2.nii.gz``)."""
    if Path(str(text)).exists():
        return [str(text)], []
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise CaseError(f"--image '{text}' names no file.")
    paths, names = [], []
    for item in items:
        name, sep, path = item.partition("=")
        if sep and _CHANNEL_NAME.fullmatch(name.strip()) and not Path(item).exists():
            names.append(name.strip())
            paths.append(path.strip())
        else:
            paths.append(item)
    if names and len(names) != len(paths):
        raise CaseError(f"--image '{text}': name every channel (NAME=FILE,...) or none.")
    return paths, names


CASE_FIELDS = ("image", "label", "label_names", "annotated", "region", "name", "unselected", "channels",
                "channel_names")


_NAME_SUFFIXES = (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".mrc")


@dataclass
class Case:
    """One training or test case as files.

    ``label_names``: label value → class name of the labelmap (for ``.seg.nrrd`` the
    file's own segment names are used). ``annotated``: the class names this case
    annotates; ``None`` means every named class. ``region``: a mask file whose
    nonzero voxels are those whose labels are known (sparse annotation).
    ``unselected``: what a labelled voxel whose value ``label_names`` does not name
    becomes: ``background``, ``unannotated`` (no label: left out of the loss), or
    ``refuse`` (an error: the names were meant to cover every value).
    Several values may carry one name: they merge into one class.

    A case of several co-registered images (``data.channels``) lists them in
    ``channels`` (``image`` is then the first), with ``channel_names`` when they were
    named; ``image`` given as a list, or as ``a,b`` / ``T1=a,T2=b`` text (one
    ``--image``), means the same.
    """

    image: str
    label: Optional[str] = None
    label_names: Dict[int, str] = field(default_factory=dict)
    annotated: Optional[List[str]] = None
    region: Optional[str] = None
    name: str = ""
    unselected: str = REFUSE
    channels: List[str] = field(default_factory=list)
    channel_names: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.image, (list, tuple)):
            self.channels = [str(p) for p in self.image]
        elif "," in str(self.image) or "=" in str(self.image):
            self.channels, names = parse_image_argument(str(self.image))
            self.channel_names = self.channel_names or names
        self.channels = [str(p) for p in (self.channels or [])]
        self.channel_names = [str(n) for n in (self.channel_names or [])]
        if self.channel_names and len(self.channel_names) != len(self.channels):
            raise CaseError(f"Case {self.image!r}: {len(self.channel_names)} channel names for "
                            f"{len(self.channels)} channel files.")
        self.image = self.channels[0] if self.channels else str(self.image)
        if len(self.channels) == 1:
            self.channels, self.channel_names = [], []
        self.label = str(self.label) if self.label else None
        self.region = str(self.region) if self.region else None
        if not self.name:
            base = Path(self.image.rstrip("/\\")).name
            for suffix in _NAME_SUFFIXES:
                if base.lower().endswith(suffix):
                    base = base[: -len(suffix)]
                    break
            self.name = base[:-5] if base.endswith("_0000") else base
        try:
            self.label_names = {int(k): str(v) for k, v in (self.label_names or {}).items()}
        except (TypeError, ValueError, AttributeError):
            raise CaseError(f"Case '{self.name}': label_names must map label values (integers) to names, "
                            f"got {self.label_names!r}.") from None
        if self.annotated is not None:
            if isinstance(self.annotated, str) or not all(isinstance(n, str) for n in self.annotated):
                raise CaseError(f"Case '{self.name}': 'annotated' must be a list of class names, got {self.annotated!r}.")
            self.annotated = list(self.annotated)
        self.unselected = check_unselected(self.unselected or REFUSE, f"Case '{self.name}': 'unselected'") or REFUSE

    def to_dict(self) -> Dict[str, Any]:
        data = {"image": self.image, "label": self.label, "label_names": {str(k): v for k, v in self.label_names.items()},
                "annotated": self.annotated, "region": self.region, "name": self.name}
        if self.unselected != REFUSE:  # only when set, so that older workers still read the spec
            data["unselected"] = self.unselected
        if self.channels:
            data["channels"] = list(self.channels)
            if self.channel_names:
                data["channel_names"] = list(self.channel_names)
        return data

    @property
    def images(self) -> List[str]:
        """The channel files in order (one file for a single-channel case)."""
        return list(self.channels) if self.channels else [self.image]

    def with_channels(self, paths: List[str]) -> "Case":
        """This case with its channel files in the given (model's) order."""
        data = self.to_dict()
        data.pop("channel_names", None)
        data["channels"] = list(paths) if len(paths) > 1 else []
        data["image"] = paths[0]
        return Case.from_dict(data)

    def missing_files(self) -> List[Tuple[str, str]]:
        """``(what, path)`` for each file this case names that does not exist (checked without reading it)."""
        named = [("image", p) for p in self.images] + [("label", self.label), ("region", self.region)]
        return [(what, path) for what, path in named if path and not Path(path).expanduser().exists()]

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Case":
        if not isinstance(data, dict):
            raise CaseError(f"A case must be an object with 'image' (and 'label'), got {data!r}.")
        unknown = set(data) - set(CASE_FIELDS)
        if unknown:
            raise CaseError(f"Unknown case fields {sorted(unknown)} in {data!r}; known: {list(CASE_FIELDS)}.")
        if not data.get("image"):
            raise CaseError(f"Case {data!r} has no 'image'.")
        return cls(**data)


@dataclass
class FinetuneSpec:
    """Everything one fine-tuning run needs: the base model (name or path), cases, target labels, strategy.

    ``labels`` empty means every class the cases name; ``recipe`` and ``patch_size``
    override the base model's (a recipe override is meant for scratch training).
    """

    base: str
    cases: List[Case]
    labels: List[str]
    strategy: str
    output: str
    train: TrainConfig = field(default_factory=TrainConfig)
    val_cases: List[Case] = field(default_factory=list)
    recipe: Optional[Recipe] = None  # overrides the base model's recipe (scratch only)
    patch_size: Optional[Tuple[int, int, int]] = None  # overrides the base model's patch size
    name: str = ""
    offline: bool = False
    keep_checkpoints: bool = False  # checkpoints outlive a finished run only when asked (failed/cancelled: always)


# --- checking settings --------------------------------------------------------------------------
# Settings arrive from the command line, the Slicer panel and hand-edited spec.json
# files; a zero ``val_every`` or a NaN learning rate must be a clear refusal at the
# start, not a ZeroDivisionError or a silently diverging run an hour later.

def check_train_config(config: Any) -> None:
    """Refuse settings of a ``TrainConfig`` that would crash mid-run or train nonsense, naming option and range."""
    if config.iterations is None and config.time_budget is None:
        raise ConfigError("Give a time budget (--time-budget SECONDS) or a number of --iterations.")
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
            raise ConfigError(f"The training setting '{name}' must be true or false "
                              f"(got {getattr(config, name)!r}).")


def check_patch_size(patch: Any) -> None:
    """Three whole numbers of at least 1 voxel (the network's multiple is checked where the network is known)."""
    if not isinstance(patch, (list, tuple)) or len(patch) != 3:
        raise ConfigError(f"--patch-size needs three whole numbers X Y Z (got {patch!r}).")
    for side in patch:
        whole_number(side, "--patch-size", 1)


def whole_number(value: Any, option: str, low: int, high: Optional[int] = None) -> None:
    """``value`` an int (not a bool, not a float) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{option} must be a whole number {bound} (got {value!r}).")


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
        raise ConfigError(f"{option} must be a number {span} (got {value!r}).")
