"""Prediction: sliding window with Gaussian blending, mirroring, clean-up, and the way back.

A prediction is only useful in the input's own geometry: the probabilities are
brought back onto the original grid (size, spacing, origin, direction) by the
exact inverse of the preprocessing before the labelmap is taken.
"""

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from TransferSegLib.data.preprocess import PreprocessInfo, preprocess_image
from TransferSegLib.errors import ModelError
from TransferSegLib.data.nnunet_preprocess import restore_logits
from TransferSegLib.inference import nnunet_restore, nnunet_window
from TransferSegLib.inference.cleanup import (
    CleanupOverride, cleanup_classes, keep_largest_components, recorded_decisions,
)
from TransferSegLib.inference.outputs import check_probabilities_path, normalized_entropy, restored_outputs
from TransferSegLib.inference.restore_blocks import DEFAULT_BUDGET_BYTES, restore_labels
from TransferSegLib.models.base_model import BaseModel
from TransferSegLib.models.model_dir import load_model
from TransferSegLib.paths import (check_outputs, output_error, remove_quietly, temporary_sibling,
                                  write_group_atomically)
from TransferSegLib.training.devices import resolve_device
from TransferSegLib.training.memory import free_bytes, sliding_window_batch

# Above this size the model-resolution probabilities are kept in float16: values in
# [0, 1] keep three significant digits, which moves the argmax only where two
# classes tie to 1e-3 (a boundary voxel either way).
FLOAT16_ABOVE_BYTES = 1 << 30


@dataclass
class InferenceOptions:
    """How to predict. ``largest_component``: None follows the model's per-class decisions
    (``model.json`` ``cleanup``, else each class's anatomy); True/False forces every class;
    a class name -> bool mapping overrides those classes only (see ``inference/cleanup.py``)."""

    overlap: float = 0.5
    tta: bool = False
    largest_component: CleanupOverride = None
    sw_batch_size: int = 0  # windows per forward pass; 0: chosen for the device's free memory
    amp: bool = True
    restore_budget_bytes: int = DEFAULT_BUDGET_BYTES  # working set of one slab of the restore
    # told the fraction (0..1) of the sliding windows done: the command line prints it, the panel shows it
    on_progress: Optional[Callable[[float], None]] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        overlap = self.overlap
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0.0 <= overlap < 1.0:
            raise ModelError(f"--overlap must be a number from 0 up to (not including) 1; 0.9 is already slow "
                             f"(got {overlap!r}).")
        if isinstance(self.sw_batch_size, bool) or not isinstance(self.sw_batch_size, int) or self.sw_batch_size < 0:
            raise ModelError(f"The sliding-window batch size must be a whole number of at least 1, or 0 to choose "
                             f"it for the device's free memory (got {self.sw_batch_size!r}).")


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    if out.dim() == 6:
        out = out[:, 0]
    return out


