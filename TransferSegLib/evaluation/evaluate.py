"""Evaluate prediction files against reference files: class matching, table, JSON.

Classes are matched by segment name when both files carry names (``.seg.nrrd``),
so a prediction whose labels are numbered differently from the reference is still
scored organ by organ; plain labelmaps (NIfTI) are matched by label value.
"""

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

from TransferSegLib.data.grid import Grid, grid_problems, lattice_permutation, permute_onto
from TransferSegLib.data.images import read_any
from TransferSegLib.data.seg_nrrd import Segment, geometry_3d, is_seg_nrrd, read_segmentation
from TransferSegLib.data.labelmaps import check_label_values
from TransferSegLib.errors import CaseError
from TransferSegLib.evaluation.metrics import CaseMetrics, ClassMetrics, class_metrics
from TransferSegLib.file_integrity import nifti_nonfinite_count
from TransferSegLib.names import normalize_label_name

_METRIC_FIELDS = ("dice", "iou", "hd95", "assd", "rvd", "surface_dice")


def _value_segment(name: Optional[str], value: int) -> Segment:
    """A class of a plain labelmap: the voxels equal to ``value``."""
    return Segment(layer=0, value=int(value), name=str(name or value), color=None)


@dataclass
class _Labelmap:
    """A labelmap file read once: geometry, voxels and (for .seg.nrrd) its segments."""

    path: str
    image: Any  # SimpleITK.Image, kept for its geometry
    array: np.ndarray  # (X, Y, Z) or (X, Y, Z, layers) for overlapping segments
    segments: List[Segment]  # named segments; empty for a plain labelmap
    segmentation_file: bool = False  # the names come from the file itself (.seg.nrrd), not a names file

    @property
    def named(self) -> bool:
        return bool(self.segments)

    @property
    def layered(self) -> bool:
        return self.array.ndim > self.image.GetDimension()

    @property
    def layers(self) -> int:
        return self.array.shape[-1] if self.layered else 1

    def mask(self, segment: Union[None, Segment, List[Segment]]) -> np.ndarray:
        """The voxels of one segment, or of several merged into one class."""
        out = np.zeros(self.array.shape[: self.image.GetDimension()], dtype=bool)
        for part in ([segment] if isinstance(segment, Segment) else segment or []):
            values = self.array[..., part.layer] if self.layered else self.array
            out |= values == part.value
        return out

    def find(self, name: str) -> Optional[Segment]:
        key = normalize_label_name(name)
        for segment in self.segments:
            if normalize_label_name(segment.name or "") == key:
                return segment
        return None

    def segment_with_value(self, value: int) -> Optional[Segment]:
        for segment in self.segments:
            if segment.value == value and segment.layer == 0:
                return segment
        return None

    def values_present(self) -> List[int]:
        return [int(v) for v in np.unique(self.array) if v != 0]


def _case_name(path: str) -> str:
    name = Path(path).name
    return re.sub(r"(\.seg)?\.(nii\.gz|nii|nrrd|nhdr|mha|mhd|mrc)$", "", name, flags=re.IGNORECASE)


def _read_labelmap(path: str) -> _Labelmap:
    """Read a labelmap and, for ``.seg.nrrd``, its segments (overlapping ones stay in their own layers)."""
    if not Path(path).exists():
        raise CaseError(f"Labelmap file '{path}' does not exist; check the path.")
    if is_seg_nrrd(path):
        stored = read_segmentation(path)
        # (Z, Y, X) per layer → TransferSeg's (X, Y, Z[, layers]).
        layers = [layer.transpose(2, 1, 0) for layer in stored.layers]
        array = layers[0] if len(layers) == 1 else np.stack(layers, axis=-1)
        return _Labelmap(str(path), geometry_3d(stored.image), np.ascontiguousarray(array), stored.segments,
                         segmentation_file=bool(stored.segments))
    image = read_any(path)
    dim = image.GetDimension()
    array = sitk.GetArrayFromImage(image)
    # SimpleITK gives (Z, Y, X[, components]); TransferSeg works in (X, Y, Z[, layers]).
    order = tuple(range(dim))[::-1] + ((dim,) if array.ndim > dim else ())
    array = np.ascontiguousarray(array.transpose(order))
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise CaseError(f"'{path}' holds NaN or infinite values, not a labelmap.")
        rounded = np.rint(array)
        if array.size and np.abs(array - rounded).max() > 1e-3:
            raise CaseError(f"'{path}' holds fractional values, not a labelmap; "
                            "threshold probabilities into labels before evaluating.")
        array = rounded.astype(np.int32)
    if nifti_nonfinite_count(path):  # ITK read them as 0
        raise CaseError(f"'{path}' holds NaN or infinite values, not a labelmap.")
    check_label_values(array, str(path))
    return _Labelmap(str(path), image, array, [])


