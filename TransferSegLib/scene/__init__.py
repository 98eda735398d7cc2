"""The Slicer scene bridge: volume + segmentation nodes ⇄ case files, predictions → new nodes.

The one place where the engine meets the MRML scene (with the other ``scene_*``
modules: geometry, terminology, the training plot, the module's Logic). It reads the user's nodes and never
changes them: training cases are written as files (exact geometry, only the
segments the user chose, label values taken from one label list shared by every
case), and a prediction always becomes a new segmentation node next to its volume.
Every refusal names the node and says what to do.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from TransferSegLib.errors import CaseError
from TransferSegLib.names import BACKGROUND, label_color, normalize_label_name
from TransferSegLib.scene.geometry import (
    Grid, check_scalar, check_untransformed, image_from_volume, reference_grid, volume_from_image, volume_grid,
)
from TransferSegLib.scene.terminology import terminology_entry

IMAGE_SUFFIX = ".nrrd"  # NRRD keeps the direction matrix in double precision
LABEL_SUFFIX = ".nii.gz"


@dataclass
class SceneCase:
    """A training case as the user picked it in the scene: which segments are annotated."""

    volume: object
    segmentation: object
    segments: List[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.volume.GetName() if self.volume is not None else "(no volume)"


# --- segments ----------------------------------------------------------------------------------


def segment_names(segmentation) -> List[str]:
    """Names of the segments of a segmentation node, in their display order."""
    if segmentation is None:
        return []
    seg = segmentation.GetSegmentation()
    return [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]


def find_segment_id(segmentation, name: str) -> Optional[str]:
    """The id of the segment whose name matches ``name`` (case, spaces and hyphens ignored)."""
    seg = segmentation.GetSegmentation()
    key = normalize_label_name(name)
    for i in range(seg.GetNumberOfSegments()):
        if normalize_label_name(seg.GetNthSegment(i).GetName()) == key:
            return seg.GetNthSegmentID(i)
    return None


def segment_mask(segmentation, segment_id: str, volume) -> np.ndarray:
    """A segment as a (k, j, i) boolean mask on the volume's grid (a copy)."""
    return np.array(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume), dtype=np.uint8) > 0


def training_labels(cases: Sequence[SceneCase], previous: Sequence[str] = ()) -> List[str]:
    """The target classes (no background) in a fixed order for all cases.

    A class keeps its place from ``previous`` (the labels of the model being
    fine-tuned again), so that label values stay the same from round to round;
    new classes follow in the order the cases name them.
    """
    labels: List[str] = []
    seen = {normalize_label_name(BACKGROUND)}
    for name in list(previous) + [n for case in cases for n in case.segments]:
        key = normalize_label_name(name)
        if key and key not in seen:
            labels.append(str(name).strip())
            seen.add(key)
    return labels


# --- checks ------------------------------------------------------------------------------------


def check_pair(volume, segmentation) -> Grid:
    """Refuse a volume/segmentation pair whose voxels do not correspond; return the volume grid."""
    if volume is None or segmentation is None:
        raise CaseError("A training case needs both a volume and a segmentation: pick both.")
    check_scalar(volume)
    check_untransformed(volume)
    check_untransformed(segmentation)
    grid = volume_grid(volume)
    seg_grid = reference_grid(segmentation)
    if seg_grid is None:
        raise CaseError(
            f"The segmentation '{segmentation.GetName()}' has no reference geometry, so it is not known which "
            f"image it was drawn on. In the Segment Editor, select it with '{volume.GetName()}' as the source "
            f"volume (or use 'Specify geometry'), then add the case again."
        )
    if not _same_lattice(grid, seg_grid):
        raise CaseError(
            f"The segmentation '{segmentation.GetName()}' was drawn on another grid ({seg_grid.describe()}) than "
            f"the volume '{volume.GetName()}' ({grid.describe()}). Pair it with the volume it was drawn on, or "
            f"resample it onto '{volume.GetName()}' (Segment Editor: 'Specify geometry' with this volume)."
        )
    return grid


