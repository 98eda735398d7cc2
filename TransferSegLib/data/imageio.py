"""Reading images and labelmaps, writing labelmaps, and refusing bad input early.

Geometry is everything in this module: images are read with SimpleITK so that
size, spacing, origin and direction survive, and every error names the file and
what is wrong with it, so the user can fix it before any training starts.
Slicer segmentations (``.seg.nrrd``) are read and written with their segment
names, colors and label values, the way Slicer itself stores them.
"""

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from TransferSegLib.data.grid import (DIRECTION_ATOL, ORIGIN_ATOL_MM, SPACING_RTOL, Grid, grid_problems,
                                     lattice_permutation, permute_onto)
from TransferSegLib.errors import CaseError
from TransferSegLib.file_integrity import IncompleteFile, WrongFormat, check_complete, nifti_nonfinite_count
from TransferSegLib.paths import write_atomically
from TransferSegLib.names import label_color

Color = Tuple[float, float, float]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd", ".mrc")
LABELMAP_WRITE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha")


@dataclass
class LabelImage:
    """A labelmap (UInt8 or UInt16, 3D) with the segment names and colors its file carries."""

    image: sitk.Image
    names: Dict[int, str] = field(default_factory=dict)
    colors: Dict[int, Color] = field(default_factory=dict)
    path: str = ""


@dataclass
class _Segment:
    """One segment of a ``.seg.nrrd``: where its voxels are and the value it gets when flattened."""

    layer: int
    value: int
    name: str
    color: Optional[Color]
    flat_value: int = 0


def is_seg_nrrd(path) -> bool:
    return str(path).lower().endswith(".seg.nrrd")


def _suffix(path) -> str:
    name = str(path).lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


# --- reading images -------------------------------------------------------------------------------

def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM warns on stderr for folders without DICOM
    try:
        series = reader.GetGDCMSeriesIDs(str(folder)) or []
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    if not series:
        raise CaseError(f"'{folder}' is a folder without a DICOM series in it (subfolders are not searched): "
                        f"give an image file or the folder holding the series' files.")
    best = max(series, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(folder), s)))
    if len(series) > 1:
        warnings.warn(f"'{folder}' holds {len(series)} DICOM series: reading the largest ({best}).")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), best))
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise CaseError(f"Cannot read the DICOM series in '{folder}': {_first_line(exc)}") from exc


def _read_mrc(path: Path) -> sitk.Image:
    try:
        import mrcfile
    except ImportError as exc:
        raise CaseError(f"Reading '{path}' needs the 'mrcfile' package: pip install mrcfile.") from exc
    try:
        with mrcfile.open(str(path), permissive=True) as mrc:
            if mrc.data is None:
                raise CaseError(f"'{path}' holds no voxel data.")
            data = np.asarray(mrc.data, dtype=np.float32)
            voxel = mrc.voxel_size
            spacing = [float(voxel.x), float(voxel.y), float(voxel.z)]
    except (OSError, ValueError) as exc:
        raise CaseError(f"'{path}' cannot be read as an MRC file: {exc}") from exc
    image = sitk.GetImageFromArray(data)
    note = "MRC files carry no patient orientation: assuming an identity direction and origin 0"
    if image.GetDimension() == 3:
        if any(not s > 0 for s in spacing):
            note += " and, as the header has no voxel size, 1 mm voxels"
            spacing = [1.0, 1.0, 1.0]
        image.SetSpacing(spacing)
    warnings.warn(f"'{path}': {note}.")
    return image


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # ITK puts the useful sentence after its "file:line: ITK ERROR" preamble.
    for line in lines:
        if "ITK ERROR" not in line and not line.startswith("Exception thrown"):
            return line
    return lines[0] if lines else "unknown format"


def _read_any(path: str) -> sitk.Image:
    p = Path(path).expanduser()
    if not p.exists():
        raise CaseError(f"'{path}' does not exist: check the path.")
    if p.is_dir():
        return _read_dicom_folder(p)
    try:
        check_complete(p)  # readers fill a truncated file's missing part with zeros and say nothing
    except WrongFormat:
        pass  # not cut short but another kind of file: the reader below says what it cannot read
    except IncompleteFile as exc:
        raise CaseError(f"'{path}' is incomplete: the file {exc}. It was cut short (an interrupted copy or "
                        f"download, or a full disk when it was written): copy or export it again.") from None
    if p.suffix.lower() == ".mrc":
        return _read_mrc(p)
    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise CaseError(f"'{path}' cannot be read as an image (NIfTI, NRRD, MHA, MRC or a DICOM folder): "
                        f"{_first_line(exc)}") from exc


