"""Image and labelmap files: every format read with its geometry, Slicer segmentations
read and written the way Slicer does, and bad files refused with a useful message."""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.errors import CaseError, OutputError
from TransferSegLib.data.grid import align_to_image, check_same_grid
from TransferSegLib.data.images import read_image
from TransferSegLib.data.labelmaps import read_labelmap, write_labelmap
from TransferSegLib.data.seg_nrrd import read_segment_names
from TransferSegLib.names import label_color

SAMPLES = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
TS = SAMPLES / "TotalSegmentator"
SLICERIO = SAMPLES / "SlicerIO"
DIRECTION = (0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _image(array_zyx, spacing=(0.8, 0.9, 2.5), origin=(-10.0, 20.0, 30.0), direction=DIRECTION):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _labels(shape=(6, 7, 8)):
    array = np.zeros(shape, np.uint8)
    array[1:3, 2:5, 1:4] = 1
    array[4:6, 0:2, 5:8] = 3
    return array


def _geometry(image):
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _write(image, path):
    sitk.WriteImage(image, str(path))
    return str(path)


def _refused(path, *words):
    with pytest.raises(CaseError) as error:
        read_image(str(path))
    message = str(error.value)
    assert Path(path).name in message
    for word in words:
        assert word in message, message
    return message


# --- reading images -------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_image_files_keep_their_geometry_and_become_float32(tmp_path, suffix):
    source = _image(np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8))
    image = read_image(_write(source, tmp_path / f"ct{suffix}"))
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSize() == source.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), source.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), source.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), source.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(source))


def test_a_dicom_folder_is_read_as_its_series():
    image = read_image(str(TS / "example_ct_dicom"))
    assert image.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(image.GetSpacing(), (0.9765625, 0.9765625, 2.0))
    assert image.GetPixelID() == sitk.sitkFloat32
    assert sitk.GetArrayViewFromImage(image).min() <= -1000  # HU, rescaled by the reader


def test_the_shipped_nrrd_and_nifti_samples_read():
    chest = read_image(str(SLICERIO / "CTChest4.nrrd"))
    assert chest.GetSize() == (128, 128, 34)
    assert read_image(str(TS / "example_mr_sm.nii.gz")).GetSize() == (117, 91, 20)


def test_mrc_volumes_read_with_their_voxel_size_and_a_warning_about_orientation(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    with mrcfile.new(str(tmp_path / "scan.mrc")) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (0.7, 0.8, 1.5)
    with pytest.warns(UserWarning, match="orientation"):
        image = read_image(str(tmp_path / "scan.mrc"))
    assert image.GetSize() == (6, 5, 4)
    np.testing.assert_allclose(image.GetSpacing(), (0.7, 0.8, 1.5), rtol=1e-5)
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), data)


def test_mrc_without_a_voxel_size_is_read_at_1mm_with_a_warning(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    with mrcfile.new(str(tmp_path / "scan.mrc")) as mrc:
        mrc.set_data(np.zeros((4, 5, 6), np.float32))
        mrc.voxel_size = 0.0
    with pytest.warns(UserWarning, match="1 mm"):
        image = read_image(str(tmp_path / "scan.mrc"))
    assert image.GetSpacing() == (1.0, 1.0, 1.0)


def test_a_4d_file_with_one_volume_is_read_as_3d(tmp_path):
    path = _write(sitk.Image([5, 6, 7, 1], sitk.sitkInt16), tmp_path / "one.nii.gz")
    assert read_image(path).GetSize() == (5, 6, 7)


def test_a_missing_file_is_refused(tmp_path):
    _refused(tmp_path / "nowhere.nii.gz", "does not exist")


def test_an_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not an image at all" * 10)
    _refused(path, "cannot be read")


def test_a_folder_without_dicom_files_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "DICOM")


def test_a_2d_image_is_refused(tmp_path):
    _refused(_write(sitk.Image(8, 9, sitk.sitkFloat32), tmp_path / "slice2d.nrrd"), "2D")


def test_a_single_slice_volume_is_refused(tmp_path):
    _refused(_write(sitk.Image(8, 9, 1, sitk.sitkFloat32), tmp_path / "slice.nii.gz"), "single slice")


def test_a_4d_image_is_refused(tmp_path):
    _refused(_write(sitk.Image([5, 6, 7, 3], sitk.sitkFloat32), tmp_path / "series4d.nii.gz"), "4D", "3 volumes")


