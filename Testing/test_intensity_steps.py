"""Intensity steps, resize and "as stored" orientation, checked against MONAI's and
torch's own implementations of the same operations on a real CT."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from monai import transforms as mt

from TransferSegLib.data.intensity import apply_steps
from TransferSegLib.data.preprocess import preprocess_image, preprocess_labels, restore_label_array
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.data.steps import IntensityStep
from TransferSegLib.errors import CaseError, ModelError

SAMPLES = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "TotalSegmentator"


@pytest.fixture(scope="module")
def ct() -> np.ndarray:
    image = sitk.ReadImage(str(SAMPLES / "example_ct_sm.nii.gz"), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0).copy()


def _monai(transform, array: np.ndarray) -> np.ndarray:
    return np.asarray(transform(torch.from_numpy(array.copy())), np.float32)


def test_window_clip_and_affine_are_the_monai_maps(ct):
    window = apply_steps(ct, [IntensityStep("window", low=-175, high=250, out_min=-1, out_max=1)])
    expected = _monai(mt.ScaleIntensityRange(-175, 250, -1, 1, clip=True), ct)
    np.testing.assert_allclose(window, expected, atol=1e-5)
    unclamped = apply_steps(ct, [IntensityStep("window", low=-175, high=250, out_min=0, out_max=1, clamp=False)])
    np.testing.assert_allclose(unclamped, _monai(mt.ScaleIntensityRange(-175, 250, 0, 1, clip=False), ct), atol=1e-5)
    clipped = apply_steps(ct, [IntensityStep("clip", low=-500.0), IntensityStep("clip", high=300.0)])
    assert clipped.min() == -500.0 and clipped.max() == 300.0
    np.testing.assert_array_equal(clipped, np.clip(ct, -500, 300))
    mapped = apply_steps(ct, [IntensityStep("affine", scale=0.226, offset=0.449)])
    np.testing.assert_allclose(mapped, ct * 0.226 + 0.449, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("nonzero", [False, True])
def test_zscore_and_rescale_are_monai_normalize_then_scale(ct, nonzero):
    """The whole-body bundle's chain: NormalizeIntensity(nonzero) then ScaleIntensity(-1, 1)."""
    ours = apply_steps(ct, [IntensityStep("zscore", over="nonzero" if nonzero else "all"),
                            IntensityStep("rescale", out_min=-1.0, out_max=1.0)])
    theirs = _monai(mt.Compose([mt.NormalizeIntensity(nonzero=nonzero), mt.ScaleIntensity(minv=-1.0, maxv=1.0)]), ct)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert ours.min() == pytest.approx(-1.0) and ours.max() == pytest.approx(1.0)


def test_percentile_scaling_is_monai_scale_intensity_range_percentiles(ct):
    ours = apply_steps(ct, [IntensityStep("percentile", low=0.5, high=99.5, out_min=0.0, out_max=1.0, clamp=True)])
    theirs = _monai(mt.ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True), ct)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    clip_only = apply_steps(ct, [IntensityStep("percentile", low=1.0, high=99.0)])
    low, high = np.percentile(ct, [1.0, 99.0])
    assert clip_only.min() == pytest.approx(low) and clip_only.max() == pytest.approx(high)


def test_channel_wise_statistics_and_channel_selection_on_two_channels(ct):
    two = np.stack([ct, ct * 3.0 + 100.0])
    separate = apply_steps(two, [IntensityStep("zscore", over="nonzero", channel_wise=True)])
    theirs = _monai(mt.NormalizeIntensity(nonzero=True, channel_wise=True), two)
    np.testing.assert_allclose(separate, theirs, atol=1e-5)
    together = apply_steps(two, [IntensityStep("zscore", channel_wise=False)])
    np.testing.assert_allclose(together, _monai(mt.NormalizeIntensity(channel_wise=False), two), atol=1e-5)
    only_second = apply_steps(two, [IntensityStep("window", low=0, high=1000, channels=[1])])
    np.testing.assert_array_equal(only_second[0], ct)
    assert only_second[1].max() <= 1.0
    with pytest.raises(ModelError, match="channel"):
        apply_steps(ct, [IntensityStep("affine", channels=[1])])


def test_positive_statistics_with_medicalnet_noise_fill(ct):
    """MedicalNet: mean and SD of the voxels > 0, every voxel normalized, zeros
    replaced by N(0, 1) noise (reproducibly seeded)."""
    values = ct.copy()
    values[:10] = 0.0
    step = IntensityStep("zscore", over="positive", outside="noise", seed=7)
    out = apply_steps(values, [step])
    inside = values > 0
    mean, sd = values[inside].mean(dtype=np.float64), values[inside].std(dtype=np.float64)
    np.testing.assert_allclose(out[values < 0], (values[values < 0] - mean) / sd, rtol=1e-4)
    zeros = out[values == 0]
    assert abs(zeros.mean()) < 0.05 and abs(zeros.std() - 1.0) < 0.05
    np.testing.assert_array_equal(out, apply_steps(values, [step]))  # same seed, same noise


