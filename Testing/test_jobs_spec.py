"""spec.json: strict, versioned, and the same run as the engine's FinetuneSpec."""

import json

import pytest

from TransferSegLib.specs import Case
from TransferSegLib.errors import CaseError, JobError, ModelError
from TransferSegLib.specs import FinetuneSpec
from TransferSegLib.jobs.spec import SPEC_VERSION, JobSpec
from TransferSegLib.data.recipe import IntensitySpec, Recipe
from TransferSegLib.specs import TrainConfig


def _finetune_spec(tmp_path):
    case = Case(image=str(tmp_path / "a.nii.gz"), label=str(tmp_path / "a_seg.nii.gz"), label_names={1: "liver"},
                annotated=["liver"])
    return FinetuneSpec(base="none", cases=[case], labels=["liver"], strategy="scratch", output=str(tmp_path / "m"),
                        train=TrainConfig(iterations=7, time_budget=None, device="cpu", seed=5, batch_size=1),
                        recipe=Recipe(spacing=(2.0, 2.0, 2.0), intensity=IntensitySpec(kind="zscore")),
                        patch_size=(32, 32, 16), name="liver test")


def test_a_finetune_spec_survives_the_trip_through_spec_json(tmp_path):
    original = _finetune_spec(tmp_path)
    JobSpec.from_finetune_spec(original).save(tmp_path / "spec.json")
    data = json.loads((tmp_path / "spec.json").read_text())
    assert data["version"] == SPEC_VERSION and data["task"] == "finetune" and data["created"]
    assert data["device"] == "cpu" and data["seed"] == 5 and data["train"]["iterations"] == 7
    back = JobSpec.load(tmp_path / "spec.json").to_finetune_spec()
    assert back.cases[0].label_names == {1: "liver"} and back.cases[0].annotated == ["liver"]
    assert back.train.to_dict() == original.train.to_dict()
    assert back.recipe.to_dict() == original.recipe.to_dict()
    assert back.patch_size == (32, 32, 16) and back.name == "liver test" and back.labels == ["liver"]


def test_an_unknown_field_is_refused_naming_it(tmp_path):
    data = JobSpec.from_finetune_spec(_finetune_spec(tmp_path)).to_dict()
    data["stratgy"] = "full"
    with pytest.raises(JobError, match="unknown field 'stratgy'"):
        JobSpec.from_dict(data)
    data.pop("stratgy")
    data["cases"][0]["labl"] = "x"
    with pytest.raises(JobError, match=r"cases\[0\]: unknown field 'labl'"):
        JobSpec.from_dict(data)
    data["cases"][0].pop("labl")
    data["train"]["learning_rat"] = 1.0
    with pytest.raises(JobError, match="learning_rat"):  # typed without torch: refused when the spec is read
        JobSpec.from_dict(data)


def test_a_spec_from_a_newer_transferseg_is_refused_with_what_to_do():
    with pytest.raises(JobError, match="update TransferSeg"):
        JobSpec.from_dict({"version": SPEC_VERSION + 1})
    with pytest.raises(JobError, match="Unknown strategy"):
        JobSpec(strategy="everything")
    with pytest.raises(JobError, match="Unknown task"):
        JobSpec(task="predict")


def test_device_and_seed_agree_between_the_top_level_and_training_settings():
    spec = JobSpec(train={"device": "cuda:1", "seed": 3})
    assert (spec.device, spec.seed) == ("cuda:1", 3)
    spec = JobSpec(device="cpu", seed=9, train={"device": "cuda:1", "seed": 3})
    assert spec.train.device == "cpu" and spec.train.seed == 9


def test_cheap_checks_name_the_missing_file_or_model(tmp_path):
    image, label = tmp_path / "a.nii.gz", tmp_path / "a_seg.nii.gz"
    image.write_bytes(b"x")
    spec = JobSpec(base="none", output=str(tmp_path / "m"), cases=[{"image": str(image), "label": str(label)}])
    with pytest.raises(CaseError, match="a_seg.nii.gz"):
        spec.check_inputs()
    label.write_bytes(b"x")
    spec.check_inputs()
    spec.base = "./models/missing"
    with pytest.raises(ModelError, match="models/missing"):
        spec.check_inputs()
    spec.base = "some-catalog-name"  # resolved (and maybe downloaded) by the worker
    spec.check_inputs()
    with pytest.raises(CaseError, match="no training cases"):
        JobSpec(output="m").check_inputs()


def test_a_relative_missing_file_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = JobSpec(base="none", output="m", cases=[{"image": "scans/ct.nii.gz", "label": "scans/seg.nii.gz"}])
    with pytest.raises(CaseError) as error:
        spec.check_inputs()
    assert f"looked for it at '{tmp_path / 'scans' / 'ct.nii.gz'}'" in str(error.value)
    assert "worker" not in str(error.value)


def test_the_unselected_policy_and_checkpoint_choice_travel_through_spec_json(tmp_path):
    original = _finetune_spec(tmp_path)
    original.cases[0].unselected = "unannotated"
    original.keep_checkpoints = True
    JobSpec.from_finetune_spec(original).save(tmp_path / "spec.json")
    back = JobSpec.load(tmp_path / "spec.json").to_finetune_spec()
    assert back.cases[0].unselected == "unannotated" and back.keep_checkpoints
