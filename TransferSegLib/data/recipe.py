"""A model's preprocessing recipe: how images must be fed to the network it trained.

Preprocessing cannot be shared between models (fixed HU windows, per-image
z-score, different spacings): each base model carries its own recipe, and the
fine-tuned model keeps it, so prediction sees images exactly as training did.
A recipe says, in the order they run: orientation, spacing, foreground crop,
resize to a fixed shape, and an ordered list of intensity steps
(``IntensityStep``). Each catalog entry's recipe restates its publisher's
preprocessing in these terms (docs/models.md names the publisher's file).

Orientation codes
-----------------
A code is three letters, one per array axis ``(X, Y, Z)``, each naming the
anatomical direction toward which that index *increases* ("to" convention):
``RAS`` means index i runs toward the patient's Right, j toward Anterior, k toward
Superior. This is the convention of nibabel's ``aff2axcodes`` and of MONAI's
``Orientationd(axcodes=...)``, and also of SimpleITK's ``DICOMOrient`` /
``DICOMOrientImageFilter`` (an identity direction matrix, whose axes point along
SimpleITK's LPS physical axes, is called ``LPS`` by both). The letters are
anatomical, so they mean the same thing whether the physical space is RAS
(nibabel, MONAI, Slicer) or LPS (ITK, DICOM). Beware ITK's older
``itk::SpatialOrientation`` names (``ITK_COORDINATE_ORIENTATION_RAI`` for that same
identity matrix), which use the opposite "from" convention.

``stored`` means no reorientation: the array axes are the file's own index axes,
which is what a MONAI bundle without ``Orientationd`` sees (``LoadImaged`` keeps a
NIfTI's i, j, k order, as SimpleITK does).
"""

from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

from TransferSegLib.errors import ModelError
from TransferSegLib.data.nnunet_recipe import NnunetRecipe
from TransferSegLib.data.steps import IntensityStep, steps_from_legacy

STORED = "stored"
CROP_SELECT = ("above", "not_corner", "relative")
RESIZE_MODES = ("linear", "nearest")
_STORED_SPELLINGS = ("stored", "as stored", "as-stored", "as_stored", "none")
_AXIS_OF_LETTER = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
_DEFAULT_STEPS = ({"op": "window", "low": -175.0, "high": 250.0, "out_min": 0.0, "out_max": 1.0},)


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


def _triple(value: Any, name: str, kind, positive: bool = True) -> Tuple:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 3:
        raise ModelError(f"The recipe's {name} {value!r} must be three positive numbers (x y z) or null.")
    out = tuple(kind(_number(v, name, "recipe")) for v in value)
    if positive and any(not v > 0 for v in out):
        raise ModelError(f"The recipe's {name} {out} must be three positive numbers (x y z) or null.")
    return out


@dataclass
class IntensitySpec:
    """The recipe format before intensity steps (model.json files written by
    TransferSeg up to this version, catalog entries, user specs): one of
    ``window`` (clip to ``[low, high]``, scale to ``[out_min, out_max]``),
    ``zscore`` (image mean and SD, over voxels != 0 with ``nonzero``) or ``none``.
    Kept so those files keep loading; ``steps()`` is what it means now."""

    kind: str = "window"
    low: float = -175.0
    high: float = 250.0
    out_min: float = 0.0
    out_max: float = 1.0
    nonzero: bool = False

    def __post_init__(self) -> None:
        self.steps()  # validates

    def steps(self) -> List[IntensityStep]:
        return steps_from_legacy(dict(kind=self.kind, low=self.low, high=self.high, out_min=self.out_min,
                                      out_max=self.out_max, nonzero=self.nonzero))

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "IntensitySpec":
        return cls(**_check_keys(cls, data, "intensity"))


def _intensity_steps(value: Any) -> List[IntensityStep]:
    """Steps from any accepted spelling: a list of steps (dicts or objects), a
    legacy ``IntensitySpec`` or its dict."""
    if isinstance(value, IntensitySpec):
        return value.steps()
    if isinstance(value, dict):
        return IntensitySpec.from_dict(value).steps()
    if isinstance(value, (list, tuple)):
        return [s if isinstance(s, IntensityStep) else IntensityStep.from_dict(s) for s in value]
    raise ModelError(f"The recipe's intensity must be a list of steps (or an intensity object), got {value!r}.")


