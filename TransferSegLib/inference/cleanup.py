"""Clean-up after prediction: keep only the largest connected component, per class.

Keeping the largest component removes stray islands from an organ that is one
piece, but it deletes true parts of a class that is several pieces (a set of
vertebrae, the ribs, vessels, tumours) and, when an island is larger than the
organ, keeps the wrong blob. So the choice is made per class, the way nnU-Net
makes it: on the validation cases, the step is kept for a class when it raises
that class's mean Dice and dropped when it lowers it. Where the validation cases
say nothing (there are none, or the step changes nothing on them) the class's
anatomy decides: one connected organ or not (``ANATOMY`` below). The decisions
are stored in ``model.json`` (``cleanup``) and applied by every prediction unless
the caller overrides them.
"""

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from TransferSegLib.errors import ModelError
from TransferSegLib.names import normalize_label_name

#: Structures that are one connected piece in a CT or MR volume (names normalized,
#: TotalSegmentator's spelling and the plain English one).
SINGLE_ORGANS = frozenset({
    "liver", "spleen", "stomach", "pancreas", "heart", "gallbladder", "urinary_bladder", "bladder",
    "esophagus", "oesophagus", "trachea", "duodenum", "brain", "prostate", "sacrum", "sternum", "skull",
    "spinal_cord",
})

#: Paired structures: each side is one piece, so a name that says which side is
#: single ("kidney_left", "left kidney"); the bare name may mean both sides.
PAIRED_ORGANS = frozenset({
    "kidney", "lung", "adrenal_gland", "femur", "hip", "humerus", "scapula", "clavicula", "clavicle",
    "autochthon", "iliopsoas", "gluteus_maximus", "gluteus_medius", "gluteus_minimus",
})

#: Words that mark a class as several pieces whatever else its name says.
MULTI_PART_WORDS = frozenset({
    "tumor", "tumour", "lesion", "lesions", "metastasis", "metastases", "cyst", "cysts", "nodule", "nodules",
    "vessel", "vessels", "vein", "veins", "artery", "arteries", "ribs", "vertebrae", "vertebral", "column",
    "spine", "bowel", "colon", "lungs", "kidneys", "bones", "muscles", "cartilages", "lymph", "node", "nodes",
    "fat", "skin", "calcification", "stone", "stones",
})

_SIDES = ("left", "right")


def single_component_by_anatomy(name: str) -> bool:
    """Whether ``name`` is one connected structure (conservative: unknown names are not)."""
    key = normalize_label_name(name).replace("-", "_")
    words = [w for w in key.split("_") if w]
    if not words or any(w in MULTI_PART_WORDS for w in words):
        return False
    if key in SINGLE_ORGANS:
        return True
    sided = [w for w in words if w in _SIDES]
    rest = "_".join(w for w in words if w not in _SIDES)
    if len(sided) == 1 and (rest in PAIRED_ORGANS or rest in SINGLE_ORGANS):
        return True
    # One named bone of a set: "vertebrae_L1" is excluded above; "rib_left_3", "vertebra_t12" are single.
    if words[0] in ("rib", "vertebra") and len(words) >= 2:
        return True
    # Lobes of a lung: "lung_upper_lobe_left".
    return words[0] == "lung" and "lobe" in words and len(sided) == 1


@dataclass
class CleanupDecision:
    """Whether one class keeps only its largest component, and why."""

    keep_largest: bool
    decided_by: str  # "validation" or "anatomy"
    dice_raw: Optional[float] = None  # mean over the validation cases, without the step
    dice_cleaned: Optional[float] = None  # ... and with it

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "CleanupDecision":
        if isinstance(data, bool):
            return cls(keep_largest=data, decided_by="model.json")
        if not isinstance(data, dict) or not isinstance(data.get("keep_largest"), bool):
            raise ModelError(f"{where} must be true/false or an object with 'keep_largest': true/false, got {data!r}.")
        unknown = set(data) - {"keep_largest", "decided_by", "dice_raw", "dice_cleaned"}
        if unknown:
            raise ModelError(f"{where}: unknown fields {sorted(unknown)}.")
        return cls(bool(data["keep_largest"]), str(data.get("decided_by", "model.json")),
                   data.get("dice_raw"), data.get("dice_cleaned"))


