"""Reading images and labelmaps, writing labelmaps, and refusing bad input early.

Geometry is everything in this module: images are read with SimpleITK so that
size, spacing, origin and direction survive, and every error names the file and
what is wrong with it so the user can fix it before any training starts.
"""

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import CaseError
from .names import label_color

Color = Tuple[float, float, float]


@dataclass
class LabelImage:
    """A labelmap with the segment names and colors its file carries (if any)."""

    image: sitk.Image
    names: Dict[int, str] = field(default_factory=dict)
    colors: Dict[int, Color] = field(default_factory=dict)
    path: str = ""


def _is_seg_nrrd(path: str) -> bool:
    return str(path).lower().endswith(".seg.nrrd")


def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder)) or []
    if not series:
        raise CaseError(f"'{folder}' is a folder without a DICOM series: give an image file or a DICOM series folder.")
    best = max(series, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(folder), s)))
    files = reader.GetGDCMSeriesFileNames(str(folder), best)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise CaseError(f"Cannot read the DICOM series in '{folder}': {exc}") from exc


def _read_mrc(path: Path) -> sitk.Image:
    try:
        import mrcfile
    except ImportError as exc:
        raise CaseError(f"Reading '{path}' needs the 'mrcfile' package: pip install mrcfile.") from exc
    with mrcfile.open(str(path), permissive=True) as mrc:
        data = np.asarray(mrc.data, dtype=np.float32)
        voxel = mrc.voxel_size
        spacing = [float(voxel.x), float(voxel.y), float(voxel.z)]
    if any(s <= 0 for s in spacing):
        warnings.warn(f"'{path}' has no voxel size in its MRC header: assuming 1 mm, identity orientation.")
        spacing = [1.0, 1.0, 1.0]
    image = sitk.GetImageFromArray(data)
    image.SetSpacing(spacing)
    return image


def _read_any(path: str) -> sitk.Image:
    p = Path(path).expanduser()
    if not p.exists():
        raise CaseError(f"'{path}' does not exist: check the path.")
    if p.is_dir():
        return _read_dicom_folder(p)
    if p.suffix.lower() == ".mrc":
        return _read_mrc(p)
    try:
        return sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unknown format"
        raise CaseError(f"'{path}' cannot be read as an image (NIfTI, NRRD, MHA, DICOM folder): {first}") from exc


def read_image(path: str) -> sitk.Image:
    """A 3D, single-channel, finite float32 image."""
    image = _read_any(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} components per voxel: give a single-channel image.")
    if image.GetDimension() == 4:
        size = image.GetSize()
        if size[3] != 1:
            raise CaseError(f"'{path}' is a 4D image ({size[3]} volumes): give a single 3D volume.")
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise CaseError(f"'{path}' is a {image.GetDimension()}D image: TransferSeg needs 3D volumes.")
    if min(image.GetSize()) < 2 and image.GetSize()[2] < 2:
        raise CaseError(f"'{path}' is a single slice ({image.GetSize()}): TransferSeg needs 3D volumes.")
    image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise CaseError(f"'{path}' contains {bad} NaN or infinite voxels: fix or re-export the image.")
    return image


def _segment_metadata(image: sitk.Image) -> Dict[int, Dict[str, str]]:
    segments: Dict[int, Dict[str, str]] = {}
    for key in image.GetMetaDataKeys():
        if key.startswith("Segment") and "_" in key:
            index, prop = key[len("Segment"):].split("_", 1)
            if index.isdigit():
                segments.setdefault(int(index), {})[prop] = image.GetMetaData(key)
    return segments


