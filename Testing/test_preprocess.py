"""Preprocessing and its inverse: the network sees MONAI's arrays, predictions land
exactly on the input's grid."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from TransferSegLib.errors import CaseError
from TransferSegLib.data.preprocess import (
    PreprocessInfo, normalize_intensity, orientation_code, preprocess_image, preprocess_labels,
    restore_label_array, restore_labelmap, restore_probabilities,
)
from TransferSegLib.data.recipe import IntensitySpec, Recipe

SAMPLES = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
TS = SAMPLES / "TotalSegmentator"
NO_INTENSITY = IntensitySpec(kind="none")


def _rotation(ax_deg: float, ay_deg: float) -> np.ndarray:
    ax, ay = math.radians(ax_deg), math.radians(ay_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    return rx @ ry


# Index axes that run roughly Anterior, Superior and Left: not RAS in any axis.
_PERMUTED_FLIPPED = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _oblique_case(size=(64, 48, 20), spacing=(0.8, 1.1, 3.0)):
    """An image and labelmap (a sphere and a box) on a grid rotated 20° about two axes,
    with permuted, LPS-flipped axes, anisotropic voxels and an off-centre origin."""
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    labels = np.zeros(size[::-1], np.uint8)
    centre = [(n - 1) / 2 for n in size]
    distance = sum(((g - c) * s) ** 2 for g, c, s in zip((xx, yy, zz), centre, spacing))
    labels[distance < 18.0 ** 2] = 1
    labels[4:14, 6:30, 40:60] = 2
    noise = np.random.default_rng(0).normal(0, 5, labels.shape)
    image = sitk.GetImageFromArray((labels * 100.0 - 50.0 + noise).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-112.5, 37.25, 401.0))
    image.SetDirection(tuple((_rotation(20, 20) @ _PERMUTED_FLIPPED).ravel()))
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    return image, label, labels


def _geometry(image):
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _one_hot(labels_xyz, classes=3):
    return np.stack([(labels_xyz == c).astype(np.float32) for c in range(classes)])


def test_the_test_volume_really_needs_reorienting():
    image, _, _ = _oblique_case()
    assert orientation_code(image.GetDirection()) == "ASL"


def test_resampled_round_trip_keeps_the_exact_input_geometry_and_the_labels():
    image, label, labels = _oblique_case()
    array, info = preprocess_image(image, Recipe(spacing=(1.5, 1.5, 1.5), intensity=NO_INTENSITY))
    net_labels = preprocess_labels(label, info)
    assert array.shape == net_labels.shape and array.dtype == np.float32
    assert info.resampled.spacing == (1.5, 1.5, 1.5)
    restored = restore_labelmap(_one_hot(net_labels), info)
    assert _geometry(restored) == _geometry(image)
    assert restored.GetPixelID() == sitk.sitkUInt8
    agreement = (sitk.GetArrayFromImage(restored) == labels).mean()
    # What is lost sits on label boundaries: 1.5 mm voxels on a 0.8 x 1.1 x 3 mm rotated grid.
    assert agreement >= 0.985, agreement
    nearest = restore_label_array(net_labels, info)
    assert _geometry(nearest) == _geometry(image)
    assert (sitk.GetArrayFromImage(nearest) == labels).mean() >= 0.985


def test_finer_spacing_loses_less():
    image, label, labels = _oblique_case()
    array, info = preprocess_image(image, Recipe(spacing=(0.8, 0.8, 0.8), intensity=NO_INTENSITY))
    restored = restore_labelmap(_one_hot(preprocess_labels(label, info)), info)
    assert (sitk.GetArrayFromImage(restored) == labels).mean() >= 0.997


def test_reorientation_alone_round_trips_voxel_exactly():
    image, label, labels = _oblique_case()
    array, info = preprocess_image(image, Recipe(spacing=None, intensity=NO_INTENSITY))
    assert not info.was_resampled
    assert array.shape == (20, 64, 48)  # input axes (A, S, L) → R = reversed k, A = i, S = j
    assert orientation_code(info.oriented.direction) == "RAS"
    net_labels = preprocess_labels(label, info)
    assert sorted(np.unique(net_labels)) == [0, 1, 2]
    restored = restore_labelmap(_one_hot(net_labels), info)
    assert _geometry(restored) == _geometry(image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), labels)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restore_label_array(net_labels, info)), labels)


def test_recipe_spacing_equal_to_the_oriented_spacing_does_not_interpolate():
    image, label, labels = _oblique_case()
    # In RAS order the axes are the input's (k, i, j): spacing (3.0, 0.8, 1.1).
    array, info = preprocess_image(image, Recipe(spacing=(3.0, 0.8, 1.1), intensity=NO_INTENSITY))
    assert not info.was_resampled
    restored = restore_labelmap(_one_hot(preprocess_labels(label, info)), info)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), labels)


def test_our_resampling_equals_simpleitk_resampling_through_physical_space():
    image, label, _ = _oblique_case(size=(20, 16, 10))
    array, info = preprocess_image(image, Recipe(spacing=(1.7, 0.9, 2.3), intensity=NO_INTENSITY))
    reference = info.resampled.reference()
    expected = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)
    np.testing.assert_allclose(array, sitk.GetArrayFromImage(expected).transpose(2, 1, 0), atol=1e-3)
    expected_labels = sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8, True)
    np.testing.assert_array_equal(preprocess_labels(label, info), sitk.GetArrayFromImage(expected_labels).transpose(2, 1, 0))


def test_resampling_builds_the_grid_of_monai_spacing():
    """First voxel centre kept, round((n-1)*s/s'+1) voxels: what ``monai.transforms.Spacing`` does."""
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    image, _, _ = _oblique_case()
    _, info = preprocess_image(image, Recipe(spacing=(3.0, 3.0, 3.0), intensity=NO_INTENSITY))
    o, r = info.oriented, info.resampled
    assert r.size == tuple(int(round((n - 1) * s / 3.0 + 1)) for n, s in zip(o.size, o.spacing))
    assert r.direction == o.direction and r.origin == o.origin
    affine = np.eye(4)
    affine[:3, :3] = o.matrix() @ np.diag(o.spacing)
    affine[:3, 3] = o.origin
    monai_out = Spacing(pixdim=(3.0, 3.0, 3.0))(MetaTensor(torch.zeros((1,) + tuple(o.size)), affine=torch.tensor(affine)))
    assert tuple(monai_out.shape[1:]) == r.size
    np.testing.assert_allclose(np.asarray(monai_out.affine)[:3, 3], r.origin, atol=1e-6)


def test_crop_round_trip_puts_background_outside_the_crop():
    image, label, labels = _oblique_case()
    recipe = Recipe(spacing=None, intensity=NO_INTENSITY, crop_foreground=True, crop_threshold=0.0, crop_margin_mm=2.0)
    array, info = preprocess_image(image, recipe)
    assert array.shape == info.crop_shape
    assert np.prod(array.shape) < 0.5 * np.prod(labels.shape)
    assert array.min() < 0  # the margin keeps some background
    net_labels = preprocess_labels(label, info)
    assert net_labels.shape == array.shape
    probs = restore_probabilities(_one_hot(net_labels), info)
    assert probs.shape == (3,) + image.GetSize()
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)
    restored = restore_labelmap(_one_hot(net_labels), info)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), labels)


