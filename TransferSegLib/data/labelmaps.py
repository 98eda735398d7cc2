"""Labelmaps: reading them (with their class names) onto an image's grid, and writing them atomically.

A labelmap holds one whole-number label per voxel (0 = background). Plain files
(NIfTI, NRRD, MHA) carry no class names (``label_names`` reads them from a names
file); Slicer segmentations (``.seg.nrrd``, see ``seg_nrrd.py``) carry names and
colors. Every error names the file and what is wrong with it, before any training starts.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk

from TransferSegLib.data.grid import DIRECTION_ATOL, ORIGIN_ATOL_MM, SPACING_RTOL, image_grid_problems
from TransferSegLib.data.images import as_3d, file_suffix, read_any
from TransferSegLib.data.seg_nrrd import Color, add_segment_metadata, is_seg_nrrd, read_seg_nrrd
from TransferSegLib.errors import CaseError
from TransferSegLib.file_integrity import nifti_nonfinite_count
from TransferSegLib.paths import write_atomically

LABELMAP_WRITE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha")


@dataclass
class LabelImage:
    """A labelmap (UInt8 or UInt16, 3D) with the segment names and colors its file carries."""

    image: sitk.Image
    names: Dict[int, str] = field(default_factory=dict)
    colors: Dict[int, Color] = field(default_factory=dict)
    path: str = ""


def read_labelmap(path: str, reference: Optional[sitk.Image] = None, selected: Optional[List[int]] = None) -> LabelImage:
    """A 3D integer labelmap (UInt8/UInt16) with its segment names and colors.

    ``.seg.nrrd``: names, colors and values come from the file; layers are flattened
    into one labelmap, refused where segments overlap (with ``selected``, a list of
    flattened values, only where two selected segments overlap); with ``reference``, a
    segmentation Slicer cropped to its extent is put back on the reference grid.
    Other formats carry no names (``label_names.read_label_table`` reads them from a names file).
    """
    if is_seg_nrrd(path):
        label = LabelImage(*read_seg_nrrd(path, selected), path=str(path))
        if reference is not None:
            label.image = _onto_reference(label.image, reference, path)
    else:
        label = LabelImage(_plain_labelmap(path), {}, {}, str(path))
    return label


def _plain_labelmap(path: str) -> sitk.Image:
    image = read_any(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} values per voxel: a labelmap holds "
                        f"one label value per voxel.")
    image = as_3d(image, path)
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise CaseError(f"'{path}' contains {int(finite.size - finite.sum())} NaN or infinite voxels: "
                            f"a labelmap holds whole numbers (0 = background).")
        fractional = array != np.round(array)
        if fractional.any():
            examples = sorted({float(v) for v in array[fractional][:1000]})[:5]
            raise CaseError(f"'{path}' has non-integer label values (e.g. {examples}): a labelmap holds whole "
                            f"numbers (0 = background). Is this an image rather than a segmentation?")
    if nifti_nonfinite_count(path):  # ITK read them as 0
        raise CaseError(f"'{path}' contains NaN or infinite voxels: a labelmap holds whole numbers (0 = background).")
    high = check_label_values(array, path)
    out = sitk.GetImageFromArray(array.astype(np.uint8 if high < 256 else np.uint16))
    out.CopyInformation(image)
    return out


#: More distinct values than a segmentation has (TotalSegmentator: 118, FreeSurfer's aparc+aseg: about 110):
#: a file with more is an image given as a labelmap.
MAX_LABEL_VALUES = 300


def _distinct_values(array: np.ndarray, high: int) -> int:
    """How many different values 0..``high`` occur (counted in slabs: no copy of a whole volume)."""
    seen = np.zeros(high + 1, bool)
    flat = array.reshape(-1)
    for start in range(0, flat.size, 1 << 22):
        seen[np.bincount(flat[start:start + (1 << 22)].astype(np.int64), minlength=high + 1) > 0] = True
    return int(np.count_nonzero(seen))


def check_label_values(array: np.ndarray, path: str) -> int:
    """Refuse an integer array that is not a labelmap (negative values, or image-like value counts); returns the maximum.

    A CT given as a labelmap (or as the prediction to evaluate) would otherwise be
    read as hundreds of classes, or scored as if it were a segmentation.
    """
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    image_like = "Is this an image (a CT or MR scan) rather than a segmentation?"
    if low < 0:
        raise CaseError(f"'{path}' has negative values ({low}), which no label has: labels are 0, 1, 2, ... "
                        f"{image_like}")
    if high > 65535:
        raise CaseError(f"'{path}' has label values up to {high}: TransferSeg accepts labels up to 65535.")
    distinct = _distinct_values(array, high) if high >= MAX_LABEL_VALUES else 0
    if distinct > MAX_LABEL_VALUES:
        raise CaseError(f"'{path}' has {distinct} different values: a segmentation has a few labels, not "
                        f"{distinct}. {image_like}")
    return high


def _onto_reference(label: sitk.Image, reference: sitk.Image, path: str) -> sitk.Image:
    """Put a segmentation stored on a sub-grid (or an offset grid) of the reference onto
    the reference grid. Only grids with the reference's spacing and direction whose
    voxels coincide with reference voxels qualify; anything else is left for
    ``check_same_grid`` to report."""
    if label.GetSize() == reference.GetSize() and not image_grid_problems(reference, label):
        return label
    same_spacing = np.allclose(label.GetSpacing(), reference.GetSpacing(), rtol=SPACING_RTOL, atol=0.0)
    same_direction = np.allclose(label.GetDirection(), reference.GetDirection(), rtol=0.0, atol=DIRECTION_ATOL)
    if not (same_spacing and same_direction):
        return label
    start = np.array(reference.TransformPhysicalPointToContinuousIndex(label.GetOrigin()))
    offset = np.round(start).astype(int)
    tolerance = ORIGIN_ATOL_MM / np.array(reference.GetSpacing())  # in voxels
    if not np.all(np.abs(start - offset) <= np.maximum(tolerance, 1e-6)):
        return label
    ref_size = np.array(reference.GetSize())
    lab_size = np.array(label.GetSize())
    lo = np.maximum(offset, 0)
    hi = np.minimum(offset + lab_size, ref_size)
    source = sitk.GetArrayFromImage(label)  # (Z, Y, X)
    full = np.zeros(tuple(ref_size[::-1]), source.dtype)
    if np.all(hi > lo):
        s, e = lo - offset, hi - offset
        full[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] = source[s[2]:e[2], s[1]:e[1], s[0]:e[0]]
    lost = int(np.count_nonzero(source)) - int(np.count_nonzero(full))
    if lost > 0:
        raise CaseError(f"'{path}': {lost} segmented voxels lie outside the image's field of view. Crop the "
                        f"segmentation to the image (or segment on this image) and save again.")
    out = sitk.GetImageFromArray(full)
    out.CopyInformation(reference)
    return out


def _label_pixels(label: sitk.Image, path: str) -> sitk.Image:
    if label.GetDimension() != 3 or label.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"Cannot write '{path}': a labelmap must be a 3D single-channel image, got size "
                        f"{label.GetSize()} with {label.GetNumberOfComponentsPerPixel()} component(s).")
    if label.GetPixelID() in (sitk.sitkUInt8, sitk.sitkUInt16):
        return label
    array = sitk.GetArrayViewFromImage(label)
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise CaseError(f"Cannot write '{path}': the labelmap has non-integer values.")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0 or high > 65535:
        raise CaseError(f"Cannot write '{path}': label values must lie in 0..65535 (got {low:g}..{high:g}).")
    return sitk.Cast(label, sitk.sitkUInt8 if high < 256 else sitk.sitkUInt16)


def prepare_labelmap(
    label: sitk.Image,
    path: str,
    names: Optional[Dict[int, str]] = None,
    colors: Optional[Dict[int, Color]] = None,
) -> sitk.Image:
    """The image ``write_labelmap`` writes to ``path``: label pixels, plus a segment table for ``.seg.nrrd``."""
    suffix = file_suffix(path)
    if suffix not in LABELMAP_WRITE_SUFFIXES:
        raise CaseError(f"Cannot write a labelmap to '{path}': use one of {', '.join(LABELMAP_WRITE_SUFFIXES)}.")
    out = sitk.Image(_label_pixels(label, path))
    for key in list(out.GetMetaDataKeys()):
        out.EraseMetaData(key)  # never carry another file's segment table into this one
    if suffix == ".seg.nrrd":
        add_segment_metadata(out, names or {}, colors or {})
    return out


def write_labelmap(
    label: sitk.Image,
    path: str,
    names: Optional[Dict[int, str]] = None,
    colors: Optional[Dict[int, Color]] = None,
) -> str:
    """Write a labelmap atomically (``paths.write_atomically``: checked, then renamed; ``OutputError`` if not).

    ``.nii``/``.nii.gz``/``.nrrd``/``.mha``: plain labelmaps. ``.seg.nrrd``: a Slicer
    segmentation with one named, colored segment per label value that is named or
    present (colors default to ``names.label_color``). Returns the path written.
    """
    write_atomically(path, image_writer(prepare_labelmap(label, path, names, colors)))
    return str(path)


def image_writer(label: sitk.Image):
    """A ``paths.write_atomically`` writer for an image (compressed; for files written together)."""
    return lambda temporary: sitk.WriteImage(label, str(temporary), True)
