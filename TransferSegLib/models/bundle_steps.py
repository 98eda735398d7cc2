"""MONAI intensity transforms and TransferSeg's intensity steps, both ways.

Import reads a bundle's transform arguments (already resolved, never evaluated)
into steps with MONAI's defaults made explicit (``NormalizeIntensityd`` and
``ScaleIntensityd`` take statistics over all channels together unless
``channel_wise``; ``ScaleIntensityRanged`` does not clip unless ``clip``). Export
writes, for each step, the standard MONAI transforms that compute it, and refuses
a step they cannot (the exported bundle would see other values than TransferSeg).
"""

from typing import Any, Callable, Dict, List

from TransferSegLib.data.steps import IntensityStep
from TransferSegLib.errors import ModelError

INTENSITY_TRANSFORMS = ("ScaleIntensityRanged", "ScaleIntensityRange", "NormalizeIntensityd", "NormalizeIntensity",
                        "ScaleIntensityd", "ScaleIntensity", "ScaleIntensityRangePercentilesd",
                        "ScaleIntensityRangePercentiles")


def steps_of_transform(kind: str, field: Callable[..., Any], notes: List[str]) -> List[IntensityStep]:
    """The steps one MONAI intensity transform amounts to; ``field(name, default)``
    reads its resolved arguments, ``notes`` collects what cannot be carried over."""
    if kind.startswith("ScaleIntensityRangePercentiles"):
        if field("relative", False):
            notes.append(f"the bundle's {kind} is relative, which TransferSeg's percentile step is not")
        return [IntensityStep("percentile", low=field("lower"), high=field("upper"), out_min=field("b_min"),
                              out_max=field("b_max"), clamp=bool(field("clip", False)),
                              channel_wise=bool(field("channel_wise", False)))]
    if kind.startswith("ScaleIntensityRange"):
        b_min, b_max = field("b_min"), field("b_max")
        return [IntensityStep("window", low=field("a_min", 0.0), high=field("a_max", 1.0),
                              out_min=0.0 if b_min is None else b_min, out_max=1.0 if b_max is None else b_max,
                              clamp=bool(field("clip", False)))]
    if kind.startswith("NormalizeIntensity"):
        return _normalize_steps(field, kind, notes)
    return _scale_steps(field, kind, notes)


def _normalize_steps(field: Callable[..., Any], kind: str, notes: List[str]) -> List[IntensityStep]:
    """``NormalizeIntensityd``: a z-score (MONAI's defaults: all voxels, all channels
    together), or a fixed map when it names its subtrahend and divisor."""
    sub, div = field("subtrahend"), field("divisor")
    if sub is not None or div is not None:
        if isinstance(sub, (list, tuple)) or isinstance(div, (list, tuple)):
            notes.append(f"the bundle's {kind} has per-channel subtrahend/divisor, which the recipe cannot hold")
            return []
        div = 1.0 if div in (None, 0) else float(div)
        return [IntensityStep("affine", scale=1.0 / div, offset=-float(sub or 0.0) / div)]
    nonzero = bool(field("nonzero", False))
    return [IntensityStep("zscore", over="nonzero" if nonzero else "all",
                          channel_wise=bool(field("channel_wise", False)))]


def _scale_steps(field: Callable[..., Any], kind: str, notes: List[str]) -> List[IntensityStep]:
    """``ScaleIntensityd``: min..max onto [minv, maxv], or ``x * (1 + factor)``."""
    minv, maxv, factor = field("minv", 0.0), field("maxv", 1.0), field("factor")
    if minv is not None and maxv is not None:
        return [IntensityStep("rescale", out_min=minv, out_max=maxv, channel_wise=bool(field("channel_wise", False)))]
    if factor is not None:
        return [IntensityStep("affine", scale=1.0 + float(factor))]
    notes.append(f"the bundle's {kind} has neither minv/maxv nor factor; ignored")
    return []


def transforms_of_step(step: IntensityStep) -> List[Dict[str, Any]]:
    """The MONAI transforms that compute one intensity step; a ``ModelError`` for a
    step MONAI's standard transforms cannot express (the bundle would differ)."""
    def refuse(why: str) -> ModelError:
        return ModelError(f"Cannot export the recipe's '{step.op}' intensity step as a MONAI transform: {why}.")

    if step.channels is not None:
        raise refuse("it applies to some channels only")
    if step.stats == "image" and step.op in ("zscore", "rescale", "percentile"):
        raise refuse("it takes its statistics from the image before cropping")
    if step.op == "window":
        return [{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": step.low, "a_max": step.high,
                 "b_min": step.out_min, "b_max": step.out_max, "clip": step.clamp}]
    if step.op == "clip":
        out = []
        if step.low is not None:
            out.append({"_target_": "ThresholdIntensityd", "keys": "image", "threshold": step.low, "above": True,
                        "cval": step.low})
        if step.high is not None:
            out.append({"_target_": "ThresholdIntensityd", "keys": "image", "threshold": step.high, "above": False,
                        "cval": step.high})
        return out
    if step.op == "affine":
        return [{"_target_": "ScaleIntensityd", "keys": "image", "minv": None, "maxv": None,
                 "factor": step.scale - 1.0},
                {"_target_": "ShiftIntensityd", "keys": "image", "offset": step.offset}]
    if step.op == "zscore":
        if step.over == "positive" or (step.over == "nonzero" and step.outside != "keep"):
            raise refuse(f"MONAI's NormalizeIntensityd has no 'over {step.over}, outside {step.outside}'")
        return [{"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": step.over == "nonzero",
                 "channel_wise": step.channel_wise}]
    if step.over != "all":
        raise refuse(f"MONAI's transform takes its statistics over all voxels, not '{step.over}'")
    if step.op == "rescale":
        return [{"_target_": "ScaleIntensityd", "keys": "image", "minv": step.out_min, "maxv": step.out_max,
                 "channel_wise": step.channel_wise}]
    if step.out_min is None:
        return [{"_target_": "ClipIntensityPercentilesd", "keys": "image", "lower": step.low, "upper": step.high,
                 "channel_wise": step.channel_wise}]
    return [{"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": step.low, "upper": step.high,
             "b_min": step.out_min, "b_max": step.out_max, "clip": step.clamp, "channel_wise": step.channel_wise}]
