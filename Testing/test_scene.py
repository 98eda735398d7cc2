"""The Slicer scene bridge against real MRML (slicer-core, no application)."""

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_fixture import mrml_scene  # noqa: F401  (pytest fixture)

import slicer  # noqa: E402  (slicer_fixture skips the module without slicer-core)

from TransferSegLib.data.cases import load_case  # noqa: E402
from TransferSegLib.errors import CaseError  # noqa: E402
from TransferSegLib.names import label_color  # noqa: E402
from TransferSegLib import scene  # noqa: E402
from TransferSegLib.scene.geometry import image_from_volume, volume_from_image  # noqa: E402
from TransferSegLib.scene.plot import TrainingPlot  # noqa: E402


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def oblique_image(size=(24, 20, 9), spacing=(0.7, 0.9, 2.5), dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    voxels = rng.integers(-1000, 1000, size=size[::-1]).astype(dtype)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(spacing)
    image.SetOrigin((12.5, -40.25, 101.0))
    image.SetDirection(tuple(rotation((1, 2, 3), 23).ravel()))
    return image


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tolerance=1e-9):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)


def new_segmentation(volume, segments, name="Segmentation"):
    """A segmentation drawn on ``volume``: {segment name: (k, j, i) mask}."""
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    for index, (segment, mask) in enumerate(segments.items(), start=1):
        segment_id = node.GetSegmentation().AddEmptySegment(segment, segment, label_color(segment, index))
        assert segment_id, "the segmentation converters are not registered"
        if mask is not None:
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, segment_id, volume)
    return node


def box(shape, start, stop):
    mask = np.zeros(shape, np.uint8)
    mask[tuple(slice(a, b) for a, b in zip(start, stop))] = 1
    return mask


# --- volumes -----------------------------------------------------------------------------------


def test_oblique_anisotropic_volume_round_trips_exactly(mrml_scene):
    image = oblique_image()
    node = volume_from_image(image, "ct")
    back = image_from_volume(node)
    assert_same_geometry(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert back.GetPixelID() == image.GetPixelID()


def test_volume_geometry_agrees_with_slicers_own_reader(mrml_scene, tmp_path):
    """The LPS/RAS convention is checked against Slicer's NRRD reader, not against itself."""
    image = oblique_image(spacing=(0.55, 1.3, 3.0))
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))
    node = mrml_scene.logics["volumes"].AddArchetypeVolume(str(path), "oblique")
    assert node is not None
    assert_same_geometry(image_from_volume(node), image, tolerance=1e-6)
    # A voxel's RAS position in Slicer is its LPS position in ITK with x and y negated.
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(node))
    lps = image.TransformIndexToPhysicalPoint((5, 7, 3))
    ras = ijk_to_ras @ np.array([5, 7, 3, 1.0])
    np.testing.assert_allclose(ras[:3], (-lps[0], -lps[1], lps[2]), atol=1e-6)


def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def test_transformed_volume_is_refused_with_advice(mrml_scene):
    node = volume_from_image(oblique_image(), "moved")
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(CaseError, match="Harden"):
        image_from_volume(node)


# --- segmentations → case files ----------------------------------------------------------------


def test_segmentation_exports_only_chosen_segments_on_the_volume_grid(mrml_scene, tmp_path):
    image = oblique_image()
    volume = volume_from_image(image, "ct 1")
    shape = sitk.GetArrayViewFromImage(image).shape
    liver, spleen, other = box(shape, (1, 2, 3), (4, 8, 9)), box(shape, (5, 10, 12), (8, 15, 20)), box(shape, (0, 0, 0), (2, 2, 2))
    seg = new_segmentation(volume, {"Liver": liver, "spleen": spleen, "tissue": other})
    case = scene.SceneCase(volume, seg, ["spleen", "Liver"])

    exported = scene.export_case(case, ["liver", "spleen"], tmp_path, "case one")

    written_image = sitk.ReadImage(exported.image)
    written_label = sitk.ReadImage(exported.label)
    assert_same_geometry(written_image, image)  # NRRD: double precision
    assert_same_geometry(written_label, image, tolerance=1e-5)  # NIfTI: single precision
    labels = sitk.GetArrayFromImage(written_label)
    np.testing.assert_array_equal(labels == 1, liver > 0)
    np.testing.assert_array_equal(labels == 2, spleen > 0)
    assert set(np.unique(labels)) == {0, 1, 2}  # 'tissue' was not chosen
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written_image), sitk.GetArrayFromImage(image))
    assert exported.label_names == {1: "liver", 2: "spleen"}
    assert sorted(exported.annotated) == ["liver", "spleen"]
    assert seg.GetSegmentation().GetNumberOfSegments() == 3  # the user's node is untouched


