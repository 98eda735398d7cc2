"""Label names: one normalization so that models, cases and scenes match by name.

Matching by name (not by label value) is what lets a fine-tuned head keep the
pretrained channels of organs the base model already knows.
"""

import re
from typing import Dict, Iterable, List, Sequence, Tuple

BACKGROUND = "background"

# A fixed, distinguishable palette for segments without a known color (RGB in 0..1).
_PALETTE: Tuple[Tuple[float, float, float], ...] = (
    (0.86, 0.49, 0.36), (0.62, 0.80, 0.35), (0.35, 0.60, 0.86), (0.94, 0.82, 0.33),
    (0.69, 0.42, 0.80), (0.33, 0.80, 0.75), (0.93, 0.45, 0.62), (0.55, 0.55, 0.30),
    (0.90, 0.65, 0.20), (0.40, 0.40, 0.85), (0.75, 0.30, 0.30), (0.30, 0.70, 0.40),
)

# Colors close to Slicer's generic anatomy colors for organs users segment most.
_KNOWN_COLORS: Dict[str, Tuple[float, float, float]] = {
    "liver": (0.867, 0.510, 0.396),
    "spleen": (0.616, 0.424, 0.635),
    "kidney_left": (0.725, 0.400, 0.325),
    "kidney_right": (0.725, 0.400, 0.325),
    "kidney": (0.725, 0.400, 0.325),
    "pancreas": (0.976, 0.706, 0.435),
    "stomach": (0.847, 0.702, 0.525),
    "gallbladder": (0.545, 0.588, 0.310),
    "aorta": (0.878, 0.380, 0.298),
    "lung_left": (0.773, 0.098, 0.388),
    "lung_right": (0.086, 0.773, 0.278),
    "left_lung": (0.773, 0.098, 0.388),
    "right_lung": (0.086, 0.773, 0.278),
    "heart": (0.808, 0.353, 0.325),
    "tumor": (0.565, 0.933, 0.565),
    "liver_tumor": (0.565, 0.933, 0.565),
    "brain": (0.980, 0.980, 0.882),
}


def normalize_label_name(name: str) -> str:
    """Lower case, with runs of spaces, hyphens and dots turned into one underscore."""
    return re.sub(r"[\s\-.]+", "_", str(name).strip().lower()).strip("_")


def label_color(name: str, index: int) -> Tuple[float, float, float]:
    """The display color of a label: a known organ color, else a palette entry."""
    known = _KNOWN_COLORS.get(normalize_label_name(name))
    if known is not None:
        return known
    return _PALETTE[(max(index, 1) - 1) % len(_PALETTE)]


def with_background(names: Iterable[str]) -> List[str]:
    """The model label list for target class names: background first, no duplicates."""
    result = [BACKGROUND]
    seen = {BACKGROUND}
    for name in names:
        key = normalize_label_name(name)
        if key and key not in seen:
            result.append(str(name).strip())
            seen.add(key)
    return result


def index_by_name(labels: Sequence[str]) -> Dict[str, int]:
    """Map normalized name → channel index for a model's label list."""
    return {normalize_label_name(n): i for i, n in enumerate(labels)}