def test_crop_with_resampling_restores_background_outside_and_labels_inside():
    image, label, labels = _oblique_case()
    recipe = Recipe(spacing=(1.5, 1.5, 1.5), intensity=NO_INTENSITY, crop_foreground=True, crop_threshold=0.0,
                    crop_margin_mm=3.0)
    array, info = preprocess_image(image, recipe)
    assert array.shape != info.resampled.size
    restored = restore_labelmap(_one_hot(preprocess_labels(label, info)), info)
    assert _geometry(restored) == _geometry(image)
    assert (sitk.GetArrayFromImage(restored) == labels).mean() >= 0.985


def test_crop_finds_nothing_above_the_threshold_and_keeps_everything():
    image, _, labels = _oblique_case(size=(12, 10, 8))
    recipe = Recipe(spacing=None, intensity=NO_INTENSITY, crop_foreground=True, crop_threshold=1e6)
    array, info = preprocess_image(image, recipe)
    assert info.crop_shape == info.resampled.size


def test_a_labelmap_on_another_grid_is_refused():
    image, _, _ = _oblique_case(size=(12, 10, 8))
    _, info = preprocess_image(image, Recipe(spacing=None, intensity=NO_INTENSITY))
    with pytest.raises(CaseError, match="grid"):
        preprocess_labels(sitk.Image(12, 10, 9, sitk.sitkUInt8), info)