def _on_prediction_grid(pred: _Labelmap, ref: _Labelmap, resample: bool, notes: List[str]) -> None:
    """Put the reference on the prediction's grid, or refuse.

    The same voxels stored with permuted or flipped axes (a NIfTI beside its DICOM
    series) are re-indexed exactly; another grid is resampled (nearest neighbour)
    only with ``resample``. Each change is said in ``notes``.
    """
    a, b = Grid.of(pred.image), Grid.of(ref.image)
    problems = grid_problems(a, b)
    if not problems:
        return
    mapping = lattice_permutation(b, a)
    if mapping is not None:
        ref.array = permute_onto(ref.array, mapping)
        ref.image = pred.image
        notes.append(f"the reference '{ref.path}' holds the prediction's voxels with its axes "
                     f"{'permuted and flipped' if mapping.permuted and mapping.flipped else 'permuted' if mapping.permuted else 'flipped'}"
                     f" ({mapping.describe()}); it was re-indexed exactly onto the prediction's grid.")
        return
    if not resample:
        raise CaseError(f"Prediction '{pred.path}' and reference '{ref.path}' are not on the same grid "
                        f"(prediction vs reference): {'; '.join(problems)}. Pass --resample to resample the reference "
                        f"onto the prediction's grid (nearest neighbour), or predict on the reference's image "
                        f"(transferseg predict writes predictions in the input image's own geometry).")
    ref.array = _resampled(ref, pred.image)
    ref.image = pred.image
    notes.append(f"the reference '{ref.path}' is on another grid ({'; '.join(problems)}); it was resampled onto the "
                 f"prediction's grid (nearest neighbour), which changes its voxels: compare with care.")