def test_a_multi_component_image_is_refused(tmp_path):
    _refused(_write(sitk.Image([5, 6, 7], sitk.sitkVectorFloat32, 3), tmp_path / "rgb.mha"), "3 values per voxel")


@pytest.mark.parametrize("bad, suffix", [(np.nan, ".nrrd"), (np.inf, ".mha"), (-np.inf, ".nrrd")])
def test_nan_and_infinite_voxels_are_refused(tmp_path, bad, suffix):
    # (ITK's NIfTI reader turns NaN into 0 by itself, so NIfTI files never show them.)
    array = np.zeros((4, 5, 6), np.float32)
    array[1, 2, 3] = bad
    array[2, 2, 2] = bad
    _refused(_write(_image(array), tmp_path / f"bad{suffix}"), "2 NaN or infinite")


# --- reading labelmaps ----------------------------------------------------------------------------

def test_a_slicer_segmentation_brings_its_segment_names_values_and_colors():
    label = read_labelmap(str(SLICERIO / "Segmentation.seg.nrrd"))
    assert label.image.GetDimension() == 3 and label.image.GetPixelID() == sitk.sitkUInt8
    assert label.names == {1: "ribs", 2: "cervical vertebral column", 3: "thoracic vertebral column",
                           4: "lumbar vertebral column", 5: "right lung", 6: "left lung", 7: "tissue"}
    assert label.colors[5] == pytest.approx((0.0862745, 0.772549, 0.278431))
    values = set(np.unique(sitk.GetArrayViewFromImage(label.image)).tolist())
    assert values <= {0, 1, 2, 3, 4, 5, 6, 7} and {5, 6} <= values
    assert read_segment_names(str(SLICERIO / "Segmentation.seg.nrrd")) == label.names


def test_overlapping_segments_are_refused_naming_them():
    with pytest.raises(CaseError) as error:
        read_labelmap(str(SLICERIO / "SegmentationOverlapping.seg.nrrd"))
    message = str(error.value)
    assert "SegmentationOverlapping.seg.nrrd" in message and "overlapping sphere" in message
    assert "overlap" in message and "Segment Editor" in message


def _segment_fields(image, segments):
    for i, (name, value, layer) in enumerate(segments):
        if name is not None:
            image.SetMetaData(f"Segment{i}_Name", name)
        if value is not None:
            image.SetMetaData(f"Segment{i}_LabelValue", str(value))
        if layer is not None:
            image.SetMetaData(f"Segment{i}_Layer", str(layer))
        image.SetMetaData(f"Segment{i}_ID", f"Segment_{i + 1}")
    return image


def _two_layer_seg(path, first, second, segments):
    image = sitk.Compose(sitk.GetImageFromArray(first), sitk.GetImageFromArray(second))
    _segment_fields(image, segments)
    sitk.WriteImage(image, str(path), True)
    return str(path)


def test_layers_without_overlap_are_flattened_with_unique_values(tmp_path):
    first = np.zeros((4, 5, 6), np.uint8)
    second = np.zeros((4, 5, 6), np.uint8)
    first[0:2] = 1
    first[3, 0] = 2
    second[2, 1:3] = 1
    path = _two_layer_seg(tmp_path / "layers.seg.nrrd", first, second,
                          [("liver", 1, 0), ("vessel", 2, 0), ("tumor", 1, 1)])
    label = read_labelmap(path)
    assert label.names == {1: "liver", 2: "vessel", 3: "tumor"}
    array = sitk.GetArrayFromImage(label.image)
    assert (array == 1).sum() == (first == 1).sum() and (array == 2).sum() == (first == 2).sum()
    np.testing.assert_array_equal(array == 3, second == 1)
    assert read_segment_names(path) == label.names


def test_old_slicer_files_with_one_segment_per_layer_are_read(tmp_path):
    first = np.zeros((4, 5, 6), np.uint8)
    second = np.zeros((4, 5, 6), np.uint8)
    first[0] = 1
    second[3] = 1
    label = read_labelmap(_two_layer_seg(tmp_path / "old.seg.nrrd", first, second,
                                         [("liver", None, None), ("spleen", None, None)]))
    assert label.names == {1: "liver", 2: "spleen"}
    array = sitk.GetArrayFromImage(label.image)
    assert (array[0] == 1).all() and (array[3] == 2).all() and (array[1:3] == 0).all()