def _same_lattice(volume: Grid, drawn: Grid) -> bool:
    """The segmentation's voxels are the volume's (it may cover only part of it)."""
    if drawn.matches(volume):
        return True
    same_axes = np.allclose(drawn.direction, volume.direction, atol=1e-4)
    if not (same_axes and np.allclose(drawn.spacing, volume.spacing, rtol=1e-4)):
        return False
    # Same spacing and axes: a cropped reference is fine if it starts on a voxel of the volume.
    direction = np.asarray(volume.direction).reshape(3, 3)
    offset = np.linalg.solve(direction * np.asarray(volume.spacing), np.subtract(drawn.origin, volume.origin))
    on_lattice = np.allclose(offset, np.round(offset), atol=1e-3)
    start = np.round(offset)
    overlaps = np.all(start < volume.size) and np.all(start + drawn.size > 0)
    return bool(on_lattice and overlaps)


def check_case(case: SceneCase) -> None:
    """Every problem a case can have, found when it is added (before anything is written or trained)."""
    check_pair(case.volume, case.segmentation)
    if not case.segments:
        raise CaseError(
            f"No segment of '{case.segmentation.GetName()}' is ticked for the case '{case.name}': tick the "
            f"segments you annotated."
        )
    for name in case.segments:
        _ticked_mask(case, name)


# --- export: scene → case files ----------------------------------------------------------------


def _write_atomic(image: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(".partial-" + path.name)
    sitk.WriteImage(image, str(temporary), useCompression=True)
    os.replace(temporary, path)


def labelmap_from_segments(case: SceneCase, labels: Sequence[str]) -> sitk.Image:
    """The chosen segments as one labelmap on the volume's grid, value = 1 + index in ``labels``.

    Checks the case on the way (pair, names, empty segments). Where chosen segments
    overlap, the one later in ``labels`` wins (a labelmap holds one class per voxel).
    """
    grid = check_pair(case.volume, case.segmentation)
    if not case.segments:
        raise CaseError(f"No segment is ticked for the case '{case.name}': tick the segments you annotated.")
    index = {normalize_label_name(n): i for i, n in enumerate(labels, start=1)}
    voxels = np.zeros(grid.size[::-1], dtype=np.uint8 if len(labels) < 255 else np.uint16)
    for name in sorted(case.segments, key=lambda n: index.get(normalize_label_name(n), 0)):
        value = index.get(normalize_label_name(name))
        if value is None:
            raise CaseError(f"The segment '{name}' of '{case.segmentation.GetName()}' is not one of the target "
                            f"classes {list(labels)}.")
        voxels[_ticked_mask(case, name)] = value
    return grid.apply_to(sitk.GetImageFromArray(voxels))


def _ticked_mask(case: SceneCase, name: str) -> np.ndarray:
    segment_id = find_segment_id(case.segmentation, name)
    if segment_id is None:
        raise CaseError(
            f"The segmentation '{case.segmentation.GetName()}' has no segment named '{name}' any more "
            f"(it has: {', '.join(segment_names(case.segmentation)) or 'none'}). Update the case's segments."
        )
    mask = segment_mask(case.segmentation, segment_id, case.volume)
    if not mask.any():
        raise CaseError(
            f"The segment '{name}' of '{case.segmentation.GetName()}' is empty on the volume '{case.name}'. "
            f"Paint it in the Segment Editor, or untick it for this case."
        )
    return mask


def _file_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return stem or "case"


def _write_case(case: SceneCase, labelmap: sitk.Image, labels: Sequence[str], folder: Path, stem: str):
    from TransferSegLib.data.cases import Case

    image_path = folder / f"{stem}_image{IMAGE_SUFFIX}"
    label_path = folder / f"{stem}_label{LABEL_SUFFIX}"
    _write_atomic(labelmap, label_path)
    _write_atomic(image_from_volume(case.volume), image_path)
    index = {normalize_label_name(n): n for n in labels}
    return Case(image=str(image_path), label=str(label_path),
                label_names={i: n for i, n in enumerate(labels, start=1)},
                annotated=[index[normalize_label_name(n)] for n in case.segments], region=None, name=stem)


def export_case(case: SceneCase, labels: Sequence[str], folder: Union[str, Path], name: Optional[str] = None):
    """Write a case's image and labelmap into ``folder``; return the engine's ``Case``.

    ``labels`` are the target classes shared by all cases (see ``training_labels``):
    each case's labelmap uses the same values for the same names, and names the
    classes this case annotates (the others are unknown here, not background).
    """
    labelmap = labelmap_from_segments(case, labels)
    return _write_case(case, labelmap, labels, Path(folder), _file_stem(name or case.name))


def export_cases(cases: Sequence[SceneCase], folder: Union[str, Path], labels: Optional[Sequence[str]] = None):
    """Export all cases with one shared label list; return (cases, labels).

    Every case is checked (its labelmap built) before the first file is written, so
    one bad case does not leave a half-exported set behind.
    """
    if not cases:
        raise CaseError("No training cases yet: add at least one volume + segmentation pair.")
    labels = list(labels) if labels else training_labels(cases)
    labelmaps = [labelmap_from_segments(case, labels) for case in cases]
    used: Dict[str, int] = {}
    exported = []
    for case, labelmap in zip(cases, labelmaps):
        stem = _file_stem(case.name)
        used[stem] = used.get(stem, 0) + 1
        unique = stem if used[stem] == 1 else f"{stem}_{used[stem]}"
        exported.append(_write_case(case, labelmap, labels, Path(folder), unique))
    return exported, labels


# --- import: labelmaps → new segmentation nodes ------------------------------------------------


def _label_table(labels: Union[Sequence[str], Dict[int, str]]) -> Dict[int, str]:
    if isinstance(labels, dict):
        return {int(k): str(v) for k, v in labels.items() if int(k) > 0}
    return {i: str(n) for i, n in enumerate(labels) if i > 0}


def _unique_segment_id(name: str, used: set) -> str:
    base = normalize_label_name(name) or "segment"
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base}_{n}"
    used.add(candidate)
    return candidate


