"""Segments of a segmentation node as arrays on a volume's grid, fast enough for the main thread.

Slicer keeps a segmentation's binary labelmaps in *layers*: one image per layer,
each segment a label value in its layer (non-overlapping segments share one).
``slicer.util.arrayFromSegmentBinaryLabelmap`` resamples one segment onto the
volume at a time, about a second per segment on a 512×512×300 CT, so reading 41
segments froze Slicer for 40 s. Here each layer is read once, straight from its
voxels, when it lies on the volume's lattice (the usual case: the segmentation was
drawn on that volume); only a layer on another grid goes through Slicer's resampling.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from TransferSegLib.names import normalize_label_name


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
    """One segment as a (k, j, i) boolean mask on the volume's grid (a copy; Slicer's resampling)."""
    return np.array(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume), dtype=np.uint8) > 0


def _binary_name() -> str:
    return slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()


def _source_representation(segmentation) -> str:
    seg = segmentation.GetSegmentation()
    getter = getattr(seg, "GetSourceRepresentationName", None) or getattr(seg, "GetMasterRepresentationName")
    return getter()


def _ijk_to_ras(volume) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


@dataclass
class _Layer:
    """A layer's voxels placed on the volume: ``voxels[window]`` covers ``target`` of the volume array."""

    voxels: np.ndarray
    window: Tuple[slice, slice, slice]
    target: Tuple[slice, slice, slice]


def _layer_on_volume(image, volume_matrix: np.ndarray, volume_shape) -> Optional[_Layer]:
    """The layer image as a window of the volume's (k, j, i) array; None if not on its lattice."""
    extent = image.GetExtent()
    if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
        return _Layer(np.zeros((0, 0, 0), np.uint8), (slice(0, 0),) * 3, (slice(0, 0),) * 3)
    if image.GetNumberOfScalarComponents() != 1:
        return None
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    to_volume = np.linalg.solve(volume_matrix, slicer.util.arrayFromVTKMatrix(matrix))
    shift = to_volume[:3, 3]
    if not (np.allclose(to_volume[:3, :3], np.eye(3), atol=1e-4) and np.allclose(shift, np.round(shift), atol=1e-3)):
        return None
    dims = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims)
    start = np.round(shift).astype(int)[::-1] + np.array([extent[4], extent[2], extent[0]])  # (k, j, i)
    window, target = [], []
    for axis in range(3):
        low = max(0, start[axis])
        high = min(volume_shape[axis], start[axis] + dims[axis])
        if high <= low:
            return _Layer(voxels[:0, :0, :0], (slice(0, 0),) * 3, (slice(0, 0),) * 3)
        window.append(slice(low - start[axis], high - start[axis]))
        target.append(slice(low, high))
    return _Layer(voxels, tuple(window), tuple(target))


def _segments_by_layer(segmentation, segment_ids: Sequence[str]):
    """{layer image: [(segment id, label value)]}, and the ids that need Slicer's resampling."""
    seg = segmentation.GetSegmentation()
    name = _binary_name()
    if _source_representation(segmentation) != name:
        return {}, list(segment_ids)
    layers: Dict[int, Tuple[object, List[Tuple[str, int]]]] = {}
    slow: List[str] = []
    for segment_id in segment_ids:
        segment = seg.GetSegment(segment_id)
        image = segment.GetRepresentation(name) if segment is not None else None
        if image is None:
            slow.append(segment_id)
            continue
        key = seg.GetLayerIndex(segment_id) if hasattr(seg, "GetLayerIndex") else id(image)
        layers.setdefault(key, (image, []))[1].append((segment_id, int(segment.GetLabelValue())))
    return layers, slow


def _layers_on_volume(segmentation, volume, segment_ids: Sequence[str]):
    """[(layer window or None, [(segment id, label value)])] and the ids that need Slicer's resampling."""
    matrix = _ijk_to_ras(volume)
    shape = tuple(slicer.util.arrayFromVolume(volume).shape)
    layers, slow = _segments_by_layer(segmentation, list(segment_ids))
    placed = []
    for image, members in layers.values():
        layer = _layer_on_volume(image, matrix, shape)
        voxels = layer.voxels[layer.window] if layer is not None else None
        if layer is None or (voxels.size and voxels.dtype.kind != "u" and voxels.min() < 0):
            slow += [segment_id for segment_id, _ in members]  # not a label layer as Slicer writes them
            continue
        placed.append((layer, voxels, members))
    return shape, placed, slow