def _softmax_in_place(logits: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Softmax over classes of ``(C, X, Y, Z)``, a few slices at a time (no second full copy)."""
    for z in range(0, logits.shape[-1], chunk):
        logits[..., z:z + chunk] = torch.softmax(logits[..., z:z + chunk].float(), dim=0)
    return logits


def _accumulation_device(device: torch.device, classes: int, voxels: int) -> torch.device:
    """Where the sliding window sums its windows: the GPU while the sums take at most a
    quarter of its free memory, else host memory (windows still run on the GPU)."""
    free = free_bytes(device)
    if free is not None and classes * voxels * 4 * 3 > free / 4:
        return torch.device("cpu")
    return device


def sliding_window_tensor(
    model: nn.Module,
    image: np.ndarray,
    patch_size: Sequence[int],
    device: torch.device,
    options: Optional[InferenceOptions] = None,
    flip_axes: Sequence[int] = (),
    classes: int = 0,
) -> torch.Tensor:
    """Softmax probabilities ``(C, X, Y, Z)`` for a preprocessed image ``(X, Y, Z)`` (or
    ``(channels, X, Y, Z)``), as a
    tensor where the windows were summed (float16 above ``FLOAT16_ABOVE_BYTES``).

    With ``options.tta`` the image is also predicted mirrored along each of
    ``flip_axes`` and the un-mirrored probabilities averaged. ``classes`` (when known)
    lets a large prediction sum its windows in host memory instead of on the GPU.
    """
    from monai.inferers import sliding_window_inference

    options = options or InferenceOptions()
    report = _window_counter(options.on_progress, image.shape[-3:], patch_size, options.overlap,
                             1 + (len(flip_axes) if options.tta else 0))
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    x = (x[None, None] if x.dim() == 3 else x[None]).to(device)  # (X, Y, Z) or channels first
    roi = [int(p) for p in patch_size]
    use_amp = bool(options.amp and device.type == "cuda")
    sw_batch = sliding_window_batch(model, roi, device, use_amp, options.sw_batch_size)
    variants: List[Tuple[int, ...]] = [()]
    if options.tta:
        variants += [(a + 1,) for a in flip_axes]
    total: Optional[torch.Tensor] = None
    model.eval()
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        for dims in variants:
            inp = x.flip([d + 1 for d in dims]) if dims else x
            logits = sliding_window_inference(
                inp,
                roi_size=roi,
                sw_batch_size=sw_batch,
                predictor=lambda t: report(_forward(model, t), t.shape[0]),
                overlap=options.overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=float(image.min()) if image.size else 0.0,
                sw_device=device,
                device=_accumulation_device(device, classes, int(image.size)),
            )[0]
            del inp
            probs = _softmax_in_place(logits.float() if logits.dtype != torch.float32 else logits)
            if dims:
                probs = probs.flip(list(dims))
            total = probs if total is None else total.add_(probs)
            del logits, probs
    assert total is not None
    if len(variants) > 1:
        total /= len(variants)
    if total.numel() * 4 > FLOAT16_ABOVE_BYTES:
        total = total.half()
    return total


def _window_counter(on_progress: Optional[Callable[[float], None]], size: Sequence[int], patch: Sequence[int],
                    overlap: float, passes: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A pass-through for each batch of windows that tells ``on_progress`` the share done
    (MONAI's window count: per axis ``ceil((size - patch) / step) + 1``, ``step = patch * (1 - overlap)``)."""
    windows = 1
    for s, p in zip(size, patch):
        step = max(1, int(int(p) * (1.0 - overlap)))
        windows *= 1 if int(s) <= int(p) else int(math.ceil((int(s) - int(p)) / step)) + 1
    total, done = max(1, windows * passes), [0]

    def report(out: torch.Tensor, count: int) -> torch.Tensor:
        done[0] += int(count)
        if on_progress is not None:
            on_progress(min(1.0, done[0] / total))
        return out

    return report


def sliding_window_probabilities(
    model: nn.Module,
    image: np.ndarray,
    patch_size: Sequence[int],
    device: torch.device,
    options: Optional[InferenceOptions] = None,
    flip_axes: Sequence[int] = (),
) -> np.ndarray:
    """``sliding_window_tensor`` as a float32 numpy array (validation, tests)."""
    return sliding_window_tensor(model, image, patch_size, device, options, flip_axes).float().cpu().numpy()


@dataclass
class Prediction:
    """A prediction on the input's grid."""

    labelmap: sitk.Image
    labels: List[str]
    probabilities: Optional[np.ndarray] = None  # (C, X, Y, Z) on the input grid, when asked for
    uncertainty: Optional[sitk.Image] = None
    largest_component: List[str] = field(default_factory=list)  # classes reduced to their largest component


def model_probabilities(model: nn.Module, info: BaseModel, image, device: torch.device,
                        options: InferenceOptions) -> Tuple[torch.Tensor, PreprocessInfo]:
    """Preprocess ``image`` (or channel images) and predict: probabilities on the model's
    grid and how to invert it."""
    model.to(device)
    array, prep = preprocess_image(image, info.recipe)
    flips = tuple(info.card.get("training", {}).get("flip_axes", (1, 2))) if info.card else (1, 2)
    probs = sliding_window_tensor(model, array, info.patch_size, device, options, flips, len(info.labels))
    return probs, prep


def predict_image(
    model: nn.Module,
    info: BaseModel,
    image,
    device: str = "auto",
    options: Optional[InferenceOptions] = None,
    keep_probabilities: bool = False,
    uncertainty: bool = False,
    probabilities_path: Optional[Path] = None,
) -> Prediction:
    """Predict a labelmap for ``image`` (an image, or a list of channel images in
    the model's channel order) in its own geometry.

    Peak memory grows with the volume, not with volume × classes: the labelmap is
    restored block by block (``restore_blocks``). ``keep_probabilities`` returns every
    class on the input grid in memory (classes × voxels × 4 bytes: small volumes);
    ``probabilities_path`` (.mha) streams them to disk instead.
    """
    options = options or InferenceOptions()
    dev = resolve_device(device)
    channels = [image] if isinstance(image, sitk.Image) else list(image)
    expected = int(info.network.args.get("in_channels", 1))
    if len(channels) != expected:
        raise ModelError(f"The model '{info.name}' reads {expected} channel(s)"
                         f"{' (' + ', '.join(info.card.get('input_channels') or []) + ')' if info.card else ''}, "
                         f"but {len(channels)} image(s) were given.")
    image = channels[0]
    if info.recipe.nnunet is not None:
        return _predict_nnunet(model, info, channels, dev, options, keep_probabilities, uncertainty, probabilities_path)
    probs, prep = model_probabilities(model, info, channels[0] if len(channels) == 1 else channels, dev, options)
    labels_zyx = restore_labels(probs, prep, options.restore_budget_bytes)
    cleaned = cleanup_classes(info.labels, recorded_decisions(info.card, f"model '{info.name}'"), options.largest_component)
    if cleaned:
        labels_zyx = keep_largest_components(labels_zyx, cleaned, in_place=True)
    labelmap = sitk.GetImageFromArray(labels_zyx)
    del labels_zyx
    labelmap.CopyInformation(image)
    kept, unc = restored_outputs(probs, prep, keep_probabilities, uncertainty, probabilities_path,
                                 options.restore_budget_bytes)
    return Prediction(labelmap, list(info.labels), kept, unc, [info.labels[i] for i in cleaned])


def _predict_nnunet(model: nn.Module, info: BaseModel, channels: List[sitk.Image], dev: torch.device,
                    options: InferenceOptions, keep_probabilities: bool, uncertainty: bool,
                    probabilities_path: Optional[Path]) -> Prediction:
    """An nnU-Net model: nnU-Net's own sliding window and way back, so the labels are nnUNetv2_predict's.

    The labelmap alone is restored a slab at a time (``nnunet_restore``); every class on
    the input grid is computed only when probabilities or uncertainty are asked for."""
    image = channels[0]
    logits, prep = nnunet_window.predict_logits(model, image if len(channels) == 1 else channels,
                                                info.recipe.nnunet, dev, tta=options.tta,
                                                batch_size=options.sw_batch_size or 2, on_progress=options.on_progress)
    restored: Optional[np.ndarray] = None
    if keep_probabilities or uncertainty or probabilities_path is not None:
        restored = restore_logits(logits, prep)
        labels_zyx = np.ascontiguousarray(np.argmax(restored, axis=0).astype(np.uint8).transpose(2, 1, 0))
    else:
        labels_zyx = nnunet_restore.restore_labels(logits, prep)
    del logits
    cleaned = cleanup_classes(info.labels, recorded_decisions(info.card, f"model '{info.name}'"), options.largest_component)
    if cleaned:
        labels_zyx = keep_largest_components(labels_zyx, cleaned, in_place=True)
    labelmap = sitk.GetImageFromArray(labels_zyx)
    labelmap.CopyInformation(image)
    unc = None
    if uncertainty and restored is not None:
        unc = sitk.GetImageFromArray(normalized_entropy(torch.from_numpy(restored)).permute(2, 1, 0).numpy())
        unc.CopyInformation(image)
    if probabilities_path is not None and restored is not None:
        vector = sitk.GetImageFromArray(restored.transpose(3, 2, 1, 0), isVector=True)
        vector.CopyInformation(image)
        tmp = temporary_sibling(Path(probabilities_path))
        sitk.WriteImage(vector, str(tmp), useCompression=True)
        os.replace(tmp, probabilities_path)
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
    folds: Optional[Sequence[str]] = None,
    on_progress: Optional[Callable[[float], None]] = None,
) -> Prediction:
    """Read an image, predict, and write the labelmap (.nii.gz or .seg.nrrd) atomically.

    ``on_progress`` is told the share (0..1) of the sliding windows done.

    ``model_dir`` may also be an nnU-Net v2 trained model folder; ``folds`` picks its
    folds (default: every fold present, ensembled as ``nnUNetv2_predict`` does).

    ``image_path`` may name several channel files (``data.channels``: ``a,b`` or
    ``T1c=a,T1=b``, or a 4D file); they are put in the model's channel order.
    The labelmap and the optional probabilities and uncertainty images land
    together or not at all; an output that is an input or inside the model
    folder is refused before the model is even loaded.
    """
    from TransferSegLib.data.channels import order_channels, read_channels
    from TransferSegLib.data.images import check_not_blank
    from TransferSegLib.data.labelmaps import image_writer, prepare_labelmap
    from TransferSegLib.specs import parse_image_argument
    from TransferSegLib.names import label_color

    output_path = Path(output_path)
    if not (str(output_path).endswith((".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha"))):
        raise ModelError(f"Output '{output_path}' must end in .nii.gz, .nii, .seg.nrrd, .nrrd or .mha.")
    options = InferenceOptions(overlap=overlap, tta=tta, largest_component=largest_component, on_progress=on_progress)
    paths, names = parse_image_argument(str(image_path))
    check_outputs({"--output": output_path, "--probabilities": probabilities_path, "--uncertainty": uncertainty_path},
                  {"--image": paths, "--model": [model_dir, Path(model_dir) / "model.json", Path(model_dir) / "model.pt"]})
    model, info = load_model(Path(model_dir), "cpu", folds=folds)
    paths = order_channels(paths, names, list(info.card.get("input_channels") or []) if info.card else [],
                           int(info.network.args.get("in_channels", 1)), f"--image '{image_path}'")
    channels = read_channels(paths)
    for path, channel in zip(paths, channels):
        check_not_blank(channel, path)
    image = channels[0]
    if probabilities_path is not None:
        check_probabilities_path(Path(probabilities_path))
    # Streamed beside its destination, then landed together with the labelmap.
    streamed = temporary_sibling(probabilities_path, "stream") if probabilities_path is not None else None
    try:
        try:
            prediction = predict_image(model, info, channels if len(channels) > 1 else image, device, options,
                                       uncertainty=uncertainty_path is not None, probabilities_path=streamed)
        except OSError as exc:  # only the streamed probabilities touch the disk here
            raise output_error(probabilities_path or output_path, exc) from None
        names = {i: n for i, n in enumerate(info.labels) if i > 0}
        colors = {i: label_color(n, i) for i, n in names.items()}
        files = [(output_path, image_writer(prepare_labelmap(prediction.labelmap, str(output_path), names, colors)))]
        if streamed is not None:
            files.append((Path(probabilities_path), lambda temp: os.replace(streamed, temp)))
        if uncertainty_path is not None and prediction.uncertainty is not None:
            files.append((Path(uncertainty_path), image_writer(prediction.uncertainty)))
        write_group_atomically(files)
    finally:
        if streamed is not None:
            remove_quietly(streamed)
    return prediction