def _read_seg_nrrd(path: str) -> LabelImage:
    image = _read_any(path)
    segments = _segment_metadata(image)
    layers = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 4:
        layers = image.GetSize()[3]
    names: Dict[int, str] = {}
    colors: Dict[int, Color] = {}
    owners: List[Tuple[int, int, str]] = []  # (layer, label value, name)
    for index in sorted(segments):
        info = segments[index]
        name = info.get("Name", f"Segment_{index}")
        value = int(info.get("LabelValue", index + 1))
        layer = int(info.get("Layer", 0))
        owners.append((layer, value, name))
        color = info.get("Color")
        if color:
            try:
                colors_rgb = tuple(float(c) for c in color.split()[:3])
            except ValueError:
                colors_rgb = None
        else:
            colors_rgb = None
        if colors_rgb:
            colors[len(owners)] = colors_rgb  # type: ignore[assignment]
    if layers <= 1:
        array = sitk.GetArrayFromImage(image)
        for layer, value, name in owners:
            names[value] = name
        flat = sitk.GetImageFromArray(array.astype(np.uint16 if array.max() > 255 else np.uint8))
        flat.CopyInformation(image if image.GetDimension() == 3 else image)
        result_colors = {v: colors.get(i + 1, label_color(n, v)) for i, (_, v, n) in enumerate(owners)}
        return LabelImage(flat, names, result_colors, str(path))
    # Several layers: overlapping segments. Flatten when no voxel is claimed twice.
    if image.GetDimension() == 4:
        stack = [sitk.GetArrayFromImage(image[:, :, :, k]) for k in range(layers)]
        ref3d = image[:, :, :, 0]
    else:
        stack = [sitk.GetArrayFromImage(sitk.VectorIndexSelectionCast(image, k)) for k in range(layers)]
        ref3d = sitk.VectorIndexSelectionCast(image, 0)
    flat = np.zeros(stack[0].shape, np.uint16)
    claimed = np.zeros(stack[0].shape, np.int32) - 1
    result_names: Dict[int, str] = {}
    result_colors: Dict[int, Color] = {}
    for i, (layer, value, name) in enumerate(owners):
        mask = stack[layer] == value
        overlap = mask & (claimed >= 0)
        if overlap.any():
            other = owners[int(claimed[overlap][0])][2]
            raise CaseError(
                f"'{path}': segments '{name}' and '{other}' overlap ({int(overlap.sum())} voxels). "
                f"Remove the overlap in Slicer's Segment Editor (or keep one of them) and save again."
            )
        new_value = i + 1
        flat[mask] = new_value
        claimed[mask] = i
        result_names[new_value] = name
        result_colors[new_value] = colors.get(i + 1, label_color(name, new_value))
    out = sitk.GetImageFromArray(flat.astype(np.uint8) if len(owners) < 256 else flat)
    out.CopyInformation(ref3d)
    return LabelImage(out, result_names, result_colors, str(path))


def read_labelmap(path: str, reference: Optional[sitk.Image] = None) -> LabelImage:
    """A 3D integer labelmap (and its segment names for ``.seg.nrrd``).

    With ``reference``, a ``.seg.nrrd`` cropped to its extent (as Slicer saves
    them) is padded back onto the reference grid when it is a sub-grid of it.
    """
    if _is_seg_nrrd(path):
        label = _read_seg_nrrd(path)
    else:
        image = _read_any(path)
        if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() != 3:
            raise CaseError(f"'{path}' is not a 3D single-channel labelmap (size {image.GetSize()}).")
        array = sitk.GetArrayFromImage(image)
        if array.dtype.kind == "f":
            if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
                raise CaseError(f"'{path}' has non-integer label values: a labelmap holds whole numbers (0 = background).")
        if array.min() < 0:
            raise CaseError(f"'{path}' has negative label values ({int(array.min())}): labels must be 0, 1, 2, ...")
        out = sitk.GetImageFromArray(array.astype(np.uint16 if array.max() > 255 else np.uint8))
        out.CopyInformation(image)
        label = LabelImage(out, {}, {}, str(path))
    if reference is not None and _is_seg_nrrd(path) and label.image.GetSize() != reference.GetSize():
        label.image = _pad_subgrid(label.image, reference, path)
    return label


def _pad_subgrid(label: sitk.Image, reference: sitk.Image, path: str) -> sitk.Image:
    """Put a cropped labelmap back on the full reference grid (only exact sub-grids)."""
    same_spacing = np.allclose(label.GetSpacing(), reference.GetSpacing(), rtol=1e-4)
    same_dir = np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-4)
    if not (same_spacing and same_dir):
        return label
    start = reference.TransformPhysicalPointToContinuousIndex(label.GetOrigin())
    offset = np.round(start).astype(int)
    if not np.allclose(start, offset, atol=1e-3):
        return label
    stop = offset + np.array(label.GetSize())
    if (offset < 0).any() or (stop > np.array(reference.GetSize())).any():
        return label
    full = np.zeros(sitk.GetArrayViewFromImage(reference).shape, sitk.GetArrayViewFromImage(label).dtype)
    full[offset[2]:stop[2], offset[1]:stop[1], offset[0]:stop[0]] = sitk.GetArrayFromImage(label)
    out = sitk.GetImageFromArray(full)
    out.CopyInformation(reference)
    return out


