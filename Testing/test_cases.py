"""Cases: pairs and manifests become ``Case``s; loading checks them and maps their
labels by name onto the model's label list, remembering what was annotated."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.specs import Case
from TransferSegLib.data.cases import cases_from_pairs, load_case
from TransferSegLib.data.manifest import cases_from_manifest
from TransferSegLib.errors import CaseError
from TransferSegLib.data.labelmaps import write_labelmap

SAMPLES = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
SLICERIO = SAMPLES / "SlicerIO"
SHAPE = (6, 7, 8)  # (Z, Y, X)


def _image(array, spacing=(0.8, 0.9, 2.5), origin=(-10.0, 20.0, 30.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _labels():
    array = np.zeros(SHAPE, np.uint8)
    array[1:3, 2:5, 1:4] = 1  # liver
    array[4:6, 0:2, 5:8] = 2  # spleen
    array[0, 6, 7] = 3  # kidney
    return array


def _pair(folder: Path, stem="case", labels=None, image=None, **image_kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    image_path = folder / f"{stem}.nii.gz"
    label_path = folder / f"{stem}_seg.nii.gz"
    pixels = image if image is not None else np.random.default_rng(0).normal(0, 50, SHAPE).astype(np.float32)
    sitk.WriteImage(_image(pixels, **image_kwargs), str(image_path))
    sitk.WriteImage(_image(_labels() if labels is None else labels), str(label_path))
    return str(image_path), str(label_path)


NAMES = {1: "Liver", 2: "spleen", 3: "kidney-left"}


def _message(error) -> str:
    return str(error.value)


# --- pairs ----------------------------------------------------------------------------------------

def test_pairs_name_plain_label_values_in_order(tmp_path):
    image, label = _pair(tmp_path)
    cases = cases_from_pairs([image], [label], ["liver", "spleen", "kidney_left"])
    assert cases[0].label_names == {1: "liver", 2: "spleen", 3: "kidney_left"}
    assert cases[0].annotated is None and cases[0].name == "case"


def test_pairs_of_seg_nrrd_take_names_from_the_file_and_select_by_name():
    image, label = str(SLICERIO / "CTChest4.nrrd"), str(SLICERIO / "Segmentation.seg.nrrd")
    everything = cases_from_pairs([image], [label], None)[0]
    assert everything.label_names[5] == "right lung" and everything.annotated is None
    lungs = cases_from_pairs([image], [label], ["Right Lung", "left lung"])[0]
    assert lungs.label_names == {5: "Right Lung", 6: "left lung"} and lungs.unselected == "background"


def test_selecting_a_segment_the_file_lacks_is_refused_listing_its_segments():
    with pytest.raises(CaseError) as error:
        cases_from_pairs([str(SLICERIO / "CTChest4.nrrd")], [str(SLICERIO / "Segmentation.seg.nrrd")], ["liver"])
    assert "liver" in _message(error) and "right lung" in _message(error) and "Segmentation.seg.nrrd" in _message(error)


def test_unequal_numbers_of_images_and_labels_are_refused():
    with pytest.raises(CaseError, match="2 images but 1 labelmaps"):
        cases_from_pairs(["a.nii.gz", "b.nii.gz"], ["a_seg.nii.gz"], ["liver"])


def test_a_case_round_trips_through_a_dict_and_refuses_unknown_fields():
    case = Case(image="/d/ct_0000.nii.gz", label="/d/ct.nii.gz", label_names={1: "liver"}, annotated=["liver"])
    assert case.name == "ct"
    assert Case.from_dict(json.loads(json.dumps(case.to_dict()))) == case
    with pytest.raises(CaseError, match="labels"):
        Case.from_dict({"image": "a.nii.gz", "labels": "b.nii.gz"})
    with pytest.raises(CaseError, match="annotated"):
        Case(image="a.nii.gz", annotated="liver")  # type: ignore[arg-type]


# --- manifests ------------------------------------------------------------------------------------

def _nnunet_dataset(root: Path, n=2, **extra):
    for i in range(n):
        image, label = _pair(root / "tmp", stem=f"c{i}")
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        Path(image).rename(root / "imagesTr" / f"abd_{i:03d}_0000.nii.gz")
        Path(label).rename(root / "labelsTr" / f"abd_{i:03d}.nii.gz")
    data = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2, "kidney_left": 3},
            "numTraining": n, "file_ending": ".nii.gz", "name": "Abdomen"}
    data.update(extra)
    (root / "dataset.json").write_text(json.dumps(data))
    return str(root / "dataset.json")


def test_an_nnunet_v2_dataset_json_lists_its_cases(tmp_path):
    cases, extras = cases_from_manifest(_nnunet_dataset(tmp_path))
    assert [c.name for c in cases] == ["abd_000", "abd_001"]
    assert cases[0].image.endswith("abd_000_0000.nii.gz") and cases[0].label.endswith("labelsTr/abd_000.nii.gz")
    assert cases[0].label_names == {1: "liver", 2: "spleen", 3: "kidney_left"}
    assert extras["channel_names"] == {"0": "CT"} and extras["labels"] == ["liver", "spleen", "kidney_left"]


def _decathlon(root: Path, entries, **extra):
    data = {"name": "Task03", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "spleen",
            "3": "kidney_left"}, "numTraining": len(entries), "training": entries}
    data.update(extra)
    (root / "dataset.json").write_text(json.dumps(data))
    return str(root / "dataset.json")


def test_a_decathlon_dataset_json_with_relative_paths_and_our_extra_fields(tmp_path):
    _pair(tmp_path / "imagesTr", stem="liver_1")
    Path(tmp_path / "imagesTr" / "liver_1_seg.nii.gz").rename(tmp_path / "region.nii.gz")
    _pair(tmp_path / "imagesTr", stem="liver_2")
    entries = [
        {"image": "./imagesTr/liver_1.nii.gz", "label": "./region.nii.gz", "annotated": ["liver"],
         "region": "./region.nii.gz"},
        {"image": "./imagesTr/liver_2.nii.gz", "label": "./imagesTr/liver_2_seg.nii.gz"},
    ]
    cases, extras = cases_from_manifest(_decathlon(tmp_path, entries))
    assert cases[0].annotated == ["liver"] and cases[0].region == str((tmp_path / "region.nii.gz").resolve())
    assert cases[1].annotated is None and cases[1].label_names[2] == "spleen"
    assert Path(cases[1].image).is_absolute() and extras["modality"] == {"0": "CT"}


def test_manifest_entries_naming_missing_files_are_refused_naming_the_entry(tmp_path):
    _pair(tmp_path / "imagesTr", stem="liver_1")
    path = _decathlon(tmp_path, [{"image": "./imagesTr/liver_1.nii.gz", "label": "./labelsTr/liver_1.nii.gz"}])
    with pytest.raises(CaseError) as error:
        cases_from_manifest(path)
    assert "dataset.json" in _message(error) and "training entry 0" in _message(error) and "liver_1" in _message(error)


@pytest.mark.parametrize("change, words", [
    ({"labels": {}}, "labels"),
    ({"labels": {"background": 0, "tumor": [1, 2], "core": [2]}}, "overlapping regions"),
    ({"numTraining": 5}, "numTraining=5"),
    ({"channel_names": {"0": "T1", "1": "T2"}}, "declares 2 channels"),
])
def test_bad_manifests_are_refused_naming_the_manifest(tmp_path, change, words):
    with pytest.raises(CaseError) as error:
        cases_from_manifest(_nnunet_dataset(tmp_path, **change))
    assert "dataset.json" in _message(error) and words in _message(error)


def test_annotated_names_a_manifest_does_not_declare_are_refused(tmp_path):
    image, label = _pair(tmp_path / "imagesTr", stem="one")
    path = _decathlon(tmp_path, [{"image": image, "label": label, "annotated": ["pancreas"]}])
    with pytest.raises(CaseError, match="training entry 0.*pancreas"):
        cases_from_manifest(path)


def test_an_unreadable_manifest_is_refused(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(CaseError, match="not valid JSON"):
        cases_from_manifest(str(tmp_path / "dataset.json"))
    with pytest.raises(CaseError, match="Cannot read"):
        cases_from_manifest(str(tmp_path / "missing.json"))


# --- loading --------------------------------------------------------------------------------------

def test_labels_are_remapped_by_name_onto_the_target_list(tmp_path):
    image, label = _pair(tmp_path)
    loaded = load_case(Case(image=image, label=label, label_names=NAMES), ["background", "kidney_left", "liver"])
    array = sitk.GetArrayFromImage(loaded.label)
    np.testing.assert_array_equal(array == 2, _labels() == 1)  # "Liver" → liver
    np.testing.assert_array_equal(array == 1, _labels() == 3)  # "kidney-left" → kidney_left
    assert not np.any(array[_labels() == 2])  # spleen is not a target: background
    assert loaded.annotated.tolist() == [True, True, True]
    assert loaded.present.tolist() == [True, True, True]
    assert loaded.label.GetSize() == loaded.image.GetSize() and loaded.label.GetOrigin() == loaded.image.GetOrigin()


def test_a_target_class_the_case_does_not_name_is_not_annotated(tmp_path):
    image, label = _pair(tmp_path)
    loaded = load_case(Case(image=image, label=label, label_names=NAMES), ["background", "liver", "pancreas"])
    assert loaded.annotated.tolist() == [True, True, False]
    assert loaded.annotated_labels(["background", "liver", "pancreas"]) == ["liver"]


def test_partial_annotation_marks_only_the_listed_classes(tmp_path):
    image, label = _pair(tmp_path)
    case = Case(image=image, label=label, label_names=NAMES, annotated=["spleen"])
    loaded = load_case(case, ["background", "liver", "spleen"])
    assert loaded.annotated.tolist() == [True, False, True]
    array = sitk.GetArrayFromImage(loaded.label)
    assert set(np.unique(array).tolist()) == {0, 2}  # liver voxels are unknown here, not taught as liver


def test_a_slicer_segmentation_case_uses_the_file_names(tmp_path):
    case = Case(image=str(SLICERIO / "CTChest4.nrrd"), label=str(SLICERIO / "Segmentation.seg.nrrd"))
    loaded = load_case(case, ["background", "left lung", "right_lung", "liver"])
    assert loaded.annotated.tolist() == [True, True, True, False]
    assert loaded.present.tolist() == [True, True, True, False]


def test_a_sparse_annotation_region_is_loaded_as_a_mask(tmp_path):
    image, label = _pair(tmp_path)
    region = np.zeros(SHAPE, np.uint8)
    region[1:3] = 7
    sitk.WriteImage(_image(region), str(tmp_path / "region.nii.gz"))
    loaded = load_case(Case(image=image, label=label, label_names=NAMES, region=str(tmp_path / "region.nii.gz")),
                       ["background", "liver"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded.region), (region > 0).astype(np.uint8))


def test_an_empty_region_mask_is_refused(tmp_path):
    image, label = _pair(tmp_path)
    sitk.WriteImage(_image(np.zeros(SHAPE, np.uint8)), str(tmp_path / "region.nii.gz"))
    with pytest.raises(CaseError, match="region.nii.gz.*empty"):
        load_case(Case(image=image, label=label, label_names=NAMES, region=str(tmp_path / "region.nii.gz")),
                  ["background", "liver"])


def test_a_labelmap_on_another_grid_is_refused_naming_both_files(tmp_path):
    image, _ = _pair(tmp_path / "a", spacing=(0.8, 0.9, 2.0))
    _, label = _pair(tmp_path / "b", stem="other")
    with pytest.raises(CaseError) as error:
        load_case(Case(image=image, label=label, label_names=NAMES), ["background", "liver"])
    assert "case.nii.gz" in _message(error) and "other_seg.nii.gz" in _message(error)
    assert "spacing" in _message(error) and "2.0" in _message(error) and "2.5" in _message(error)


def test_a_labelmap_of_another_size_is_refused(tmp_path):
    image, _ = _pair(tmp_path / "a", image=np.zeros((6, 7, 9), np.float32))
    _, label = _pair(tmp_path / "b", stem="other")
    with pytest.raises(CaseError, match="other_seg.nii.gz.*size"):
        load_case(Case(image=image, label=label, label_names=NAMES), ["background", "liver"])


def test_label_values_without_names_are_refused_listing_them(tmp_path):
    image, label = _pair(tmp_path)
    with pytest.raises(CaseError) as error:
        load_case(Case(image=image, label=label, label_names={1: "liver"}), ["background", "liver"])
    assert "case_seg.nii.gz" in _message(error) and "[2, 3]" in _message(error)


def test_a_labelmap_without_any_names_is_refused(tmp_path):
    image, label = _pair(tmp_path)
    with pytest.raises(CaseError, match="case_seg.nii.gz.*no label names"):
        load_case(Case(image=image, label=label), ["background", "liver"])


def test_an_empty_labelmap_is_refused_when_the_case_claims_classes(tmp_path):
    image, label = _pair(tmp_path, labels=np.zeros(SHAPE, np.uint8))
    with pytest.raises(CaseError, match="case_seg.nii.gz.*empty"):
        load_case(Case(image=image, label=label, label_names=NAMES), ["background", "liver"])
    loaded = load_case(Case(image=image, label=label, label_names=NAMES, annotated=[]), ["background", "liver"])
    assert loaded.annotated.tolist() == [True, False]


def test_annotating_a_class_the_labelmap_does_not_name_is_refused(tmp_path):
    image, label = _pair(tmp_path)
    with pytest.raises(CaseError, match="pancreas"):
        load_case(Case(image=image, label=label, label_names=NAMES, annotated=["pancreas"]), ["background", "liver"])


def test_bad_images_are_refused_through_load_case(tmp_path):
    nan_image = np.zeros(SHAPE, np.float32)
    nan_image[0, 0, 0] = np.inf
    folder = tmp_path / "nan"
    folder.mkdir()
    sitk.WriteImage(_image(nan_image), str(folder / "ct.nrrd"))
    _, label = _pair(folder)
    with pytest.raises(CaseError, match="ct.nrrd.*NaN or infinite"):
        load_case(Case(image=str(folder / "ct.nrrd"), label=label, label_names=NAMES), ["background", "liver"])
    with pytest.raises(CaseError, match="gone.nii.gz.*does not exist"):
        load_case(Case(image=str(tmp_path / "gone.nii.gz"), label=label, label_names=NAMES), ["background"])


def test_a_case_saved_as_seg_nrrd_loads_back_with_the_same_classes(tmp_path):
    image, label = _pair(tmp_path)
    seg = write_labelmap(sitk.ReadImage(label), str(tmp_path / "case.seg.nrrd"), NAMES)
    case = cases_from_pairs([image], [seg], None)[0]
    loaded = load_case(case, ["background", "liver", "spleen", "kidney_left"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded.label), _labels())


def test_an_image_without_labelmap_loads_for_prediction(tmp_path):
    image, _ = _pair(tmp_path)
    loaded = load_case(Case(image=image), ["background", "liver"])
    assert loaded.label is None and loaded.annotated.tolist() == [True, False]