def _cropped_seg(tmp_path, start, size, full_labels, name="cropped.seg.nrrd"):
    reference = _image(np.zeros(full_labels.shape, np.float32))
    full = _image(full_labels)
    full.CopyInformation(reference)
    padded = sitk.ConstantPad(full, [2, 2, 2], [2, 2, 2], 0)
    part = sitk.RegionOfInterest(padded, size, [s + 2 for s in start])
    _segment_fields(part, [("liver", 1, 0), ("spleen", 3, 0)])
    sitk.WriteImage(part, str(tmp_path / name), True)
    return reference, str(tmp_path / name)


def test_a_segmentation_cropped_to_its_extent_is_put_back_on_the_image_grid(tmp_path):
    labels = _labels()
    reference, path = _cropped_seg(tmp_path, start=(1, 0, 1), size=(7, 7, 5), full_labels=labels)
    assert sitk.ReadImage(path).GetSize() == (7, 7, 5)
    label = read_labelmap(path, reference=reference)
    assert _geometry(label.image) == _geometry(reference)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label.image), labels)


def test_a_segmentation_reaching_outside_the_image_is_refused(tmp_path):
    labels = _labels()
    labels[0, 0, 0] = 1  # a voxel at the corner the stored grid extends beyond
    reference, path = _cropped_seg(tmp_path, start=(-1, -1, -1), size=(5, 5, 5), full_labels=labels)
    part = sitk.ReadImage(path)
    array = sitk.GetArrayFromImage(part)
    array[0, 0, 0] = 1  # a labelled voxel outside the image
    outside = sitk.GetImageFromArray(array)
    outside.CopyInformation(part)
    _segment_fields(outside, [("liver", 1, 0)])
    sitk.WriteImage(outside, path, True)
    with pytest.raises(CaseError, match="outside the image"):
        read_labelmap(path, reference=reference)


def test_plain_labelmaps_have_no_names(tmp_path):
    """Names of plain labelmaps come from a names file: Testing/test_label_selection.py."""
    path = _write(_image(_labels()), tmp_path / "seg.nii.gz")
    label = read_labelmap(path)
    assert label.names == {} and label.image.GetPixelID() == sitk.sitkUInt8


def test_label_values_above_255_are_kept(tmp_path):
    array = _labels().astype(np.uint16)
    array[0, 0, 0] = 1000
    label = read_labelmap(_write(_image(array), tmp_path / "big.nrrd"))
    assert label.image.GetPixelID() == sitk.sitkUInt16 and sitk.GetArrayViewFromImage(label.image).max() == 1000


def test_non_integer_labels_are_refused(tmp_path):
    path = _write(_image(_labels().astype(np.float32) * 0.5), tmp_path / "probabilities.nii.gz")
    with pytest.raises(CaseError, match="probabilities.nii.gz.*non-integer"):
        read_labelmap(path)


def test_integer_valued_float_labelmaps_are_accepted(tmp_path):
    path = _write(_image(_labels().astype(np.float32)), tmp_path / "float.nii.gz")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_labelmap(path).image), _labels())


def test_negative_labels_are_refused(tmp_path):
    array = _labels().astype(np.int16)
    array[0, 0, 0] = -1
    with pytest.raises(CaseError, match="negative.nii.gz.*negative"):
        read_labelmap(_write(_image(array), tmp_path / "negative.nii.gz"))


def test_a_4d_labelmap_is_refused(tmp_path):
    with pytest.raises(CaseError, match="labels4d.nii.gz.*4D"):
        read_labelmap(_write(sitk.Image([5, 6, 7, 2], sitk.sitkUInt8), tmp_path / "labels4d.nii.gz"))


# --- grids ----------------------------------------------------------------------------------------

def _mismatch(image, label, *words):
    with pytest.raises(CaseError) as error:
        check_same_grid(image, label, "/data/ct_007.nii.gz", "/data/ct_007_seg.nii.gz")
    message = str(error.value)
    assert "ct_007.nii.gz" in message and "ct_007_seg.nii.gz" in message
    for word in words:
        assert word in message, message


def test_a_labelmap_of_another_size_is_refused_with_both_sizes():
    image = _image(np.zeros((6, 7, 8), np.float32))
    _mismatch(image, _image(np.zeros((6, 7, 9), np.uint8)), "size", "(8, 7, 6)", "(9, 7, 6)")


