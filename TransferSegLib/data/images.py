"""Reading images: NIfTI, NRRD, MHA/MHD, MRC and DICOM series folders, with their geometry.

Images are read with SimpleITK so that size, spacing, origin and direction
survive, and every error names the file and says what is wrong with it, so the
user can fix it before any training starts.
"""

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from TransferSegLib.errors import CaseError
from TransferSegLib.file_integrity import IncompleteFile, WrongFormat, check_complete, nifti_nonfinite_count

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd", ".mrc")


def file_suffix(path) -> str:
    name = str(path).lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


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
        raise CaseError(f"Cannot read the DICOM series in '{folder}': {first_line(exc)}") from exc


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


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # ITK puts the useful sentence after its "file:line: ITK ERROR" preamble.
    for line in lines:
        if "ITK ERROR" not in line and not line.startswith("Exception thrown"):
            return line
    return lines[0] if lines else "unknown format"


def read_any(path: str) -> sitk.Image:
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
                        f"{first_line(exc)}") from exc


def as_3d(image: sitk.Image, path: str) -> sitk.Image:
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
    image = read_any(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"'{path}' has {image.GetNumberOfComponentsPerPixel()} values per voxel (color or vector "
                        f"image): give a single-channel grey-value volume.")
    image = as_3d(image, path)
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


