"""Picking classes out of multi-label maps: --labels forms, label-name files, manifests, partial labels.

Every selection form runs on the shipped TotalSegmentator labelmap (117 classes in
one file, liver = 5) or the SlicerIO segmentations; the LiTS-style liver + tumour
labelmap (1 = liver, 2 = tumour) is built from the TotalSegmentator liver.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.data.cases import cases_from_pairs, load_case, select_labels
from TransferSegLib.data.manifest import cases_from_manifest
from TransferSegLib.data.label_names import read_label_table
from TransferSegLib.data.label_selection import SelectedClass, parse_labels
from TransferSegLib.errors import CaseError

SAMPLES = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
TS = SAMPLES / "TotalSegmentator"
SLICERIO = SAMPLES / "SlicerIO"
CT, SEG, NAMES = str(TS / "example_ct_sm.nii.gz"), str(TS / "example_seg.nii.gz"), str(TS / "label_names.json")


@pytest.fixture(scope="module")
def seg():
    return sitk.GetArrayFromImage(sitk.ReadImage(SEG))


def _load(labels, targets, **kwargs):
    case = cases_from_pairs([CT], [SEG], labels, **kwargs)[0]
    loaded = load_case(case, ["background"] + targets)
    region = None if loaded.region is None else sitk.GetArrayFromImage(loaded.region)
    return case, sitk.GetArrayFromImage(loaded.label), region


# --- the --labels text ---------------------------------------------------------------------------

def test_the_labels_text_reads_names_values_several_classes_and_merges():
    assert parse_labels("liver").classes == [SelectedClass("liver")]
    assert parse_labels("liver=5").classes == [SelectedClass("liver", (5,))]
    assert parse_labels(" liver=5 , spleen=1 ").names == ["liver", "spleen"]
    assert parse_labels("liver=1+2").classes == [SelectedClass("liver", (1, 2))]
    assert parse_labels("liver=liver+liver_tumor").classes == [SelectedClass("liver", ("liver", "liver_tumor"))]
    assert parse_labels(["liver", "spleen"]).by_name_only and not parse_labels("liver=5").by_name_only


@pytest.mark.parametrize("text, words", [
    ("background=0", "background"), ("5", "name the class"), ("liver=0", "value 0"), ("=5", "no class name"),
    ("liver=", "empty value"), ("liver=-3", "whole numbers"),
])
def test_malformed_labels_are_refused_saying_what_to_write(text, words):
    with pytest.raises(CaseError, match=words):
        parse_labels(text)


def test_one_value_cannot_belong_to_two_classes():
    with pytest.raises(CaseError, match="value 5 .* both 'liver' and 'spleen'"):
        parse_labels("liver=5,spleen=5").resolve({}, "'seg.nii.gz'")


# --- selection forms on the real TotalSegmentator labelmap -----------------------------------------

def test_one_class_by_value_from_a_117_class_map(seg):
    case, label, region = _load("liver=5", ["liver"])
    assert case.label_names == {5: "liver"} and case.unselected == "background"
    assert (label == 1).sum() == (seg == 5).sum() > 0 and set(np.unique(label)) == {0, 1} and region is None


def test_several_classes_by_value(seg):
    _, label, _ = _load("liver=5,spleen=1", ["liver", "spleen"])
    assert (label == 1).sum() == (seg == 5).sum() and (label == 2).sum() == (seg == 1).sum() > 0


def test_a_merge_of_values_is_one_class(seg):
    _, label, _ = _load("kidney=2+3", ["kidney"])
    assert (label == 1).sum() == ((seg == 2) | (seg == 3)).sum() and (seg == 2).any() and (seg == 3).any()


def test_liver_and_tumour_merge_into_liver(tmp_path, seg):
    """A LiTS-style labelmap (1 liver, 2 tumour) made from the TotalSegmentator liver: liver=1+2 is the whole organ."""
    liver = seg == 5
    coords = np.argwhere(liver)
    centre = coords.mean(axis=0)
    tumour = liver & (np.linalg.norm(np.indices(seg.shape).transpose(1, 2, 3, 0) - centre, axis=-1) < 4)
    lits = np.where(tumour, 2, np.where(liver, 1, 0)).astype(np.uint8)
    path = tmp_path / "lits_style.nii.gz"
    image = sitk.GetImageFromArray(lits)
    image.CopyInformation(sitk.ReadImage(SEG))
    sitk.WriteImage(image, str(path))
    case = cases_from_pairs([CT], [str(path)], "liver=1+2")[0]
    label = sitk.GetArrayFromImage(load_case(case, ["background", "liver"]).label)
    assert tumour.sum() > 50 and np.array_equal(label == 1, liver)
    tumour_only = cases_from_pairs([CT], [str(path)], "tumour=2")[0]
    assert np.array_equal(sitk.GetArrayFromImage(load_case(tumour_only, ["background", "tumour"]).label) == 1, tumour)


def test_names_from_totalsegmentators_table_select_by_name(seg):
    case, label, _ = _load("liver,spleen", ["liver", "spleen"], names_file=f"{NAMES}:total")
    assert case.label_names == {5: "liver", 1: "spleen"}
    assert (label == 1).sum() == (seg == 5).sum() and (label == 2).sum() == (seg == 1).sum()


def test_unselected_values_can_be_unannotated_instead_of_background(seg):
    _, label, region = _load("liver=5", ["liver"], unselected="unannotated")
    others = (seg != 0) & (seg != 5)
    assert others.sum() > 1000 and np.array_equal(region == 0, others) and (label[others] == 0).all()


def test_bare_names_without_names_refuse_a_multi_label_map_and_say_how_to_select():
    case = cases_from_pairs([CT], [SEG], "liver")[0]
    assert case.label_names == {1: "liver"} and case.unselected == "refuse"
    with pytest.raises(CaseError) as error:
        load_case(case, ["background", "liver"])
    assert "liver=5" in str(error.value) and "--label-names" in str(error.value)


def test_a_name_the_table_lacks_is_refused_with_close_names():
    with pytest.raises(CaseError, match="no label named 'kidney'.*kidney_right"):
        cases_from_pairs([CT], [SEG], "kidney", names_file=f"{NAMES}:total")


# --- label-name files people have ------------------------------------------------------------------

def test_totalsegmentators_table_needs_its_task_when_it_has_several():
    assert read_label_table(f"{NAMES}:total").names[5] == "liver"
    assert read_label_table(f"{NAMES}:total_mr").names[10] == "lung_left"
    with pytest.raises(CaseError, match="several tasks .*total, total_mr"):
        read_label_table(NAMES)
    with pytest.raises(CaseError, match="no task 'lungs'"):
        read_label_table(f"{NAMES}:lungs")


def test_the_class_map_of_totalsegmentators_python_file_is_read_without_running_it(tmp_path):
    table = json.loads(Path(NAMES).read_text())["total"]
    body = ",\n".join(f"        {int(k)}: {v!r}" for k, v in table.items())
    (tmp_path / "map_to_binary.py").write_text(
        f"import os\nos.remove('nothing')\nclass_map = {{\n    \"total\": {{\n{body}\n    }},\n"
        f"    \"body\": {{1: 'body_trunc', 2: 'body_extremities'}},\n}}\n")
    assert read_label_table(f"{tmp_path / 'map_to_binary.py'}:total").names[5] == "liver"
    assert read_label_table(f"{tmp_path / 'map_to_binary.py'}:body").names == {1: "body_trunc", 2: "body_extremities"}


def test_a_slicer_color_table_and_an_itk_snap_label_file(tmp_path):
    (tmp_path / "organs.ctbl").write_text("# Color table file organs.ctbl\n# 3 values\n0 Background 0 0 0 0\n"
                                          "1 spleen 157 108 162 255\n5 liver 221 130 101 255\n")
    slicer = read_label_table(str(tmp_path / "organs.ctbl"))
    assert slicer.names == {1: "spleen", 5: "liver"} and slicer.colors[5] == pytest.approx((221 / 255, 130 / 255, 101 / 255))
    (tmp_path / "labels.txt").write_text(
        "################################################\n# ITK-SnAP Label Description File\n"
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL\n################################################\n"
        '    0     0    0    0        0  0  0    "Clear Label"\n'
        '    5   221  130  101        1  1  1    "liver"\n'
        '    1   157  108  162        1  1  1    "left kidney cyst"\n')
    snap = read_label_table(str(tmp_path / "labels.txt"))
    assert snap.names == {5: "liver", 1: "left kidney cyst"} and snap.colors[1] == pytest.approx((157 / 255, 108 / 255, 162 / 255))


def test_json_tables_and_a_seg_nrrd_name_values(tmp_path):
    (tmp_path / "decathlon.json").write_text(json.dumps({"labels": {"0": "background", "5": "liver"}}))
    (tmp_path / "nnunet.json").write_text(json.dumps({"labels": {"background": 0, "liver": 5}}))
    assert read_label_table(str(tmp_path / "decathlon.json")).names == read_label_table(str(tmp_path / "nnunet.json")).names == {5: "liver"}
    assert read_label_table(str(SLICERIO / "Segmentation.seg.nrrd")).names[5] == "right lung"
    with pytest.raises(CaseError, match="does not exist"):
        read_label_table(str(tmp_path / "missing.ctbl"))


# --- manifests -------------------------------------------------------------------------------------

def _manifest(tmp_path, labels, **extra):
    data = {"name": "TS", "labels": labels, "numTraining": 1, "training": [{"image": CT, "label": SEG}]}
    data.update(extra)
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    return str(tmp_path / "dataset.json")


def test_a_manifest_naming_only_the_liver_selects_it(tmp_path, seg):
    cases, extras = cases_from_manifest(_manifest(tmp_path, {"0": "background", "5": "liver"}))
    assert extras["labels"] == ["liver"] and cases[0].unselected == "background"
    label = sitk.GetArrayFromImage(load_case(cases[0], ["background", "liver"]).label)
    assert (label == 1).sum() == (seg == 5).sum()


def test_a_manifest_merges_values_and_may_leave_the_rest_unannotated(tmp_path, seg):
    cases, extras = cases_from_manifest(_manifest(tmp_path, {"background": 0, "kidney": [2, 3]}, unselected="unannotated"))
    loaded = load_case(cases[0], ["background", "kidney"])
    label, region = sitk.GetArrayFromImage(loaded.label), sitk.GetArrayFromImage(loaded.region)
    assert extras["labels"] == ["kidney"] and (label == 1).sum() == ((seg == 2) | (seg == 3)).sum()
    assert np.array_equal(region == 0, (seg != 0) & (seg != 2) & (seg != 3))


def test_a_value_selection_applies_to_manifest_cases(tmp_path, seg):
    names = {str(k): v for k, v in json.loads(Path(NAMES).read_text())["total"].items()}
    cases, _ = cases_from_manifest(_manifest(tmp_path, names))
    picked = select_labels(cases, parse_labels("abdomen_kidneys=kidney_left+kidney_right,liver=5"))
    assert picked[0].label_names == {3: "abdomen_kidneys", 2: "abdomen_kidneys", 5: "liver"}
    label = sitk.GetArrayFromImage(load_case(picked[0], ["background", "abdomen_kidneys", "liver"]).label)
    assert (label == 1).sum() == ((seg == 2) | (seg == 3)).sum() and (label == 2).sum() == (seg == 5).sum()


# --- Slicer segmentations --------------------------------------------------------------------------

def test_overlapping_segments_are_refused_only_when_both_are_selected():
    image, overlapping = str(SLICERIO / "CTChest4.nrrd"), str(SLICERIO / "SegmentationOverlapping.seg.nrrd")
    apart = cases_from_pairs([image], [overlapping], "ribs,right lung")[0]
    label = sitk.GetArrayFromImage(load_case(apart, ["background", "ribs", "right lung"]).label)
    assert (label == 1).sum() > 1000 and (label == 2).sum() > 1000  # ribs touch the sphere, which is not selected
    clash = cases_from_pairs([image], [overlapping], "ribs,overlapping sphere")[0]
    with pytest.raises(CaseError, match="selected segments overlap: 'ribs' and 'overlapping sphere'"):
        load_case(clash, ["background", "ribs", "overlapping sphere"])


def test_segments_of_a_seg_nrrd_merge_by_name():
    image, path = str(SLICERIO / "CTChest4.nrrd"), str(SLICERIO / "Segmentation.seg.nrrd")
    lungs = cases_from_pairs([image], [path], "lungs=right lung+left lung")[0]
    both = sitk.GetArrayFromImage(load_case(lungs, ["background", "lungs"]).label) == 1
    each = cases_from_pairs([image], [path], "right lung,left lung")[0]
    apart = sitk.GetArrayFromImage(load_case(each, ["background", "right lung", "left lung"]).label)
    assert np.array_equal(both, apart > 0) and both.sum() > 10000
