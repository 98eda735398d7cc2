"""Prediction: sliding window with Gaussian blending, mirroring, clean-up, and the way back.

A prediction is only useful in the input's own geometry: the probabilities are
brought back onto the original grid (size, spacing, origin, direction) by the
exact inverse of the preprocessing before the labelmap is taken.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from TransferSegLib.data.preprocess import preprocess_image, restore_probabilities
from TransferSegLib.errors import ModelError
from TransferSegLib.inference.cleanup import (
    CleanupOverride, cleanup_classes, keep_largest_components, recorded_decisions,
)
from TransferSegLib.models.base_model import BaseModel
from TransferSegLib.models.model_dir import load_model
from TransferSegLib.training.loop import resolve_device


@dataclass
class InferenceOptions:
    """How to predict. ``largest_component``: None follows the model's per-class decisions
    (``model.json`` ``cleanup``, else each class's anatomy); True/False forces every class;
    a class name -> bool mapping overrides those classes only (see ``inference/cleanup.py``)."""

    overlap: float = 0.5
    tta: bool = False
    largest_component: CleanupOverride = None
    sw_batch_size: int = 2
    amp: bool = True


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    if out.dim() == 6:
        out = out[:, 0]
    return out


def sliding_window_probabilities(
    model: nn.Module,
    image: np.ndarray,
    patch_size: Sequence[int],
    device: torch.device,
    options: Optional[InferenceOptions] = None,
    flip_axes: Sequence[int] = (),
) -> np.ndarray:
    """Softmax probabilities ``(C, X, Y, Z)`` for a preprocessed image ``(X, Y, Z)``
    (or ``(channels, X, Y, Z)`` for a multi-channel input).

    With ``options.tta`` the image is also predicted mirrored along each of
    ``flip_axes`` and the un-mirrored probabilities averaged.
    """
    from monai.inferers import sliding_window_inference

    options = options or InferenceOptions()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    x = (x[None] if x.dim() == 4 else x[None, None]).to(device)
    roi = [int(p) for p in patch_size]
    use_amp = bool(options.amp and device.type == "cuda")
    variants: List[Tuple[int, ...]] = [()]
    if options.tta:
        variants += [(a + 2,) for a in flip_axes]
    total = None
    model.eval()
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        for dims in variants:
            inp = x.flip(dims) if dims else x
            logits = sliding_window_inference(
                inp,
                roi_size=roi,
                sw_batch_size=options.sw_batch_size,
                predictor=lambda t: _forward(model, t),
                overlap=options.overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=float(image.min()) if image.size else 0.0,
            )
            probs = torch.softmax(logits.float(), dim=1)
            if dims:
                probs = probs.flip(dims)
            total = probs if total is None else total + probs
    return (total / len(variants))[0].cpu().numpy()


@dataclass
class Prediction:
    """A prediction on the input's grid."""

    labelmap: sitk.Image
    labels: List[str]
    probabilities: Optional[np.ndarray] = None  # (C, X, Y, Z) on the input grid
    uncertainty: Optional[sitk.Image] = None
    largest_component: List[str] = field(default_factory=list)  # classes reduced to their largest component


def predict_image(
    model: nn.Module,
    info: BaseModel,
    image,
    device: str = "auto",
    options: Optional[InferenceOptions] = None,
    keep_probabilities: bool = False,
    uncertainty: bool = False,
) -> Prediction:
    """Predict a labelmap for ``image`` (an image, or a list of channel images in
    the model's channel order) in its own geometry."""
    options = options or InferenceOptions()
    dev = resolve_device(device)
    model.to(dev)
    channels = [image] if isinstance(image, sitk.Image) else list(image)
    expected = int(info.network.args.get("in_channels", 1))
    if len(channels) != expected:
        raise ModelError(f"The model '{info.name}' reads {expected} channel(s)"
                         f"{' (' + ', '.join(info.card.get('input_channels') or []) + ')' if info.card else ''}, "
                         f"but {len(channels)} image(s) were given.")
    array, prep = preprocess_image(channels[0] if len(channels) == 1 else channels, info.recipe)
    image = channels[0]
    flips = tuple(info.card.get("training", {}).get("flip_axes", (1, 2))) if info.card else (1, 2)
    probs = sliding_window_probabilities(model, array, info.patch_size, dev, options, flip_axes=flips)
    restored = restore_probabilities(probs, prep)
    labels_array = np.argmax(restored, axis=0).astype(np.uint8)
    cleaned = cleanup_classes(info.labels, recorded_decisions(info.card, f"model '{info.name}'"), options.largest_component)
    if cleaned:
        labels_array = keep_largest_components(labels_array, cleaned)
    labelmap = sitk.GetImageFromArray(labels_array.transpose(2, 1, 0))
    labelmap.CopyInformation(image)
    unc = None
    if uncertainty:
        entropy = -(restored * np.log(np.clip(restored, 1e-8, 1.0))).sum(0) / np.log(max(len(info.labels), 2))
        unc = sitk.GetImageFromArray(entropy.astype(np.float32).transpose(2, 1, 0))
        unc.CopyInformation(image)
    return Prediction(labelmap, list(info.labels), restored if keep_probabilities else None, unc,
                      [info.labels[i] for i in cleaned])


def predict_file(
    model_dir: Path,
    image_path: Path,
    output_path: Path,
    device: str = "auto",
    tta: bool = False,
    largest_component: CleanupOverride = None,
    probabilities_path: Optional[Path] = None,
    uncertainty_path: Optional[Path] = None,
    overlap: float = 0.5,
) -> Prediction:
    """Read an image, predict, and write the labelmap (.nii.gz or .seg.nrrd) atomically.

    ``image_path`` may name several channel files (``data.channels``: ``a,b`` or
    ``T1c=a,T1=b``, or a 4D file); they are put in the model's channel order."""
    from TransferSegLib.data.channels import order_channels, read_channels
    from TransferSegLib.specs import parse_image_argument
    from TransferSegLib.data.labelmaps import write_labelmap
    from TransferSegLib.names import label_color

    output_path = Path(output_path)
    if not (str(output_path).endswith((".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha"))):
        raise ModelError(f"Output '{output_path}' must end in .nii.gz, .nii, .seg.nrrd, .nrrd or .mha.")
    model, info = load_model(Path(model_dir), "cpu")
    paths, names = ([str(image_path)], []) if Path(image_path).exists() else parse_image_argument(str(image_path))
    paths = order_channels(paths, names, list(info.card.get("input_channels") or []) if info.card else [],
                           int(info.network.args.get("in_channels", 1)), f"--image '{image_path}'")
    channels = read_channels(paths)
    image = channels[0]
    options = InferenceOptions(overlap=overlap, tta=tta, largest_component=largest_component)
    prediction = predict_image(
        model, info, channels if len(channels) > 1 else image, device, options,
        keep_probabilities=probabilities_path is not None,
        uncertainty=uncertainty_path is not None,
    )
    names = {i: n for i, n in enumerate(info.labels) if i > 0}
    colors = {i: label_color(n, i) for i, n in names.items()}
    write_labelmap(prediction.labelmap, str(output_path), names=names, colors=colors)
    if probabilities_path is not None and prediction.probabilities is not None:
        probs = sitk.GetImageFromArray(prediction.probabilities.transpose(3, 2, 1, 0).astype(np.float32), isVector=True)
        probs.CopyInformation(image)
        _write_atomic(probs, Path(probabilities_path))
    if uncertainty_path is not None and prediction.uncertainty is not None:
        _write_atomic(prediction.uncertainty, Path(uncertainty_path))
    return prediction


def _write_atomic(image: sitk.Image, path: Path) -> None:
    import os

    name = path.name
    tmp = path.with_name(".tmp-" + name)
    sitk.WriteImage(image, str(tmp), useCompression=True)
    os.replace(tmp, path)