def align_to_image(image: sitk.Image, label: sitk.Image, image_path: str, label_path: str) -> sitk.Image:
    """The labelmap on the image's grid: the same grid, or the same voxels indexed in another
    axis order (e.g. a flipped y axis), which is re-indexed exactly; anything else is refused."""
    if _grid_problems(image, label):
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
        try:
            reoriented = sitk.DICOMOrient(label, code)
        except RuntimeError:
            reoriented = label
        if not _grid_problems(image, reoriented):
            return reoriented
    check_same_grid(image, label, image_path, label_path)
    return label


def _grid_problems(image: sitk.Image, label: sitk.Image) -> List[str]:
    problems = []
    if image.GetSize() != label.GetSize():
        problems.append(f"size {image.GetSize()} vs {label.GetSize()}")
    if not np.allclose(image.GetSpacing(), label.GetSpacing(), rtol=1e-4, atol=1e-6):
        problems.append(f"spacing {tuple(round(s, 5) for s in image.GetSpacing())} vs {tuple(round(s, 5) for s in label.GetSpacing())}")
    if not np.allclose(image.GetOrigin(), label.GetOrigin(), atol=1e-3):
        problems.append(f"origin {tuple(round(s, 3) for s in image.GetOrigin())} vs {tuple(round(s, 3) for s in label.GetOrigin())}")
    if not np.allclose(image.GetDirection(), label.GetDirection(), atol=1e-4):
        problems.append(f"direction {tuple(round(s, 4) for s in image.GetDirection())} vs {tuple(round(s, 4) for s in label.GetDirection())}")
    return problems


def check_same_grid(image: sitk.Image, label: sitk.Image, image_path: str, label_path: str) -> None:
    """Refuse a labelmap that is not on the image's voxel grid, saying what differs."""
    problems = _grid_problems(image, label)
    if problems:
        raise CaseError(
            f"Labelmap '{label_path}' is not on the grid of image '{image_path}': {'; '.join(problems)}. "
            f"Export the segmentation with the image as reference geometry."
        )


def _atomic_target(path: str) -> Tuple[str, str]:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    ext = ".seg.nrrd" if _is_seg_nrrd(base) else ("".join(Path(base).suffixes[-2:]) if base.endswith(".nii.gz") else Path(base).suffix)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=folder)
    os.close(fd)
    return tmp, path


def write_labelmap(
    label: sitk.Image,
    path: str,
    names: Optional[Dict[int, str]] = None,
    colors: Optional[Dict[int, Color]] = None,
) -> str:
    """Write a labelmap atomically; ``.seg.nrrd`` gets one named, colored segment per label."""
    label = sitk.Cast(label, sitk.sitkUInt8) if label.GetPixelID() != sitk.sitkUInt16 else label
    tmp, final = _atomic_target(path)
    try:
        if _is_seg_nrrd(path):
            label = _with_segment_metadata(label, names or {}, colors or {})
        sitk.WriteImage(label, tmp, useCompression=True)
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return final


def _with_segment_metadata(label: sitk.Image, names: Dict[int, str], colors: Dict[int, Color]) -> sitk.Image:
    out = sitk.Image(label)
    for key in list(out.GetMetaDataKeys()):
        out.EraseMetaData(key)
    array = sitk.GetArrayViewFromImage(out)
    values = sorted(names) if names else [int(v) for v in np.unique(array) if v != 0]
    size = out.GetSize()
    for i, value in enumerate(values):
        name = names.get(value, f"Segment_{value}")
        rgb = colors.get(value, label_color(name, value))
        mask = array == value
        if mask.any():
            idx = np.nonzero(mask)
            extent = f"{idx[2].min()} {idx[2].max()} {idx[1].min()} {idx[1].max()} {idx[0].min()} {idx[0].max()}"
        else:
            extent = f"0 {size[0] - 1} 0 {size[1] - 1} 0 {size[2] - 1}"
        prefix = f"Segment{i}_"
        out.SetMetaData(prefix + "ID", f"Segment_{value}")
        out.SetMetaData(prefix + "Name", str(name))
        out.SetMetaData(prefix + "NameAutoGenerated", "0")
        out.SetMetaData(prefix + "Color", " ".join(f"{c:.6g}" for c in rgb))
        out.SetMetaData(prefix + "ColorAutoGenerated", "0")
        out.SetMetaData(prefix + "LabelValue", str(value))
        out.SetMetaData(prefix + "Layer", "0")
        out.SetMetaData(prefix + "Extent", extent)
        out.SetMetaData(prefix + "Tags", "TransferSeg.Label:" + str(name) + "|")
    out.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    out.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    out.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    out.SetMetaData("Segmentation_ConversionParameters", "")
    return out