def test_label_values_are_stable_across_cases_with_different_segments(mrml_scene, tmp_path):
    shape_image = oblique_image(size=(16, 14, 6))
    shape = sitk.GetArrayViewFromImage(shape_image).shape
    first = volume_from_image(shape_image, "first")
    second = volume_from_image(oblique_image(size=(16, 14, 6), seed=1), "second")
    cases = [
        scene.SceneCase(first, new_segmentation(first, {"liver": box(shape, (0, 0, 0), (3, 3, 3)),
                                                         "spleen": box(shape, (3, 5, 5), (5, 9, 9))}), ["liver", "spleen"]),
        scene.SceneCase(second, new_segmentation(second, {"Spleen": box(shape, (1, 1, 1), (4, 4, 4))}), ["Spleen"]),
    ]
    exported, labels = scene.export_cases(cases, tmp_path)
    assert labels == ["liver", "spleen"]
    second_labels = sitk.GetArrayFromImage(sitk.ReadImage(exported[1].label))
    assert set(np.unique(second_labels)) == {0, 2}  # spleen is 2 in every case
    assert exported[1].label_names == {1: "liver", 2: "spleen"}
    assert exported[1].annotated == ["spleen"]  # liver is unknown there, not background
    loaded = load_case(exported[1], ["background", "liver", "spleen"])  # the engine reads it as exported
    assert loaded.annotated.tolist() == [True, False, True]
    assert int((sitk.GetArrayFromImage(loaded.label) == 2).sum()) == 27


def test_training_labels_keep_the_previous_models_order():
    class Case:
        def __init__(self, segments):
            self.segments = segments

    assert scene.training_labels([Case(["tumor", "Liver"])], previous=["background", "liver", "spleen"]) == [
        "liver", "spleen", "tumor"]


# --- bad scene input ---------------------------------------------------------------------------


def test_segmentation_without_reference_geometry_is_refused(mrml_scene):
    volume = volume_from_image(oblique_image(size=(8, 8, 4)), "ct")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "floating")
    seg.GetSegmentation().AddEmptySegment("liver", "liver", (1, 0, 0))
    with pytest.raises(CaseError, match="no reference geometry.*Segment Editor"):
        scene.check_case(scene.SceneCase(volume, seg, ["liver"]))


def test_empty_segment_is_refused_by_name(mrml_scene):
    image = oblique_image(size=(8, 8, 4))
    volume = volume_from_image(image, "ct")
    shape = sitk.GetArrayViewFromImage(image).shape
    seg = new_segmentation(volume, {"liver": box(shape, (0, 0, 0), (2, 2, 2)), "spleen": None})
    with pytest.raises(CaseError, match="'spleen'.*empty.*Paint it"):
        scene.check_case(scene.SceneCase(volume, seg, ["liver", "spleen"]))


def test_segmentation_of_another_grid_is_refused(mrml_scene):
    volume = volume_from_image(oblique_image(size=(12, 12, 6)), "ct")
    other = volume_from_image(oblique_image(size=(12, 12, 6), spacing=(1.0, 1.0, 1.0)), "other ct")
    shape = (6, 12, 12)
    seg = new_segmentation(other, {"liver": box(shape, (1, 1, 1), (4, 5, 6))})
    with pytest.raises(CaseError, match="another grid.*'ct'"):
        scene.check_case(scene.SceneCase(volume, seg, ["liver"]))


