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
from TransferSegLib.data.label_names import read_label_table
from TransferSegLib.data.label_selection import REFUSE, LabelSelection, check_unselected, parse_labels
from TransferSegLib.names import index_by_name, normalize_label_name

_CASE_FIELDS = ("image", "label", "label_names", "annotated", "region", "name", "unselected")
_NAME_SUFFIXES = (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".mrc")


@dataclass
class Case:
    """One training or test case as files.

    ``label_names``: label value → class name of the labelmap (for ``.seg.nrrd`` the
    file's own segment names are used). ``annotated``: the class names this case
    annotates; ``None`` means every named class. ``region``: a mask file whose
    nonzero voxels are those whose labels are known (sparse annotation).
    ``unselected``: what a labelled voxel whose value ``label_names`` does not name
    becomes: ``background``, ``unannotated`` (no label: left out of the loss), or
    ``refuse`` (an error: the names were meant to cover every value).
    Several values may carry one name: they merge into one class.
    """

    image: str
    label: Optional[str] = None
    label_names: Dict[int, str] = field(default_factory=dict)
    annotated: Optional[List[str]] = None
    region: Optional[str] = None
    name: str = ""
    unselected: str = REFUSE

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
        self.unselected = check_unselected(self.unselected or REFUSE, f"Case '{self.name}': 'unselected'") or REFUSE

    def to_dict(self) -> Dict[str, Any]:
        data = {"image": self.image, "label": self.label, "label_names": {str(k): v for k, v in self.label_names.items()},
                "annotated": self.annotated, "region": self.region, "name": self.name}
        if self.unselected != REFUSE:  # only when set, so that older workers still read the spec
            data["unselected"] = self.unselected
        return data

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


def cases_from_pairs(images: List[str], labels: List[str], label_names: Any = None,
                     names_file: Optional[str] = None, unselected: Optional[str] = None) -> List[Case]:
    """Cases from repeated --image/--label.

    ``label_names`` is the ``--labels`` selection (text or a list of items, see
    ``label_selection``): names found in a ``.seg.nrrd``'s segments or in
    ``names_file`` (``--label-names``), values (``liver=5``), merges (``liver=1+2``);
    bare names of a plain labelmap without a names file number its values 1..N.
    ``unselected``: ``background`` or ``unannotated`` for the values not selected.
    """
    if len(images) != len(labels):
        raise CaseError(f"Got {len(images)} images but {len(labels)} labelmaps: give one --label per --image.")
    selection = label_names if isinstance(label_names, LabelSelection) else parse_labels(label_names)
    table = read_label_table(names_file).names if names_file else {}
    policy = check_unselected(unselected)
    cases = []
    for image, label in zip(images, labels):
        if is_seg_nrrd(label):
            file_names = read_segment_names(label)
            names = selection.resolve(file_names, f"'{label}'") if selection else file_names
            cases.append(Case(image=image, label=label, label_names=names, unselected=policy or "background"))
        else:
            names = selection.resolve(table, f"'{label}'") if selection else dict(table)
            strict = not selection or (not table and selection.by_name_only)
            cases.append(Case(image=image, label=label, label_names=names,
                              unselected=policy or (REFUSE if strict else "background")))
    return cases


def select_labels(cases: List[Case], selection: LabelSelection, unselected: Optional[str] = None) -> List[Case]:
    """Apply a ``--labels`` selection with values or merges to cases that name their labels (a manifest's).

    Bare names need nothing: classes are matched by name anyway. A case's
    ``annotated`` list (manifest names) becomes the target classes made of them.
    """
    if selection.by_name_only and unselected is None:
        return cases
    out = []
    for case in cases:
        names = selection.resolve(case.label_names, f"'{case.label}'") if not selection.by_name_only else case.label_names
        annotated = None
        if case.annotated is not None:
            given = {normalize_label_name(n) for n in case.annotated}
            annotated = sorted({t for v, t in names.items()
                                if normalize_label_name(case.label_names.get(v, t)) in given})
        out.append(Case(image=case.image, label=case.label, label_names=names, annotated=annotated,
                        region=case.region, name=case.name, unselected=unselected or case.unselected))
    return out


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
    """value → name; nnU-Net's ``"liver": [1, 2]`` merges values 1 and 2 into one class."""
    if not isinstance(labels, dict) or not labels:
        raise CaseError(f"Dataset manifest '{manifest}' has no 'labels' table (value → name or name → value).")
    names: Dict[int, str] = {}
    for key, value in labels.items():
        if str(key).strip().isdigit():  # Decathlon: value → name
            values, name = [int(key)], str(value)
        elif isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: name → value
            values, name = [value], str(key)
        elif isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            values, name = list(value), str(key)  # nnU-Net v2 region: here a merge of values
        else:
            raise CaseError(f"Dataset manifest '{manifest}': label '{key}' maps to {value!r}; give a value "
                            f"(\"liver\": 5), a list of values to merge (\"liver\": [1, 2]) or value → name.")
        for number in values:
            if number in names and number != 0 and normalize_label_name(names[number]) != normalize_label_name(name):
                raise CaseError(f"Dataset manifest '{manifest}': value {number} belongs to both '{names[number]}' and "
                                f"'{name}'; overlapping regions are not supported, give each value one class.")
            names[number] = name
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
    add ``annotated`` (class names) and ``region`` (a mask path). ``labels`` may name
    only the classes wanted (``{"5": "liver"}``) and merge values (``"liver": [1, 2]``);
    values it does not name are background, or unannotated with the manifest's
    ``"unselected": "unannotated"``. Extras: the manifest's ``name``, ``description``, ``modality``/``channel_names``,
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
    policy = check_unselected(data.get("unselected", "background"), f"Dataset manifest '{manifest}': 'unselected'")
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
                              label_names=dict(names), unselected=policy,
                              **_extra_fields(entry, names, root, manifest, where)))
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
                              label_names=dict(names), unselected=policy, **extra))
    else:
        ending = data.get("file_ending", ".nii.gz")
        for image in sorted((root / "imagesTr").glob(f"*_0000{ending}")):
            case_id = image.name[: -len(f"_0000{ending}")]
            label = root / "labelsTr" / f"{case_id}{ending}"
            if not label.exists():
                raise CaseError(f"Dataset manifest '{manifest}', case '{case_id}': no labelmap '{label}'.")
            cases.append(Case(image=str(image), label=str(label), label_names=dict(names), name=case_id,
                              unselected=policy))
    if not cases:
        raise CaseError(f"Dataset manifest '{manifest}' lists no training cases (no 'training' list, and no "
                        f"imagesTr/*_0000{data.get('file_ending', '.nii.gz')} files next to it).")
    expected = data.get("numTraining")
    if isinstance(expected, int) and expected != len(cases):
        raise CaseError(f"Dataset manifest '{manifest}' says numTraining={expected} but lists {len(cases)} cases: "
                        f"correct numTraining or the case list.")
    extras = {k: data[k] for k in ("name", "description", "modality", "channel_names", "file_ending") if k in data}
    extras["labels"] = list(dict.fromkeys(names[v] for v in sorted(names)))
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


