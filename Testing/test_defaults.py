"""Defaults that deliver: ``--strategy auto`` from recorded evidence, clean-up decided per class and
stored in model.json, and an experiment run that is exactly a finetune + predict."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.cli import main
from TransferSegLib.data.cases import load_case
from TransferSegLib.data.sample_data import sample_cases
from TransferSegLib.evaluation.evaluate import evaluate_files
from TransferSegLib.models.base_model import default_model_dir
from TransferSegLib.training.choices import FALLBACK_STRATEGY
from TransferSegLib.training.finetune import FinetuneSpec, run_finetune
from TransferSegLib.specs import TrainConfig

TINY = dict(iterations=1, time_budget=None, val_every=1000, patience=0, device="cpu")
PATCH = (32, 32, 16)


class Recorder:
    def __init__(self):
        self.events = []

    def event(self, kind, **fields):
        self.events.append(dict(fields, kind=kind))

    def first(self, kind):
        return next(e for e in self.events if e["kind"] == kind)


@pytest.fixture(scope="module")
def liver_files(tmp_path_factory):
    """The small CT and its liver alone as a plain labelmap (value 1), as a user would pass them."""
    folder = tmp_path_factory.mktemp("liver")
    case = sample_cases()["ts_ct"]
    loaded = load_case(case, ["background", "liver"])
    label = folder / "ts_ct_liver.nii.gz"
    sitk.WriteImage(sitk.Cast(loaded.label, sitk.sitkUInt8), str(label), useCompression=True)
    return Path(case.image), label


def _base_with_card(tmp_path, record):
    folder = tmp_path / "base"
    shutil.copytree(default_model_dir(), folder)
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card.pop("best_strategy", None)
    if record is not None:
        card["best_strategy"] = record
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return folder


def _finetune(tmp_path, base, reporter, strategy="auto", val_cases=()):
    case = sample_cases()["ts_ct"]
    spec = FinetuneSpec(base=str(base), cases=[case], labels=["liver"], strategy=strategy,
                        output=str(tmp_path / "model"), train=TrainConfig(**TINY), patch_size=PATCH,
                        val_cases=list(val_cases))
    return run_finetune(spec, reporter=reporter)


def test_auto_uses_the_strategy_the_base_models_experiment_recorded(tmp_path):
    record = {"strategy": "decoder", "evidence": "docs/experiments/liver", "scores": {"decoder": 0.7, "full": 0.6}}
    recorder = Recorder()
    result = _finetune(tmp_path, _base_with_card(tmp_path, record), recorder)
    started = recorder.first("started")
    assert started["strategy"] == "decoder" and started["strategy_requested"] == "auto"
    assert "docs/experiments/liver" in started["strategy_reason"]
    card = json.loads((result.model_dir / "model.json").read_text(encoding="utf-8"))
    assert card["strategy"] == "decoder"
    # The next round (fine-tuning this model) inherits the evidence, saying where it came from.
    assert card["best_strategy"]["strategy"] == "decoder" and card["best_strategy"]["inherited_from"]


def test_auto_without_evidence_falls_back_and_says_so(tmp_path):
    recorder = Recorder()
    _finetune(tmp_path, _base_with_card(tmp_path, None), recorder)
    started = recorder.first("started")
    assert started["strategy"] == FALLBACK_STRATEGY and "fallback" in started["strategy_reason"]


def test_auto_without_a_base_model_trains_from_scratch(tmp_path):
    recorder = Recorder()
    _finetune(tmp_path, "none", recorder)
    assert recorder.first("started")["strategy"] == "scratch"


def test_an_explicit_strategy_is_used_as_asked(tmp_path):
    recorder = Recorder()
    _finetune(tmp_path, _base_with_card(tmp_path, {"strategy": "decoder"}), recorder, strategy="last-layers")
    started = recorder.first("started")
    assert started["strategy"] == "last-layers" and started["strategy_reason"] == "asked for"


def test_clean_up_is_decided_on_validation_cases_and_stored(tmp_path):
    recorder = Recorder()
    result = _finetune(tmp_path, "default", recorder, val_cases=[sample_cases()["ts_ct"]])
    decision = json.loads((result.model_dir / "model.json").read_text(encoding="utf-8"))["cleanup"]["largest_component"]["liver"]
    # Validation was predicted and scored with and without the step (the decision then says which won).
    assert isinstance(decision["keep_largest"], bool)
    assert decision["dice_raw"] is not None and decision["dice_cleaned"] is not None
    assert decision["decided_by"] == ("validation" if decision["dice_raw"] != decision["dice_cleaned"] else "anatomy")
    assert recorder.first("finished")["largest_component"]["liver"] == decision


def test_predict_follows_the_model_unless_overridden(tmp_path, liver_files, capsys):
    image, _label = liver_files
    result = _finetune(tmp_path, "default", Recorder())
    card_path = result.model_dir / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    assert card["cleanup"]["largest_component"]["liver"] == {"keep_largest": True, "decided_by": "anatomy"}
    outputs = {}
    for name, flags in (("model", []), ("off", ["--no-largest-component"]), ("named", ["--largest-component", "liver"])):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["predict", "--model", str(result.model_dir), "--image", str(image), "--output", str(out),
                     "--device", "cpu"] + flags) == 0
        outputs[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
        printed = capsys.readouterr().out
        assert ("largest component kept for: liver" in printed) == (name != "off")
    assert np.array_equal(outputs["model"], outputs["named"])
    card["cleanup"]["largest_component"]["liver"] = {"keep_largest": False, "decided_by": "validation"}
    card_path.write_text(json.dumps(card), encoding="utf-8")
    out = tmp_path / "recorded_off.nii.gz"
    main(["predict", "--model", str(result.model_dir), "--image", str(image), "--output", str(out), "--device", "cpu"])
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), outputs["off"])


def test_one_experiment_run_is_the_same_finetune_and_predict(tmp_path, liver_files):
    """The issue's discrepancy (experiment 0.884 vs finetune+predict 0.369 on one split) came from two
    prediction paths; now both go through run_finetune and predict_file with the same defaults."""
    image, label = liver_files
    common = ["--iterations", "2", "--patch-size", *map(str, PATCH), "--device", "cpu", "--seed", "3"]
    experiment = tmp_path / "experiment"
    assert main(["experiment", "--add-case", str(image), str(label), "liver", "--test-image", str(image),
                 "--test-label", str(label), "--labels", "liver", "--strategies", "auto", "--sizes", "1",
                 "--repeats", "1", "--output", str(experiment)] + common) == 0
    run = json.loads(next((experiment / "runs").glob("*/result.json")).read_text(encoding="utf-8"))
    experiment_dice = run["per_case"][0]["classes"][0]["dice"]

    model, prediction = tmp_path / "model", tmp_path / "prediction.nii.gz"
    assert main(["finetune", "--image", str(image), "--label", str(label), "--labels", "liver", "--output", str(model),
                 "--job-dir", str(tmp_path / "job")] + common) == 0
    assert main(["predict", "--model", str(model), "--image", str(image), "--output", str(prediction),
                 "--device", "cpu"]) == 0
    product_dice = evaluate_files(str(prediction), str(label), labels=["liver"]).classes[0].dice

    assert run["strategy_used"] == json.loads((model / "model.json").read_text(encoding="utf-8"))["strategy"]
    assert run["largest_component"] == ["liver"]
    assert 0.0 < product_dice
    assert experiment_dice == pytest.approx(product_dice, abs=1e-6)
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction)))
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(next((experiment / "runs").glob("*/prediction_*.nii.gz")))))
    assert np.array_equal(ours, theirs)
