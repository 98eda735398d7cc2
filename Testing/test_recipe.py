"""Recipes travel as JSON inside model folders: they must round-trip and refuse typos."""

import json

import pytest

from TransferSegLib.errors import ModelError
from TransferSegLib.data.recipe import IntensitySpec, Recipe


def test_a_recipe_round_trips_through_json():
    recipe = Recipe(orientation="lps", spacing=(1.5, 1.5, 2.0),
                    intensity=IntensitySpec(kind="zscore", nonzero=True),
                    crop_foreground=True, crop_threshold=-300.0, crop_margin_mm=5.0)
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe
    assert again.orientation == "LPS" and again.spacing == (1.5, 1.5, 2.0)
    assert isinstance(again.intensity, IntensitySpec) and again.intensity.nonzero is True


def test_the_default_recipe_is_a_3mm_ras_soft_tissue_window():
    recipe = Recipe()
    assert (recipe.orientation, recipe.spacing) == ("RAS", (3.0, 3.0, 3.0))
    assert (recipe.intensity.kind, recipe.intensity.low, recipe.intensity.high) == ("window", -175.0, 250.0)
    assert Recipe.from_dict({}) == recipe


def test_null_spacing_keeps_the_image_spacing_and_round_trips():
    recipe = Recipe.from_dict({"spacing": None})
    assert recipe.spacing is None
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))).spacing is None


def test_json_integers_become_floats():
    recipe = Recipe.from_dict({"spacing": [2, 2, 3], "intensity": {"kind": "window", "low": -100, "high": 200}})
    assert recipe.spacing == (2.0, 2.0, 3.0) and isinstance(recipe.intensity.low, float)


@pytest.mark.parametrize("data, words", [
    ({"orientaton": "RAS"}, "orientaton"),
    ({"intensity": {"kind": "window", "width": 400}}, "width"),
])
def test_unknown_keys_are_refused_by_name(data, words):
    with pytest.raises(ModelError, match=words):
        Recipe.from_dict(data)


@pytest.mark.parametrize("data, words", [
    ({"orientation": "RAR"}, "Orientation"),
    ({"orientation": "RA"}, "Orientation"),
    ({"orientation": "XYZ"}, "Orientation"),
    ({"spacing": [1.0, 1.0]}, "spacing"),
    ({"spacing": [1.0, 0.0, 1.0]}, "spacing"),
    ({"spacing": [1.0, "a", 1.0]}, "spacing"),
    ({"intensity": {"kind": "percentile"}}, "percentile"),
    ({"intensity": {"kind": "window", "low": 100, "high": 100}}, "empty"),
    ({"intensity": "window"}, "intensity"),
    ({"crop_foreground": "yes"}, "crop_foreground"),
    ({"crop_margin_mm": -1}, "crop_margin_mm"),
])
def test_invalid_values_are_model_errors(data, words):
    with pytest.raises(ModelError, match=words):
        Recipe.from_dict(data)


def test_a_recipe_that_is_not_an_object_is_refused():
    with pytest.raises(ModelError, match="JSON object"):
        Recipe.from_dict(["RAS"])  # type: ignore[arg-type]
