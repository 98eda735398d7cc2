"""nnU-Net v2's sliding-window prediction, so an nnU-Net model predicts here as ``nnUNetv2_predict`` does.

What nnU-Net's predictor does and this reproduces: the preprocessed image is
padded with zeros (centred) to at least one patch; windows start at evenly spread
positions with at most half a patch between them (``tile_step_size`` 0.5); each
window's *logits* are weighted by a Gaussian importance map (sigma = patch / 8,
peak 10, zeros replaced by the smallest nonzero weight) and accumulated; the sum
is divided by the summed weights. With mirroring, every combination of the
allowed axes is predicted and the logits averaged. Several folds are averaged in
logit space by the network itself (``models.nnunet.NnunetEnsemble``).
"""

import itertools
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from TransferSegLib.data.nnunet_preprocess import NnunetPreprocessInfo, preprocess_image, restore_logits
from TransferSegLib.data.nnunet_recipe import NnunetRecipe


def window_starts(image_size: Sequence[int], patch: Sequence[int], step: float = 0.5) -> List[List[int]]:
    """Per axis, the first voxel of every window (nnU-Net's ``compute_steps_for_sliding_window``)."""
    starts = []
    for size, tile in zip(image_size, patch):
        count = int(np.ceil((size - tile) / (tile * step))) + 1
        stride = (size - tile) / (count - 1) if count > 1 else 0.0
        starts.append([int(np.round(stride * i)) for i in range(count)])
    return starts


def gaussian_weights(patch: Sequence[int], sigma_scale: float = 1.0 / 8, peak: float = 10.0) -> np.ndarray:
    """nnU-Net's importance map: a centred Gaussian, maximum ``peak``, no zeros."""
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros(tuple(patch))
    tmp[tuple(p // 2 for p in patch)] = 1.0
    weights = gaussian_filter(tmp, [p * sigma_scale for p in patch], 0, mode="constant", cval=0)
    weights /= weights.max() / peak
    weights = weights.astype(np.float32)
    weights[weights == 0] = weights[weights != 0].min()
    return weights


def _pad_to_patch(image: torch.Tensor, patch: Sequence[int]) -> Tuple[torch.Tensor, Tuple[slice, ...]]:
    """Zero padding up to the patch size, centred (the odd voxel above), and the slices that undo it."""
    shape = image.shape[-3:]
    below = [max(p - s, 0) // 2 for s, p in zip(shape, patch)]
    above = [max(p - s, 0) - b for s, p, b in zip(shape, patch, below)]
    if not any(below) and not any(above):
        return image, tuple(slice(None) for _ in shape)
    pad: List[int] = []
    for b, a in zip(reversed(below), reversed(above)):
        pad += [b, a]
    padded = torch.nn.functional.pad(image, pad, mode="constant", value=0.0)
    return padded, tuple(slice(b, b + s) for b, s in zip(below, shape))


def _mirrored(model: nn.Module, x: torch.Tensor, axes: Optional[Sequence[int]]) -> torch.Tensor:
    out = model(x)
    if not axes:
        return out
    combos = [c for n in range(1, len(axes) + 1) for c in itertools.combinations([a + 2 for a in axes], n)]
    for dims in combos:
        out = out + torch.flip(model(torch.flip(x, dims)), dims)
    return out / (len(combos) + 1)


def sliding_window_logits(model: nn.Module, image: np.ndarray, patch: Sequence[int], device: torch.device,
                          mirror_axes: Optional[Sequence[int]] = None, batch_size: int = 2,
                          step: float = 0.5, on_progress: Optional[Callable[[float], None]] = None) -> np.ndarray:
    """Logits ``(classes, *spatial)`` for a preprocessed ``image`` (``(D0, D1, D2)`` or ``(C, D0, D1, D2)``)."""
    patch = [int(p) for p in patch]
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    x = x[None] if x.dim() == 3 else x
    x, unpad = _pad_to_patch(x, patch)
    size = x.shape[1:]
    weights = torch.from_numpy(gaussian_weights(patch)).to(device)
    boxes = [tuple(slice(s, s + p) for s, p in zip(start, patch))
             for start in itertools.product(*window_starts(size, patch, step))]
    logits: Optional[torch.Tensor] = None
    total = torch.zeros(tuple(size), dtype=torch.float32, device=device)
    x = x.to(device)
    model.eval()
    use_amp = device.type == "cuda"
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        for first in range(0, len(boxes), max(1, int(batch_size))):
            group = boxes[first:first + max(1, int(batch_size))]
            batch = torch.stack([x[(slice(None),) + box] for box in group])
            out = _mirrored(model, batch, mirror_axes).float()
            if logits is None:
                logits = torch.zeros((out.shape[1],) + tuple(size), dtype=torch.float32, device=device)
            for box, window in zip(group, out):
                logits[(slice(None),) + box] += window * weights
                total[box] += weights
            if on_progress is not None:
                on_progress(min(1.0, (first + len(group)) / len(boxes)))
    assert logits is not None
    logits /= total
    return logits[(slice(None),) + unpad].cpu().numpy()


def predict_logits(model: nn.Module, image: Union[sitk.Image, Sequence[sitk.Image]], recipe: NnunetRecipe,
                   device: torch.device, tta: bool = False, batch_size: int = 2,
                   on_progress: Optional[Callable[[float], None]] = None) -> Tuple[np.ndarray, NnunetPreprocessInfo]:
    """nnU-Net's preprocessing and sliding window: logits on the network's grid and the way back
    (``tta``: mirroring along the checkpoint's allowed axes; off is ``--disable_tta``)."""
    array, info = preprocess_image(image, recipe)
    logits = sliding_window_logits(model.to(device), array, recipe.patch_size, device,
                                   recipe.mirror_axes if tta else None, batch_size, on_progress=on_progress)
    return logits, info


def predict_probabilities(model: nn.Module, image: Union[sitk.Image, Sequence[sitk.Image]], recipe: NnunetRecipe,
                          device: torch.device,
                          tta: bool = False, batch_size: int = 2) -> np.ndarray:
    """Softmax probabilities ``(C, X, Y, Z)`` on ``image``'s grid, as ``nnUNetv2_predict`` computes them."""
    return restore_logits(*predict_logits(model, image, recipe, device, tta, batch_size))