def _wanted_names(case: Case, names: Dict[int, str]) -> set:
    by_name = {normalize_label_name(s) for s in names.values()}
    if case.annotated is None:
        return by_name
    unknown = sorted(s for s in case.annotated if normalize_label_name(s) not in by_name)
    if unknown:
        raise CaseError(f"Case '{case.name}' says it annotates {unknown}, but labelmap '{case.label}' has no such "
                        f"label; its labels are: {', '.join(names[k] for k in sorted(names))}.")
    return {normalize_label_name(s) for s in case.annotated}


def load_case(case: Case, target_labels: List[str]) -> LoadedCase:
    """Read and check a case; remap its labels to ``target_labels`` (background first).

    Classes are matched by normalized name; values sharing a name merge. A target
    class is annotated when the case names it (and lists it in ``case.annotated``,
    if given); other labelled voxels become 0, or leave the annotated region
    (``case.unselected == "unannotated"``). Overlapping ``.seg.nrrd`` segments are
    refused only when both are selected.
    """
    image = read_image(case.image)
    n = len(target_labels)
    annotated = np.zeros(n, bool)
    annotated[0] = True
    present = np.zeros(n, bool)
    if not case.label:
        return LoadedCase(case.name, image, None, annotated, present, _region(case, image) if case.region else None)
    seg = is_seg_nrrd(case.label)
    names = {v: s for v, s in (case.label_names or (read_segment_names(case.label) if seg else {})).items() if v != 0}
    if not names:
        raise CaseError(f"Labelmap '{case.label}' carries no label names: select classes with --labels "
                        f"(liver=5, liver=1+2, or names with --label-names FILE) or a manifest 'labels' table.")
    wanted = _wanted_names(case, names)
    target_index = index_by_name(target_labels)
    selected = {v: target_index[normalize_label_name(s)] for v, s in names.items()
                if normalize_label_name(s) in wanted and target_index.get(normalize_label_name(s), 0) > 0}
    lab = read_labelmap(case.label, reference=image, selected=list(selected) if seg else None)
    label_image = align_to_image(image, lab.image, case.image, case.label)
    array = sitk.GetArrayFromImage(label_image)
    values = np.unique(array)
    undeclared = [int(v) for v in values if v != 0 and int(v) not in names]
    if undeclared and case.unselected == REFUSE:
        declared = ", ".join(f"{k}={names[k]}" for k in sorted(names)[:12]) + (", ..." if len(names) > 12 else "")
        raise CaseError(f"Labelmap '{case.label}' contains label values {undeclared[:20]}"
                        f"{' ...' if len(undeclared) > 20 else ''} that --labels did not name (it named {declared}). "
                        f"Select classes by value (--labels liver=5, merges liver=1+2), or give the labelmap's "
                        f"names with --label-names FILE and select by name.")
    if values.size == 1 and values[0] == 0 and wanted:
        raise CaseError(f"Labelmap '{case.label}' is empty (all voxels are 0) although the case annotates "
                        f"{', '.join(sorted(wanted))}: check that the right file was exported.")
    lut = np.zeros(int(max(int(values.max()), max(names))) + 1, np.uint8)
    for value, index in selected.items():
        lut[value] = index
        annotated[index] = True
    remapped = lut[array]
    present[np.unique(remapped)] = True
    label = sitk.GetImageFromArray(remapped)
    label.CopyInformation(image)
    region = _region(case, image) if case.region else None
    if case.unselected == "unannotated":
        unknown = (array != 0) & (remapped == 0)
        if unknown.any():
            known = ~unknown if region is None else (sitk.GetArrayViewFromImage(region) > 0) & ~unknown
            region = sitk.GetImageFromArray(known.astype(np.uint8))
            region.CopyInformation(image)
    return LoadedCase(case.name, image, label, annotated, present, region)