def keep_largest_components(labels: np.ndarray, classes: Sequence[int], in_place: bool = False) -> np.ndarray:
    """For each class value in ``classes``, keep only its largest connected component (face connectivity).

    Each class is labelled inside its own bounding box, so the work and the int32
    component map scale with the organ, not with the scan."""
    from scipy import ndimage

    result = labels if in_place else labels.copy()
    boxes = ndimage.find_objects(labels)
    for value in classes:
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        if box is None:
            continue
        mask = result[box] == value
        components, count = ndimage.label(mask)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        result[box][mask & (components != sizes.argmax())] = 0
    return result


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    denom = int(pred.sum()) + int(ref.sum())
    return 1.0 if denom == 0 else 2.0 * float((pred & ref).sum()) / denom


def decide_cleanup(
    labels: Sequence[str],
    predictions: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    annotated: Optional[Sequence[Sequence[bool]]] = None,
) -> Dict[str, CleanupDecision]:
    """One decision per foreground class from raw predictions and references on the validation cases.

    ``predictions[i]`` and ``references[i]`` are label arrays of case ``i`` on one grid; ``annotated[i][c]``
    says whether case ``i`` annotates class ``c`` (a case that does not is not evidence for that class).
    With no cases every decision comes from the anatomy.
    """
    decisions: Dict[str, CleanupDecision] = {}
    for index, name in enumerate(labels):
        if index == 0:
            continue
        raw: List[float] = []
        cleaned: List[float] = []
        for case, (pred, ref) in enumerate(zip(predictions, references)):
            if annotated is not None and not annotated[case][index]:
                continue
            truth = ref == index
            raw.append(_dice(pred == index, truth))
            cleaned.append(_dice(keep_largest_components(pred, [index]) == index, truth))
        anatomy = single_component_by_anatomy(name)
        if not raw:
            decisions[name] = CleanupDecision(anatomy, "anatomy")
            continue
        before, after = round(float(np.mean(raw)), 4), round(float(np.mean(cleaned)), 4)
        if after == before:
            decisions[name] = CleanupDecision(anatomy, "anatomy", before, after)
        else:
            decisions[name] = CleanupDecision(after > before, "validation", before, after)
    return decisions


def anatomy_decisions(labels: Sequence[str]) -> Dict[str, CleanupDecision]:
    """Decisions from the anatomy alone (a model with no recorded decision, a training run without validation)."""
    return decide_cleanup(labels, [], [])


#: An override from the caller: None (the model's decisions), True/False (every class),
#: or class name -> True/False (those classes; the others keep the model's decisions).
CleanupOverride = Union[None, bool, Mapping[str, bool]]


def cleanup_classes(
    labels: Sequence[str], recorded: Optional[Mapping[str, CleanupDecision]], override: CleanupOverride = None
) -> List[int]:
    """The class values whose largest component is kept, for a model with ``labels``.

    ``recorded`` are the model's stored decisions (classes without one fall back to the anatomy).
    Class names in ``override`` that the model does not have are an error naming them.
    """
    if isinstance(override, bool):
        return list(range(1, len(labels))) if override else []
    decided = dict(anatomy_decisions(labels))
    known = {normalize_label_name(n): n for n in labels[1:]}
    for name, decision in (recorded or {}).items():
        if normalize_label_name(name) in known:
            decided[known[normalize_label_name(name)]] = decision
    chosen = {name: d.keep_largest for name, d in decided.items()}
    for name, value in (override or {}).items():
        key = normalize_label_name(name)
        if key not in known:
            raise ModelError(f"Largest-component override names '{name}', which the model does not predict; "
                             f"its classes are: {', '.join(labels[1:])}.")
        chosen[known[key]] = bool(value)
    return [i for i, name in enumerate(labels) if i > 0 and chosen.get(name, False)]


def recorded_decisions(card: Mapping[str, Any], where: str = "model.json") -> Dict[str, CleanupDecision]:
    """The per-class decisions stored in a model card's ``cleanup.largest_component`` (empty when absent)."""
    section = card.get("cleanup") if card else None
    if not section:
        return {}
    table = section.get("largest_component") if isinstance(section, dict) else None
    if not isinstance(table, dict):
        raise ModelError(f"{where}: 'cleanup' must hold 'largest_component': an object of class name -> decision.")
    return {str(name): CleanupDecision.from_dict(value, f"{where} cleanup.largest_component.{name}")
            for name, value in table.items()}


def cleanup_record(decisions: Mapping[str, CleanupDecision]) -> Dict[str, Any]:
    """The ``cleanup`` section of ``model.json`` for these decisions."""
    return {"largest_component": {name: d.to_dict() for name, d in decisions.items()}}
