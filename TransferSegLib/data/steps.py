"""Intensity steps: the ordered list a recipe applies to voxel values.

Publishers chain simple operations, and the chain matters (MONAI's whole-body
bundle z-scores *then* rescales to [-1, 1]; deepbet scales to percentiles, clamps,
z-scores and then maps to a fixed mean and SD), so a recipe lists them in order,
each one of:

``clip``        clamp values to ``[low, high]`` (either bound may be null).
``window``      clamp to ``[low, high]`` and map linearly onto ``[out_min, out_max]``
                (MONAI ``ScaleIntensityRanged`` with ``clip``; ``clamp: false`` maps
                without clamping).
``zscore``      subtract the mean, divide by the SD, both taken ``over`` ``all``
                voxels, the ``nonzero`` ones (!= 0) or the ``positive`` ones (> 0).
                ``outside`` says what the voxels not in that set become: ``keep``
                (unchanged: MONAI ``NormalizeIntensityd(nonzero=True)`` leaves the
                zeros at 0), ``normalize`` (same map as the rest) or ``noise``
                (MedicalNet: voxels equal to 0 get N(0, 1) noise, drawn from a
                generator seeded with ``seed`` so that a prediction is reproducible;
                the other outside voxels are normalized). A zero SD divides by 1.
``rescale``     map the voxels' own min..max (over ``over``) onto
                ``[out_min, out_max]`` (MONAI ``ScaleIntensityd(minv, maxv)``).
``affine``      ``x * scale + offset`` (a fixed mean/SD map: deepbet's
                ``0.226 x + 0.449``; nnU-Net's dataset statistics as
                ``scale = 1/sd``, ``offset = -mean/sd``).
``percentile``  the ``low``-th and ``high``-th percentiles (0..100, linear
                interpolation as numpy and torch) mapped onto ``[out_min, out_max]``,
                clamped when ``clamp``; with neither ``out_min`` nor ``out_max`` the
                values are only clamped to the two percentiles.

Statistics are taken per channel (``channel_wise``, as MONAI's ``channel_wise=True``)
or over all channels together, over the cropped (and resized) region
(``stats: crop``) or over the whole image before cropping (``stats: image``;
deepbet takes its percentiles from the whole volume). ``channels`` restricts a step
to some input channels (indices), so that a CT + PET model can window one and
z-score the other. This module holds the specification only (no numpy), so the
catalog can be read where numpy is not at hand; ``data.intensity`` does the math.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from TransferSegLib.errors import ModelError

OPS = ("clip", "window", "zscore", "rescale", "affine", "percentile")
OVER = ("all", "nonzero", "positive")
OUTSIDE = ("keep", "normalize", "noise")
STATS = ("crop", "image")

_COMMON = ("op", "channels")
_STATISTICS = ("over", "channel_wise", "stats")
FIELDS_OF_OP = {
    "clip": _COMMON + ("low", "high"),
    "window": _COMMON + ("low", "high", "out_min", "out_max", "clamp"),
    "zscore": _COMMON + _STATISTICS + ("outside", "seed"),
    "rescale": _COMMON + _STATISTICS + ("out_min", "out_max"),
    "affine": _COMMON + ("scale", "offset"),
    "percentile": _COMMON + _STATISTICS + ("low", "high", "out_min", "out_max", "clamp"),
}


def _number(value: Any, name: str, op: str, optional: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    if isinstance(value, bool):
        raise ModelError(f"The '{op}' intensity step's '{name}' must be a number, got {value!r}.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ModelError(f"The '{op}' intensity step's '{name}' must be a number, got {value!r}.") from None


def _choice(value: Any, name: str, op: str, allowed) -> str:
    if value not in allowed:
        raise ModelError(f"The '{op}' intensity step's '{name}' is {value!r}: use one of {', '.join(allowed)}.")
    return value


@dataclass
class IntensityStep:
    """One intensity operation (see the module docstring for each ``op``)."""

    op: str
    low: Optional[float] = None
    high: Optional[float] = None
    out_min: Optional[float] = None
    out_max: Optional[float] = None
    clamp: bool = True
    scale: float = 1.0
    offset: float = 0.0
    over: str = "all"
    outside: str = "keep"
    channel_wise: bool = True
    stats: str = "crop"
    seed: int = 0
    channels: Optional[List[int]] = None

    def __post_init__(self) -> None:
        op = _choice(self.op, "op", str(self.op), OPS)
        for name in ("low", "high", "out_min", "out_max"):
            setattr(self, name, _number(getattr(self, name), name, op, optional=True))
        self.scale = float(_number(self.scale, "scale", op))  # type: ignore[arg-type]
        self.offset = float(_number(self.offset, "offset", op))  # type: ignore[arg-type]
        for name in ("clamp", "channel_wise"):
            if not isinstance(getattr(self, name), bool):
                raise ModelError(f"The '{op}' intensity step's '{name}' must be true or false, got {getattr(self, name)!r}.")
        _choice(self.over, "over", op, OVER)
        _choice(self.outside, "outside", op, OUTSIDE)
        _choice(self.stats, "stats", op, STATS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ModelError(f"The '{op}' intensity step's 'seed' must be an integer, got {self.seed!r}.")
        if self.channels is not None:
            if isinstance(self.channels, (str, bytes)) or not all(
                    isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in self.channels):
                raise ModelError(f"The '{op}' intensity step's 'channels' must be a list of channel indices, "
                                 f"got {self.channels!r}.")
            self.channels = [int(c) for c in self.channels]
        self._check_op(op)

    def _check_op(self, op: str) -> None:
        if op in ("window", "percentile"):
            if self.low is None or self.high is None or not self.high > self.low:
                raise ModelError(f"The '{op}' intensity step needs 'low' < 'high', got [{self.low}, {self.high}]"
                                 f"{' (the window is empty)' if op == 'window' else ''}.")
        if op == "percentile" and not (0.0 <= self.low <= 100.0 and 0.0 <= self.high <= 100.0):  # type: ignore
            raise ModelError(f"The 'percentile' step's 'low' and 'high' are percentiles (0..100), got "
                             f"{self.low} and {self.high}.")
        if op in ("window", "rescale"):
            self.out_min = 0.0 if self.out_min is None else self.out_min
            self.out_max = 1.0 if self.out_max is None else self.out_max
        if op == "percentile" and (self.out_min is None) != (self.out_max is None):
            raise ModelError("The 'percentile' step needs both 'out_min' and 'out_max' (scale) or neither (clip only).")
        if op == "clip":
            if self.low is None and self.high is None:
                raise ModelError("The 'clip' intensity step needs 'low', 'high' or both.")
            if self.low is not None and self.high is not None and self.high < self.low:
                raise ModelError(f"The 'clip' intensity step's 'low' ({self.low}) exceeds its 'high' ({self.high}).")

    def to_dict(self) -> Dict[str, Any]:
        """The fields this op uses (others stay at their defaults and are left out)."""
        return {name: (list(getattr(self, name)) if name == "channels" and self.channels is not None
                       else getattr(self, name)) for name in FIELDS_OF_OP[self.op]}

    @classmethod
    def from_dict(cls, data: Any) -> "IntensityStep":
        if not isinstance(data, dict):
            raise ModelError(f"An intensity step must be a JSON object with an 'op', got {data!r}.")
        op = data.get("op")
        if op not in FIELDS_OF_OP:
            raise ModelError(f"Unknown intensity step op {op!r}: use one of {', '.join(OPS)}.")
        unknown = set(data) - set(FIELDS_OF_OP[op])
        if unknown:
            raise ModelError(f"Unknown fields {sorted(unknown)} for the '{op}' intensity step; it takes "
                             f"{sorted(FIELDS_OF_OP[op])}.")
        return cls(**data)


def steps_from_legacy(data: Dict[str, Any]) -> List[IntensityStep]:
    """The steps an old ``intensity`` object (``kind`` window / zscore / none) means."""
    known = {"kind", "low", "high", "out_min", "out_max", "nonzero"}
    unknown = set(data) - known
    if unknown:
        raise ModelError(f"Unknown intensity fields {sorted(unknown)}; known fields are {sorted(known)}.")
    kind = data.get("kind", "window")
    nonzero = data.get("nonzero", False)
    if not isinstance(nonzero, bool):
        raise ModelError(f"The intensity field 'nonzero' must be true or false, got {nonzero!r}.")
    if kind == "none":
        return []
    if kind == "zscore":
        return [IntensityStep("zscore", over="nonzero" if nonzero else "all")]
    if kind == "window":
        low, high = data.get("low", -175.0), data.get("high", 250.0)
        return [IntensityStep("window", low=low, high=high, out_min=data.get("out_min", 0.0),
                              out_max=data.get("out_max", 1.0))]
    raise ModelError(f"Unknown intensity kind '{kind}': use one of window, zscore, none (or a list of steps).")


def describe(steps: List[IntensityStep]) -> str:
    """One line for ``models show`` and bundle READMEs."""
    if not steps:
        return "none"
    parts = []
    for s in steps:
        values = {k: v for k, v in s.to_dict().items() if k != "op" and v is not None}
        parts.append(s.op + "(" + ", ".join(f"{k}={v}" for k, v in values.items()) + ")")
    return " -> ".join(parts)

