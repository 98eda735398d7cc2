"""Scene → case files: check a volume + segmentation pair once, write what the engine trains on.

A case's segments are read with one pass per segmentation layer
(``segmentations.labelmap_array``), so adding or exporting a 512×512×300 case with 41
segments takes a fraction of a second instead of freezing Slicer. The user's nodes
are never changed; files are written under a temporary name, then renamed. Label
values come from one label list shared by every case; a case names the classes it
annotates (the others are unknown there, not background) and, when only some slices
were drawn, the slices whose labels are known (its region mask).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from TransferSegLib.errors import CaseError
from TransferSegLib.names import normalize_label_name
from TransferSegLib.paths import write_atomically
from TransferSegLib.scene.cases import SceneCase, training_labels
from TransferSegLib.scene.channels import check_channels, write_channel_files
from TransferSegLib.scene.geometry import (
    Grid, check_scalar, check_untransformed, reference_grid, volume_grid, write_volume_nrrd,
)
from TransferSegLib.scene.segmentations import (
    content_stamp, drawn_slices, find_segment_id, labelmap_array, present_segments, segment_names,
)

IMAGE_SUFFIX = ".nrrd"  # NRRD keeps the direction matrix in double precision; written uncompressed (fast)
LABEL_SUFFIX = ".nii.gz"
AXIS_NAMES = ("k", "j", "i")


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


@dataclass
class CaseVoxels:
    """A checked case on its volume's grid: labels (k, j, i) and, if sparse, the annotated slices."""

    grid: Grid
    labels: np.ndarray
    axis: int = 0
    slices: Optional[np.ndarray] = None  # bool per slice along ``axis``; None: the whole volume is annotated

    @property
    def annotated_slices(self) -> int:
        return int(self.slices.sum()) if self.slices is not None else 0

    def region(self) -> Optional[np.ndarray]:
        if self.slices is None:
            return None
        shape = [1, 1, 1]
        shape[self.axis] = self.slices.size
        return np.broadcast_to(self.slices.reshape(shape), self.labels.shape).astype(np.uint8)


def _segment_ids(case: SceneCase) -> Dict[str, str]:
    ids = {}
    for name in case.segments:
        segment_id = find_segment_id(case.segmentation, name)
        if segment_id is None:
            raise CaseError(
                f"The segmentation '{case.segmentation.GetName()}' has no segment named '{name}' any more "
                f"(it has: {', '.join(segment_names(case.segmentation)) or 'none'}). Update the case's segments."
            )
        ids[name] = segment_id
    return ids


def _values(case: SceneCase, labels: Sequence[str]) -> Dict[str, int]:
    index = {normalize_label_name(n): i for i, n in enumerate(labels, start=1)}
    values = {}
    for name, segment_id in _segment_ids(case).items():
        value = index.get(normalize_label_name(name))
        if value is None:
            raise CaseError(f"The segment '{name}' of '{case.segmentation.GetName()}' is not one of the target "
                            f"classes {list(labels)}.")
        values[segment_id] = value
    return values


def _refuse_empty(case: SceneCase, empty: Sequence[str]) -> None:
    if not empty:
        return
    many = len(empty) > 1
    raise CaseError(
        f"The segment{'s' if many else ''} {', '.join(repr(n) for n in empty)} of '{case.segmentation.GetName()}' "
        f"{'are' if many else 'is'} empty on the volume '{case.name}'. Paint {'them' if many else 'it'} in the "
        f"Segment Editor, or untick {'them' if many else 'it'} for this case."
    )


def _check_segments(case: SceneCase) -> Grid:
    """Pair, channels, names and non-empty ticked segments, reading each layer once; remembers the content checked."""
    grid = check_pair(case.volume, case.segmentation)
    check_channels(case.volume, case.channels, case.channel_names, f"The case '{case.name}'")
    if not case.segments:
        raise CaseError(f"No segment of '{case.segmentation.GetName()}' is ticked for the case '{case.name}': tick "
                        f"the segments you annotated.")
    ids = _segment_ids(case)
    stamp = content_stamp(case.segmentation, list(ids.values()))
    if case.checked != stamp:
        present = set(present_segments(case.segmentation, case.volume, list(ids.values())))
        _refuse_empty(case, [name for name, segment_id in ids.items() if segment_id not in present])
        case.checked = stamp
    return grid


