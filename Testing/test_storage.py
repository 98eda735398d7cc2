"""Disk use: what a run leaves behind, and the commands that tidy job folders and the download cache."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from TransferSegLib.cli import main
from TransferSegLib.data.sample_data import sample_cases
from TransferSegLib.jobs.cleanup import clean_jobs
from TransferSegLib.jobs.state import JobState, write_state
from TransferSegLib.models.cache import clean_cache, list_cache
from TransferSegLib.errors import ModelError
from TransferSegLib.paths import transferseg_home
from TransferSegLib.specs import FinetuneSpec
from TransferSegLib.training.finetune import run_finetune
from TransferSegLib.specs import TrainConfig

TS = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "TotalSegmentator"
TINY = ["--base", "none", "--strategy", "scratch", "--iterations", "2", "--patch-size", "32", "32", "16",
        "--batch-size", "1", "--val-every", "100000", "--no-augment", "--threads", "1", "--device", "cpu"]


def _jobs() -> list:
    root = transferseg_home() / "jobs"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def _as_mrc(folder: Path):
    """The sample CT as an .mrc file (no orientation: the reader warns) and its labelmap on that grid."""
    import mrcfile
    import numpy as np
    import SimpleITK as sitk

    folder.mkdir()
    with mrcfile.new(str(folder / "ct.mrc")) as mrc:
        mrc.set_data(sitk.GetArrayFromImage(sitk.ReadImage(str(TS / "example_ct_sm.nii.gz"))).astype(np.float32))
        mrc.voxel_size = 3.0
    label = sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.ReadImage(str(TS / "example_seg.nii.gz"))))
    label.SetSpacing((3.0, 3.0, 3.0))
    sitk.WriteImage(label, str(folder / "seg.nii.gz"))
    return str(folder / "ct.mrc"), str(folder / "seg.nii.gz")


def test_a_finished_foreground_finetune_leaves_only_the_model_folder(tmp_path, capsys):
    """... and the worker's Python warnings reach this terminal as one line each."""
    image, label = _as_mrc(tmp_path / "data")
    out = tmp_path / "models"
    code = main(["finetune", "--image", image, "--label", label, "--labels", "liver=5", "--output", str(out / "liver")]
                + TINY)
    err = capsys.readouterr().err
    assert code == 0
    assert sorted(os.listdir(out)) == ["liver"] and sorted(os.listdir(out / "liver")) == ["model.json", "model.pt"]
    assert _jobs() == [] and "--keep-job keeps it" in err
    assert any(line.startswith("warning: '") and "MRC files carry no patient orientation" in line
               for line in err.splitlines())


def test_a_foreground_run_refused_before_it_starts_leaves_no_job_folder_unless_kept(tmp_path):
    args = ["finetune", "--image", str(TS / "example_ct_sm.nii.gz"), "--label", str(tmp_path / "missing.nii.gz"),
            "--labels", "liver=5", "--output", str(tmp_path / "liver")] + TINY
    assert main(args) == 2 and _jobs() == [] and not (tmp_path / "liver").exists()
    assert main(args + ["--keep-job"]) == 2 and len(_jobs()) == 1
    state = json.loads((transferseg_home() / "jobs" / _jobs()[0] / "state.json").read_text())
    assert state["state"] == "failed" and "missing.nii.gz" in state["message"]


def _spec(tmp_path, **kwargs):
    config = TrainConfig(iterations=2, time_budget=None, val_every=100000, patience=0, device="cpu", augment=False,
                         batch_size=1, num_threads=1)
    return FinetuneSpec(base="none", cases=[sample_cases()["ts_ct"]], labels=["liver"], strategy="scratch",
                        output=str(tmp_path / "liver"), train=config, patch_size=(32, 32, 16), **kwargs)


def test_checkpoints_are_kept_only_when_asked_or_when_the_run_did_not_finish(tmp_path):
    run_finetune(_spec(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["liver"]
    run_finetune(_spec(tmp_path, keep_checkpoints=True))
    kept = list(tmp_path.glob(".liver.*.work"))  # each in-process run has a work folder of its own
    assert len(kept) == 1 and sorted(os.listdir(kept[0])) == ["checkpoint_best.pt", "checkpoint_last.pt"]
    shutil.rmtree(kept[0])
    from TransferSegLib.errors import TrainingCancelled

    with pytest.raises(TrainingCancelled):
        run_finetune(_spec(tmp_path), should_stop=lambda: True)
    kept = list(tmp_path.glob(".liver.*.work"))
    assert len(kept) == 1 and (kept[0] / "checkpoint_last.pt").is_file()  # for resume


def _job(root: Path, name: str, state: str, age_days: float = 0.0) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text("{}")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "checkpoint_last.pt").write_bytes(b"0" * 1000)
    write_state(folder, JobState(state=state))
    stamp = time.time() - age_days * 86400
    for path in (folder / "spec.json", folder / "state.json"):
        os.utime(path, (stamp, stamp))
    return folder


def test_job_clean_removes_ended_jobs_and_never_running_ones(tmp_path, capsys):
    root = tmp_path / "jobs"
    old = _job(root, "a-old-finished", "finished", age_days=10)
    failed = _job(root, "b-failed", "failed", age_days=1)
    running = _job(root, "c-running", "running", age_days=30)
    queued = _job(root, "d-queued", "queued", age_days=30)
    assert main(["job", "clean", "--root", str(root), "--older-than", "7", "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out and old.exists()
    assert main(["job", "clean", "--root", str(root), "--older-than", "7"]) == 0
    assert not old.exists() and failed.exists() and running.exists() and queued.exists()
    removed = clean_jobs(root)
    assert [r.directory.name for r in removed] == ["b-failed"] and removed[0].bytes > 1000
    assert sorted(os.listdir(root)) == ["c-running", "d-queued"]


def test_cache_list_and_clean_remove_downloads_and_keep_registered_models(capsys):
    cache = Path(os.environ["TRANSFERSEG_CACHE"])
    (cache / "models" / "spleen_ct_segmentation").mkdir(parents=True)
    (cache / "models" / "spleen_ct_segmentation" / "model.pt").write_bytes(b"1" * 2000)
    (cache / "models" / "swin_unetr_ssl").mkdir()
    (cache / "models" / "swin_unetr_ssl" / "model.pt.part").write_bytes(b"1" * 500)
    (cache / "user").mkdir()
    (cache / "user" / "mine-inflated-3d.pt").write_bytes(b"2" * 300)
    (cache / "user_models.json").write_text(json.dumps({"format": "transferseg-user-models", "models": []}))
    kinds = {i.name: i.kind for i in list_cache()}
    assert kinds == {"spleen_ct_segmentation": "download", "swin_unetr_ssl": "partial download",
                     "user": "registered", "user_models.json": "registered"}
    assert main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert "NAME" in listing.splitlines()[1] and "2.0 KB" in listing
    with pytest.raises(ModelError, match="models remove"):
        clean_cache(["user"])
    assert main(["cache", "clean"]) == 0
    assert not (cache / "models" / "spleen_ct_segmentation").exists() and not (cache / "models" / "swin_unetr_ssl").exists()
    assert (cache / "user" / "mine-inflated-3d.pt").is_file() and (cache / "user_models.json").is_file()