def test_a_labelmap_with_other_spacing_origin_or_direction_is_refused_naming_the_property():
    image = _image(np.zeros((6, 7, 8), np.float32))
    _mismatch(image, _image(np.zeros((6, 7, 8), np.uint8), spacing=(0.8, 0.9, 3.0)), "spacing", "2.5", "3.0")
    _mismatch(image, _image(np.zeros((6, 7, 8), np.uint8), origin=(-10.0, 20.0, 31.0)), "origin", "30.0", "31.0")
    _mismatch(image, _image(np.zeros((6, 7, 8), np.uint8), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), "direction")


def test_differences_within_tolerance_are_accepted():
    image = _image(np.zeros((6, 7, 8), np.float32))
    label = _image(np.zeros((6, 7, 8), np.uint8), spacing=(0.80001, 0.9, 2.5), origin=(-10.0005, 20.0, 30.0))
    check_same_grid(image, label, "a", "b")
    aligned = align_to_image(image, label, "a", "b")
    assert _geometry(aligned) == _geometry(image)


def test_a_labelmap_storing_the_same_voxels_in_another_axis_order_is_reindexed_exactly():
    image = _image(np.zeros((6, 7, 8), np.float32), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    labels = _image(_labels(), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    flipped = sitk.Flip(labels, [False, True, False])  # same voxels, y stored reversed
    assert flipped.GetDirection() != image.GetDirection()
    aligned = align_to_image(image, flipped, "image.nii.gz", "flipped.nii.gz")
    assert _geometry(aligned) == _geometry(image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(aligned), _labels())


# --- writing labelmaps ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_plain_labelmaps_round_trip_with_their_geometry(tmp_path, suffix):
    source = _image(_labels())
    path = write_labelmap(source, str(tmp_path / f"out{suffix}"))
    again = sitk.ReadImage(path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), _labels())
    np.testing.assert_allclose(again.GetOrigin(), source.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(again.GetDirection(), source.GetDirection(), atol=1e-6)
    assert not any(k.startswith("Segment") for k in again.GetMetaDataKeys())


def test_a_plain_nrrd_never_carries_segment_tables_of_its_source(tmp_path):
    source = read_labelmap(str(SLICERIO / "Segmentation.seg.nrrd")).image
    stale = sitk.Image(source)
    stale.SetMetaData("Segment0_Name", "stale")
    path = write_labelmap(stale, str(tmp_path / "plain.nrrd"))
    assert not any(k.startswith("Segment") for k in sitk.ReadImage(path).GetMetaDataKeys())


def test_wide_label_values_are_written_as_uint16(tmp_path):
    array = _labels().astype(np.int32)
    array[0, 0, 0] = 300
    path = write_labelmap(_image(array), str(tmp_path / "wide.nii.gz"))
    assert sitk.ReadImage(path).GetPixelID() == sitk.sitkUInt16


def test_a_seg_nrrd_has_one_named_colored_segment_per_label(tmp_path):
    path = write_labelmap(_image(_labels()), str(tmp_path / "pred.seg.nrrd"), {1: "liver", 2: "kidney", 3: "spleen"},
                          {3: (0.1, 0.2, 0.3)})
    label = read_labelmap(path)
    assert label.names == {1: "liver", 2: "kidney", 3: "spleen"}
    assert label.colors[1] == pytest.approx(label_color("liver", 1), abs=1e-5)
    assert label.colors[3] == pytest.approx((0.1, 0.2, 0.3))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label.image), _labels())
    header = sitk.ReadImage(path)
    assert header.GetMetaData("Segment0_Extent") == "1 3 2 4 1 2"  # liver: i 1..3, j 2..4, k 1..2
    assert header.GetMetaData("Segment1_Extent") == "0 -1 0 -1 0 -1"  # kidney: empty
    assert header.GetMetaData("Segment2_LabelValue") == "3"


def test_a_seg_nrrd_writes_every_header_field_slicer_writes(tmp_path):
    path = write_labelmap(_image(_labels()), str(tmp_path / "pred.seg.nrrd"), {1: "liver", 3: "spleen"})
    ours = set(sitk.ReadImage(path).GetMetaDataKeys())
    slicers = set(sitk.ReadImage(str(SLICERIO / "Segmentation.seg.nrrd")).GetMetaDataKeys())
    wanted = {k for k in slicers if k.startswith("Segment0_") or k.startswith("Segmentation_")}
    assert wanted <= ours, wanted - ours
    header = sitk.ReadImage(path)
    assert header.GetMetaData("Segmentation_MasterRepresentation") == "Binary labelmap"
    assert header.GetMetaData("Segment1_Layer") == "0" and header.GetMetaData("Segment1_NameAutoGenerated") == "0"


