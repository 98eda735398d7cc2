"""A miniature data-efficiency experiment: structure of the report, numbers from runs, resume."""

import csv
import json

import numpy as np
import SimpleITK as sitk

from TransferSegLib.specs import Case
from TransferSegLib.evaluation.experiment_spec import ExperimentSpec
from TransferSegLib.evaluation.experiment import run_experiment, subsets
from TransferSegLib.specs import TrainConfig


def _case(tmp_path, i):
    rng = np.random.default_rng(i)
    img = rng.normal(0, 20, (16, 20, 20)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[4:12, 5 + i : 14 + i, 5:15] = 1
    img += lab * 90.0
    paths = []
    for kind, arr in (("img", img), ("lab", lab)):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((3.0, 3.0, 3.0))
        path = tmp_path / f"c{i}_{kind}.nii.gz"
        sitk.WriteImage(im, str(path))
        paths.append(str(path))
    return Case(image=paths[0], label=paths[1], label_names={1: "blob"}, name=f"c{i}")


def test_subsets_are_distinct_and_capped_by_the_pool():
    assert subsets(2, 5, 3, 0) == [[0, 1]]
    picks = subsets(6, 2, 3, 0)
    assert len(picks) == 3 and len({tuple(p) for p in picks}) == 3


def test_miniature_experiment_reports_only_numbers_that_runs_produced(tmp_path):
    pool = [_case(tmp_path, i) for i in range(3)]
    spec = ExperimentSpec(name="mini", pool=pool, test_cases=[_case(tmp_path, 5)], labels=["blob"],
                          output=str(tmp_path / "exp"), base="none", strategies=["scratch"], sizes=[1, 2], repeats=1,
                          train=TrainConfig(iterations=2, time_budget=None, val_every=1000, patience=0, device="cpu"),
                          patch_size=(16, 16, 16), device="cpu")
    results = run_experiment(spec)
    assert [(r.size, r.strategy) for r in results] == [(1, "scratch"), (2, "scratch")]
    out = tmp_path / "exp"
    for name in ("results.csv", "summary.csv", "dice_vs_cases.png", "report.md"):
        assert (out / name).is_file(), name
    run_files = sorted((out / "runs").glob("*/result.json"))
    assert len(run_files) == 2
    dice_by_size = {}
    for path in run_files:
        run = json.loads(path.read_text())
        dice_by_size[run["size"]] = [c["dice"] for case in run["per_case"] for c in case["classes"]]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(float(r["dice"]) for r in rows) == sorted(d for v in dice_by_size.values() for d in v)
    summary = {int(r["size"]): float(r["mean_dice"]) for r in csv.DictReader((out / "summary.csv").open())}
    report = (out / "report.md").read_text()
    for size, values in dice_by_size.items():
        assert summary[size] == round(float(np.mean(values)), 4)
        assert f"| scratch | {size} | {np.mean(values):.3f} |" in report
    assert "2 iterations" in report

    seen = []
    again = run_experiment(spec, on_run=lambda r, skipped: seen.append(skipped))
    assert seen == [True, True] and len(again) == 2
