"""Recipes travel as JSON inside model folders: they must round-trip and refuse typos."""

import json

import pytest

from TransferSegLib.errors import ModelError
from TransferSegLib.data.recipe import IntensitySpec, Recipe
from TransferSegLib.data.steps import IntensityStep


def test_a_recipe_round_trips_through_json():
    recipe = Recipe(orientation="lps", spacing=(1.5, 1.5, 2.0),
                    intensity=IntensitySpec(kind="zscore", nonzero=True),
                    crop_foreground=True, crop_threshold=-300.0, crop_margin_mm=5.0)
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe
    assert again.orientation == "LPS" and again.spacing == (1.5, 1.5, 2.0)
    assert again.intensity == [IntensityStep("zscore", over="nonzero")]


def test_the_default_recipe_is_a_3mm_ras_soft_tissue_window():
    recipe = Recipe()
    assert (recipe.orientation, recipe.spacing) == ("RAS", (3.0, 3.0, 3.0))
    assert recipe.intensity == [IntensityStep("window", low=-175.0, high=250.0, out_min=0.0, out_max=1.0)]
    assert Recipe.from_dict({}) == recipe


def test_null_spacing_keeps_the_image_spacing_and_round_trips():
    recipe = Recipe.from_dict({"spacing": None})
    assert recipe.spacing is None
    assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))).spacing is None


def test_json_integers_become_floats():
    recipe = Recipe.from_dict({"spacing": [2, 2, 3], "intensity": {"kind": "window", "low": -100, "high": 200}})
    assert recipe.spacing == (2.0, 2.0, 3.0) and isinstance(recipe.intensity[0].low, float)


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
    ({"intensity": [{"op": "gamma"}]}, "gamma"),
    ({"intensity": [{"op": "zscore", "low": 1}]}, "low"),
    ({"intensity": [{"op": "zscore", "over": "inside"}]}, "over"),
    ({"intensity": [{"op": "percentile", "low": 1, "high": 101}]}, "percentiles"),
    ({"intensity": [{"op": "percentile", "low": 1, "high": 99, "out_min": 0}]}, "neither"),
    ({"intensity": [{"op": "clip"}]}, "clip"),
    ({"intensity": [{"op": "affine", "scale": "x"}]}, "scale"),
    ({"intensity": [{"op": "zscore", "channels": [-1]}]}, "channel"),
    ({"resize": [256, 256]}, "resize"),
    ({"resize_mode": "cubic"}, "resize_mode"),
    ({"crop_select": "otsu"}, "crop_select"),
])
def test_invalid_values_are_model_errors(data, words):
    with pytest.raises(ModelError, match=words):
        Recipe.from_dict(data)


def test_a_recipe_that_is_not_an_object_is_refused():
    with pytest.raises(ModelError, match="JSON object"):
        Recipe.from_dict(["RAS"])  # type: ignore[arg-type]


def test_old_intensity_objects_load_as_steps():
    """model.json files and catalog entries written before intensity steps keep loading."""
    old = {"orientation": "RAS", "spacing": [1.5, 1.5, 1.5], "crop_foreground": False, "crop_threshold": -500.0,
           "crop_margin_mm": 10.0,
           "intensity": {"kind": "window", "low": -57, "high": 164, "out_min": 0.0, "out_max": 1.0, "nonzero": False}}
    recipe = Recipe.from_dict(old)
    assert recipe.intensity == [IntensityStep("window", low=-57.0, high=164.0, out_min=0.0, out_max=1.0)]
    assert Recipe.from_dict({"intensity": {"kind": "none"}}).intensity == []
    assert Recipe.from_dict({"intensity": {"kind": "zscore"}}).intensity == [IntensityStep("zscore")]
    assert Recipe(intensity=IntensitySpec(kind="zscore", nonzero=True)).intensity[0].over == "nonzero"


def test_every_step_op_round_trips_with_only_its_own_fields():
    steps = [
        {"op": "clip", "low": -1000.0, "high": None, "channels": None},
        {"op": "window", "low": -175.0, "high": 250.0, "out_min": -1.0, "out_max": 1.0, "clamp": False,
         "channels": [0]},
        {"op": "zscore", "over": "positive", "outside": "noise", "seed": 3, "channel_wise": False, "stats": "crop",
         "channels": None},
        {"op": "rescale", "out_min": -1.0, "out_max": 1.0, "over": "all", "channel_wise": True, "stats": "crop",
         "channels": None},
        {"op": "affine", "scale": 0.226, "offset": 0.449, "channels": None},
        {"op": "percentile", "low": 0.5, "high": 99.5, "out_min": 0.0, "out_max": 1.0, "clamp": True,
         "over": "all", "channel_wise": True, "stats": "image", "channels": None},
    ]
    recipe = Recipe.from_dict({"intensity": steps, "orientation": "as stored", "resize": [256, 256, 256],
                               "resize_mode": "nearest", "crop_select": "relative", "crop_threshold": 0.1,
                               "crop_margin_fraction": 0.1, "source": "github.com/x/y: file.py"})
    assert recipe.orientation == "stored" and not recipe.reorients
    dumped = json.loads(json.dumps(recipe.to_dict()))
    assert dumped["intensity"] == steps
    assert Recipe.from_dict(dumped) == recipe
