"""Every training and prediction setting is checked before work starts, with the option and its range named;
pickled checkpoints are refused without advising the unsafe way to open them."""

import os
from pathlib import Path

import pytest
import torch

from TransferSegLib.cli import main
from TransferSegLib.data.cases import Case
from TransferSegLib.errors import ModelError, TransferSegError
from TransferSegLib.inference.infer import InferenceOptions
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.model_dir import save_model_dir
from TransferSegLib.training.finetune import FinetuneSpec, run_finetune
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network
from TransferSegLib.specs import TrainConfig
from TransferSegLib.data.recipe import Recipe
from security_fixtures import TINY_NETWORK, write_ct, write_label

BAD_SETTINGS = [
    (dict(checkpoint_every=0), "checkpoint_every"), (dict(val_every=0), "--val-every"),
    (dict(learning_rate=float("nan")), "--learning-rate"), (dict(learning_rate=-1e-3), "--learning-rate"),
    (dict(seed=-1), "--seed"), (dict(patch_size=(0, 16, 16)), "--patch-size"),
    (dict(patch_size=(16, 16)), "--patch-size"),
    (dict(foreground_ratio=7), "foreground_ratio"), (dict(val_overlap=1.5), "val_overlap"),
    (dict(batch_size=0), "--batch-size"), (dict(iterations=0), "--iterations"),
    (dict(time_budget=float("inf")), "--time-budget"),
    (dict(iterations="5"), "--iterations"), (dict(patience=-2), "--patience"), (dict(augment="yes"), "augment"),
    (dict(weight_decay=float("nan")), "weight_decay"), (dict(num_threads=1.5), "--threads"),
]


@pytest.mark.parametrize("values, option", BAD_SETTINGS)
def test_each_bad_training_setting_is_refused_naming_its_option(values, option):
    config = TrainConfig(**dict(dict(iterations=10, time_budget=None), **values))
    with pytest.raises(TransferSegError, match=option):
        config.check()


def test_bad_settings_on_the_command_line_fail_before_a_worker_starts(tmp_path, capsys):
    image, label = write_ct(tmp_path / "ct.nii.gz"), write_label(tmp_path / "lab.nii.gz")
    common = ["finetune", "--base", "none", "--strategy", "scratch", "--image", str(image), "--label", str(label),
              "--labels", "liver", "--output", str(tmp_path / "model"), "--device", "cpu", "--job-dir",
              str(tmp_path / "job")]
    for extra, option in [(["--val-every", "0", "--iterations", "5"], "--val-every"),
                          (["--learning-rate", "nan", "--iterations", "5"], "--learning-rate"),
                          (["--seed", "-1", "--iterations", "5"], "--seed"),
                          (["--patch-size", "0", "16", "16", "--iterations", "5"], "--patch-size"),
                          (["--iterations", "0"], "--iterations")]:
        assert main(common + extra) == TransferSegError.exit_code
        err = capsys.readouterr().err
        assert option in err and "Traceback" not in err and "unexpected" not in err, err
    assert not (tmp_path / "job").exists() and not (tmp_path / "model").exists()


def test_a_bad_setting_in_spec_json_fails_the_job_with_a_clear_message(tmp_path):
    """Refused by the front end before a worker starts, and the refusal stays in the job folder."""
    from TransferSegLib.errors import JobError
    from TransferSegLib.jobs.api import Job, start_job
    from TransferSegLib.jobs.spec import JobSpec

    image, label = write_ct(tmp_path / "ct.nii.gz"), write_label(tmp_path / "lab.nii.gz")
    spec = FinetuneSpec(base="none", cases=[Case(str(image), str(label), {1: "liver"})], labels=["liver"],
                        strategy="scratch", output=str(tmp_path / "model"), patch_size=(16, 16, 16),
                        train=TrainConfig(iterations=2, time_budget=None, device="cpu", foreground_ratio=7.0))
    with pytest.raises(JobError, match="foreground_ratio"):
        start_job(JobSpec.from_finetune_spec(spec), tmp_path / "job")
    status = Job.attach(tmp_path / "job").status()
    assert status.state == "failed" and "foreground_ratio" in status.message and "unexpected" not in status.hint
    assert not (tmp_path / "model").exists()


def test_prediction_settings_are_checked(tmp_path, capsys):
    for overlap in (1.5, 1.0, -0.1, float("nan")):
        with pytest.raises(ModelError, match="--overlap"):
            InferenceOptions(overlap=overlap)
    image = write_ct(tmp_path / "ct.nii.gz")
    rc = main(["predict", "--model", str(tmp_path / "no-model"), "--image", str(image), "--output",
               str(tmp_path / "p.nii.gz"), "--overlap", "1.5"])
    assert rc == ModelError.exit_code and "--overlap" in capsys.readouterr().err


class _Gadget:
    """A pickle that creates a folder when unpickled (what a hostile checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _pickled_model(folder: Path, marker: Path) -> Path:
    meta = ModelCard(name="gift", network=NetworkSpec.from_dict(TINY_NETWORK), labels=["background", "liver"],
                     recipe=Recipe(spacing=None, crop_foreground=False), patch_size=(32, 32, 32))
    save_model_dir(folder, build_network(NetworkSpec.from_dict(TINY_NETWORK)).state_dict(), meta)
    torch.save({"model": _Gadget(marker)}, str(folder / "model.pt"))
    return folder


def test_pickled_checkpoints_are_refused_everywhere_without_unsafe_advice(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    folder = _pickled_model(tmp_path / "gift", marker)
    image, label = write_ct(tmp_path / "ct.nii.gz"), write_label(tmp_path / "lab.nii.gz")
    assert main(["predict", "--model", str(folder), "--image", str(image), "--output", str(tmp_path / "p.nii.gz"),
                 "--device", "cpu"]) == ModelError.exit_code
    messages = [capsys.readouterr().err]
    assert main(["finetune", "--base", str(folder), "--strategy", "full", "--image", str(image), "--label", str(label),
                 "--labels", "liver", "--iterations", "2", "--output", str(tmp_path / "tuned"), "--device", "cpu",
                 "--in-process"]) == ModelError.exit_code
    messages.append(capsys.readouterr().err)
    work = tmp_path / "work"
    work.mkdir()
    torch.save({"model": _Gadget(marker), "iteration": 1}, str(work / "checkpoint_last.pt"))  # a tampered job folder
    spec = FinetuneSpec(base="none", cases=[Case(str(image), str(label), {1: "liver"})], labels=["liver"],
                        strategy="scratch", output=str(tmp_path / "resumed"), patch_size=(16, 16, 16),
                        train=TrainConfig(iterations=2, time_budget=None, device="cpu"))
    with pytest.raises(ModelError) as error:
        run_finetune(spec, work_dir=str(work), resume=True)
    messages.append(str(error.value))
    for message in messages:
        assert "Refusing to load" in message and "weights_only=False" not in message, message
    assert not marker.exists() and not (tmp_path / "tuned").exists() and not (tmp_path / "resumed").exists()
