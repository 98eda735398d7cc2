"""Preprocessed cases are cached per (files, labels, recipe): a correction re-prepares only its case."""

import os
import time

import numpy as np
import SimpleITK as sitk

from TransferSegLib.data import case_cache
from TransferSegLib.data.cases import Case
from TransferSegLib.data.recipe import Recipe
from TransferSegLib.training.finetune import _prepare

LABELS = ["background", "liver"]


def _write_case(folder, name, offset=0):
    labels = np.zeros((12, 20, 24), np.uint8)
    labels[3:8, 5 + offset:12 + offset, 6:15] = 1
    image = sitk.GetImageFromArray((labels * 150.0 - 50.0).astype(np.float32))
    image.SetSpacing((1.5, 1.5, 2.0))
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    sitk.WriteImage(label, str(folder / f"{name}_label.nii.gz"))
    return Case(str(folder / f"{name}.nii.gz"), str(folder / f"{name}_label.nii.gz"), {1: "liver"}, name=name)


def test_a_second_preparation_comes_from_the_cache_and_a_corrected_label_is_prepared_again(tmp_path):
    recipe = Recipe(spacing=(3.0, 3.0, 3.0))
    one, two = _write_case(tmp_path, "one"), _write_case(tmp_path, "two")
    first = [_prepare(c, LABELS, recipe) for c in (one, two)]
    assert len(case_cache.entries()) == 2
    again = _prepare(one, LABELS, recipe)
    np.testing.assert_array_equal(again.image, first[0].image)
    np.testing.assert_array_equal(again.label, first[0].label)
    assert again.name == "one" and again.annotated.tolist() == [True, True] and again.region is None
    assert len(case_cache.entries()) == 2  # nothing new was stored

    time.sleep(0.01)
    _write_case(tmp_path, "two", offset=4)  # the user corrected case two
    corrected = _prepare(two, LABELS, recipe)
    assert len(case_cache.entries()) == 3
    assert not np.array_equal(corrected.label, first[1].label)
    other_recipe = _prepare(one, LABELS, Recipe(spacing=(2.0, 2.0, 2.0)))
    assert other_recipe.image.shape != first[0].image.shape and len(case_cache.entries()) == 4


def test_clean_removes_the_least_recently_used_beyond_the_size_and_everything_when_asked(tmp_path):
    arrays = {"image": np.zeros((10, 10, 10), np.float32), "label": np.zeros((10, 10, 10), np.uint8),
              "annotated": np.ones(2, bool), "region": None}
    for n, key in enumerate(["a" * 32, "b" * 32, "c" * 32]):
        path = case_cache.store(key, f"case {n}", arrays)
        os.utime(path, (1000.0 + n, 1000.0 + n))
    size = case_cache.entries()[0].bytes
    assert [e.name for e in case_cache.entries()] == ["case 2", "case 1", "case 0"]
    assert case_cache.load("a" * 32)["name"] == "case 0"  # reading refreshes: case 0 is now the most recent
    removed = case_cache.clean(max_bytes=2 * size)
    assert [e.name for e in removed] == ["case 1"]
    assert [e.name for e in case_cache.clean(older_than_s=3600)] == ["case 2"]  # unused since 1970
    assert [e.name for e in case_cache.entries()] == ["case 0"]
    case_cache.clean()
    assert case_cache.entries() == []
    assert case_cache.load("a" * 32) is None
