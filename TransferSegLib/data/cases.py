"""Cases: an image, its labelmap, what the labels mean and what was actually annotated.

Two facts matter as much as the voxels: *which classes* a case annotates (partial
labels: an organ nobody drew is unknown, not background) and *where* it was
annotated (sparse labels: only some slices drawn). Both travel with the case into
the loss. Inputs come as repeated --image/--label pairs or an nnU-Net v2 / Medical
Segmentation Decathlon ``dataset.json``.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from TransferSegLib.errors import CaseError
from TransferSegLib.data.imageio import align_to_image, is_seg_nrrd, read_image, read_labelmap, read_segment_names
from TransferSegLib.names import index_by_name, normalize_label_name

_CASE_FIELDS = ("image", "label", "label_names", "annotated", "region", "name")
_NAME_SUFFIXES = (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".mrc")


@dataclass
class Case:
    """One training or test case as files.

    ``label_names``: label value → class name of the labelmap (for ``.seg.nrrd`` the
    file's own segment names are used). ``annotated``: the class names this case
    annotates; ``None`` means every named class. ``region``: a mask file whose
    nonzero voxels are those whose labels are known (sparse annotation).
    """

    image: str
    label: Optional[str] = None
    label_names: Dict[int, str] = field(default_factory=dict)
    annotated: Optional[List[str]] = None
    region: Optional[str] = None
    name: str = ""

    def __post_init__(self) -> None:
        self.image = str(self.image)
        self.label = str(self.label) if self.label else None
        self.region = str(self.region) if self.region else None
        if not self.name:
            base = Path(self.image.rstrip("/\\")).name
            for suffix in _NAME_SUFFIXES:
                if base.lower().endswith(suffix):
                    base = base[: -len(suffix)]
                    break
            self.name = base[:-5] if base.endswith("_0000") else base
        try:
            self.label_names = {int(k): str(v) for k, v in (self.label_names or {}).items()}
        except (TypeError, ValueError, AttributeError):
            raise CaseError(f"Case '{self.name}': label_names must map label values (integers) to names, "
                            f"got {self.label_names!r}.") from None
        if self.annotated is not None:
            if isinstance(self.annotated, str) or not all(isinstance(n, str) for n in self.annotated):
                raise CaseError(f"Case '{self.name}': 'annotated' must be a list of class names, got {self.annotated!r}.")
            self.annotated = list(self.annotated)

    def to_dict(self) -> Dict[str, Any]:
        return {"image": self.image, "label": self.label, "label_names": {str(k): v for k, v in self.label_names.items()},
                "annotated": self.annotated, "region": self.region, "name": self.name}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Case":
        if not isinstance(data, dict):
            raise CaseError(f"A case must be an object with 'image' (and 'label'), got {data!r}.")
        unknown = set(data) - set(_CASE_FIELDS)
        if unknown:
            raise CaseError(f"Unknown case fields {sorted(unknown)} in {data!r}; known: {list(_CASE_FIELDS)}.")
        if not data.get("image"):
            raise CaseError(f"Case {data!r} has no 'image'.")
        return cls(**data)


@dataclass
class LoadedCase:
    """A case read and checked, on the image's grid.

    ``label`` values are indices into the target label list (0 = background, also
    for classes outside the target list). ``annotated[i]``: this case tells where
    target class ``i`` is (and is not); background is always annotated.
    ``present[i]``: class ``i`` has voxels in this case. ``region``: UInt8 mask of
    the voxels whose labels are known, or ``None`` for all of them.
    """

    name: str
    image: sitk.Image
    label: Optional[sitk.Image]
    annotated: np.ndarray
    present: np.ndarray
    region: Optional[sitk.Image] = None

    def annotated_labels(self, target_labels: List[str]) -> List[str]:
        """The target class names (without background) this case provides."""
        return [n for i, n in enumerate(target_labels) if i > 0 and self.annotated[i]]


def cases_from_pairs(images: List[str], labels: List[str], label_names: Optional[List[str]]) -> List[Case]:
    """Cases from repeated --image/--label.

    Plain labelmaps: ``label_names`` names values 1..N in order. ``.seg.nrrd``: names
    come from the file, and ``label_names`` (if given) selects the segments annotated.
    """
    if len(images) != len(labels):
        raise CaseError(f"Got {len(images)} images but {len(labels)} labelmaps: give one --label per --image.")
    cases = []
    for image, label in zip(images, labels):
        if is_seg_nrrd(label):
            file_names = read_segment_names(label)
            selected = None
            if label_names:
                known = {normalize_label_name(n) for n in file_names.values()}
                missing = [n for n in label_names if normalize_label_name(n) not in known]
                if missing:
                    raise CaseError(f"'{label}' has no segment named {', '.join(repr(m) for m in missing)}; its "
                                    f"segments are: {', '.join(file_names.values()) or '(none)'}.")
                selected = list(label_names)
            cases.append(Case(image=image, label=label, label_names=file_names, annotated=selected))
        else:
            cases.append(Case(image=image, label=label, label_names={i + 1: n for i, n in enumerate(label_names or [])}))
    return cases


# --- manifests ------------------------------------------------------------------------------------

def _resolve(root: Path, entry: Any, manifest: Path, where: str) -> str:
    if not isinstance(entry, str) or not entry:
        raise CaseError(f"Dataset manifest '{manifest}', {where}: expected a file path, got {entry!r}.")
    path = Path(entry).expanduser()
    path = path if path.is_absolute() else (root / path)
    if not path.exists():
        raise CaseError(f"Dataset manifest '{manifest}', {where}: '{path}' does not exist.")
    return str(path.resolve())


def _manifest_labels(labels: Any, manifest: Path) -> Dict[int, str]:
    if not isinstance(labels, dict) or not labels:
        raise CaseError(f"Dataset manifest '{manifest}' has no 'labels' table (value → name or name → value).")
    names: Dict[int, str] = {}
    for key, value in labels.items():
        if str(key).strip().isdigit():  # Decathlon: value → name
            names[int(key)] = str(value)
        elif isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: name → value
            names[value] = str(key)
        else:
            raise CaseError(
                f"Dataset manifest '{manifest}': label '{key}' maps to {value!r}; region-based labels "
                f"(lists of values) are not supported, give one value per class."
            )
    names.pop(0, None)
    return names


def _extra_fields(entry: Dict[str, Any], names: Dict[int, str], root: Path, manifest: Path, where: str) -> Dict[str, Any]:
    extra: Dict[str, Any] = {}
    if entry.get("annotated") is not None:
        annotated = entry["annotated"]
        if isinstance(annotated, str) or not isinstance(annotated, list) or not all(isinstance(n, str) for n in annotated):
            raise CaseError(f"Dataset manifest '{manifest}', {where}: 'annotated' must be a list of class names.")
        known = {normalize_label_name(n) for n in names.values()}
        unknown = [n for n in annotated if normalize_label_name(n) not in known]
        if unknown:
            raise CaseError(f"Dataset manifest '{manifest}', {where}: 'annotated' names {unknown}, which are not "
                            f"among the labels {sorted(names.values())}.")
        extra["annotated"] = list(annotated)
    if entry.get("region"):
        extra["region"] = _resolve(root, entry["region"], manifest, f"{where} 'region'")
    if entry.get("name"):
        extra["name"] = str(entry["name"])
    return extra


def _single_channel(data: Dict[str, Any], manifest: Path) -> None:
    channels = data.get("channel_names", data.get("modality"))
    if isinstance(channels, dict) and len(channels) > 1:
        raise CaseError(f"Dataset manifest '{manifest}' declares {len(channels)} input channels "
                        f"({', '.join(map(str, channels.values()))}): TransferSeg trains on single-channel images.")


def cases_from_manifest(path: str) -> Tuple[List[Case], Dict[str, Any]]:
    """Cases from an nnU-Net v2 or Decathlon ``dataset.json``; returns (cases, extras).

    Decathlon: ``labels`` value → name and ``training: [{image, label}]``.
    nnU-Net v2: ``labels`` name → value, ``file_ending``, ``imagesTr/<id>_0000<ending>``
    with ``labelsTr/<id><ending>`` (or a ``dataset`` object of entries). Entries may
    add ``annotated`` (class names) and ``region`` (a mask path). Extras: the
    manifest's ``name``, ``description``, ``modality``/``channel_names``,
    ``file_ending`` and ``labels`` (class names in value order).
    """
    manifest = Path(path).expanduser()
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseError(f"Cannot read dataset manifest '{manifest}': {exc}") from exc
    except ValueError as exc:
        raise CaseError(f"Dataset manifest '{manifest}' is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CaseError(f"Dataset manifest '{manifest}' must hold a JSON object.")
    names = _manifest_labels(data.get("labels"), manifest)
    _single_channel(data, manifest)
    root = manifest.parent
    cases: List[Case] = []
    if data.get("training"):
        entries = data["training"]
        if not isinstance(entries, list):
            raise CaseError(f"Dataset manifest '{manifest}': 'training' must be a list of {{image, label}} entries.")
        for i, entry in enumerate(entries):
            where = f"training entry {i}"
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise CaseError(f"Dataset manifest '{manifest}', {where}: needs 'image' and 'label', got {entry!r}.")
            image = entry["image"][0] if isinstance(entry["image"], list) and len(entry["image"]) == 1 else entry["image"]
            cases.append(Case(image=_resolve(root, image, manifest, f"{where} 'image'"),
                              label=_resolve(root, entry["label"], manifest, f"{where} 'label'"),
                              label_names=dict(names), **_extra_fields(entry, names, root, manifest, where)))
    elif isinstance(data.get("dataset"), dict):
        for case_id, entry in data["dataset"].items():
            where = f"dataset entry '{case_id}'"
            images = entry.get("images") if isinstance(entry, dict) else None
            if not isinstance(images, list) or len(images) != 1 or not entry.get("label"):
                raise CaseError(f"Dataset manifest '{manifest}', {where}: needs 'images' (one file) and 'label'.")
            extra = _extra_fields(entry, names, root, manifest, where)
            extra.setdefault("name", str(case_id))
            cases.append(Case(image=_resolve(root, images[0], manifest, f"{where} 'images'"),
                              label=_resolve(root, entry["label"], manifest, f"{where} 'label'"),
                              label_names=dict(names), **extra))
    else:
        ending = data.get("file_ending", ".nii.gz")
        for image in sorted((root / "imagesTr").glob(f"*_0000{ending}")):
            case_id = image.name[: -len(f"_0000{ending}")]
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not label.exists():
                raise CaseError(f"Dataset manifest '{manifest}', case '{case_id}': no labelmap '{label}'.")
            cases.append(Case(image=str(image), label=str(label), label_names=dict(names), name=case_id))
    if not cases:
        raise CaseError(f"Dataset manifest '{manifest}' lists no training cases (no 'training' list, and no "
                        f"imagesTr/*_0000{data.get('file_ending', '.nii.gz')} files next to it).")
    expected = data.get("numTraining")
    if isinstance(expected, int) and expected != len(cases):
        raise CaseError(f"Dataset manifest '{manifest}' says numTraining={expected} but lists {len(cases)} cases: "
                        f"correct numTraining or the case list.")
    extras = {k: data[k] for k in ("name", "description", "modality", "channel_names", "file_ending") if k in data}
    extras["labels"] = [names[v] for v in sorted(names)]
    return cases, extras


# --- loading --------------------------------------------------------------------------------------

def _region(case: Case, image: sitk.Image) -> sitk.Image:
    mask = read_labelmap(case.region, reference=image)
    aligned = align_to_image(image, mask.image, case.image, case.region)
    array = (sitk.GetArrayViewFromImage(aligned) > 0).astype(np.uint8)
    if not array.any():
        raise CaseError(f"Annotated-region mask '{case.region}' is empty: it must mark the voxels whose labels are known.")
    region = sitk.GetImageFromArray(array)
    region.CopyInformation(image)
    return region


def load_case(case: Case, target_labels: List[str]) -> LoadedCase:
    """Read and check a case; remap its labels to ``target_labels`` (background first).

    Classes are matched by normalized name. A target class is annotated when the
    case names it (and lists it in ``case.annotated``, if given); classes outside
    the target list, and named classes the case does not annotate, become 0.
    """
    image = read_image(case.image)
    n = len(target_labels)
    annotated = np.zeros(n, bool)
    annotated[0] = True
    present = np.zeros(n, bool)
    if not case.label:
        return LoadedCase(case.name, image, None, annotated, present, _region(case, image) if case.region else None)
    lab = read_labelmap(case.label, reference=image)
    label_image = align_to_image(image, lab.image, case.image, case.label)
    names = {v: s for v, s in (lab.names or case.label_names).items() if v != 0}
    if not names:
        raise CaseError(f"Labelmap '{case.label}' carries no label names: give --labels NAME[,NAME] naming its "
                        f"values 1..N (or a manifest 'labels' table).")
    array = sitk.GetArrayFromImage(label_image)
    values = np.unique(array)
    undeclared = [int(v) for v in values if v != 0 and int(v) not in names]
    if undeclared:
        declared = ", ".join(f"{k}={names[k]}" for k in sorted(names))
        raise CaseError(f"Labelmap '{case.label}' contains label values {undeclared} that are not among its declared "
                        f"labels ({declared}). Name them (--labels) or remove them.")
    by_name = {normalize_label_name(s) for s in names.values()}
    if case.annotated is not None:
        wanted = {normalize_label_name(s) for s in case.annotated}
        unknown = sorted(s for s in case.annotated if normalize_label_name(s) not in by_name)
        if unknown:
            raise CaseError(f"Case '{case.name}' says it annotates {unknown}, but labelmap '{case.label}' has no such "
                            f"label; its labels are: {', '.join(names[k] for k in sorted(names))}.")
    else:
        wanted = by_name
    if values.size == 1 and values[0] == 0 and wanted:
        raise CaseError(f"Labelmap '{case.label}' is empty (all voxels are 0) although the case annotates "
                        f"{', '.join(sorted(wanted))}: check that the right file was exported.")
    target_index = index_by_name(target_labels)
    lut = np.zeros(int(max(int(values.max()), max(names))) + 1, np.uint8)
    for value, label_name in names.items():
        key = normalize_label_name(label_name)
        index = target_index.get(key)
        if key not in wanted or index is None or index == 0:
            continue
        lut[value] = index
        annotated[index] = True
    remapped = lut[array]
    present[np.unique(remapped)] = True
    label = sitk.GetImageFromArray(remapped)
    label.CopyInformation(image)
    region = _region(case, image) if case.region else None
    return LoadedCase(case.name, image, label, annotated, present, region)