def _as_3d(image: sitk.Image, path: str) -> sitk.Image:
    """Drop a trailing 4th axis of length 1; refuse 2D, single slices and true 4D."""
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise CaseError(f"'{path}' is a 4D image ({size[3]} volumes of {size[:3]}): give a single 3D volume "
                            f"(for multi-channel data, one file per channel; TransferSeg uses one channel).")
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetDimension() != 3:
        raise CaseError(f"'{path}' is a {image.GetDimension()}D image: TransferSeg needs 3D volumes.")
    if min(image.GetSize()) < 2:
        raise CaseError(f"'{path}' is a single slice (size {image.GetSize()}): TransferSeg needs 3D volumes.")
    return image


def read_image(path: str) -> sitk.Image:
    """A 3D, single-channel, finite float32 image with its geometry.

    Reads NIfTI, NRRD, MHA/MHD, MRC (no orientation: identity, with a warning) and
    DICOM series folders (the largest series in the folder).
    """
    image = _read_any(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} values per voxel (color or vector "
                        f"image): give a single-channel grey-value volume.")
    image = _as_3d(image, path)
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(array)
    nonfinite = int(finite.size - np.count_nonzero(finite)) or (nifti_nonfinite_count(path) if not
                                                                 Path(path).is_dir() else 0)
    if nonfinite:
        raise CaseError(f"'{path}' contains {nonfinite} NaN or infinite voxels: fix or re-export the image.")
    return image


def check_not_blank(image: sitk.Image, path: str) -> None:
    """Refuse an image with one value in every voxel: nothing to train on or predict from (a failed export)."""
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(array.min()), float(array.max())
    if low == high:
        raise CaseError(f"'{path}' has the value {low:g} in every voxel: it holds no picture (a failed export "
                        f"or an empty series?). Give the real image.")


# --- reading labelmaps ----------------------------------------------------------------------------

def _parse_color(text: Optional[str]) -> Optional[Color]:
    try:
        rgb = tuple(float(c) for c in str(text).split()[:3])
    except ValueError:
        return None
    return rgb if len(rgb) == 3 else None  # type: ignore[return-value]


def _segments(meta: Dict[str, str], layers: int, path: str) -> List[_Segment]:
    """The segments a ``.seg.nrrd`` header declares, with their value once flattened."""
    fields: Dict[int, Dict[str, str]] = {}
    for key, value in meta.items():
        if key.startswith("Segment") and not key.startswith("Segmentation") and "_" in key:
            index, prop = key[len("Segment"):].split("_", 1)
            if index.isdigit():
                fields.setdefault(int(index), {})[prop] = value
    order = sorted(fields)
    # Slicer < 4.11 wrote one segment per layer, each with value 1 and no LabelValue/Layer.
    one_per_layer = layers > 1 and layers == len(order)
    segments = []
    for position, index in enumerate(order):
        info = fields[index]
        try:
            layer = int(info.get("Layer", position if one_per_layer else 0))
            value = int(info.get("LabelValue", 1 if one_per_layer else position + 1))
        except ValueError:
            raise CaseError(f"'{path}': segment {index} has a non-integer Layer or LabelValue "
                            f"({info.get('Layer')!r}, {info.get('LabelValue')!r}): re-save it from Slicer.") from None
        if not 0 <= layer < max(layers, 1):
            raise CaseError(f"'{path}': segment '{info.get('Name', index)}' is in layer {layer} but the file has "
                            f"{layers} layer(s): re-save it from Slicer.")
        segments.append(_Segment(layer, value, info.get("Name", f"Segment_{index}"), _parse_color(info.get("Color"))))
    for position, segment in enumerate(segments):
        segment.flat_value = segment.value if layers <= 1 else position + 1
    return segments


def _header(path: str) -> Tuple[Dict[str, str], int]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise CaseError(f"'{path}' cannot be read as a segmentation: {_first_line(exc)}") from exc
    meta = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    layers = reader.GetNumberOfComponents()
    if reader.GetDimension() == 4:
        layers = reader.GetSize()[3]
    return meta, layers


def read_segment_names(path: str) -> Dict[int, str]:
    """Label value → segment name of a ``.seg.nrrd``, from its header only (no voxels),
    numbered as ``read_labelmap`` numbers them."""
    if not Path(path).expanduser().exists():
        raise CaseError(f"'{path}' does not exist: check the path.")
    meta, layers = _header(path)
    return {s.flat_value: s.name for s in _segments(meta, layers, path)}


