"""A model's preprocessing recipe: how images must be fed to the network it trained.

Preprocessing cannot be shared between models (fixed HU windows, per-image
z-score, different spacings): each base model carries its own recipe, and the
fine-tuned model keeps it, so prediction sees images exactly as training did.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

from .errors import ModelError

INTENSITY_KINDS = ("window", "zscore", "none")


def _reject_unknown(cls, data: Dict[str, Any], what: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ModelError(f"Unknown {what} fields {sorted(unknown)}; known: {sorted(known)}.")


@dataclass
class IntensitySpec:
    """``window``: clip to [low, high] (HU for CT), scale to [out_min, out_max];
    ``zscore``: per-image mean/std (over non-zero voxels with ``nonzero``); ``none``."""

    kind: str = "window"
    low: float = -175.0
    high: float = 250.0
    out_min: float = 0.0
    out_max: float = 1.0
    nonzero: bool = False

    def __post_init__(self) -> None:
        if self.kind not in INTENSITY_KINDS:
            raise ModelError(f"Unknown intensity kind '{self.kind}': use one of {INTENSITY_KINDS}.")
        if self.kind == "window" and not self.high > self.low:
            raise ModelError(f"Intensity window [{self.low}, {self.high}] is empty: 'high' must exceed 'low'.")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "IntensitySpec":
        _reject_unknown(cls, data, "intensity")
        return cls(**data)


@dataclass
class Recipe:
    """Orientation (MONAI/nibabel axcodes: ``RAS`` = axes increase toward Right,
    Anterior, Superior), target spacing (mm, x y z; None keeps the image's own),
    intensity normalization and an optional crop to the body."""

    orientation: str = "RAS"
    spacing: Optional[Tuple[float, float, float]] = (3.0, 3.0, 3.0)
    intensity: IntensitySpec = field(default_factory=IntensitySpec)
    crop_foreground: bool = False
    crop_threshold: float = -500.0
    crop_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        code = str(self.orientation).upper()
        axes = {"R": "x", "L": "x", "A": "y", "P": "y", "S": "z", "I": "z"}
        if len(code) != 3 or any(c not in axes for c in code) or len({axes[c] for c in code}) != 3:
            raise ModelError(f"Orientation '{self.orientation}' is not a 3-letter code such as RAS or LPS.")
        self.orientation = code
        if self.spacing is not None:
            self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
            if len(self.spacing) != 3 or any(s <= 0 for s in self.spacing):
                raise ModelError(f"Target spacing {self.spacing} must be three positive numbers (mm).")
        if isinstance(self.intensity, dict):
            self.intensity = IntensitySpec.from_dict(self.intensity)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["spacing"] = list(self.spacing) if self.spacing is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Recipe":
        _reject_unknown(cls, data, "recipe")
        values = dict(data)
        if "intensity" in values and isinstance(values["intensity"], dict):
            values["intensity"] = IntensitySpec.from_dict(values["intensity"])
        if values.get("spacing") is not None:
            values["spacing"] = tuple(values["spacing"])
        return cls(**values)
