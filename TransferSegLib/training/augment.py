"""Augmentation of training batches, on tensors so it runs on the training device.

Small rotations, scaling and intensity changes make a handful of cases look
like more. Mirroring never crosses left and right: the body is not symmetric
(liver right, spleen and stomach left), so a left-right flip shows the network
an organ on the wrong side, and with one or two training cases it learns to
find the spleen where the liver is (seen in the spleen experiment: held-out
Dice 0 with the prediction on the liver). Labels that name a side ("kidney
left") would be wrong twice over.
"""

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    flip_axes: Tuple[int, ...] = (1, 2)  # spatial axes (X, Y, Z) allowed to mirror; never X (left-right)
    flip_prob: float = 0.5
    rotate_prob: float = 0.3
    max_rotation_deg: float = 15.0
    scale_prob: float = 0.3
    scale_range: Tuple[float, float] = (0.85, 1.15)
    intensity_prob: float = 0.3
    noise_std: float = 0.03

    @classmethod
    def for_labels(cls, labels: Sequence[str]) -> "AugmentConfig":
        """Mirror along Y and Z only, whatever the labels (see the module docstring)."""
        return cls(flip_axes=(1, 2))


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    regions: torch.Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
    noise_generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment ``images (B,1,X,Y,Z)``, ``labels (B,X,Y,Z)``, ``regions (B,X,Y,Z)`` together,
    on the tensors' device.

    ``generator`` lives on the CPU: the few scalar draws (which transforms, angles)
    then never wait for the GPU. The noise field comes from ``noise_generator`` when
    it is on the images' device (no host-to-device copy), else from ``generator``.
    """
    b = images.shape[0]
    out_i, out_l, out_r = [], [], []
    for n in range(b):
        img, lab, reg = images[n : n + 1], labels[n : n + 1], regions[n : n + 1]
        img, lab, reg = _spatial(img, lab, reg, config, generator)
        img = _intensity(img, config, generator, noise_generator)
        for axis in config.flip_axes:
            if _draw(generator) < config.flip_prob:
                img = img.flip(axis + 2)
                lab = lab.flip(axis + 1)
                reg = reg.flip(axis + 1)
        out_i.append(img)
        out_l.append(lab)
        out_r.append(reg)
    return torch.cat(out_i), torch.cat(out_l), torch.cat(out_r)


def _draw(generator: torch.Generator) -> float:
    return float(torch.rand(1, generator=generator))


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * _draw(generator)


def _spatial(img, lab, reg, config: AugmentConfig, generator: torch.Generator):
    rotate = _draw(generator) < config.rotate_prob
    scale = _draw(generator) < config.scale_prob
    if not rotate and not scale:
        return img, lab, reg
    angle = math.radians(_uniform(generator, -config.max_rotation_deg, config.max_rotation_deg)) if rotate else 0.0
    factor = _uniform(generator, *config.scale_range) if scale else 1.0
    # Rotation in the axial (X, Y) plane: patient anatomy varies most there.
    cos, sin = math.cos(angle) / factor, math.sin(angle) / factor
    # For a (B, C, X, Y, Z) tensor affine_grid's coordinate rows run over (Z, Y, X):
    # rows 1 and 2 form the axial plane.
    theta = torch.tensor(
        [[[1.0 / factor, 0.0, 0.0, 0.0], [0.0, cos, -sin, 0.0], [0.0, sin, cos, 0.0]]],
        dtype=img.dtype,
        device=img.device,
    )
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    lab = F.grid_sample(lab[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    reg = F.grid_sample(reg[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return img, lab[:, 0].round().long(), reg[:, 0] > 0.5


def _intensity(img: torch.Tensor, config: AugmentConfig, generator: torch.Generator,
               noise_generator: Optional[torch.Generator] = None) -> torch.Tensor:
    if _draw(generator) < config.intensity_prob:
        img = img * _uniform(generator, 0.9, 1.1) + _uniform(generator, -0.05, 0.05)
    if _draw(generator) < config.intensity_prob and config.noise_std > 0:
        if noise_generator is not None and noise_generator.device == img.device:
            noise = torch.randn(img.shape, generator=noise_generator, dtype=img.dtype, device=img.device)
        else:
            noise = torch.randn(img.shape, generator=generator, dtype=img.dtype).to(img.device)
        img = img + noise * config.noise_std
    return img
