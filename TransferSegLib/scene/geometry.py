"""Volume nodes ⇄ SimpleITK images with exact geometry (part of the Slicer scene bridge).

Slicer keeps a volume as voxels plus an IJK→RAS matrix; files and the engine use
ITK's LPS origin, spacing and direction. A fine-tuned model is only as good as the
alignment of image and labels, so the conversion is exact both ways (oblique and
anisotropic grids included) and anything that would silently move voxels (a parent
transform, a vector volume) is refused with a message saying what to do.

Imports ``slicer``; only the ``scene*`` modules may.
"""

from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from TransferSegLib.data.grid import Grid
from TransferSegLib.errors import CaseError
from TransferSegLib.file_integrity import IncompleteFile
from TransferSegLib.paths import write_atomically


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def check_untransformed(node) -> None:
    """Refuse nodes under a transform: their voxels are not where their matrix says."""
    if node.GetParentTransformNode() is not None:
        raise CaseError(
            f"'{node.GetName()}' is under the transform '{node.GetParentTransformNode().GetName()}'. "
            f"Harden it first (Data module: right-click the node, 'Harden transform') so that "
            f"the saved voxels are where you see them."
        )


def volume_grid(volume) -> Grid:
    """The grid of a scalar volume node (its voxels as stored, without transforms)."""
    image_data = volume.GetImageData() if volume is not None else None
    if image_data is None:
        name = volume.GetName() if volume is not None else "(none)"
        raise CaseError(f"The volume '{name}' has no voxels loaded. Load the image again, then retry.")
    return Grid.from_ijk_to_ras(_ijk_to_ras(volume), image_data.GetDimensions())


def check_scalar(volume) -> None:
    """Refuse color and vector volumes: the models read one intensity per voxel."""
    if volume is None:
        raise CaseError("No volume was selected.")
    if volume.IsA("vtkMRMLVectorVolumeNode") or (
        volume.GetImageData() is not None and volume.GetImageData().GetNumberOfScalarComponents() != 1
    ):
        raise CaseError(
            f"'{volume.GetName()}' is a color or vector volume; segmentation models need a grayscale "
            f"scalar volume (e.g. the CT or MR series itself)."
        )


def image_from_volume(volume) -> sitk.Image:
    """A copy of a scalar volume node as a SimpleITK image with the same geometry (LPS)."""
    check_scalar(volume)
    check_untransformed(volume)
    grid = volume_grid(volume)
    voxels = np.array(slicer.util.arrayFromVolume(volume), copy=True)  # (k, j, i)
    return grid.stamp(sitk.GetImageFromArray(voxels))


_NRRD_TYPES = {"int8": "signed char", "uint8": "uchar", "int16": "short", "uint16": "ushort", "int32": "int",
               "uint32": "uint", "int64": "longlong", "uint64": "ulonglong", "float32": "float", "float64": "double"}


def write_volume_nrrd(volume, path) -> None:
    """A scalar volume node straight to an uncompressed NRRD file (LPS, exact geometry), atomically.

    Writes the node's voxels without the two copies a SimpleITK round trip makes: a
    512×512×300 CT takes a fraction of a second. ``path`` is replaced only when complete:
    the file's size must be the header's plus every voxel's bytes (``paths``' generic
    check would read the whole file back for the same answer: 0.5 s per 150 MB).
    """
    check_scalar(volume)
    check_untransformed(volume)
    grid = volume_grid(volume)
    voxels = slicer.util.arrayFromVolume(volume)  # (k, j, i): i varies fastest, as NRRD stores it
    kind = _NRRD_TYPES.get(voxels.dtype.name)
    if kind is None:
        raise CaseError(f"The volume '{volume.GetName()}' has voxels of type {voxels.dtype}, which cannot be saved.")
    direction = np.asarray(grid.direction, float).reshape(3, 3)
    axes = " ".join("(" + ",".join(f"{v:.17g}" for v in direction[:, a] * grid.spacing[a]) + ")" for a in range(3))
    header = ("NRRD0004\n"
              f"type: {kind}\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {' '.join(str(v) for v in grid.size)}\nspace directions: {axes}\n"
              "kinds: domain domain domain\n"
              f"endian: {'little' if voxels.dtype.byteorder in ('<', '=', '|') else 'big'}\nencoding: raw\n"
              f"space origin: ({','.join(f'{v:.17g}' for v in grid.origin)})\n\n")
    expected = len(header.encode("ascii")) + voxels.nbytes

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            handle.write(header.encode("ascii"))
            np.ascontiguousarray(voxels).tofile(handle)
        written = temporary.stat().st_size
        if written != expected:  # the whole check a raw NRRD needs, without reading 150 MB back
            raise IncompleteFile(f"holds {written} of its {expected} bytes")
    write_atomically(Path(path), write, verify=False)


def volume_from_image(image: sitk.Image, name: str, labelmap: bool = False):
    """A new volume node holding ``image`` with its exact geometry."""
    voxels = sitk.GetArrayFromImage(image)  # (k, j, i)
    if voxels.dtype == np.bool_ or voxels.dtype == np.int64 or voxels.dtype == np.uint64:
        voxels = voxels.astype(np.int32 if not labelmap else np.uint16)
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    matrix = Grid.of(image).ijk_to_ras()
    return slicer.util.addVolumeFromArray(np.ascontiguousarray(voxels), ijkToRAS=matrix, name=name,
                                          nodeClassName=node_class)


def reference_grid(segmentation) -> Optional[Grid]:
    """The grid a segmentation was drawn on (its reference image geometry), if it has one."""
    converter = slicer.vtkSegmentationConverter
    text = segmentation.GetSegmentation().GetConversionParameter(
        converter.GetReferenceImageGeometryParameterName()
    )
    if not text:
        reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
        return volume_grid(reference) if reference is not None and reference.GetImageData() is not None else None
    geometry = slicer.vtkOrientedImageData()
    if not converter.DeserializeImageGeometry(text, geometry):
        return None
    matrix = vtk.vtkMatrix4x4()
    geometry.GetImageToWorldMatrix(matrix)
    extent = geometry.GetExtent()
    # The reference extent may start anywhere; move the origin to its first voxel.
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    start = np.array([extent[0], extent[2], extent[4], 1.0])
    ijk_to_ras[:3, 3] = (ijk_to_ras @ start)[:3]
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    if min(size) <= 0:
        return None
    return Grid.from_ijk_to_ras(ijk_to_ras, size)