def test_statistics_of_the_whole_image_reach_through_the_crop(ct):
    """deepbet takes its percentiles from the whole volume, then z-scores the box."""
    box = ct[20:60, 20:60, 5:20]
    steps = [IntensityStep("percentile", low=0.5, high=99.5, out_min=0.0, out_max=1.0, stats="image"),
             IntensityStep("zscore")]
    out = apply_steps(box, steps, whole=ct)
    low, high = np.percentile(ct, [0.5, 99.5])
    expected = np.clip((box - low) / (high - low), 0, 1)
    expected = (expected - expected.mean()) / expected.std()
    np.testing.assert_allclose(out, expected, atol=1e-4)
    with pytest.raises(ValueError, match="whole image"):
        apply_steps(box, steps)


def test_resize_is_torch_interpolate_without_aligned_corners_and_inverts_exactly():
    image = sitk.ReadImage(str(SAMPLES / "example_ct_sm.nii.gz"), sitk.sitkFloat32)
    raw = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    for mode, torch_mode in (("linear", "trilinear"), ("nearest", "nearest-exact")):
        recipe = Recipe(orientation="stored", spacing=None, intensity=[], crop_foreground=False,
                        resize=(64, 48, 40), resize_mode=mode)
        ours, info = preprocess_image(image, recipe)
        kwargs = {"align_corners": False} if torch_mode == "trilinear" else {}
        theirs = torch.nn.functional.interpolate(torch.from_numpy(raw.copy())[None, None], size=(64, 48, 40),
                                                 mode=torch_mode, **kwargs)[0, 0].numpy()
        assert ours.shape == (64, 48, 40) and info.network_shape == (64, 48, 40)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-2)  # float32 rounding of the weights
    # Twice the size along every axis: nearest down-and-back returns every label exactly.
    label = sitk.ReadImage(str(SAMPLES / "example_seg.nii.gz"))
    recipe = Recipe(spacing=None, intensity=[], crop_foreground=True, crop_threshold=-500.0, resize_mode="nearest")
    _, info = preprocess_image(image, recipe)
    recipe.resize = tuple(2 * s for s in info.crop_shape)  # type: ignore[assignment]
    _, info = preprocess_image(image, recipe)
    labels = preprocess_labels(label, info)
    assert labels.shape == recipe.resize
    restored = restore_label_array(labels, info)
    original = sitk.GetArrayFromImage(label)
    inside = sitk.GetArrayFromImage(restore_label_array(np.ones_like(labels), info)) > 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(restored)[inside], original[inside])


def test_stored_orientation_keeps_the_file_axes_and_channels_must_share_a_grid():
    mr = sitk.ReadImage(str(SAMPLES / "example_mr_sm.nii.gz"), sitk.sitkFloat32)  # an LPS NIfTI
    raw = sitk.GetArrayFromImage(mr).transpose(2, 1, 0)
    stored, _ = preprocess_image(mr, Recipe(orientation="stored", spacing=None, intensity=[], crop_foreground=False))
    np.testing.assert_array_equal(stored, raw)
    ras, _ = preprocess_image(mr, Recipe(orientation="RAS", spacing=None, intensity=[], crop_foreground=False))
    assert not np.array_equal(ras, raw)
    both, _ = preprocess_image([mr, mr * 2.0], Recipe(orientation="stored", spacing=None, intensity=[],
                                                      crop_foreground=False))
    assert both.shape == (2,) + raw.shape
    np.testing.assert_array_equal(both[1], raw * 2.0)
    moved = sitk.Image(mr)
    moved.SetOrigin(tuple(o + 5.0 for o in mr.GetOrigin()))
    with pytest.raises(CaseError, match="Channel 1 is not on channel 0's grid"):
        preprocess_image([mr, moved], Recipe(spacing=None))


def test_a_prediction_through_a_resizing_recipe_comes_back_on_the_input_grid():
    """deepbet-style recipes resize the box: prediction must undo the resize before
    un-cropping (whatever restore path inference takes)."""
    from TransferSegLib.data.preprocess import restore_probabilities
    from TransferSegLib.inference.infer import InferenceOptions, predict_image, sliding_window_probabilities
    from TransferSegLib.models.base_model import BaseModel
    from TransferSegLib.training.networks import build_network, default_network_spec

    image = sitk.ReadImage(str(SAMPLES / "example_ct_sm.nii.gz"), sitk.sitkFloat32)
    recipe = Recipe(spacing=None, crop_foreground=True, crop_threshold=-500.0, crop_margin_mm=0.0,
                    resize=(48, 40, 16), resize_mode="linear")
    torch.manual_seed(0)
    spec = default_network_spec(1, 3)
    model = build_network(spec).eval()
    info = BaseModel("resizing", spec, ["background", "a", "b"], recipe, (32, 32, 16))
    options = InferenceOptions(overlap=0.25)
    prediction = predict_image(model, info, image, "cpu", options)
    assert prediction.labelmap.GetSize() == image.GetSize()
    array, prep = preprocess_image(image, recipe)
    probs = sliding_window_probabilities(model, array, info.patch_size, torch.device("cpu"), options, flip_axes=())
    expected = np.argmax(restore_probabilities(probs, prep), axis=0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(prediction.labelmap).transpose(2, 1, 0), expected)
