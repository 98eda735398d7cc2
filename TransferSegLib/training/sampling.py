"""Foreground-balanced patch sampling.

Organs fill a small part of a CT: uniform random patches would mostly show
background and the rare classes would barely be seen in a few hundred
iterations. A fixed share of patches is centred on a voxel of a class chosen
uniformly among the classes the case contains (rare classes as often as large ones).
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

_MAX_INDICES_PER_CLASS = 20000


@dataclass
class PreparedCase:
    """A case on the model's grid, ready to sample: arrays are (X, Y, Z); a
    multi-channel image is (C, X, Y, Z) on the label's grid."""

    name: str
    image: np.ndarray
    label: np.ndarray
    annotated: np.ndarray  # (C,) bool
    region: Optional[np.ndarray] = None
    class_voxels: Dict[int, np.ndarray] = field(default_factory=dict)

    def index_foreground(self, rng: np.random.Generator) -> None:
        """Remember (a subsample of) each present class's voxel coordinates."""
        self.class_voxels = {}
        label = self.label if self.region is None else np.where(self.region, self.label, 0)
        flat = label.ravel()
        for value in np.unique(flat):
            if value == 0:
                continue
            idx = np.flatnonzero(flat == value)
            if idx.size > _MAX_INDICES_PER_CLASS:
                idx = rng.choice(idx, _MAX_INDICES_PER_CLASS, replace=False)
            self.class_voxels[int(value)] = np.stack(np.unravel_index(idx, label.shape), axis=1)


def _pad_to(array: np.ndarray, size: Sequence[int], value: float) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """Pad the last three axes up to ``size`` (leading channel axes untouched)."""
    lead = array.ndim - 3
    pads = [max(0, int(s) - d) for s, d in zip(size, array.shape[lead:])]
    if not any(pads):
        return array, (0, 0, 0)
    before = tuple(p // 2 for p in pads)
    widths = [(0, 0)] * lead + [(b, p - b) for b, p in zip(before, pads)]
    return np.pad(array, widths, mode="constant", constant_values=value), before


def sample_patch(
    case: PreparedCase,
    patch_size: Sequence[int],
    rng: np.random.Generator,
    foreground_ratio: float = 0.67,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (image, label, region) patch; padded voxels are outside the region."""
    region = case.region if case.region is not None else np.ones(case.label.shape, dtype=bool)
    pad_value = float(case.image.min()) if case.image.size else 0.0
    image, offset = _pad_to(case.image, patch_size, pad_value)
    label, _ = _pad_to(case.label, patch_size, 0)
    region, _ = _pad_to(region, patch_size, 0)
    shape = np.array(image.shape[-3:])
    size = np.array(patch_size)
    if case.class_voxels and rng.random() < foreground_ratio:
        cls = list(case.class_voxels)[rng.integers(len(case.class_voxels))]
        voxels = case.class_voxels[cls]
        centre = voxels[rng.integers(len(voxels))] + np.array(offset)
        start = centre - size // 2 + rng.integers(-(size // 4), size // 4 + 1)
    else:
        start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, size)])
    start = np.clip(start, 0, shape - size)
    sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, size))
    return image[(Ellipsis,) + sl], label[sl], region[sl].astype(bool)


def sample_batch(
    cases: List[PreparedCase],
    patch_size: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
    foreground_ratio: float = 0.67,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A batch: images (B, C, X, Y, Z) (C = 1 for one-channel cases), labels (B, X, Y, Z), regions, annotated (B, C)."""
    images, labels, regions, annotated = [], [], [], []
    for _ in range(batch_size):
        case = cases[rng.integers(len(cases))]
        img, lab, reg = sample_patch(case, patch_size, rng, foreground_ratio)
        images.append(img[None] if img.ndim == 3 else img)
        labels.append(lab)
        regions.append(reg)
        annotated.append(case.annotated)
    return (
        np.stack(images).astype(np.float32),
        np.stack(labels).astype(np.int64),
        np.stack(regions),
        np.stack(annotated).astype(bool),
    )