def _place_next_to(node, volume) -> None:
    """Put ``node`` in the subject-hierarchy folder (study) that holds ``volume``."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    if hierarchy is None:
        return
    volume_item = hierarchy.GetItemByDataNode(volume)
    if not volume_item:
        return
    parent = hierarchy.GetItemParent(volume_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def import_labelmap(labelmap: sitk.Image, labels: Union[Sequence[str], Dict[int, str]], volume, name: str):
    """A NEW segmentation node with one named, colored segment per label, on ``volume``'s grid.

    ``labels`` is a model's label list (background first) or a ``{value: name}``
    table. Labels absent from the labelmap still get an (empty) segment, so every
    class can be reviewed and painted. Existing nodes are never modified.
    """
    grid = volume_grid(volume)
    found = Grid.from_image(labelmap)
    if not found.matches(grid):
        raise CaseError(
            f"The labelmap for '{volume.GetName()}' is on another grid ({found.describe()}) than the volume "
            f"({grid.describe()}); it cannot be shown on it. Predict again from this volume."
        )
    table = _label_table(labels)
    voxels = sitk.GetArrayFromImage(labelmap)
    unknown = sorted(set(np.unique(voxels).tolist()) - set(table) - {0})
    if unknown:
        raise CaseError(f"The labelmap for '{volume.GetName()}' has values {unknown} that no label names.")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(name))
    temporary = None
    try:
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        seg = segmentation.GetSegmentation()
        used: set = set()
        ids = vtk.vtkStringArray()
        for value in range(1, max(table) + 1 if table else 1):
            label = table.get(value, f"label {value}")
            segment_id = seg.AddEmptySegment(_unique_segment_id(label, used), label, label_color(label, value))
            segment = seg.GetSegment(segment_id)
            # Names and colors come from the model: Slicer must not regenerate them.
            for setter in ("SetNameAutoGenerated", "SetColorAutoGenerated"):
                if hasattr(segment, setter):
                    getattr(segment, setter)(False)
            entry = terminology_entry(label)
            if entry:
                segment.SetTag(_terminology_tag(), entry)
            ids.InsertNextValue(segment_id)
        if voxels.any():
            temporary = slicer.util.addVolumeFromArray(
                np.ascontiguousarray(voxels.astype(np.int32)), ijkToRAS=grid.ijk_to_ras(),
                name=slicer.mrmlScene.GenerateUniqueName("__transferseg_import__"),
                nodeClassName="vtkMRMLLabelMapVolumeNode",
            )
            if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(temporary, segmentation, ids):
                raise CaseError(f"Slicer could not import the labelmap for '{volume.GetName()}' into segments.")
        _place_next_to(segmentation, volume)
    except BaseException:
        slicer.mrmlScene.RemoveNode(segmentation)
        raise
    finally:
        if temporary is not None:
            _remove_volume(temporary)
    return segmentation


def _terminology_tag() -> str:
    getter = getattr(slicer.vtkSegment, "GetTerminologyEntryTagName", None)
    return getter() if getter else "TerminologyEntry"


def _remove_volume(node) -> None:
    display = node.GetDisplayNode()
    color = display.GetColorNode() if display is not None else None
    slicer.mrmlScene.RemoveNode(node)
    if color is not None and color.GetName().startswith("__transferseg_import__"):
        slicer.mrmlScene.RemoveNode(color)


def import_prediction(path: Union[str, Path], volume, model_name: str, labels: Sequence[str]):
    """A prediction file (labelmap on ``volume``'s grid) as a new node "<volume> – <model>"."""
    try:
        labelmap = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise CaseError(f"Cannot read the prediction '{path}': {exc}") from exc
    return import_labelmap(labelmap, labels, volume, f"{volume.GetName()} – {model_name}")


def load_case_into_scene(image: sitk.Image, labelmap: Optional[sitk.Image], label_names: Dict[int, str], name: str):
    """A case (image + labelmap) as a new volume node and segmentation node; returns both."""
    volume = volume_from_image(image, name)
    segmentation = None
    if labelmap is not None:
        present = set(np.unique(sitk.GetArrayViewFromImage(labelmap)).tolist()) - {0}
        table = {v: n for v, n in label_names.items() if v in present}
        compact = sitk.GetArrayFromImage(labelmap)
        remapped = np.zeros(compact.shape, np.uint16)
        ordered = {}
        for new_value, (value, label) in enumerate(sorted(table.items()), start=1):
            remapped[compact == value] = new_value
            ordered[new_value] = label
        image_labels = sitk.GetImageFromArray(remapped)
        image_labels.CopyInformation(labelmap)
        segmentation = import_labelmap(image_labels, ordered, volume, f"{name} segmentation")
    return volume, segmentation


# --- review: a corrected prediction becomes a training case ------------------------------------


def case_from_segmentation(segmentation, volume=None) -> SceneCase:
    """A training case from a (corrected) segmentation: every non-empty segment is annotated.

    The volume defaults to the segmentation's source volume (the one it was predicted
    or drawn on). Empty segments are left out: an empty segment is more often a class
    not yet painted than a claim that the organ is absent.
    """
    if segmentation is None:
        raise CaseError("Pick the corrected segmentation to add as a training case.")
    if volume is None:
        volume = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
    if volume is None:
        raise CaseError(
            f"The segmentation '{segmentation.GetName()}' does not say which volume it belongs to. "
            f"Add it with 'Add current case' after picking its volume."
        )
    check_pair(volume, segmentation)
    names = [n for n in segment_names(segmentation)
             if segment_mask(segmentation, find_segment_id(segmentation, n), volume).any()]
    if not names:
        raise CaseError(f"Every segment of '{segmentation.GetName()}' is empty: there is nothing to learn from.")
    return SceneCase(volume=volume, segmentation=segmentation, segments=names)
