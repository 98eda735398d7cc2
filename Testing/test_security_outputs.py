"""No user file is replaced by a broken one: outputs over inputs, full disks, read-only places, files written together.

Everything runs through the real command line (``predict``, ``finetune`` with its
worker process) on real files; full disks and read-only places are a real tmpfs
where the machine allows mounting one.
"""

import errno
import os
from pathlib import Path

import pytest
import SimpleITK as sitk

from TransferSegLib.cli import main
from TransferSegLib.errors import OutputError
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.model_dir import save_model_dir
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network
from TransferSegLib.data.recipe import Recipe
from security_fixtures import TINY_NETWORK as TINY, fill, remount_read_only, small_disk, tiny_disk  # noqa: F401
from security_fixtures import write_ct as _ct, write_label as _label


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    meta = ModelCard(name="tiny", network=NetworkSpec.from_dict(TINY), labels=["background", "liver"],
                     recipe=Recipe(spacing=None, crop_foreground=False), patch_size=(32, 32, 32))
    folder = tmp_path_factory.mktemp("models") / "tiny"
    return save_model_dir(folder, build_network(NetworkSpec.from_dict(TINY)).state_dict(), meta)


def _predict(model, image, out, *extra) -> int:
    return main(["predict", "--model", str(model), "--image", str(image), "--output", str(out), "--device", "cpu",
                 *map(str, extra)])


def test_predict_refuses_to_write_over_its_input_before_any_work(model, tmp_path, capsys):
    ct = _ct(tmp_path / "ct.nii.gz")
    before = ct.read_bytes()
    assert _predict(model, ct, ct) == OutputError.exit_code
    assert "is the --image file" in capsys.readouterr().err and ct.read_bytes() == before
    (tmp_path / "same.nii.gz").symlink_to(ct)
    assert _predict(model, ct, tmp_path / "same.nii.gz") == OutputError.exit_code
    assert ct.read_bytes() == before
    pred = tmp_path / "pred.nii.gz"
    assert _predict(model, ct, pred, "--probabilities", pred) == OutputError.exit_code
    assert "both name" in capsys.readouterr().err and not pred.exists()
    assert _predict(model, ct, tmp_path / "u.nii.gz", "--uncertainty", ct) == OutputError.exit_code
    assert ct.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["ct.nii.gz", "same.nii.gz"]


def test_a_labelmap_and_its_probabilities_land_together_or_not_at_all(model, tmp_path, monkeypatch, capsys):
    ct = _ct(tmp_path / "ct.nii.gz")
    pred, probs = tmp_path / "pred.nii.gz", tmp_path / "probs.mha"
    assert _predict(model, ct, pred, "--probabilities", probs) == 0
    before = pred.read_bytes(), probs.read_bytes()
    from TransferSegLib.inference import outputs

    def probabilities_fail(self, z0, slab):  # the disk fills while the probabilities stream out
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(outputs._MetaImageStream, "write", probabilities_fail)
    assert _predict(model, _ct(tmp_path / "other.nii.gz", (16, 20, 16)), pred, "--probabilities", probs) == 2
    err = capsys.readouterr().err
    assert "probs.mha" in err and "unchanged" in err and "wrote" not in err
    assert (pred.read_bytes(), probs.read_bytes()) == before  # the labelmap was not replaced either
    assert sorted(os.listdir(tmp_path)) == ["ct.nii.gz", "other.nii.gz", "pred.nii.gz", "probs.mha"]


def test_predict_on_a_full_disk_keeps_the_previous_prediction(model, tmp_path, tiny_disk, capsys):
    ct, disk = _ct(tmp_path / "ct.nii.gz", (24, 24, 24)), tiny_disk
    pred = disk / "pred.nii.gz"
    assert _predict(model, ct, pred) == 0
    before = pred.read_bytes()
    capsys.readouterr()
    fill(disk, leave_bytes=2048)
    assert _predict(model, ct, pred, "--probabilities", disk / "probs.mha") == OutputError.exit_code
    err = capsys.readouterr().err
    assert "disk is full" in err and str(disk) in err
    assert pred.read_bytes() == before and sorted(os.listdir(disk)) == ["filler.bin", "pred.nii.gz"]
    (disk / "filler.bin").unlink()
    remount_read_only(disk)
    assert _predict(model, ct, pred) == OutputError.exit_code
    assert "read-only" in capsys.readouterr().err and pred.read_bytes() == before


def _finetune(tmp_path, out, *extra) -> int:
    image, label = tmp_path / "ct.nii.gz", tmp_path / "lab.nii.gz"
    if not image.exists():
        _ct(image), _label(label)
    return main(["finetune", "--base", "none", "--strategy", "scratch", "--image", str(image), "--label", str(label),
                 "--iterations", "2", "--patch-size", "16", "16", "16", "--output", str(out), "--device", "cpu",
                 "--job-dir", str(tmp_path / "job"), *extra])


def test_finetune_output_problems_are_found_before_training(tmp_path, capsys):
    assert _finetune(tmp_path, tmp_path / "ct.nii.gz") == OutputError.exit_code
    assert "is a file" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    assert _finetune(tmp_path, tmp_path / "mine") == OutputError.exit_code
    assert "not a TransferSeg model" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").exists()
    assert _finetune(tmp_path, tmp_path) == OutputError.exit_code  # the folder holding the cases
    assert "not a TransferSeg model" in capsys.readouterr().err and (tmp_path / "ct.nii.gz").exists()
    assert _finetune(tmp_path, tmp_path / "ct.nii.gz" / "model") == OutputError.exit_code
    assert "not a folder" in capsys.readouterr().err
    assert not (tmp_path / "job").exists()  # refused before a worker was started
    try:
        context = small_disk(256)
        disk = context.__enter__()
    except OSError:
        return
    try:
        remount_read_only(disk)
        assert _finetune(tmp_path, disk / "model") == OutputError.exit_code
        err = capsys.readouterr().err
        assert "read-only" in err and "unexpected" not in err
    finally:
        context.__exit__(None, None, None)


def test_a_job_started_with_a_bad_output_fails_with_a_clear_message_in_its_worker(tmp_path):
    from TransferSegLib.jobs.api import start_job
    from TransferSegLib.jobs.spec import JobSpec
    from TransferSegLib.training.finetune import FinetuneSpec
    from TransferSegLib.data.cases import Case
    from TransferSegLib.specs import TrainConfig

    image, label = _ct(tmp_path / "ct.nii.gz"), _label(tmp_path / "lab.nii.gz")
    spec = FinetuneSpec(base="none", cases=[Case(str(image), str(label), {1: "liver"})], labels=["liver"],
                        strategy="scratch",
                        output=str(image), train=TrainConfig(iterations=2, time_budget=None, device="cpu"),
                        patch_size=(16, 16, 16))
    job = start_job(JobSpec.from_finetune_spec(spec), tmp_path / "job")  # as the Slicer panel starts one
    status = job.wait(timeout=300)
    assert status.state == "failed"
    assert "is a file" in status.message and str(image) in status.message
    assert "unexpected" not in status.message + status.hint and status.error_type == "OutputError"