@dataclass
class Recipe:
    """How an image becomes the network's input, in this order:

    1. ``orientation``: a code (see the module docstring; ``RAS`` gives MONAI's
       ``Orientationd(axcodes="RAS")`` arrays) or ``stored`` (no reorientation).
    2. ``spacing``: target spacing in mm (x, y, z); ``None`` keeps the image's own.
    3. Foreground crop (``crop_foreground``): the bounding box of the selected
       voxels, selected on raw values (HU for CT) before any intensity step:
       ``crop_select`` ``above`` (value > ``crop_threshold``; MONAI's
       ``CropForegroundd`` default is ``above`` 0), ``not_corner`` (value differs
       from the first voxel's: MedicalNet's "invalid range"), ``relative`` (value
       > ``crop_threshold`` x the image's 99.5th percentile: an MR head's box).
       The box grows by ``crop_margin_mm`` and by ``crop_margin_fraction`` of its
       size on each side (deepbet adds 10 %), clipped to the image.
    4. ``resize``: the cropped box resized to this shape (x, y, z), its voxels
       spanning the same physical box (``align_corners=False``: torch's
       ``interpolate`` and MONAI's ``Resized``), ``resize_mode`` ``linear`` or
       ``nearest`` (torch's ``nearest-exact``). Predictions are resized back to
       the box with the same rule.
    5. ``intensity``: the ordered ``IntensityStep`` list (see ``steps``).

    The crop is on by default: on CT, -500 HU keeps the body. A network fine-tuned
    on one tightly framed scan has never seen a patch of pure air, and on a scan
    with a wide field of view it can label the air around the body (an instance-
    normalized constant patch is no evidence of anything); cropping to the body
    removes that failure and the wasted sliding windows. Outside the crop the
    prediction is background. ``source`` names where a base model's recipe comes
    from (repository and file), for the record."""

    orientation: str = "RAS"
    spacing: Optional[Tuple[float, float, float]] = (3.0, 3.0, 3.0)
    intensity: List[IntensityStep] = field(default_factory=lambda: [IntensityStep.from_dict(dict(s))
                                                                    for s in _DEFAULT_STEPS])
    crop_foreground: bool = True
    crop_threshold: float = -500.0
    crop_margin_mm: float = 10.0
    crop_select: str = "above"
    crop_margin_fraction: float = 0.0
    resize: Optional[Tuple[int, int, int]] = None
    resize_mode: str = "linear"
    source: str = ""
    #: nnU-Net's own preprocessing (``data.nnunet_preprocess``) from its plans; when set, the fields above are unused.
    nnunet: Optional[NnunetRecipe] = None

    def __post_init__(self) -> None:
        if self.nnunet is not None:
            self.nnunet = NnunetRecipe.from_dict(self.nnunet)
        code = str(self.orientation).strip()
        if code.lower() in _STORED_SPELLINGS:
            self.orientation = STORED
        else:
            code = code.upper()
            if len(code) != 3 or any(c not in _AXIS_OF_LETTER for c in code) or \
                    len({_AXIS_OF_LETTER[c] for c in code}) != 3:
                raise ModelError(f"Orientation '{self.orientation}' is not a 3-letter code naming each axis once, "
                                 f"such as RAS or LPS, nor 'stored' (no reorientation).")
            self.orientation = code
        if self.spacing is not None:
            self.spacing = _triple(self.spacing, "spacing", float)  # type: ignore[assignment]
        self.intensity = _intensity_steps(self.intensity)
        self.crop_foreground = _flag(self.crop_foreground, "crop_foreground", "recipe")
        self.crop_threshold = _number(self.crop_threshold, "crop_threshold", "recipe")
        self.crop_margin_mm = _number(self.crop_margin_mm, "crop_margin_mm", "recipe")
        self.crop_margin_fraction = _number(self.crop_margin_fraction, "crop_margin_fraction", "recipe")
        if self.crop_margin_mm < 0:
            raise ModelError(f"crop_margin_mm must not be negative, got {self.crop_margin_mm}.")
        if self.crop_margin_fraction < 0:
            raise ModelError(f"crop_margin_fraction must not be negative, got {self.crop_margin_fraction}.")
        if self.crop_select not in CROP_SELECT:
            raise ModelError(f"Unknown crop_select '{self.crop_select}': use one of {', '.join(CROP_SELECT)}.")
        if self.resize is not None:
            self.resize = _triple(self.resize, "resize", int)  # type: ignore[assignment]
        if self.resize_mode not in RESIZE_MODES:
            raise ModelError(f"Unknown resize_mode '{self.resize_mode}': use one of {', '.join(RESIZE_MODES)}.")
        self.source = str(self.source or "")

    @property
    def reorients(self) -> bool:
        return self.orientation != STORED

    def to_dict(self) -> Dict[str, Any]:
        return {"orientation": self.orientation,
                "spacing": list(self.spacing) if self.spacing is not None else None,
                "intensity": [s.to_dict() for s in self.intensity],
                "crop_foreground": self.crop_foreground, "crop_threshold": self.crop_threshold,
                "crop_margin_mm": self.crop_margin_mm, "crop_select": self.crop_select,
                "crop_margin_fraction": self.crop_margin_fraction,
                "resize": list(self.resize) if self.resize is not None else None,
                "resize_mode": self.resize_mode, "source": self.source,
                **({"nnunet": self.nnunet.to_dict()} if self.nnunet is not None else {})}

    @classmethod
    def for_nnunet(cls, nnunet: NnunetRecipe) -> "Recipe":
        """An nnU-Net model's recipe: its plans do all of the preprocessing (axes as stored, no crop or steps)."""
        return cls(orientation=STORED, spacing=None, intensity=[], crop_foreground=False,
                   source="nnU-Net plans.json (applied by nnU-Net's own steps)", nnunet=nnunet)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Recipe":
        return cls(**_check_keys(cls, data, "recipe"))