def case_voxels(case: SceneCase, labels: Sequence[str]) -> CaseVoxels:
    """Check a case and read its ticked segments as one labelmap, value = 1 + index in ``labels``.

    Every ticked segment must have voxels on the volume (an empty one is refused by
    name); a case whose segments did not change since it was checked is not checked
    again. Where segments overlap, the one later in ``labels`` wins.
    """
    grid = _check_segments(case)
    checked = CaseVoxels(grid, labelmap_array(case.segmentation, case.volume, _values(case, labels)))
    if case.sparse:
        checked.axis, checked.slices = drawn_slices(checked.labels)
    return checked


def check_case(case: SceneCase) -> Optional[CaseVoxels]:
    """Every problem a case can have, found when it is added; for a sparse case, also which slices
    are annotated (``case.slices``). Reads each segmentation layer once."""
    grid = _check_segments(case)
    if not case.sparse:
        return None
    checked = CaseVoxels(grid, labelmap_array(case.segmentation, case.volume, _values(case, training_labels([case]))))
    checked.axis, checked.slices = drawn_slices(checked.labels)
    case.slices = checked.annotated_slices
    return checked


def describe_slices(case: SceneCase, checked: Optional[CaseVoxels]) -> str:
    """'12 of 300 slices (k axis)': what the panel shows for a sparse case."""
    if checked is None or checked.slices is None:
        return "all slices"
    return f"{checked.annotated_slices} of {checked.slices.size} slices ({AXIS_NAMES[checked.axis]} axis)"


def write_image_atomic(image: sitk.Image, path: Path, compress: bool = True) -> None:
    """``paths.write_atomically``: checked before it replaces ``path``; ``OutputError`` if it cannot be."""
    write_atomically(path, lambda temporary: sitk.WriteImage(image, str(temporary), useCompression=compress))


def _file_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return stem or "case"


def _write_case(case: SceneCase, checked: CaseVoxels, labels: Sequence[str], folder: Path, stem: str):
    from TransferSegLib.specs import Case

    image_path = folder / f"{stem}_image{IMAGE_SUFFIX}"
    label_path = folder / f"{stem}_label{LABEL_SUFFIX}"
    write_image_atomic(checked.grid.stamp(sitk.GetImageFromArray(checked.labels)), label_path)
    region_path = None
    region = checked.region()
    if region is not None:
        region_path = folder / f"{stem}_region{LABEL_SUFFIX}"
        write_image_atomic(checked.grid.stamp(sitk.GetImageFromArray(region)), region_path)
    if case.channels:  # one file per channel, named as the model names them (matched by name)
        image: Union[str, List[str]] = write_channel_files(case.volumes, folder, f"{stem}_image")
    else:
        write_volume_nrrd(case.volume, image_path)
        image = str(image_path)
    index = {normalize_label_name(n): n for n in labels}
    return Case(image=image, label=str(label_path), channel_names=list(case.channel_names) if case.channels else [],
                label_names={i: n for i, n in enumerate(labels, start=1)},
                annotated=[index[normalize_label_name(n)] for n in case.segments],
                region=str(region_path) if region_path else None, name=stem)


def export_case(case: SceneCase, labels: Sequence[str], folder: Union[str, Path], name: Optional[str] = None):
    """Write a case's image, labelmap (and region) into ``folder``; return the engine's ``Case``."""
    return _write_case(case, case_voxels(case, labels), labels, Path(folder), _file_stem(name or case.name))


def export_cases(cases: Sequence[SceneCase], folder: Union[str, Path],
                 labels: Optional[Sequence[str]] = None) -> Tuple[List, List[str]]:
    """Export all cases with one shared label list; return (engine cases, labels).

    Every case is checked before the first file is written, so one bad case does not
    leave a half-exported set behind. Cases are read one at a time (memory: one case).
    """
    if not cases:
        raise CaseError("No training cases yet: add at least one volume + segmentation pair.")
    labels = list(labels) if labels else training_labels(cases)
    for case in cases:  # cheap checks first: names and geometry, no voxels
        check_pair(case.volume, case.segmentation)
        check_channels(case.volume, case.channels, case.channel_names, f"The case '{case.name}'")
        _segment_ids(case)
    used: Dict[str, int] = {}
    exported = []
    for case in cases:
        stem = _file_stem(case.name)
        used[stem] = used.get(stem, 0) + 1
        unique = stem if used[stem] == 1 else f"{stem}_{used[stem]}"
        exported.append(_write_case(case, case_voxels(case, labels), labels, Path(folder), unique))
    return exported, labels
