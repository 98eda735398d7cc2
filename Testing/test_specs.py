"""The contract layer: specs, model cards and the catalog listing work where torch and SimpleITK are absent.

The Slicer panel imports these before the heavy dependencies are installed, and the
job layer builds and checks specs in the front end's process. The check runs in a
fresh interpreter whose import system refuses torch, SimpleITK and numpy, so a
stray import anywhere below these modules fails here, not in a user's Slicer.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from TransferSegLib.errors import ConfigError, JobError, ModelError
from TransferSegLib.jobs.spec import JobSpec
from TransferSegLib.model_card import ModelCard
from TransferSegLib.specs import DEFAULT_STRATEGY, STRATEGIES, Case, NetworkSpec, TrainConfig, check_strategy
from TransferSegLib.evaluation.experiment_spec import ExperimentSpec

ROOT = Path(__file__).resolve().parent.parent

BLOCKED_IMPORTS = textwrap.dedent("""
    import importlib.abc, sys

    class Refuse(importlib.abc.MetaPathFinder):
        blocked = ("torch", "SimpleITK", "numpy", "monai", "scipy")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Refuse())
""")


def _run_without_torch(code: str, tmp_path: Path) -> str:
    script = BLOCKED_IMPORTS + textwrap.dedent(code)
    env = {"PYTHONPATH": str(ROOT), "TRANSFERSEG_HOME": str(tmp_path / "home"),
           "TRANSFERSEG_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_blocker_really_blocks(tmp_path):
    with pytest.raises(AssertionError, match="blocked in this test"):
        _run_without_torch("import torch", tmp_path)


def test_specs_cards_paths_and_the_catalog_listing_work_without_torch_or_simpleitk(tmp_path):
    out = _run_without_torch("""
        import json, sys
        from TransferSegLib import paths, specs, model_card
        from TransferSegLib.models import catalog
        from TransferSegLib.jobs.spec import JobSpec

        entries = catalog.list_models()
        config = specs.TrainConfig.from_dict({"iterations": 5, "time_budget": None})
        config.check()
        job = JobSpec(base="default", cases=[{"image": "a.nii.gz", "label": "a_seg.nii.gz"}], labels=["liver"],
                      output="out", train=config)
        default = model_card.ModelCard.load(paths.resources_dir() / "Models" / "default")
        print(json.dumps({"names": [e.name for e in entries], "statuses": sorted({e.status() for e in entries}),
                          "job_train": JobSpec.from_dict(job.to_dict()).train.iterations,
                          "default_classes": default.classes, "loaded": sorted(m for m in sys.modules
                          if m.split(".")[0] in ("torch", "SimpleITK", "numpy"))}))
    """, tmp_path)
    seen = json.loads(out.strip().splitlines()[-1])
    assert "spleen_ct_segmentation" in seen["names"] and len(seen["names"]) >= 5  # the shipped catalog's rows
    assert "to download" in seen["statuses"]
    assert seen["job_train"] == 5 and seen["default_classes"] and seen["loaded"] == []


def test_one_list_of_strategies_and_one_error_for_an_unknown_one():
    assert STRATEGIES == ("scratch", "full", "decoder", "last-layers", "staged")
    assert check_strategy("Last_Layers") == "last-layers"
    with pytest.raises(ConfigError, match="Choose one of: auto, scratch, full"):
        check_strategy("everything")
    with pytest.raises(ConfigError, match="Choose one of: scratch, full"):
        check_strategy("auto", allow_auto=False)  # a run trains with a concrete strategy
    with pytest.raises(JobError, match="Unknown strategy 'everything'"):
        JobSpec(strategy="everything")


def test_the_command_line_reads_its_defaults_from_train_config():
    from TransferSegLib.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["finetune", "--output", "x"])
    defaults = TrainConfig()
    assert (args.batch_size, args.learning_rate, args.val_every, args.patience) == (
        defaults.batch_size, defaults.learning_rate, defaults.val_every, defaults.patience)
    experiment = parser.parse_args(["experiment", "--labels", "liver", "--output", "x"])
    assert experiment.strategies == ",".join(STRATEGIES)
    assert args.strategy == DEFAULT_STRATEGY and experiment.time_budget == ExperimentSpec(
        name="x", pool=[], labels=[], output="").train.time_budget


def _card_dict(**changes):
    data = {"format": "transferseg-model", "version": 1, "name": "m", "labels": ["background", "liver"],
            "network": NetworkSpec("monai.networks.nets.DynUNet", {"out_channels": 2}).to_dict(),
            "recipe": {"orientation": "RAS", "spacing": [3, 3, 3]}, "patch_size": [32, 32, 16]}
    data.update(changes)
    return data


def test_a_model_card_round_trips_and_keeps_fields_a_newer_transferseg_added(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(_card_dict(largest_component={"liver": True})))
    card = ModelCard.load(tmp_path)
    assert card.classes == ["liver"] and card.patch_size == (32, 32, 16) and card.recipe.spacing == (3.0, 3.0, 3.0)
    card.save(tmp_path)
    again = json.loads((tmp_path / "model.json").read_text())
    assert again["largest_component"] == {"liver": True} and again["created"]
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


@pytest.mark.parametrize("changes, message", [
    ({"labels": ["liver"]}, "does not start with 'background'"),
    ({"labels": []}, "does not start with 'background'"),
    ({"format": "something-else"}, "not a TransferSeg model description"),
    ({"version": 99}, "Update TransferSeg"),
    ({"patch_size": [32, 32]}, "three positive integers"),
])
def test_a_damaged_model_card_is_refused_naming_the_file(tmp_path, changes, message):
    (tmp_path / "model.json").write_text(json.dumps(_card_dict(**changes)))
    with pytest.raises(ModelError, match=message) as caught:
        ModelCard.load(tmp_path)
    assert "model.json" in str(caught.value)


def test_an_encoder_only_card_without_labels_reads_as_background_only(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(_card_dict(labels=[], encoder_only=True)))
    assert ModelCard.load(tmp_path).labels == ["background"]


def test_an_experiment_spec_round_trips_through_a_job_spec(tmp_path):
    pool = [Case(str(tmp_path / f"c{i}.nii.gz"), str(tmp_path / f"c{i}_seg.nii.gz"), {1: "liver"}) for i in range(3)]
    experiment = ExperimentSpec(name="e", pool=pool, labels=["liver"], output=str(tmp_path / "out"),
                                leave_one_out=True, strategies=["full", "last_layers"], sizes=[1, 2])
    job = JobSpec(task="experiment", experiment=experiment)
    back = JobSpec.from_dict(json.loads(json.dumps(job.to_dict()))).experiment
    assert back == experiment and back.strategies == ["full", "last-layers"]
    assert [len(f["pool"]) for f in back.folds()] == [2, 2, 2] and back.folds()[1]["test"] == [pool[1]]
    with pytest.raises(Exception, match="c0.nii.gz' does not exist"):
        back.check()
