"""The slab-wise labelmap restore of nnU-Net models equals the argmax of nnU-Net's whole-volume way back."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.data import nnunet_preprocess as npp
from TransferSegLib.data.nnunet_recipe import NnunetRecipe
from TransferSegLib.inference.nnunet_restore import AxisPlan, restore_labels

PLANS = json.loads((next((Path(__file__).parent / "data" / "nnunet" / "Dataset990_TransferSegTiny").iterdir())
                    / "plans.json").read_text())


def _recipe(transpose=None, **config) -> NnunetRecipe:
    plans = copy.deepcopy(PLANS)
    if transpose is not None:
        plans["transpose_forward"] = list(transpose)
        plans["transpose_backward"] = [int(i) for i in np.argsort(transpose)]
    plans["configurations"]["3d_fullres"].update(config)
    return NnunetRecipe(plans=plans, configuration="3d_fullres")


def _image(shape_zyx, spacing, border: int = 0) -> sitk.Image:
    """A CT-like volume; with ``border``, exact zeros around it (nnU-Net crops them away)."""
    rng = np.random.default_rng(0)
    array = rng.normal(40.0, 30.0, shape_zyx).astype(np.float32)
    if border:
        array[:border], array[:, :border], array[:, :, -border:] = 0.0, 0.0, 0.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((4.0, -7.0, 2.5))
    return image


def _smooth_logits(shape, classes: int, seed: int) -> np.ndarray:
    """Logits with organ-like regions: smooth random fields, so most voxels have a clear winner and some are close."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    fields = [gaussian_filter(rng.normal(0.0, 4.0, shape), 1.5) for _ in range(classes)]
    return np.stack(fields).astype(np.float32)


@pytest.mark.parametrize("name, shape_zyx, spacing, transpose, border", [
    ("upsampled in plane and along z", (40, 70, 64), (0.9, 0.8, 1.2), None, 0),
    ("anisotropic: z separately, nearest", (12, 90, 80), (0.7, 0.7, 5.0), None, 0),
    ("downsampled, transposed, cropped", (30, 40, 36), (4.5, 3.7, 3.3), (2, 0, 1), 3),
])
def test_labels_equal_the_argmax_of_the_whole_volume_restore(name, shape_zyx, spacing, transpose, border):
    image = _image(shape_zyx, spacing, border)
    recipe = _recipe(transpose)
    array, info = npp.preprocess_image(image, recipe)
    if border:
        assert info.crop_shape != info.shape_before_crop, "the zero border must be cropped away"
    logits = _smooth_logits(array.shape, 5, seed=len(name))
    expected = np.argmax(npp.restore_logits(logits, info), axis=0).astype(np.uint8).transpose(2, 1, 0)
    for budget in (1, 2**20):  # one row a slab, and several
        labels = restore_labels(logits, info, budget_bytes=budget)
        assert labels.dtype == np.uint8 and labels.shape == tuple(shape_zyx)
        assert np.array_equal(labels, expected), f"{name}: {(labels != expected).sum()} voxels differ"
    assert len(np.unique(expected)) == 5, "every class wins somewhere"
    if border:
        assert (expected[:border] == 0).all(), "outside the crop is background"


def test_axis_plans_follow_zoom_and_nnunet_nearest_rule():
    from scipy import ndimage

    values = np.random.default_rng(1).normal(size=(1, 7, 1, 1)).astype(np.float32)
    for target in (3, 7, 16):
        ours = AxisPlan.linear(7, target).apply(values, 1)
        theirs = ndimage.zoom(values[0, :, 0, 0], target / 7, order=1, mode="nearest", grid_mode=True)
        assert np.allclose(ours[0, :, 0, 0], theirs, atol=1e-6)
        nearest = AxisPlan.nearest(7, target).apply(values, 1)[0, :, 0, 0]
        assert np.array_equal(nearest, npp._along_axis_nearest(values[0, :, 0, 0], 0, target))
    assert np.array_equal(AxisPlan.linear(1, 4).apply(values[:, :1], 1)[0, :, 0, 0], np.repeat(values[0, 0, 0, 0], 4))


def test_predict_file_gives_the_same_labels_with_and_without_the_whole_volume_outputs(tmp_path):
    """The slab path (labelmap only) and the whole-volume path (asked for uncertainty) on the real test model."""
    pytest.importorskip("dynamic_network_architectures")
    from TransferSegLib.data.sample_data import sample_cases
    from TransferSegLib.inference.infer import predict_file

    folder = next((Path(__file__).parent / "data" / "nnunet" / "Dataset990_TransferSegTiny").iterdir())
    from TransferSegLib.data.images import read_image

    image = tmp_path / "ct.nii.gz"  # a quarter of the DICOM CT's plane at 0.98 x 0.98 x 2 mm: resampled and back
    sitk.WriteImage(read_image(sample_cases()["ts_dicom"].image)[128:384, 160:416, :], str(image))
    plain = predict_file(folder, image, tmp_path / "labels.nii.gz", device="cpu")
    whole = predict_file(folder, image, tmp_path / "with.nii.gz", device="cpu", uncertainty_path=tmp_path / "u.nii.gz")
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / n))) for n in ("labels.nii.gz", "with.nii.gz"))
    assert a.shape == b.shape and (a > 0).any() and np.array_equal(a, b)
    assert plain.uncertainty is None and whole.uncertainty is not None
    assert sitk.ReadImage(str(tmp_path / "u.nii.gz")).GetSize() == sitk.ReadImage(str(tmp_path / "labels.nii.gz")).GetSize()