def test_segmentation_cropped_on_the_same_voxels_is_accepted(mrml_scene):
    image = oblique_image(size=(12, 12, 6))
    volume = volume_from_image(image, "ct")
    cropped = sitk.RegionOfInterest(image, (4, 4, 4), (2, 3, 1))
    reference = volume_from_image(cropped, "cropped ct")
    seg = new_segmentation(reference, {"liver": box((4, 4, 4), (0, 0, 0), (2, 2, 2))})
    scene.check_case(scene.SceneCase(volume, seg, ["liver"]))
    labels = scene.case_voxels(scene.SceneCase(volume, seg, ["liver"]), ["liver"]).labels
    assert labels.sum() == 8 and labels[1:3, 3:5, 2:4].all()  # the crop's voxels, shifted by its origin


# --- predictions → new nodes -------------------------------------------------------------------


def test_multiclass_prediction_becomes_named_colored_segments_in_a_new_node(mrml_scene, tmp_path):
    image = oblique_image(size=(20, 16, 8))
    volume = volume_from_image(image, "Patient CT")
    shape = sitk.GetArrayViewFromImage(image).shape
    users = new_segmentation(volume, {"my drawing": box(shape, (0, 0, 0), (2, 2, 2))}, name="Patient CT – liver model")
    study = mrml_scene.add_to_study(volume, users)
    voxels = np.zeros(shape, np.uint8)
    voxels[1:4, 2:6, 3:9] = 1
    voxels[5:7, 8:12, 10:15] = 2
    voxels[2:3, 12:14, 15:18] = 3
    labelmap = sitk.GetImageFromArray(voxels)
    labelmap.CopyInformation(image)
    path = tmp_path / "prediction.nii.gz"
    sitk.WriteImage(labelmap, str(path))

    node = scene.import_prediction(path, volume, "liver model", ["background", "liver", "kidney_left", "mystery", "spleen"])

    assert node is not users and node.GetName() != users.GetName()
    assert node.GetName().startswith("Patient CT – liver model")
    assert scene.segment_names(users) == ["my drawing"]  # existing nodes untouched
    assert scene.segment_names(node) == ["liver", "kidney_left", "mystery", "spleen"]
    seg = node.GetSegmentation()
    for value, name in enumerate(["liver", "kidney_left", "mystery", "spleen"], start=1):
        segment_id = scene.find_segment_id(node, name)
        np.testing.assert_allclose(seg.GetSegment(segment_id).GetColor(), label_color(name, value), atol=1e-6)
        mask = scene.segment_mask(node, segment_id, volume)
        np.testing.assert_array_equal(mask, voxels == value)
    tag = node.GetSegmentation().GetSegment(scene.find_segment_id(node, "kidney_left")).GetTerminology()
    assert "SCT^64033007^Kidney" in tag and "SCT^7771000^Left" in tag
    assert "10200004" in seg.GetSegment(scene.find_segment_id(node, "liver")).GetTerminology()
    unknown = seg.GetSegment(scene.find_segment_id(node, "mystery")).GetTerminology()
    assert "Kidney" not in unknown and "Liver" not in unknown  # no made-up meaning for unknown names
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is volume
    assert not slicer.mrmlScene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems()  # no leftovers


def test_prediction_on_another_grid_is_refused_and_leaves_no_node(mrml_scene):
    volume = volume_from_image(oblique_image(size=(10, 10, 5)), "ct")
    wrong = sitk.Image(10, 10, 6, sitk.sitkUInt8)
    before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(CaseError, match="another grid"):
        scene.import_labelmap(wrong, ["background", "liver"], volume, "bad")
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == before


def test_corrected_prediction_becomes_a_training_case(mrml_scene, tmp_path):
    image = oblique_image(size=(20, 16, 8))
    volume = volume_from_image(image, "ct 7")
    shape = sitk.GetArrayViewFromImage(image).shape
    predicted = np.zeros(shape, np.uint8)
    predicted[1:4, 2:6, 3:9] = 1
    labelmap = sitk.GetImageFromArray(predicted)
    labelmap.CopyInformation(image)
    node = scene.import_labelmap(labelmap, ["background", "liver", "tumor"], volume, "ct 7 – model")
    corrected = predicted == 1
    corrected[4:6, 2:6, 3:9] = True  # the user paints what the model missed
    slicer.util.updateSegmentBinaryLabelmapFromArray(corrected.astype(np.uint8), node, scene.find_segment_id(node, "liver"), volume)

    case = scene.case_from_segmentation(node)

    assert case.volume is volume
    assert case.segments == ["liver"]  # the empty 'tumor' segment is not claimed as annotated
    exported = scene.export_case(case, ["liver", "tumor"], tmp_path)
    written = sitk.GetArrayFromImage(sitk.ReadImage(exported.label))
    np.testing.assert_array_equal(written == 1, corrected)
    assert exported.annotated == ["liver"]