def test_predictions_of_the_wrong_shape_are_refused():
    image, _, _ = _oblique_case(size=(12, 10, 8))
    _, info = preprocess_image(image, Recipe(spacing=(2.0, 2.0, 2.0), intensity=NO_INTENSITY))
    with pytest.raises(ValueError, match="shape"):
        restore_probabilities(np.zeros((2, 3, 3, 3), np.float32), info)


def test_preprocess_info_survives_json():
    image, label, _ = _oblique_case(size=(20, 16, 10))
    recipe = Recipe(spacing=(2.0, 2.0, 2.0), intensity=NO_INTENSITY, crop_foreground=True, crop_threshold=0.0)
    _, info = preprocess_image(image, recipe)
    again = PreprocessInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert again == info


def test_integer_images_are_accepted():
    image, _, _ = _oblique_case(size=(12, 10, 8))
    array, _ = preprocess_image(sitk.Cast(image, sitk.sitkInt16), Recipe(spacing=(2.0, 2.0, 2.0)))
    assert array.dtype == np.float32 and 0.0 <= array.min() and array.max() <= 1.0


@pytest.mark.parametrize("code", ["RAS", "LPS", "PLI", "SAR", "IRP"])
def test_orientation_codes_give_the_voxel_order_of_simpleitk_dicomorient(code):
    """On axis-aligned grids our re-indexing is DICOMOrient's (same 'to' letters)."""
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(7, 6, 5)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetOrigin((3.0, -4.0, 5.0))
    image.SetDirection(tuple(_PERMUTED_FLIPPED.ravel()))
    ours, info = preprocess_image(image, Recipe(orientation=code, spacing=None, intensity=NO_INTENSITY))
    theirs = sitk.DICOMOrient(image, code)
    np.testing.assert_array_equal(ours, sitk.GetArrayFromImage(theirs).transpose(2, 1, 0))
    np.testing.assert_allclose(info.oriented.origin, theirs.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(info.oriented.direction, theirs.GetDirection(), atol=1e-12)
    assert info.oriented.spacing == theirs.GetSpacing()
    assert orientation_code(info.oriented.direction) == code


def _monai_ras(path):
    monai_transforms = pytest.importorskip("monai.transforms")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = monai_transforms.LoadImage(image_only=True)(str(path))
        oriented = monai_transforms.Orientation(axcodes="RAS")(monai_transforms.EnsureChannelFirst()(data))
    return np.asarray(oriented[0])


@pytest.mark.parametrize("name", ["example_mr_sm.nii.gz", "example_seg_dicom.nii.gz", "example_ct_sm.nii.gz"])
def test_ras_gives_the_arrays_of_monai_orientation_on_real_files(name):
    """LPS (MR), LAS (DICOM labelmap) and RAS (CT) NIfTI files, read by MONAI's nibabel reader."""
    path = TS / name
    ours, _ = preprocess_image(sitk.ReadImage(str(path), sitk.sitkFloat32),
                               Recipe(spacing=None, intensity=NO_INTENSITY, crop_foreground=False))
    np.testing.assert_array_equal(_monai_ras(path), ours)


def test_ras_gives_the_arrays_of_monai_orientation_on_an_oblique_file(tmp_path):
    image, _, _ = _oblique_case(size=(16, 12, 8))
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(image, str(path))
    ours, _ = preprocess_image(sitk.ReadImage(str(path)), Recipe(spacing=None, intensity=NO_INTENSITY, crop_foreground=False))
    np.testing.assert_array_equal(_monai_ras(path), ours)


def test_intensity_window_clips_hu_and_scales_to_the_output_range():
    values = np.array([-1000.0, -175.0, 37.5, 250.0, 900.0], np.float32)
    np.testing.assert_allclose(normalize_intensity(values, IntensitySpec()), [0, 0, 0.5, 1, 1], atol=1e-6)
    wide = IntensitySpec(kind="window", low=-1000.0, high=1000.0, out_min=-1.0, out_max=1.0)
    np.testing.assert_allclose(normalize_intensity(values, wide), [-1, -0.175, 0.0375, 0.25, 0.9], atol=1e-6)


def test_zscore_standardizes_the_whole_image_or_only_nonzero_voxels():
    values = np.array([0.0, 0.0, 1.0, 2.0, 3.0], np.float32)
    z = normalize_intensity(values, IntensitySpec(kind="zscore"))
    assert z.mean() == pytest.approx(0.0, abs=1e-6) and z.std() == pytest.approx(1.0, abs=1e-5)
    nz = normalize_intensity(values, IntensitySpec(kind="zscore", nonzero=True))
    assert nz[:2].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(nz[2:], [-1.2247449, 0.0, 1.2247449], atol=1e-5)
    flat = normalize_intensity(np.full(4, 7.0, np.float32), IntensitySpec(kind="zscore"))
    assert np.isfinite(flat).all() and (flat == 0).all()


def test_intensity_none_leaves_values_alone():
    values = np.array([-1000.0, 3.5], np.float32)
    np.testing.assert_array_equal(normalize_intensity(values, NO_INTENSITY), values)


def test_the_crop_threshold_applies_to_hu_before_the_window():
    image, _, _ = _oblique_case()
    crop = dict(spacing=None, crop_foreground=True, crop_threshold=0.0, crop_margin_mm=0.0)
    raw, raw_info = preprocess_image(image, Recipe(intensity=NO_INTENSITY, **crop))
    windowed, info = preprocess_image(image, Recipe(intensity=IntensitySpec(), **crop))
    # Background (-50 HU) is windowed to ~0.29 > 0: a threshold after the window would not crop.
    assert info.crop_shape != info.resampled.size
    assert (info.crop_start, info.crop_stop) == (raw_info.crop_start, raw_info.crop_stop)
    np.testing.assert_allclose(windowed, normalize_intensity(raw, IntensitySpec()), atol=1e-6)


# --- real data -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dicom_ct():
    """The 20-slice DICOM CT series and its TotalSegmentator labelmap as read from disk."""
    from TransferSegLib.data.images import read_image
    from TransferSegLib.data.labelmaps import read_labelmap

    return read_image(str(TS / "example_ct_dicom")), read_labelmap(str(TS / "example_seg_dicom.nii.gz"))


def test_the_dicom_series_and_its_labelmap_describe_the_same_voxels(dicom_ct):
    from TransferSegLib.data.grid import align_to_image

    image, label = dicom_ct
    assert image.GetSize() == label.image.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(image.GetSpacing(), label.image.GetSpacing(), rtol=1e-6)
    # The NIfTI stores the y axis reversed (LAS vs the series' LPS): same voxels, other order.
    assert orientation_code(image.GetDirection()) == "LPS"
    assert orientation_code(label.image.GetDirection()) == "LAS"
    aligned = align_to_image(image, label.image, "series", "labelmap")
    assert _geometry(aligned) == _geometry(image)
    hu = sitk.GetArrayFromImage(image)
    values = sitk.GetArrayFromImage(aligned)
    names = {v: k for k, v in json.loads((TS / "label_names.json").read_text())["total"].items()}
    liver = hu[values == int(names["liver"])]
    assert liver.size == 366708
    assert 60 < liver.mean() < 120  # contrast-enhanced liver; misaligned voxels average far below 0
    assert hu[values == int(names["aorta"])].mean() > 150


def test_the_dicom_ct_preprocesses_to_3mm_and_restores_onto_the_series(dicom_ct):
    from TransferSegLib.data.grid import align_to_image

    image, labelmap = dicom_ct
    label = align_to_image(image, labelmap.image, "series", "labelmap")
    array, info = preprocess_image(image, Recipe())
    assert info.resampled.size == (167, 167, 14)
    assert array.shape == (167, 116, 14)  # the default crop to the body (> -500 HU) drops the air in front and behind
    liver = (preprocess_labels(label, info) == 5).astype(np.float32)
    restored = restore_labelmap(np.stack([1.0 - liver, liver]), info)
    assert _geometry(restored) == _geometry(image)
    truth = sitk.GetArrayFromImage(label) == 5
    found = sitk.GetArrayFromImage(restored) == 1
    dice = 2 * (truth & found).sum() / (truth.sum() + found.sum())
    assert dice > 0.97, dice