def _layers(image: sitk.Image) -> List[np.ndarray]:
    """Each layer of a segmentation as a (Z, Y, X) array."""
    if image.GetDimension() == 4:
        size = image.GetSize()
        return [sitk.GetArrayFromImage(sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, k]))
                for k in range(size[3])]
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        return [array[..., k] for k in range(array.shape[-1])]
    return [array]


def _geometry_3d(image: sitk.Image) -> sitk.Image:
    """An empty 3D image carrying the spatial geometry of a 3D or 4D segmentation."""
    if image.GetDimension() == 4:
        size = image.GetSize()
        return sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetNumberOfComponentsPerPixel() > 1:
        return sitk.VectorIndexSelectionCast(image, 0)
    return image


def _read_seg_nrrd(path: str, selected: Optional[List[int]] = None) -> LabelImage:
    image = _read_any(path)
    meta = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    layers = _layers(image)
    segments = _segments(meta, len(layers), path)
    if len(layers) == 1:
        flat = layers[0]
    else:
        flat = np.zeros(layers[0].shape, np.uint16)
        owner = np.zeros(layers[0].shape, np.int32)  # 1 + index of the segment owning a voxel
        overlaps: Dict[Tuple[str, str], int] = {}
        chosen = None if selected is None else set(selected)
        # Selected segments first: an overlap among them is an error; the others only fill what is left.
        order = sorted(range(len(segments)), key=lambda i: chosen is not None and segments[i].flat_value not in chosen)
        for index in order:
            segment = segments[index]
            mask = layers[segment.layer] == segment.value
            taken = mask & (owner > 0)
            if taken.any() and (chosen is None or segment.flat_value in chosen):
                others, counts = np.unique(owner[taken], return_counts=True)
                for other, count in zip(others, counts):
                    overlaps[(segments[int(other) - 1].name, segment.name)] = int(count)
            flat[mask & (owner == 0)] = segment.flat_value
            owner[mask & (owner == 0)] = index + 1
        if overlaps:
            pairs = "; ".join(f"'{a}' and '{b}' ({n} voxels)" for (a, b), n in overlaps.items())
            raise CaseError(
                f"'{path}': {'selected ' if chosen is not None else ''}segments overlap: {pairs}. A training labelmap needs one class per voxel: remove the "
                f"overlap in Slicer's Segment Editor (e.g. masking with 'Overwrite other segments') and save again"
                + (", or leave one of each pair out of --labels." if chosen is not None else ".")
            )
    if flat.min(initial=0) < 0 or flat.max(initial=0) > 65535:
        raise CaseError(f"'{path}' has label values outside 0..65535.")
    out = sitk.GetImageFromArray(flat.astype(np.uint8 if flat.max(initial=0) < 256 else np.uint16))
    out.CopyInformation(_geometry_3d(image))
    names = {s.flat_value: s.name for s in segments}
    colors = {s.flat_value: (s.color or label_color(s.name, s.flat_value)) for s in segments}
    return LabelImage(out, names, colors, str(path))


def read_labelmap(path: str, reference: Optional[sitk.Image] = None, selected: Optional[List[int]] = None) -> LabelImage:
    """A 3D integer labelmap (UInt8/UInt16) with its segment names and colors.

    ``.seg.nrrd``: names, colors and values come from the file; layers are flattened
    into one labelmap, refused where segments overlap (with ``selected``, a list of
    flattened values, only where two selected segments overlap); with ``reference``, a
    segmentation Slicer cropped to its extent is put back on the reference grid.
    Other formats carry no names (``label_names.read_label_table`` reads them from a names file).
    """
    if is_seg_nrrd(path):
        label = _read_seg_nrrd(path, selected)
        if reference is not None:
            label.image = _onto_reference(label.image, reference, path)
    else:
        label = LabelImage(_plain_labelmap(path), {}, {}, str(path))
    return label


def _plain_labelmap(path: str) -> sitk.Image:
    image = _read_any(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} values per voxel: a labelmap holds "
                        f"one label value per voxel.")
    image = _as_3d(image, path)
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
    if label.GetSize() == reference.GetSize() and not _grid_problems(reference, label):
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


# --- grids ----------------------------------------------------------------------------------------