def content_stamp(segmentation, segment_ids: Sequence[str]) -> tuple:
    """Changes whenever a segment's voxels (or the segment list) change: a case checked under
    the same stamp need not be checked again when it is exported."""
    seg = segmentation.GetSegmentation()
    name = _binary_name()
    stamp = [segmentation.GetMTime(), seg.GetMTime()]
    for segment_id in segment_ids:
        segment = seg.GetSegment(segment_id)
        image = segment.GetRepresentation(name) if segment is not None else None
        stamp.append((segment_id, image.GetMTime() if image is not None else -1))
    return tuple(stamp)


def present_segments(segmentation, volume, segment_ids: Sequence[str]) -> List[str]:
    """The ids among ``segment_ids`` that have voxels on ``volume`` (one pass per layer, nothing resampled
    unless a layer is off the volume's lattice)."""
    shape, placed, slow = _layers_on_volume(segmentation, volume, segment_ids)
    present = set()
    for _, voxels, members in placed:
        values = set(present_values(voxels))
        present.update(segment_id for segment_id, value in members if value in values)
    present.update(segment_id for segment_id in slow if segment_mask(segmentation, segment_id, volume).any())
    return [segment_id for segment_id in segment_ids if segment_id in present]


def labelmap_array(segmentation, volume, values: Dict[str, int]) -> np.ndarray:
    """The segments ``{segment id: label value}`` as one (k, j, i) labelmap on ``volume``'s grid.

    Where segments overlap the higher label value wins (a labelmap holds one class
    per voxel). Each layer on the volume's lattice is read once; others are resampled.
    """
    shape, placed, slow = _layers_on_volume(segmentation, volume, list(values))
    dtype = np.uint8 if max(values.values(), default=0) < 256 else np.uint16
    out: Optional[np.ndarray] = None
    for layer, voxels, members in placed:
        if voxels.size == 0:
            continue
        lut = np.zeros(int(voxels.max()) + 1, dtype=dtype)
        for segment_id, label_value in members:
            if label_value < lut.size:
                lut[label_value] = values[segment_id]
        whole = voxels.shape == shape
        if whole and out is None:  # the usual case: one layer on the whole volume, no merge needed
            identity = voxels.dtype == dtype and np.array_equal(lut, np.arange(lut.size, dtype=dtype))
            out = np.array(voxels) if identity else lut[voxels]
            continue
        if out is None:
            out = np.zeros(shape, dtype=dtype)
        region = out[layer.target]
        np.maximum(region, lut[voxels], out=region)
    if out is None:
        out = np.zeros(shape, dtype=dtype)
    for segment_id in slow:
        mask = segment_mask(segmentation, segment_id, volume)
        out[mask] = np.maximum(out[mask], values[segment_id])
    return out


def present_values(labelmap: np.ndarray) -> List[int]:
    """The nonzero values a labelmap holds (one pass, no sorting)."""
    if labelmap.size == 0:
        return []
    flags = np.zeros(int(labelmap.max()) + 1, dtype=bool)
    flags[labelmap.ravel()] = True
    return [int(v) for v in np.flatnonzero(flags) if v > 0]


def drawn_slices(labelmap: np.ndarray) -> Tuple[int, np.ndarray]:
    """The axis (of the (k, j, i) array) the user drew slices along, and which of its slices hold labels.

    The drawn axis is the one whose occupied slices are the sparsest within their span
    (every 4th axial slice: a quarter of the k span); a dense segmentation gives the
    slice axis k (axial for a usual CT) with every slice of the organ's span.
    """
    best_axis, best_fraction, best = 0, 2.0, np.zeros(labelmap.shape[0], bool)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        occupied = labelmap.any(axis=others)
        hits = np.flatnonzero(occupied)
        if hits.size == 0:
            return 0, np.zeros(labelmap.shape[0], bool)
        fraction = hits.size / float(hits[-1] - hits[0] + 1)
        if fraction < best_fraction - 1e-9:
            best_axis, best_fraction, best = axis, fraction, occupied
    return best_axis, best
