"""Cases: an image, its labelmap, what the labels mean and what was actually annotated.

Two facts matter as much as the voxels: *which classes* a case annotates (partial
labels: an organ nobody drew is unknown, not background) and *where* it was
annotated (sparse labels: only some slices drawn). Both travel with the case into
the loss. Inputs come as repeated --image/--label pairs or an nnU-Net / Medical
Segmentation Decathlon ``dataset.json``.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import CaseError
from .imageio import align_to_image, read_image, read_labelmap
from .names import index_by_name, normalize_label_name


@dataclass
class Case:
    """One training or test case as files. ``annotated=None``: every named class is annotated."""

    image: str
    label: Optional[str] = None
    label_names: Dict[int, str] = field(default_factory=dict)
    annotated: Optional[List[str]] = None
    region: Optional[str] = None
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            base = Path(self.image).name
            for ext in (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".mha", ".mhd", ".mrc"):
                if base.lower().endswith(ext):
                    base = base[: -len(ext)]
                    break
            self.name = base[:-5] if base.endswith("_0000") else base
        self.label_names = {int(k): str(v) for k, v in (self.label_names or {}).items()}

    def to_dict(self) -> Dict[str, Any]:
        return {"image": self.image, "label": self.label, "label_names": {str(k): v for k, v in self.label_names.items()},
                "annotated": self.annotated, "region": self.region, "name": self.name}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Case":
        known = {"image", "label", "label_names", "annotated", "region", "name"}
        unknown = set(data) - known
        if unknown:
            raise CaseError(f"Unknown case fields {sorted(unknown)} in {data!r}.")
        if "image" not in data:
            raise CaseError(f"Case {data!r} has no 'image'.")
        return cls(**data)


@dataclass
class LoadedCase:
    """A case read and checked; ``label`` values are indices into the target label list."""

    name: str
    image: sitk.Image
    label: Optional[sitk.Image]
    annotated: np.ndarray  # (len(target_labels),) bool
    present: np.ndarray  # (len(target_labels),) bool: class has voxels in this case
    region: Optional[sitk.Image] = None


def cases_from_pairs(images: List[str], labels: List[str], label_names: Optional[List[str]]) -> List[Case]:
    """Cases from repeated --image/--label. For plain labelmaps ``label_names`` names values 1..N."""
    if len(images) != len(labels):
        raise CaseError(f"Got {len(images)} images but {len(labels)} labelmaps: give one --label per --image.")
    cases = []
    for image, label in zip(images, labels):
        if str(label).lower().endswith(".seg.nrrd"):
            cases.append(Case(image=image, label=label, annotated=list(label_names) if label_names else None))
        else:
            names = {i + 1: n for i, n in enumerate(label_names or [])}
            cases.append(Case(image=image, label=label, label_names=names))
    return cases


def _resolve(root: Path, entry: str) -> str:
    path = Path(entry)
    return str(path if path.is_absolute() else (root / path).resolve())


def cases_from_manifest(path: str) -> Tuple[List[Case], Dict[str, Any]]:
    """Cases from an nnU-Net v2 or Decathlon ``dataset.json``; returns (cases, extras)."""
    manifest = Path(path).expanduser()
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError(f"Cannot read dataset manifest '{manifest}': {exc}") from exc
    except ValueError as exc:
        raise CaseError(f"Dataset manifest '{manifest}' is not valid JSON: {exc}") from exc
    labels = data.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise CaseError(f"Dataset manifest '{manifest}' has no 'labels' table.")
    names: Dict[int, str] = {}
    for key, value in labels.items():
        if str(key).lstrip("-").isdigit():  # Decathlon: value → name
            names[int(key)] = str(value)
        elif isinstance(value, int):  # nnU-Net v2: name → value
            names[value] = str(key)
        else:
            raise CaseError(
                f"Dataset manifest '{manifest}': label '{key}' maps to {value!r}; region-based labels "
                f"(lists of values) are not supported, give one value per class."
            )
    names.pop(0, None)
    root = manifest.parent
    entries = data.get("training")
    cases: List[Case] = []
    if entries:
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise CaseError(f"Dataset manifest '{manifest}': training entry {i} needs 'image' and 'label'.")
            extra = {k: entry[k] for k in ("annotated", "region", "name") if k in entry}
            if "region" in extra:
                extra["region"] = _resolve(root, extra["region"])
            entry_names = {int(k): v for k, v in entry.get("label_names", {}).items()} or dict(names)
            cases.append(Case(image=_resolve(root, entry["image"]), label=_resolve(root, entry["label"]),
                              label_names=entry_names, **extra))
    else:
        ending = data.get("file_ending", ".nii.gz")
        images = sorted((root / "imagesTr").glob(f"*_0000{ending}"))
        for image in images:
            case_id = image.name[: -len(f"_0000{ending}")]
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not label.exists():
                raise CaseError(f"Dataset manifest '{manifest}': case '{case_id}' has no labelmap '{label}'.")
            cases.append(Case(image=str(image), label=str(label), label_names=dict(names), name=case_id))
    if not cases:
        raise CaseError(f"Dataset manifest '{manifest}' lists no training cases.")
    expected = data.get("numTraining")
    if isinstance(expected, int) and expected != len(cases):
        raise CaseError(f"Dataset manifest '{manifest}' says numTraining={expected} but {len(cases)} cases were found.")
    extras = {k: data[k] for k in ("name", "modality", "channel_names", "description") if k in data}
    return cases, extras


def load_case(case: Case, target_labels: List[str]) -> LoadedCase:
    """Read and check a case; remap its labels to ``target_labels`` (background first)."""
    image = read_image(case.image)
    n = len(target_labels)
    annotated = np.zeros(n, bool)
    annotated[0] = True
    present = np.zeros(n, bool)
    if not case.label:
        return LoadedCase(case.name, image, None, annotated, present, None)
    lab = read_labelmap(case.label, reference=image)
    lab.image = align_to_image(image, lab.image, case.image, case.label)
    names = dict(case.label_names) or dict(lab.names)
    array = sitk.GetArrayFromImage(lab.image)
    values = np.unique(array)
    if values.size == 1 and values[0] == 0:
        raise CaseError(f"Labelmap '{case.label}' is empty (all voxels are 0): draw at least one structure.")
    if not names:
        raise CaseError(
            f"Labelmap '{case.label}' carries no label names: give --labels NAME[,NAME] naming values 1..N."
        )
    undeclared = [int(v) for v in values if v != 0 and int(v) not in names]
    if undeclared:
        raise CaseError(
            f"Labelmap '{case.label}' contains label values {undeclared} that are not among its declared "
            f"labels {sorted(names)} ({', '.join(names[k] for k in sorted(names))}). Name them (--labels) or remove them."
        )
    wanted = None if case.annotated is None else {normalize_label_name(n) for n in case.annotated}
    target_index = index_by_name(target_labels)
    lut = np.zeros(int(max(values.max(), max(names))) + 1, np.uint8)
    for value, name in names.items():
        key = normalize_label_name(name)
        if wanted is not None and key not in wanted:
            continue
        index = target_index.get(key)
        if index is None or index == 0:
            continue
        lut[value] = index
        annotated[index] = True
    remapped = lut[array]
    present[np.unique(remapped)] = True
    label = sitk.GetImageFromArray(remapped)
    label.CopyInformation(image)
    region = None
    if case.region:
        reg = read_labelmap(case.region, reference=image)
        reg.image = align_to_image(image, reg.image, case.image, case.region)
        region_array = (sitk.GetArrayFromImage(reg.image) > 0).astype(np.uint8)
        if not region_array.any():
            raise CaseError(f"Annotated-region mask '{case.region}' is empty: it must mark the voxels whose labels are known.")
        region = sitk.GetImageFromArray(region_array)
        region.CopyInformation(image)
    return LoadedCase(case.name, image, label, annotated, present, region)