def _grid_problems(image: sitk.Image, label: sitk.Image) -> List[str]:
    if image.GetDimension() != label.GetDimension():
        return [f"dimension {image.GetDimension()} vs {label.GetDimension()}"]
    return grid_problems(Grid.of(image), Grid.of(label))


def check_same_grid(image: sitk.Image, label: sitk.Image, image_path: str, label_path: str) -> None:
    """Refuse a labelmap that is not on the image's voxel grid, saying what differs
    (``grid.grid_problems``: the one grid check, with its tolerances)."""
    problems = _grid_problems(image, label)
    if problems:
        raise CaseError(
            f"Labelmap '{label_path}' is not on the voxel grid of image '{image_path}' (image vs labelmap): "
            f"{'; '.join(problems)}. Export the segmentation with this image as its reference geometry."
        )


def align_to_image(image: sitk.Image, label: sitk.Image, image_path: str, label_path: str) -> sitk.Image:
    """The labelmap on the image's grid. A labelmap holding the same voxels stored in
    another axis order (e.g. a NIfTI with a flipped y axis next to a DICOM series) is
    re-indexed exactly (``grid.lattice_permutation``); any other difference is refused
    by ``check_same_grid``. Geometry within tolerance is replaced by the image's own, exactly."""
    if _grid_problems(image, label) and image.GetDimension() == 3 and label.GetDimension() == 3:
        mapping = lattice_permutation(Grid.of(label), Grid.of(image))
        if mapping is not None:
            moved = permute_onto(sitk.GetArrayFromImage(label).transpose(2, 1, 0), mapping)
            label = Grid.of(image).image_from_xyz(moved)
    check_same_grid(image, label, image_path, label_path)
    if label.GetOrigin() != image.GetOrigin() or label.GetSpacing() != image.GetSpacing() \
            or label.GetDirection() != image.GetDirection():
        label = sitk.Image(label)
        label.CopyInformation(image)
    return label


# --- writing labelmaps ----------------------------------------------------------------------------

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
    suffix = _suffix(path)
    if suffix not in LABELMAP_WRITE_SUFFIXES:
        raise CaseError(f"Cannot write a labelmap to '{path}': use one of {', '.join(LABELMAP_WRITE_SUFFIXES)}.")
    out = sitk.Image(_label_pixels(label, path))
    for key in list(out.GetMetaDataKeys()):
        out.EraseMetaData(key)  # never carry another file's segment table into this one
    if suffix == ".seg.nrrd":
        _add_segment_metadata(out, names or {}, colors or {})
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


def _extents(array_zyx: np.ndarray, values: List[int]) -> Dict[int, str]:
    """Slicer's ``SegmentN_Extent``: 'i0 i1 j0 j1 k0 k1' of each value's voxels (empty: '0 -1 ...')."""
    from scipy import ndimage

    boxes = ndimage.find_objects(array_zyx.astype(np.int32, copy=False)) if array_zyx.size else []
    extents = {}
    for value in values:
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        if box is None:
            extents[value] = "0 -1 0 -1 0 -1"
        else:
            z, y, x = box
            extents[value] = f"{x.start} {x.stop - 1} {y.start} {y.stop - 1} {z.start} {z.stop - 1}"
    return extents


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def _add_segment_metadata(out: sitk.Image, names: Dict[int, str], colors: Dict[int, Color]) -> None:
    array = sitk.GetArrayViewFromImage(out)
    present = {int(v) for v in np.unique(array)} - {0}
    values = sorted(({int(v) for v in names} | present) - {0})
    extents = _extents(array, values)
    for i, value in enumerate(values):
        named = value in names
        name = _clean(names[value]) if named else f"Segment_{value}"
        rgb = colors.get(value) or label_color(name, value)
        prefix = f"Segment{i}_"
        out.SetMetaData(prefix + "ID", f"Segment_{value}")
        out.SetMetaData(prefix + "Name", name)
        out.SetMetaData(prefix + "NameAutoGenerated", "0" if named else "1")
        out.SetMetaData(prefix + "Color", " ".join(f"{float(c):.6g}" for c in rgb[:3]))
        out.SetMetaData(prefix + "ColorAutoGenerated", "0")
        out.SetMetaData(prefix + "LabelValue", str(value))
        out.SetMetaData(prefix + "Layer", "0")
        out.SetMetaData(prefix + "Extent", extents[value])
        out.SetMetaData(prefix + "Tags", f"TransferSeg.LabelValue:{value}|")
    out.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    out.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    out.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    out.SetMetaData("Segmentation_ConversionParameters", "")
