"""Evaluating files: class matching by name or value, grid checks, table and strict JSON."""

import json
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.errors import CaseError
from TransferSegLib.evaluation.evaluate import evaluate_files, format_table, metrics_to_json

SLICERIO = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "SlicerIO"


def _image(array_xyz: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _write(path: Path, array_xyz: np.ndarray, segments: Optional[Dict[int, str]] = None, **geometry) -> str:
    image = _image(array_xyz.astype(np.uint8), **geometry)
    for index, (value, name) in enumerate((segments or {}).items()):
        image.SetMetaData(f"Segment{index}_ID", f"Segment_{value}")
        image.SetMetaData(f"Segment{index}_Name", name)
        image.SetMetaData(f"Segment{index}_LabelValue", str(value))
        image.SetMetaData(f"Segment{index}_Layer", "0")
    sitk.WriteImage(image, str(path), useCompression=True)
    return str(path)


def _labels(boxes: Sequence[tuple], shape=(16, 16, 8)) -> np.ndarray:
    """A labelmap with value v filling the box (x0, x1, y0, y1, z0, z1) given v-1th."""
    array = np.zeros(shape, dtype=np.uint8)
    for value, (x0, x1, y0, y1, z0, z1) in enumerate(boxes, start=1):
        array[x0:x1, y0:y1, z0:z1] = value
    return array


LIVER = (2, 8, 2, 8, 1, 5)
SPLEEN = (10, 14, 10, 14, 2, 6)


def test_plain_labelmaps_are_matched_by_value_and_named_by_labels(tmp_path):
    ref = _write(tmp_path / "case7.nii.gz", _labels([LIVER, SPLEEN]))
    shifted = (3, 9, 2, 8, 1, 5)
    pred = _write(tmp_path / "pred.nii.gz", _labels([shifted, SPLEEN]))
    metrics = evaluate_files(pred, ref, labels=["liver", "spleen"])
    assert metrics.case == "case7"
    assert [c.label for c in metrics.classes] == ["liver", "spleen"]
    assert metrics.by_label("liver").dice == pytest.approx(2 * 5 / 12)
    assert metrics.by_label("spleen").dice == 1.0
    without_names = evaluate_files(pred, ref)
    assert [c.label for c in without_names.classes] == ["label_1", "label_2"]


def test_named_labelmaps_match_by_name_not_value(tmp_path):
    # The prediction numbers spleen 1 and liver 2; the reference the other way round.
    ref = _write(tmp_path / "ref.seg.nrrd", _labels([LIVER, SPLEEN]), {1: "Liver", 2: "Spleen"})
    pred = _write(tmp_path / "pred.seg.nrrd", _labels([SPLEEN, LIVER]), {1: "spleen", 2: "liver"})
    metrics = evaluate_files(pred, ref)
    assert metrics.case == "ref"
    assert [c.label for c in metrics.classes] == ["Liver", "Spleen"]
    assert metrics.mean_dice == 1.0
    assert evaluate_files(pred, ref, labels=["spleen"]).classes[0].dice == 1.0


def test_named_prediction_against_plain_reference_uses_names_and_values(tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", _labels([LIVER]))
    pred = _write(tmp_path / "pred.seg.nrrd", _labels([SPLEEN, LIVER]), {1: "spleen", 2: "liver"})
    assert evaluate_files(pred, ref, labels=["liver"]).classes[0].dice == 1.0


def test_requested_class_missing_from_reference_is_an_error(tmp_path):
    ref = _write(tmp_path / "ref.seg.nrrd", _labels([LIVER]), {1: "liver"})
    pred = _write(tmp_path / "pred.seg.nrrd", _labels([LIVER]), {1: "liver"})
    with pytest.raises(CaseError, match="no segment named 'kidney'"):
        evaluate_files(pred, ref, labels=["kidney"])


def test_named_files_without_common_names_are_an_error(tmp_path):
    ref = _write(tmp_path / "ref.seg.nrrd", _labels([LIVER]), {1: "liver"})
    pred = _write(tmp_path / "pred.seg.nrrd", _labels([LIVER]), {1: "segment_1"})
    with pytest.raises(CaseError, match="no segment names in common"):
        evaluate_files(pred, ref)


@pytest.mark.parametrize("geometry, prop", [
    ({"spacing": (1.0, 1.0, 3.0)}, "spacing"),
    ({"origin": (0.0, 5.0, 0.0)}, "origin"),
])
def test_different_grids_are_refused_naming_files_and_property(tmp_path, geometry, prop):
    ref = _write(tmp_path / "ref.nii.gz", _labels([LIVER]))
    pred = _write(tmp_path / "pred.nii.gz", _labels([LIVER]), **geometry)
    with pytest.raises(CaseError) as info:
        evaluate_files(pred, ref)
    message = str(info.value)
    assert prop in message and "pred.nii.gz" in message and "ref.nii.gz" in message


def test_different_sizes_are_refused(tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", _labels([LIVER]))
    pred = _write(tmp_path / "pred.nii.gz", _labels([LIVER], shape=(16, 16, 9)))
    with pytest.raises(CaseError, match="size"):
        evaluate_files(pred, ref)


def test_missing_file_is_a_case_error(tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", _labels([LIVER]))
    with pytest.raises(CaseError, match="does not exist"):
        evaluate_files(str(tmp_path / "nope.nii.gz"), ref)


def test_distances_use_the_reference_spacing(tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", _labels([LIVER]), spacing=(1.0, 1.0, 4.0))
    pred = _write(tmp_path / "pred.nii.gz", _labels([(2, 8, 2, 8, 2, 6)]), spacing=(1.0, 1.0, 4.0))
    assert evaluate_files(pred, ref).classes[0].hd95 == pytest.approx(4.0)


def test_overlapping_segments_are_evaluated_per_layer():
    metrics = evaluate_files(str(SLICERIO / "SegmentationOverlapping.seg.nrrd"),
                             str(SLICERIO / "SegmentationOverlapping.seg.nrrd"))
    labels = [c.label for c in metrics.classes]
    assert len(labels) == 8 and "overlapping sphere" in labels and "ribs" in labels
    assert metrics.mean_dice == 1.0
    # Against the single-layer file, the layer-0 segments are the same voxels.
    versus_plain = evaluate_files(str(SLICERIO / "SegmentationOverlapping.seg.nrrd"),
                                  str(SLICERIO / "Segmentation.seg.nrrd"))
    assert len(versus_plain.classes) == 7 and versus_plain.mean_dice == 1.0


def test_missed_class_gives_strict_json_with_flags(tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", _labels([LIVER, SPLEEN]))
    pred = _write(tmp_path / "pred.nii.gz", _labels([LIVER]))
    metrics = evaluate_files(pred, ref, labels=["liver", "spleen"])
    assert math.isinf(metrics.by_label("spleen").hd95)
    data = metrics_to_json([metrics, metrics])
    text = json.dumps(data, allow_nan=False)  # raises on NaN/Infinity
    spleen = json.loads(text)["cases"][0]["classes"][1]
    assert spleen["hd95"] is None and spleen["assd"] is None
    assert set(spleen["infinite"]) == {"hd95", "assd"}
    assert spleen["empty"] == "prediction" and spleen["dice"] == 0.0 and spleen["rvd"] == -1.0
    assert data["cases"][0]["mean"]["hd95"] is None
    assert data["mean_by_label"]["liver"]["dice"] == 1.0


def test_table_lists_every_class_with_aligned_columns(tmp_path):
    ref = _write(tmp_path / "ref.nii.gz", _labels([LIVER, SPLEEN]))
    pred = _write(tmp_path / "pred.nii.gz", _labels([LIVER]))
    metrics = evaluate_files(pred, ref, labels=["liver", "spleen"], tolerance_mm=1.5)
    table = format_table([metrics])
    lines = table.splitlines()
    assert "SDice@1.5mm" in lines[0] and "HD95 mm" in lines[0]
    assert any(line.startswith("ref") and " liver " in line and "1.0000" in line for line in lines)
    spleen = next(line for line in lines if " spleen " in line)
    assert " inf " in spleen and "-1.000" in spleen
    assert any("(mean)" in line for line in lines)
    # Columns align: the Dice header ends where each Dice value ends.
    end = lines[0].index("Dice") + len("Dice")
    assert all(line[end - 6:end].strip() for line in lines[2:])


# --- real sample files: selections, equivalent grids, resampling ---------------------------------------

TS = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "TotalSegmentator"


@pytest.fixture(scope="module")
def dicom_prediction(tmp_path_factory):
    """TotalSegmentator's DICOM reference written on the DICOM series' own grid (what 'predict' writes)."""
    from TransferSegLib.data.images import read_image

    series = read_image(str(TS / "example_ct_dicom"))
    reference = sitk.ReadImage(str(TS / "example_seg_dicom.nii.gz"))
    on_series = sitk.Resample(reference, series, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    path = tmp_path_factory.mktemp("dicom") / "prediction.nii.gz"
    sitk.WriteImage(on_series, str(path), useCompression=True)
    return str(path)


def test_an_equivalent_grid_is_reindexed_exactly_and_said(dicom_prediction, capsys):
    from TransferSegLib.cli import main

    assert main(["evaluate", "--prediction", dicom_prediction, "--reference", str(TS / "example_seg_dicom.nii.gz"),
                 "--labels", "liver=5,spleen=1", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [c["dice"] for c in report["cases"][0]["classes"]] == [1.0, 1.0]
    assert "note:" in captured.err and "flipped" in captured.err and "re-indexed exactly" in captured.err


def test_names_from_a_label_file_select_classes_of_plain_labelmaps(dicom_prediction):
    metrics = evaluate_files(dicom_prediction, str(TS / "example_seg_dicom.nii.gz"), labels="liver,stomach_pancreas=6+7",
                             names_file=f"{TS / 'label_names.json'}:total")
    assert [c.label for c in metrics.classes] == ["liver", "stomach_pancreas"]
    assert all(c.dice == 1.0 and c.ref_voxels > 0 for c in metrics.classes)


def test_a_real_grid_mismatch_needs_resample(tmp_path, dicom_prediction):
    reference = sitk.ReadImage(str(TS / "example_seg_dicom.nii.gz"))
    coarse = sitk.Resample(reference, [256, 256, 20], sitk.Transform(), sitk.sitkNearestNeighbor,
                           reference.GetOrigin(), [s * f for s, f in zip(reference.GetSpacing(), (2, 2, 1))],
                           reference.GetDirection(), 0)
    path = str(tmp_path / "coarse_reference.nii.gz")
    sitk.WriteImage(coarse, path)
    with pytest.raises(CaseError, match="not on the same grid.*--resample"):
        evaluate_files(dicom_prediction, path, labels="liver=5")
    notes = []
    metrics = evaluate_files(dicom_prediction, path, labels="liver=5", resample=True, notes=notes)
    assert notes and "resampled onto the prediction's grid" in notes[0]
    assert 0.95 < metrics.classes[0].dice < 1.0  # the same liver, blocky at half the resolution
