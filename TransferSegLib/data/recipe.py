"""A model's preprocessing recipe: how images must be fed to the network it trained.

Preprocessing cannot be shared between models (fixed HU windows, per-image
z-score, different spacings): each base model carries its own recipe, and the
fine-tuned model keeps it, so prediction sees images exactly as training did.

Orientation codes
-----------------
A code is three letters, one per array axis ``(X, Y, Z)``, each naming the
anatomical direction toward which that index *increases* ("to" convention):
``RAS`` means index i runs toward the patient's Right, j toward Anterior, k toward
Superior. This is the convention of nibabel's ``aff2axcodes`` and of MONAI's
``Orientation(d)(axcodes=...)``, and also of SimpleITK's ``DICOMOrient`` /
``DICOMOrientImageFilter`` (an identity direction matrix, whose axes point along
SimpleITK's LPS physical axes, is called ``LPS`` by both). The letters are
anatomical, so they mean the same thing whether the physical space is RAS
(nibabel, MONAI, Slicer) or LPS (ITK, DICOM). Beware ITK's older
``itk::SpatialOrientation`` names (``ITK_COORDINATE_ORIENTATION_RAI`` for that same
identity matrix), which use the opposite "from" convention.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

from TransferSegLib.errors import ModelError

INTENSITY_KINDS = ("window", "zscore", "none")

_AXIS_OF_LETTER = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


def _check_keys(cls, data: Any, what: str) -> Dict[str, Any]:
    if not isinstance(data, dict):
        raise ModelError(f"The {what} must be a JSON object, got {type(data).__name__}: {data!r}.")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ModelError(f"Unknown {what} fields {sorted(unknown)}; known fields are {sorted(known)}.")
    return dict(data)


def _number(value: Any, name: str, what: str) -> float:
    if isinstance(value, bool):
        raise ModelError(f"The {what} field '{name}' must be a number, got {value!r}.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ModelError(f"The {what} field '{name}' must be a number, got {value!r}.") from None


def _flag(value: Any, name: str, what: str) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"The {what} field '{name}' must be true or false, got {value!r}.")
    return value


@dataclass
class IntensitySpec:
    """How voxel values are normalized before they reach the network.

    - ``window``: clip to ``[low, high]`` (HU for CT) and scale linearly to
      ``[out_min, out_max]``; the same for every image, so absolute HU matter.
    - ``zscore``: subtract the image's own mean and divide by its standard
      deviation (over voxels != 0 only with ``nonzero``, which also keeps the zeros
      at 0); for MR, whose values have no absolute meaning.
    - ``none``: values as they are.
    """

    kind: str = "window"
    low: float = -175.0
    high: float = 250.0
    out_min: float = 0.0
    out_max: float = 1.0
    nonzero: bool = False

    def __post_init__(self) -> None:
        if self.kind not in INTENSITY_KINDS:
            raise ModelError(f"Unknown intensity kind '{self.kind}': use one of {', '.join(INTENSITY_KINDS)}.")
        for name in ("low", "high", "out_min", "out_max"):
            setattr(self, name, _number(getattr(self, name), name, "intensity"))
        self.nonzero = _flag(self.nonzero, "nonzero", "intensity")
        if self.kind == "window" and not self.high > self.low:
            raise ModelError(f"Intensity window [{self.low}, {self.high}] is empty: 'high' must exceed 'low'.")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "IntensitySpec":
        return cls(**_check_keys(cls, data, "intensity"))


@dataclass
class Recipe:
    """Orientation code (see the module docstring; ``RAS`` gives MONAI's
    ``Orientationd(axcodes="RAS")`` arrays), target spacing in mm as (x, y, z)
    (``None`` keeps the image's own spacing), intensity normalization, and an
    optional crop to the voxels above ``crop_threshold`` (raw values, HU for CT)
    plus ``crop_margin_mm``.

    The crop is on by default: on CT, -500 HU keeps the body. A network fine-tuned
    on one tightly framed scan has never seen a patch of pure air, and on a scan
    with a wide field of view it can label the air around the body (an instance-
    normalized constant patch is no evidence of anything); cropping to the body
    removes that failure and the wasted sliding windows. Outside the crop the
    prediction is background."""

    orientation: str = "RAS"
    spacing: Optional[Tuple[float, float, float]] = (3.0, 3.0, 3.0)
    intensity: IntensitySpec = field(default_factory=IntensitySpec)
    crop_foreground: bool = True
    crop_threshold: float = -500.0
    crop_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        code = str(self.orientation).upper()
        if len(code) != 3 or any(c not in _AXIS_OF_LETTER for c in code) or len({_AXIS_OF_LETTER[c] for c in code}) != 3:
            raise ModelError(
                f"Orientation '{self.orientation}' is not a 3-letter code naming each axis once, such as RAS or LPS."
            )
        self.orientation = code
        if self.spacing is not None:
            if isinstance(self.spacing, (str, bytes)) or not hasattr(self.spacing, "__len__") or len(self.spacing) != 3:
                raise ModelError(f"Target spacing {self.spacing!r} must be three positive numbers (mm, x y z) or null.")
            spacing = tuple(_number(s, "spacing", "recipe") for s in self.spacing)
            if any(not s > 0 for s in spacing):
                raise ModelError(f"Target spacing {spacing} must be three positive numbers (mm, x y z) or null.")
            self.spacing = spacing  # type: ignore[assignment]
        if isinstance(self.intensity, dict):
            self.intensity = IntensitySpec.from_dict(self.intensity)
        if not isinstance(self.intensity, IntensitySpec):
            raise ModelError(f"The recipe's intensity must be an intensity spec, got {self.intensity!r}.")
        self.crop_foreground = _flag(self.crop_foreground, "crop_foreground", "recipe")
        self.crop_threshold = _number(self.crop_threshold, "crop_threshold", "recipe")
        self.crop_margin_mm = _number(self.crop_margin_mm, "crop_margin_mm", "recipe")
        if self.crop_margin_mm < 0:
            raise ModelError(f"crop_margin_mm must not be negative, got {self.crop_margin_mm}.")

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["spacing"] = list(self.spacing) if self.spacing is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Recipe":
        return cls(**_check_keys(cls, data, "recipe"))
