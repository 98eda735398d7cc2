"""nnU-Net's preprocessing rules and their inverse (bench/nnunet_agreement.py compares them with nnunetv2 itself)."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.data import nnunet_preprocess as npp
from TransferSegLib.data.nnunet_recipe import NnunetRecipe
from TransferSegLib.data.preprocess import preprocess_image, preprocess_labels, restore_label_array, restore_labelmap
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.errors import CaseError, ModelError

PLANS = json.loads((next((Path(__file__).parent / "data" / "nnunet" / "Dataset990_TransferSegTiny").iterdir())
                    / "plans.json").read_text())


def _recipe(**config) -> NnunetRecipe:
    plans = copy.deepcopy(PLANS)
    transpose = config.pop("transpose", None)
    if transpose is not None:
        plans["transpose_forward"] = list(transpose)
        plans["transpose_backward"] = [int(i) for i in np.argsort(transpose)]
    plans["configurations"]["3d_fullres"].update(config)
    return NnunetRecipe(plans=plans, configuration="3d_fullres")


def _image(array_zyx, spacing=(1.0, 1.0, 1.0), direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(np.asarray(array_zyx, np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -5.0, 3.0))
    if direction is not None:
        image.SetDirection(direction)
    return image


def test_ct_normalization_clips_to_the_foreground_percentiles_then_uses_the_dataset_mean_and_sd():
    props = PLANS["foreground_intensity_properties_per_channel"]["0"]
    values = np.array([[[-1000.0, props["percentile_00_5"], 40.0, 2000.0]]])
    out = npp.normalize(values, _recipe(), 0, None)
    low = (props["percentile_00_5"] - props["mean"]) / props["std"]
    high = (props["percentile_99_5"] - props["mean"]) / props["std"]
    assert out.ravel() == pytest.approx([low, low, (40.0 - props["mean"]) / props["std"], high], rel=1e-5)


def test_zscore_with_the_mask_normalizes_inside_and_leaves_the_outside():
    recipe = _recipe(normalization_schemes=["ZScoreNormalization"], use_mask_for_norm=[True])
    values = np.zeros((1, 4, 4))
    values[0, 1:3, 1:3] = [[1.0, 2.0], [3.0, 4.0]]
    mask = values != 0
    out = npp.normalize(values, recipe, 0, mask)
    inside = values[mask]
    assert out[mask] == pytest.approx((inside - inside.mean()) / inside.std(), rel=1e-5)
    assert np.all(out[~mask] == 0)


def test_new_shape_and_the_separately_resampled_axis_follow_nnunet():
    assert npp.new_shape((30, 101, 122), (3, 3, 3), (2, 1.5, 1.5)) == (45, 202, 244)
    assert npp.separate_z_axis((5.0, 0.8, 0.8), (3.0, 3.0, 3.0)) == 0  # anisotropic input
    assert npp.separate_z_axis((2.0, 0.98, 0.98), (7.0, 1.5, 1.5)) == 0  # anisotropic target
    assert npp.separate_z_axis((2.0, 0.98, 0.98), (3.0, 3.0, 3.0)) is None
    assert npp.separate_z_axis((0.5, 4.0, 4.0), (1, 1, 1)) is None  # two coarse axes: resampled together


def test_the_array_is_transposed_cropped_to_nonzero_and_resampled_and_comes_back_on_the_input_grid():
    rng = np.random.default_rng(0)
    volume = np.zeros((12, 20, 16))
    volume[2:10, 3:17, 2:14] = rng.normal(40, 10, (8, 14, 12))
    labels = np.zeros(volume.shape, np.uint8)
    labels[4:8, 6:14, 5:11] = 2
    image = _image(volume, spacing=(1.5, 1.0, 2.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    label = _image(labels, spacing=(1.5, 1.0, 2.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    recipe = Recipe.for_nnunet(_recipe(spacing=[2.0, 1.0, 1.5], transpose=(2, 0, 1)))
    array, info = preprocess_image(image, recipe)
    # z, y, x spacing (2, 1, 1.5) transposed by (2, 0, 1): x first; the nonzero box is 12 x 8 x 14
    assert info.box == ((2, 14), (2, 10), (3, 17)) and array.shape == npp.new_shape((12, 8, 14), (1.5, 2.0, 1.0),
                                                                                    recipe.nnunet.spacing)
    assert preprocess_labels(label, info).shape == array.shape
    back = restore_label_array(preprocess_labels(label, info), info)
    assert back.GetSize() == image.GetSize() and back.GetDirection() == image.GetDirection()
    assert back.GetOrigin() == image.GetOrigin()
    restored = sitk.GetArrayFromImage(back)
    assert (np.logical_and(restored == 2, labels == 2).sum() * 2 / ((restored == 2).sum() + (labels == 2).sum())) > 0.9
    one_hot = np.stack([preprocess_labels(label, info) == c for c in range(3)]).astype(np.float32)
    assert np.array_equal(sitk.GetArrayFromImage(restore_labelmap(one_hot, info)) == 2,
                          sitk.GetArrayFromImage(back) == 2)


def test_without_resampling_the_round_trip_is_exact_and_outside_the_box_is_background():
    volume = np.zeros((6, 10, 9))
    volume[1:5, 2:8, 3:7] = 100.0
    labels = (volume > 0).astype(np.uint8)
    labels[1:3] *= 3
    image, label = _image(volume, spacing=(3.0, 3.0, 3.0)), _image(labels, spacing=(3.0, 3.0, 3.0))
    recipe = Recipe.for_nnunet(_recipe())
    array, info = preprocess_image(image, recipe)
    assert array.shape == (4, 6, 4)
    logits = np.stack([preprocess_labels(label, info) == c for c in range(4)]).astype(np.float32) * 8.0
    probs = npp.restore_logits(logits, info)
    assert probs.shape == (4, 9, 10, 6) and np.allclose(probs.sum(0), 1.0, atol=1e-5)
    assert np.array_equal(probs.argmax(0).transpose(2, 1, 0), labels)


def test_recipes_round_trip_through_json_and_unsupported_plans_are_refused():
    recipe = Recipe.for_nnunet(_recipe())
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again.nnunet.plans == recipe.nnunet.plans and again.nnunet.configuration == "3d_fullres"
    with pytest.raises(ModelError, match="normalization"):
        _recipe(normalization_schemes=["MyNormalization"])
    with pytest.raises(ModelError, match="3D"):
        _recipe(patch_size=[64, 64])
    with pytest.raises(ModelError, match="configuration"):
        NnunetRecipe(plans=PLANS, configuration="2d")
    with pytest.raises(CaseError, match="channel"):
        npp.preprocess_image([_image(np.ones((4, 4, 4)))] * 2, _recipe())