def _resampled(ref: _Labelmap, target: Any) -> np.ndarray:
    """Each layer of the reference resampled onto ``target`` (nearest neighbour, 0 outside it)."""
    layers = [ref.array[..., k] for k in range(ref.layers)] if ref.layered else [ref.array]
    out = []
    for layer in layers:
        image = sitk.GetImageFromArray(np.ascontiguousarray(layer.transpose(2, 1, 0)))
        image.CopyInformation(_geometry_of(ref.image))
        moved = sitk.Resample(image, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        out.append(sitk.GetArrayFromImage(moved).transpose(2, 1, 0))
    return np.stack(out, axis=-1) if ref.layered else out[0]


def _geometry_of(image: Any) -> Any:
    return sitk.VectorIndexSelectionCast(image, 0) if image.GetNumberOfComponentsPerPixel() > 1 else image


def _class_parts(f: _Labelmap, item: Any, position: int, positional: bool) -> Optional[List[Segment]]:
    """The segments of ``f`` making up the selected class ``item`` (None: the file has none of them).

    A .seg.nrrd is matched by the class name first (its values are its own); values
    (``liver=5``) and merges apply to plain labelmaps; names also to those named by --label-names.
    """
    if f.segmentation_file:
        found = f.find(item.name)
        if found is not None:
            return [found]
    if item.sources:
        parts: List[Optional[Segment]] = []
        for source in item.sources:
            if isinstance(source, int):
                parts.append(f.segment_with_value(source) if f.segmentation_file
                             else _value_segment(item.name, source))
            else:
                parts.append(f.find(source) if f.named else None)
        kept = [p for p in parts if p is not None]
        return kept or None
    if f.named:
        found = f.find(item.name)
        return [found] if found is not None else None
    if positional:
        return [_value_segment(item.name, position)]
    raise CaseError(f"'{f.path}' carries no label names, so '{item.name}' cannot be found by name: give its value "
                    f"('{item.name}=5'), or a names file with --label-names.")


def _pairs_for_labels(pred: _Labelmap, ref: _Labelmap, selection: Any) -> List[Tuple[str, Any, Any]]:
    """Requested classes (a ``label_selection.LabelSelection``) as (name, prediction parts, reference parts)."""
    positional = selection.by_name_only  # a plain labelmap without names: bare names are its values 1..N
    merged: Dict[str, List[Any]] = {}
    for position, item in enumerate(selection.classes, start=1):
        merged.setdefault(normalize_label_name(item.name), []).append((position, item))
    pairs = []
    for items in merged.values():
        name = items[0][1].name
        ref_parts = [p for pos, it in items for p in (_class_parts(ref, it, pos, positional) or [])]
        if not ref_parts:
            have = ", ".join(s.name or "?" for s in ref.segments[:20]) or "no names"
            raise CaseError(f"Reference '{ref.path}' has no segment named '{name}' (it has: {have}); check --labels.")
        pred_parts = [p for pos, it in items for p in (_class_parts(pred, it, pos, positional) or [])]
        pairs.append((name, pred_parts or None, ref_parts))
    if pred.named and all(p is None for _, p, _ in pairs):
        raise CaseError(f"Prediction '{pred.path}' has none of the classes {selection.names} "
                        f"(it has: {', '.join(s.name or '?' for s in pred.segments)}); check --labels.")
    return pairs


def _default_pairs(pred: _Labelmap, ref: _Labelmap) -> List[Tuple[str, Optional[Segment], Optional[Segment]]]:
    if pred.named and ref.named:
        # The reference says which classes were annotated; extra predicted organs are not scored.
        pairs = [(s.name or str(s.value), pred.find(s.name or ""), s) for s in ref.segments]
        if all(p is None for _, p, _ in pairs):
            raise CaseError(f"Prediction '{pred.path}' and reference '{ref.path}' have no segment names in common "
                            f"(prediction: {[s.name for s in pred.segments]}, reference: {[s.name for s in ref.segments]}); "
                            "pass --labels to choose classes.")
        return pairs
    named, plain = (pred, ref) if pred.named else (ref, pred)
    if named.named:
        if named.layers > 1:
            raise CaseError(f"'{named.path}' has overlapping segments (several layers) and '{plain.path}' has no "
                            "segment names, so classes cannot be matched by value; pass --labels.")
        classes = [(s.name or str(s.value), s.value) for s in named.segments]
        known = {value for _, value in classes}
        classes += [(f"label_{v}", v) for v in plain.values_present() if v not in known]
    else:
        classes = [(f"label_{v}", v) for v in sorted(set(pred.values_present()) | set(ref.values_present()))]
    pairs = []
    for name, value in classes:
        pred_segment = pred.segment_with_value(value) if pred.named else _value_segment(name, value)
        ref_segment = ref.segment_with_value(value) if ref.named else _value_segment(name, value)
        pairs.append((name, pred_segment, ref_segment))
    return pairs


def evaluate_files(prediction: str, reference: str, labels: Any = None, tolerance_mm: float = 2.0,
                   names_file: Optional[str] = None, resample: bool = False,
                   notes: Optional[List[str]] = None) -> CaseMetrics:
    """Metrics of a predicted labelmap against a reference labelmap.

    ``labels`` selects and names the classes (``--labels`` text or a list of items):
    names found in files with segment names (``.seg.nrrd``, or a plain reference
    named by ``names_file``, which names every plain labelmap), values ``liver=5`` and merges ``liver=1+2`` of plain
    labelmaps, bare names as values 1..N when no file has names. Without it, the
    reference's segments are scored (named files) or every label value present in
    either file (plain files). A reference on an equivalent grid (axes permuted or
    flipped) is re-indexed exactly; another grid is refused unless ``resample``.
    What was done to the reference is appended to ``notes``. Distances are in mm.
    """
    from TransferSegLib.data.label_selection import parse_labels

    pred = _read_labelmap(str(prediction))
    ref = _read_labelmap(str(reference))
    if names_file:
        from TransferSegLib.data.label_names import read_label_table

        table = sorted(read_label_table(names_file).names.items())
        for plain in (f for f in (pred, ref) if not f.named):
            plain.segments = [_value_segment(n, v) for v, n in table]
    _on_prediction_grid(pred, ref, resample, notes if notes is not None else [])
    selection = parse_labels(labels) if labels else None
    pairs = _pairs_for_labels(pred, ref, selection) if selection else _default_pairs(pred, ref)
    spacing = ref.image.GetSpacing()
    classes = [class_metrics(pred.mask(p), ref.mask(r), spacing, tolerance_mm, label=name) for name, p, r in pairs]
    return CaseMetrics(case=_case_name(str(reference)), classes=classes, tolerance_mm=tolerance_mm)


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


def _json_metrics(values: Dict[str, float]) -> Dict[str, Any]:
    """Metric values with infinities/NaN as null, and which ones were infinite."""
    out: Dict[str, Any] = {k: _finite_or_none(v) for k, v in values.items()}
    infinite = [k for k, v in values.items() if math.isinf(v)]
    if infinite:
        out["infinite"] = infinite
    return out


def _case_means(case: CaseMetrics) -> Dict[str, float]:
    return {"dice": case.mean_dice, "iou": case.mean_iou, "hd95": case.mean_hd95, "assd": case.mean_assd,
            "rvd": case.mean_rvd, "surface_dice": case.mean_surface_dice}


def _means_by_label(metrics: List[CaseMetrics]) -> Dict[str, Dict[str, float]]:
    """Per class label, the mean of each metric over the cases that have it."""
    grouped: Dict[str, List[ClassMetrics]] = {}
    for case in metrics:
        for item in case.classes:
            grouped.setdefault(item.label, []).append(item)
    return {label: {f: float(np.mean([getattr(i, f) for i in items])) for f in _METRIC_FIELDS}
            for label, items in grouped.items()}


def metrics_to_json(metrics: List[CaseMetrics]) -> Dict[str, Any]:
    """A JSON-ready dict (strict JSON: no NaN/Infinity tokens).

    Infinite distances (one side empty) become ``null`` and are listed under
    ``"infinite"``; ``"empty"`` says which side was empty.
    """
    cases = []
    for case in metrics:
        classes = []
        for item in case.classes:
            entry: Dict[str, Any] = {"label": item.label}
            entry.update(_json_metrics({f: getattr(item, f) for f in _METRIC_FIELDS}))
            entry.update({"ref_voxels": int(item.ref_voxels), "pred_voxels": int(item.pred_voxels),
                          "empty": item.empty})
            classes.append(entry)
        cases.append({"case": case.case, "tolerance_mm": case.tolerance_mm, "classes": classes,
                      "mean": _json_metrics(_case_means(case)) if case.classes else None})
    return {
        "format": "transferseg-metrics",
        "version": 1,
        "cases": cases,
        "mean_by_label": {label: _json_metrics(values) for label, values in _means_by_label(metrics).items()},
    }


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_table(metrics: List[CaseMetrics]) -> str:
    """A plain, aligned text table: one row per class, a mean row per case with several classes,
    and per-class means when there are several cases."""
    tolerances = {c.tolerance_mm for c in metrics if c.tolerance_mm is not None}
    sd_header = f"SDice@{tolerances.pop():g}mm" if len(tolerances) == 1 else "SDice"
    header = ["case", "class", "Dice", "IoU", "HD95 mm", "ASSD mm", "RVD", sd_header, "ref vox", "pred vox"]
    rows: List[List[str]] = []

    def metric_cells(values: Dict[str, float]) -> List[str]:
        return [_fmt(values["dice"], 4), _fmt(values["iou"], 4), _fmt(values["hd95"], 2), _fmt(values["assd"], 2),
                _fmt(values["rvd"], 3, signed=True), _fmt(values["surface_dice"], 4)]

    for case in metrics:
        for item in case.classes:
            rows.append([case.case, item.label] + metric_cells({f: getattr(item, f) for f in _METRIC_FIELDS})
                        + [str(item.ref_voxels), str(item.pred_voxels)])
        if len(case.classes) > 1:
            rows.append([case.case, "(mean)"] + metric_cells(_case_means(case)) + ["", ""])
    if len(metrics) > 1:
        for label, values in _means_by_label(metrics).items():
            rows.append([f"mean of {len(metrics)} cases", label] + metric_cells(values) + ["", ""])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(len(row))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