def test_segmentation_without_volume_cannot_become_a_case(mrml_scene):
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "orphan")
    with pytest.raises(CaseError, match="which volume"):
        scene.case_from_segmentation(seg)


# --- the training plot ---------------------------------------------------------------------------


def test_training_plot_collects_loss_and_dice(mrml_scene):
    plot = TrainingPlot()
    for event in ({"kind": "progress", "iteration": 1, "loss": 1.5}, {"kind": "progress", "iteration": 2, "loss": float("nan")},
                  {"kind": "validation", "iteration": 2, "mean_dice": 0.4}, {"kind": "warning", "message": "x"}):
        plot.add_event(event)
    assert plot.points() == {"loss": 1, "dice": 1}
    assert plot.chart.GetNumberOfPlotSeriesNodes() == 2
    assert slicer.util.arrayFromTableColumn(plot.loss_table, "loss").tolist() == [1.5]


def test_volume_written_straight_to_nrrd_reads_back_with_the_same_voxels_and_geometry(mrml_scene, tmp_path):
    from TransferSegLib.scene.geometry import write_volume_nrrd

    image = oblique_image(size=(13, 11, 7))
    volume = volume_from_image(image, "oblique ct")
    write_volume_nrrd(volume, tmp_path / "ct.nrrd")
    back = sitk.ReadImage(str(tmp_path / "ct.nrrd"))
    assert_same_geometry(back, image, tolerance=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert not list(tmp_path.glob(".partial-*"))


def test_a_short_nrrd_write_is_refused_and_never_replaces_the_file(mrml_scene, tmp_path, monkeypatch):
    """The size check that replaces reading the file back: a writer that stops early (a full disk) fails."""
    from TransferSegLib.errors import OutputError
    from TransferSegLib.scene import geometry

    volume = volume_from_image(oblique_image(size=(13, 11, 7)), "oblique ct")
    (tmp_path / "ct.nrrd").write_bytes(b"the user's file")
    monkeypatch.setattr(geometry.np, "ascontiguousarray", lambda voxels: np.asarray(voxels).ravel()[:-5])
    with pytest.raises(OutputError, match=r"did not complete: the file holds \d+ of its \d+ bytes"):
        geometry.write_volume_nrrd(volume, tmp_path / "ct.nrrd")
    assert (tmp_path / "ct.nrrd").read_bytes() == b"the user's file" and not list(tmp_path.glob(".partial-*"))


def test_every_class_name_of_the_shipped_label_tables_has_a_terminology_entry():
    import json
    from pathlib import Path

    from TransferSegLib.scene.terminology import terminology_entry

    root = Path(__file__).resolve().parent.parent / "Resources"
    names = set()
    for table in json.loads((root / "SampleData" / "TotalSegmentator" / "label_names.json").read_text()).values():
        names.update(table.values())
    catalog = json.loads((root / "Models" / "catalog.json").read_text())
    for entry in catalog["models"] if isinstance(catalog, dict) else catalog:
        names.update(entry.get("labels") or [])
    names.update(json.loads((root / "Models" / "default" / "model.json").read_text())["labels"])
    names.discard("background")
    assert len(names) > 100
    missing = sorted(n for n in names if terminology_entry(n) is None)
    assert not missing, f"no terminology entry for {missing}"
    assert "SCT^64033007^Kidney~SCT^7771000^Left" in terminology_entry("kidney_left")
    assert "SCT^113197003^Rib~SCT^24028007^Right" in terminology_entry("rib_right_7")
    assert "SCT^122495006^" in terminology_entry("vertebrae_T7")
    assert terminology_entry("my own structure") is None
