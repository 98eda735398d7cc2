"""Dice + cross-entropy that learns only from what a case actually annotates.

Two kinds of missing annotation are common in the data TransferSeg is built for:
*partial labels* (a case annotates the liver but not the spleen: spleen voxels
carry label 0) and *sparse labels* (only some slices were drawn). Treating either
as background teaches the network that unannotated organs are background.

- Partial labels use the marginal loss: the probabilities of the classes a case
  does not annotate are merged into background before the loss, so moving
  probability between background and an unannotated class never changes the loss.
- Sparse labels use a region mask: voxels outside it do not count at all.
"""

from typing import Optional

import torch
import torch.nn.functional as F


def partial_label_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor,
    region: Optional[torch.Tensor] = None,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Marginal Dice + CE.

    Args:
        logits: ``(B, C, X, Y, Z)`` raw network outputs, channel 0 = background.
        target: ``(B, X, Y, Z)`` integer labels in ``[0, C)``.
        annotated: ``(B, C)`` bool, which classes each case annotates
            (channel 0 is always treated as annotated).
        region: optional ``(B, X, Y, Z)`` bool, voxels whose labels are known.

    Returns:
        A scalar loss. With no known voxel in the batch it is 0 (still attached to the graph).
    """
    b, c = logits.shape[:2]
    annotated = annotated.to(device=logits.device, dtype=torch.bool).clone()
    annotated[:, 0] = True
    target = target.long()
    logits = logits.float()
    valid = torch.ones_like(target, dtype=torch.bool) if region is None else region.to(torch.bool)
    n_valid = valid.sum()
    if n_valid == 0:
        return logits.sum() * 0.0

    # A target value naming a class the case does not annotate cannot happen by
    # construction; guard anyway so such voxels count as "background or unknown".
    target_annotated = annotated.gather(1, target.reshape(b, -1)).reshape_as(target)
    target = torch.where(target_annotated, target, torch.zeros_like(target))

    log_norm = torch.logsumexp(logits, dim=1)  # (B, X, Y, Z)
    merged_mask = (~annotated).clone()
    merged_mask[:, 0] = True  # background + every unannotated class
    spatial = (None,) * (logits.dim() - 2)
    neg_inf = torch.finfo(logits.dtype).min
    merged_logits = logits.masked_fill(~merged_mask[(slice(None), slice(None)) + spatial], neg_inf)
    log_p_merged = torch.logsumexp(merged_logits, dim=1) - log_norm
    log_p_target = logits.gather(1, target.unsqueeze(1)).squeeze(1) - log_norm
    log_p = torch.where(target == 0, log_p_merged, log_p_target)
    ce = -(log_p * valid).sum() / n_valid

    probs = torch.softmax(logits, dim=1)
    one_hot = F.one_hot(target, c).movedim(-1, 1).to(probs.dtype)
    weight = valid.unsqueeze(1).to(probs.dtype)
    dims = tuple(range(2, logits.dim()))
    intersect = (probs * one_hot * weight).sum(dims)  # (B, C)
    pred_sum = (probs * weight).sum(dims)
    ref_sum = (one_hot * weight).sum(dims)
    fg = annotated.clone()
    fg[:, 0] = False  # merged background is not a Dice class
    fg_w = fg.to(probs.dtype)
    # Batch Dice per class (sums over the cases that annotate it), as nnU-Net does:
    # stable on patches where a class is small or absent.
    i_c = (intersect * fg_w).sum(0)
    p_c = (pred_sum * fg_w).sum(0)
    r_c = (ref_sum * fg_w).sum(0)
    present = fg.any(0)
    if present.any():
        dice = (2 * i_c + smooth) / (p_c + r_c + smooth)
        dice_loss = 1.0 - dice[present].mean()
    else:
        dice_loss = logits.sum() * 0.0
    return ce_weight * ce + dice_weight * dice_loss