def test_slicerio_reads_our_seg_nrrd_names_and_values(tmp_path):
    slicerio = pytest.importorskip("slicerio")
    path = write_labelmap(_image(_labels()), str(tmp_path / "pred.seg.nrrd"), {1: "liver", 3: "Left Kidney"})
    segmentation = slicerio.read_segmentation(path)
    assert [(s["name"], s["labelValue"]) for s in segmentation["segments"]] == [("liver", 1), ("Left Kidney", 3)]
    voxels = np.asarray(segmentation["voxels"])
    assert voxels.shape == (8, 7, 6)  # slicerio gives (i, j, k)
    np.testing.assert_array_equal(voxels.transpose(2, 1, 0), _labels())


def test_slicer_loads_our_seg_nrrd_with_its_segments_in_the_right_place(tmp_path):
    pytest.importorskip("slicer")
    slicer_fixture = pytest.importorskip("slicer_fixture")
    import slicer
    import vtk

    source = _image(_labels())
    path = write_labelmap(source, str(tmp_path / "pred.seg.nrrd"), {1: "liver", 3: "spleen"})
    application = slicer_fixture.MRMLApplication()
    try:
        logic = application.logics["segmentations"]
        node = logic.LoadSegmentationFromFile(path, False)
        segmentation = node.GetSegmentation()
        segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
        assert [s.GetName() for s in segments] == ["liver", "spleen"]
        assert segments[0].GetColor() == pytest.approx(label_color("liver", 1), abs=1e-4)
        for segment_id, value in ((segmentation.GetNthSegmentID(0), 1), (segmentation.GetNthSegmentID(1), 3)):
            labelmap = application.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            assert logic.ExportSegmentsToLabelmapNode(node, ids, labelmap, None)
            exported = slicer.util.arrayFromVolume(labelmap)  # (k, j, i), the segment's voxels = 1
            matrix = vtk.vtkMatrix4x4()
            labelmap.GetIJKToRASMatrix(matrix)
            ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
            k, j, i = np.nonzero(exported)
            theirs = (ijk_to_ras @ np.stack([i, j, k, np.ones_like(i)]))[:3].T
            z, y, x = np.nonzero(_labels() == value)
            ours = np.array([source.TransformIndexToPhysicalPoint((int(a), int(b), int(c))) for a, b, c in zip(x, y, z)])
            ours[:, :2] *= -1  # LPS → RAS
            assert len(theirs) == len(ours)
            np.testing.assert_allclose(sorted(map(tuple, np.round(theirs, 4))), sorted(map(tuple, np.round(ours, 4))), atol=1e-3)
    finally:
        application.scene.Clear(1)


def test_writing_is_atomic_and_keeps_an_existing_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "pred.nii.gz"
    write_labelmap(_image(_labels()), str(path))
    before = path.read_bytes()

    def failing_write(image, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(OutputError, match="pred.nii.gz.*disk full"):
        write_labelmap(_image(np.zeros((6, 7, 8), np.uint8)), str(path))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["pred.nii.gz"]


def test_unsupported_output_formats_and_bad_values_are_refused(tmp_path):
    with pytest.raises(CaseError, match="pred.png"):
        write_labelmap(_image(_labels()), str(tmp_path / "pred.png"))
    with pytest.raises(CaseError, match="0..65535"):
        write_labelmap(_image(-_labels().astype(np.int16)), str(tmp_path / "neg.nii.gz"))
    with pytest.raises(CaseError, match="non-integer"):
        write_labelmap(_image(_labels().astype(np.float32) / 2), str(tmp_path / "half.nii.gz"))
    assert os.listdir(tmp_path) == []


def test_the_shipped_sample_data_keeps_its_licenses_beside_it():
    for folder in (TS, SLICERIO):
        assert (folder / "LICENSE").is_file()
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    assert "predictions" in readme and "Apache" in readme and "MIT" in readme
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert json.loads((TS / "label_names.json").read_text())["total"]["5"] == "liver"
