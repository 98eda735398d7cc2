"""Preprocessing and its inverse: predictions land exactly on the input's grid."""

import math

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.data.preprocess import (
    normalize_intensity, preprocess_image, preprocess_labels, restore_label_array, restore_labelmap,
)
from TransferSegLib.data.recipe import IntensitySpec, Recipe


def _rotation(ax, ay):
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    return rx @ ry


def _oblique_flipped_anisotropic():
    """A volume with rotated, LPS-flipped axes, anisotropic voxels and an off-centre origin."""
    size = (40, 36, 14)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    labels = np.zeros(size[::-1], np.uint8)
    labels[((xx - 20) * 0.8) ** 2 + ((yy - 18) * 1.1) ** 2 + ((zz - 7) * 3.0) ** 2 < 9.0 ** 2] = 1
    labels[3:10, 4:12, 25:35] = 2
    image = sitk.GetImageFromArray((labels * 100.0 + np.random.default_rng(0).normal(0, 5, labels.shape)).astype(np.float32))
    direction = _rotation(math.radians(20), math.radians(20)) @ np.diag([-1.0, -1.0, 1.0])
    for img in (image,):
        img.SetSpacing((0.8, 1.1, 3.0))
        img.SetOrigin((-112.5, 37.25, 401.0))
        img.SetDirection(tuple(direction.ravel()))
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    return image, label, labels


def _geometry(image):
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _one_hot(labels_xyz, classes=3):
    return np.stack([(labels_xyz == c).astype(np.float32) for c in range(classes)])


def test_round_trip_on_an_oblique_flipped_anisotropic_volume_keeps_exact_geometry():
    image, label, labels = _oblique_flipped_anisotropic()
    recipe = Recipe(spacing=(1.5, 1.5, 1.5), intensity=IntensitySpec(kind="none"))
    array, info = preprocess_image(image, recipe)
    net_labels = preprocess_labels(label, info)
    assert array.shape == net_labels.shape
    restored = restore_labelmap(_one_hot(net_labels), info)
    assert _geometry(restored) == _geometry(image)
    agreement = (sitk.GetArrayFromImage(restored) == labels).mean()
    assert agreement > 0.97, agreement
    nearest = restore_label_array(net_labels, info)
    assert _geometry(nearest) == _geometry(image)


def test_reorientation_alone_round_trips_voxel_exactly():
    image, label, labels = _oblique_flipped_anisotropic()
    array, info = preprocess_image(image, Recipe(spacing=None, intensity=IntensitySpec(kind="none")))
    net_labels = preprocess_labels(label, info)
    assert sorted(array.shape) == sorted(labels.shape)  # re-indexed, not resampled
    restored = restore_labelmap(_one_hot(net_labels), info)
    assert _geometry(restored) == _geometry(image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), labels)


def test_crop_round_trip_puts_background_outside_the_crop():
    image, label, labels = _oblique_flipped_anisotropic()
    recipe = Recipe(spacing=None, intensity=IntensitySpec(kind="none"), crop_foreground=True, crop_threshold=50.0, crop_margin_mm=2.0)
    array, info = preprocess_image(image, recipe)
    assert np.prod(array.shape) < np.prod(labels.shape)
    restored = restore_labelmap(_one_hot(preprocess_labels(label, info)), info)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored), labels)


def test_ras_orientation_matches_monai_on_a_real_file():
    from monai.transforms import EnsureChannelFirst, LoadImage, Orientation

    from TransferSegLib.data.images import read_image
    from TransferSegLib.data.sample_data import sample_dir

    path = str(sample_dir() / "SlicerIO" / "CTChest4.nrrd")
    monai_array = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(
        EnsureChannelFirst()(LoadImage(image_only=True)(path)))
    ours, _ = preprocess_image(read_image(path), Recipe(spacing=None, intensity=IntensitySpec(kind="none"),
                                                      crop_foreground=False))
    np.testing.assert_array_equal(np.asarray(monai_array[0]), ours)


def test_intensity_window_and_zscore():
    values = np.array([-1000.0, -175.0, 37.5, 250.0, 900.0], np.float32)
    np.testing.assert_allclose(normalize_intensity(values, IntensitySpec()), [0, 0, 0.5, 1, 1], atol=1e-6)
    z = normalize_intensity(np.array([0, 1, 2, 3], np.float32), IntensitySpec(kind="zscore", nonzero=True))
    assert z[0] == 0 and z[1:].mean() == pytest.approx(0, abs=1e-6) and z[1:].std() == pytest.approx(1, abs=1e-5)


def test_the_dicom_series_and_its_labelmap_describe_the_same_voxels():
    from TransferSegLib.data.cases import load_case
    from TransferSegLib.data.sample_data import sample_cases

    loaded = load_case(sample_cases()["ts_dicom"], ["background", "liver"])
    assert _geometry(loaded.label) == _geometry(loaded.image)
    assert int(sitk.GetArrayFromImage(loaded.label).sum()) == 366708  # liver voxels of example_seg_dicom
