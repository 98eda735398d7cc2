"""nnU-Net v2's preprocessing as a recipe: the plans of one configuration, kept verbatim.

An nnU-Net model only works on images prepared exactly as nnU-Net prepared its
training data, and that preparation is fully described by ``plans.json`` (axis
order, target spacing, per-channel normalization and its dataset statistics,
resampling orders) plus the channel names of ``dataset.json``. So a recipe for an
nnU-Net model does not restate it in TransferSeg's own terms: it keeps the plans
and the configuration name, and ``data.nnunet_preprocess`` applies them the way
nnU-Net's ``DefaultPreprocessor`` and predictor do. A model fine-tuned from an
nnU-Net base keeps the same recipe, which is also what lets it be exported back
as an nnU-Net model folder (``models.nnunet_export``).

Torch-free and numpy-free: catalog listings read recipes.
"""

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from TransferSegLib.errors import ModelError

#: nnU-Net's normalization classes TransferSeg reproduces (plans' ``normalization_schemes``).
NORMALIZATIONS = ("CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization")

#: The resampling function every stock nnU-Net v2 plan names.
RESAMPLING = "resample_data_or_seg_to_shape"

#: nnU-Net's anisotropy threshold: spacings whose max/min exceed it resample the low-resolution axis separately.
ANISO_THRESHOLD = 3.0


@dataclass
class NnunetRecipe:
    """The plans of an nnU-Net model (``plans``, the whole ``plans.json``) and which
    ``configuration`` it uses; ``channel_names`` and ``file_ending`` come from its
    ``dataset.json``; ``mirror_axes`` are the checkpoint's
    ``inference_allowed_mirroring_axes`` (None: no mirroring at test time)."""

    plans: Dict[str, Any]
    configuration: str
    channel_names: Dict[str, str] = field(default_factory=lambda: {"0": "CT"})
    file_ending: str = ".nii.gz"
    mirror_axes: Optional[List[int]] = None

    def __post_init__(self) -> None:
        if not isinstance(self.plans, dict) or "configurations" not in self.plans:
            raise ModelError("The nnU-Net recipe's plans are not an nnU-Net plans.json (no 'configurations').")
        configs = self.plans["configurations"]
        if self.configuration not in configs:
            raise ModelError(f"The nnU-Net plans have no configuration '{self.configuration}' "
                             f"(they have: {', '.join(configs)}).")
        config = self.config
        if "data_identifier" not in config and "inherits_from" in config:
            raise ModelError(f"The nnU-Net configuration '{self.configuration}' inherits from another one; "
                             f"TransferSeg needs a resolved configuration (a trained model's plans.json).")
        for key in ("spacing", "patch_size", "normalization_schemes", "architecture"):
            if key not in config:
                raise ModelError(f"The nnU-Net configuration '{self.configuration}' lacks '{key}'.")
        if len(config["patch_size"]) != 3:
            raise ModelError(f"The nnU-Net configuration '{self.configuration}' is {len(config['patch_size'])}D; "
                             f"TransferSeg runs 3D configurations only (e.g. 3d_fullres).")
        if "cascade" in self.configuration or config.get("previous_stage"):
            raise ModelError(f"The nnU-Net configuration '{self.configuration}' is a cascade stage: it needs the "
                             f"previous stage's segmentation as input, which TransferSeg does not provide.")
        for scheme in config["normalization_schemes"]:
            if scheme not in NORMALIZATIONS:
                raise ModelError(f"The nnU-Net plans use the normalization '{scheme}'; TransferSeg reproduces "
                                 f"{', '.join(NORMALIZATIONS)}.")
        for key in ("resampling_fn_data", "resampling_fn_probabilities"):
            if config.get(key, RESAMPLING) != RESAMPLING:
                raise ModelError(f"The nnU-Net plans resample with '{config[key]}'; TransferSeg reproduces "
                                 f"'{RESAMPLING}' only.")
        if self.mirror_axes is not None:
            self.mirror_axes = [int(a) for a in self.mirror_axes]

    @property
    def config(self) -> Dict[str, Any]:
        return self.plans["configurations"][self.configuration]

    @property
    def transpose_forward(self) -> Tuple[int, int, int]:
        return tuple(int(a) for a in self.plans.get("transpose_forward", (0, 1, 2)))  # type: ignore[return-value]

    @property
    def transpose_backward(self) -> Tuple[int, int, int]:
        return tuple(int(a) for a in self.plans.get("transpose_backward", (0, 1, 2)))  # type: ignore[return-value]

    @property
    def spacing(self) -> Tuple[float, float, float]:
        """Target spacing in the network's axis order (nnU-Net's z, y, x after ``transpose_forward``)."""
        return tuple(float(s) for s in self.config["spacing"])  # type: ignore[return-value]

    @property
    def patch_size(self) -> Tuple[int, int, int]:
        return tuple(int(p) for p in self.config["patch_size"])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    def normalization(self, channel: int) -> Tuple[str, bool, Dict[str, float]]:
        """(scheme, use_mask_for_norm, foreground intensity properties) of an input channel."""
        schemes: Sequence[str] = self.config["normalization_schemes"]
        masks: Sequence[bool] = self.config.get("use_mask_for_norm", [False] * len(schemes))
        props = self.plans.get("foreground_intensity_properties_per_channel", {}).get(str(channel), {})
        if schemes[channel] == "CTNormalization":
            missing = [k for k in ("mean", "std", "percentile_00_5", "percentile_99_5") if k not in props]
            if missing:
                raise ModelError(f"The nnU-Net plans lack the intensity statistics {missing} of channel {channel} "
                                 f"that CT normalization needs.")
        return str(schemes[channel]), bool(masks[channel]), {k: float(v) for k, v in props.items()}

    def resampling(self, what: str) -> Tuple[int, int, Optional[bool]]:
        """(order, order_z, force_separate_z) for ``data`` or ``probabilities``."""
        defaults = {"data": 3, "probabilities": 1}
        kwargs = self.config.get(f"resampling_fn_{what}_kwargs", {})
        return int(kwargs.get("order", defaults[what])), int(kwargs.get("order_z", 0)), kwargs.get("force_separate_z")

    def to_dict(self) -> Dict[str, Any]:
        return {"plans": copy.deepcopy(self.plans), "configuration": self.configuration,
                "channel_names": dict(self.channel_names), "file_ending": self.file_ending,
                "mirror_axes": list(self.mirror_axes) if self.mirror_axes is not None else None}

    @classmethod
    def from_dict(cls, data: Any) -> "NnunetRecipe":
        if isinstance(data, NnunetRecipe):
            return data
        if not isinstance(data, dict):
            raise ModelError(f"The recipe's nnunet entry must be a JSON object, got {type(data).__name__}.")
        known = {"plans", "configuration", "channel_names", "file_ending", "mirror_axes"}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"Unknown nnunet recipe fields {sorted(unknown)}; known fields are {sorted(known)}.")
        if "plans" not in data or "configuration" not in data:
            raise ModelError("The recipe's nnunet entry needs 'plans' and 'configuration'.")
        return cls(**data)
