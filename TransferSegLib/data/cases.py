"""Cases: an image, its labelmap, what the labels mean and what was actually annotated.

Two facts matter as much as the voxels: *which classes* a case annotates (partial
labels: an organ nobody drew is unknown, not background) and *where* it was
annotated (sparse labels: only some slices drawn). Both travel with the case into
the loss. Inputs come as repeated --image/--label pairs or an nnU-Net v2 / Medical
Segmentation Decathlon ``dataset.json`` (``data.manifest``).
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from TransferSegLib.data.channels import read_channels
from TransferSegLib.data.grid import align_to_image
from TransferSegLib.data.images import check_not_blank
from TransferSegLib.data.label_names import read_label_table
from TransferSegLib.data.label_selection import REFUSE, LabelSelection, check_unselected, parse_labels
from TransferSegLib.data.labelmaps import read_labelmap
from TransferSegLib.data.seg_nrrd import is_seg_nrrd, read_segment_names
from TransferSegLib.errors import CaseError
from TransferSegLib.names import index_by_name, normalize_label_name
from TransferSegLib.specs import Case

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
    channels: List[sitk.Image] = field(default_factory=list)

    @property
    def network_input(self):
        """What preprocessing takes: the image, or the list of channel images."""
        return self.channels if len(self.channels) > 1 else self.image

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
        out.append(Case(image=case.images, channel_names=case.channel_names, label=case.label, label_names=names,
                        annotated=annotated,
                        region=case.region, name=case.name, unselected=unselected or case.unselected))
    return out


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
    refused only when both are selected. Every channel of a multi-channel case is
    read and checked to lie on channel 0's grid (the labelmap's reference).
    """
    channels = read_channels(case.images)
    image = channels[0]
    n = len(target_labels)
    annotated = np.zeros(n, bool)
    annotated[0] = True
    present = np.zeros(n, bool)
    if not case.label:
        return LoadedCase(case.name, image, None, annotated, present, _region(case, image) if case.region else None,
                          channels=channels)
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
    check_not_blank(image, case.image)  # after the label checks, which say more about a broken pair
    return LoadedCase(case.name, image, label, annotated, present, region, channels=channels)
