"""Slicer segmentations (``.seg.nrrd``): the segment table, reading the layers, writing the metadata.

A ``.seg.nrrd`` stores segments in one or more layers (overlapping segments go to
different layers), each with a name, a color and a label value in its layer.
Training flattens them into one labelmap; evaluation keeps the layers apart.
Written files carry the segment table the way Slicer itself stores it, so Slicer
opens them with their names and colors.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from TransferSegLib.data.images import first_line, read_any
from TransferSegLib.errors import CaseError
from TransferSegLib.names import label_color

Color = Tuple[float, float, float]


@dataclass
class Segment:
    """One segment of a ``.seg.nrrd``: where its voxels are and the value it gets when flattened."""

    layer: int
    value: int
    name: str
    color: Optional[Color]
    flat_value: int = 0


def is_seg_nrrd(path) -> bool:
    return str(path).lower().endswith(".seg.nrrd")


def _parse_color(text: Optional[str]) -> Optional[Color]:
    try:
        rgb = tuple(float(c) for c in str(text).split()[:3])
    except ValueError:
        return None
    return rgb if len(rgb) == 3 else None  # type: ignore[return-value]


def declared_segments(meta: Dict[str, str], layers: int, path: str) -> List[Segment]:
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
        segments.append(Segment(layer, value, info.get("Name", f"Segment_{index}"), _parse_color(info.get("Color"))))
    for position, segment in enumerate(segments):
        segment.flat_value = segment.value if layers <= 1 else position + 1
    return segments


def read_header(path: str) -> Tuple[Dict[str, str], int]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise CaseError(f"'{path}' cannot be read as a segmentation: {first_line(exc)}") from exc
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
    meta, layers = read_header(path)
    return {s.flat_value: s.name for s in declared_segments(meta, layers, path)}


def layer_arrays(image: sitk.Image) -> List[np.ndarray]:
    """Each layer of a segmentation as a (Z, Y, X) array."""
    if image.GetDimension() == 4:
        size = image.GetSize()
        return [sitk.GetArrayFromImage(sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, k]))
                for k in range(size[3])]
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        return [array[..., k] for k in range(array.shape[-1])]
    return [array]


def geometry_3d(image: sitk.Image) -> sitk.Image:
    """An empty 3D image carrying the spatial geometry of a 3D or 4D segmentation."""
    if image.GetDimension() == 4:
        size = image.GetSize()
        return sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetNumberOfComponentsPerPixel() > 1:
        return sitk.VectorIndexSelectionCast(image, 0)
    return image


@dataclass
class SegmentationFile:
    """A ``.seg.nrrd`` as stored: its image (for the geometry), each layer's (Z, Y, X) voxels and its segments."""

    path: str
    image: sitk.Image
    layers: List[np.ndarray]
    segments: List[Segment]


def read_segmentation(path: str) -> SegmentationFile:
    """The voxels and segment table of a ``.seg.nrrd``, layers kept apart (segments may overlap)."""
    image = read_any(path)
    meta = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    layers = layer_arrays(image)
    return SegmentationFile(str(path), image, layers, declared_segments(meta, len(layers), path))


def read_seg_nrrd(path: str, selected: Optional[List[int]] = None
                  ) -> Tuple[sitk.Image, Dict[int, str], Dict[int, Color]]:
    """A ``.seg.nrrd`` flattened into one 3D labelmap, with its names and colors.

    Refused where segments overlap (with ``selected``, a list of flattened values,
    only where two selected segments overlap).
    """
    stored = read_segmentation(path)
    image, layers, segments = stored.image, stored.layers, stored.segments
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
    out.CopyInformation(geometry_3d(image))
    names = {s.flat_value: s.name for s in segments}
    colors = {s.flat_value: (s.color or label_color(s.name, s.flat_value)) for s in segments}
    return out, names, colors


def _extents(array_zyx: np.ndarray, values: List[int]) -> Dict[int, str]:
    """Slicer's ``SegmentN_Extent``: 'i0 i1 j0 j1 k0 k1' of each value's voxels (empty: '0 -1 ...')."""
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


def add_segment_metadata(out: sitk.Image, names: Dict[int, str], colors: Dict[int, Color]) -> None:
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
