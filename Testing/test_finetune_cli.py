"""The engine end to end on the shipped real data, and what bad input gets from the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from TransferSegLib.cli import main
from TransferSegLib.errors import CaseError, ModelError
from TransferSegLib.specs import FinetuneSpec
from TransferSegLib.training.finetune import run_finetune
from TransferSegLib.data.sample_data import sample_cases
from TransferSegLib.specs import TrainConfig


def _tiny(**kw):
    values = dict(iterations=6, time_budget=None, val_every=1000, patience=0, device="cpu", seed=0)
    values.update(kw)
    return TrainConfig(**values)


def _write(array_zyx, path, spacing=(2.0, 2.0, 3.0), origin=(0.0, 0.0, 0.0), pixel=None):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if pixel is not None:
        image = sitk.Cast(image, pixel)
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.fixture()
def small_case(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(0, 30, (16, 24, 24)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[4:12, 6:18, 6:18] = 1
    img[lab == 1] += 100
    return _write(img, tmp_path / "img.nii.gz"), _write(lab, tmp_path / "lab.nii.gz")


def test_finetune_predict_evaluate_on_the_shipped_real_data(tmp_path, capsys):
    cases = sample_cases()
    spec = FinetuneSpec(base="none", cases=[cases["ts_ct"]], labels=["liver", "spleen"], strategy="scratch",
                        output=str(tmp_path / "model"), train=_tiny(iterations=8), patch_size=(32, 32, 16))
    result = run_finetune(spec)
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert meta["labels"] == ["background", "liver", "spleen"] and meta["training"]["iterations"] == 8
    out = tmp_path / "pred.seg.nrrd"
    assert main(["predict", "--model", str(result.model_dir), "--image", cases["ts_dicom"].image, "--output", str(out), "--device", "cpu"]) == 0
    pred = sitk.ReadImage(str(out))
    ref = sitk.ReadImage(cases["ts_dicom"].label)
    assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == pytest.approx(ref.GetSpacing())
    assert pred.GetMetaData("Segment0_Name") == "liver" and pred.GetMetaData("Segment1_Name") == "spleen"
    capsys.readouterr()
    assert main(["evaluate", "--prediction", str(out), "--reference", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "liver" in json.dumps(report)


def test_validation_split_and_per_class_dice_are_reported(tmp_path, small_case):
    img, lab = small_case
    events = []

    class Rec:
        def event(self, kind, **fields):
            events.append((kind, fields))

    spec = FinetuneSpec(base="none", cases=[], labels=["blob"], strategy="scratch", output=str(tmp_path / "m"),
                        train=_tiny(iterations=4, val_every=2), patch_size=(16, 16, 16))
    from TransferSegLib.data.cases import cases_from_pairs

    spec.cases = cases_from_pairs([img] * 3, [lab] * 3, ["blob"])
    run_finetune(spec, reporter=Rec())
    validations = [f for k, f in events if k == "validation"]
    assert validations and set(validations[-1]["dice"]) == {"blob"}
    started = [f for k, f in events if k == "started"][0]
    assert len(started["validation_cases"]) == 1 and len(started["cases"]) == 2


def test_an_existing_model_is_kept_when_a_new_run_fails(tmp_path, small_case):
    img, lab = small_case
    out = tmp_path / "model"
    spec = FinetuneSpec(base="none", cases=[], labels=["blob"], strategy="scratch", output=str(out),
                        train=_tiny(iterations=2), patch_size=(16, 16, 16))
    from TransferSegLib.data.cases import cases_from_pairs

    spec.cases = cases_from_pairs([img], [lab], ["blob"])
    run_finetune(spec)
    before = (out / "model.pt").read_bytes()
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 1

    from TransferSegLib.errors import TrainingCancelled

    with pytest.raises(TrainingCancelled):
        run_finetune(spec, should_stop=stop)
    assert (out / "model.pt").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def _cli_finetune(tmp_path, img, lab, *extra):
    return main(["finetune", "--base", "none", "--strategy", "scratch", "--image", img, "--label", lab,
                 "--iterations", "1", "--output", str(tmp_path / "out-model"), "--device", "cpu",
                 "--patch-size", "16", "16", "16", "--in-process", *extra])


def _assert_refused(tmp_path, capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "out-model").exists()


def test_label_on_another_grid_is_refused_naming_both_files(tmp_path, small_case, capsys):
    img, _ = small_case
    other = _write(np.ones((16, 24, 20), np.uint8), tmp_path / "other.nii.gz")
    _assert_refused(tmp_path, capsys, _cli_finetune(tmp_path, img, other, "--labels", "blob"), "other.nii.gz", "img.nii.gz", "size")


def test_label_values_outside_the_declared_names_are_refused(tmp_path, small_case, capsys):
    img, lab = small_case
    arr = sitk.GetArrayFromImage(sitk.ReadImage(lab))
    arr[0, 0, 0] = 7
    bad = tmp_path / "bad.nii.gz"
    ref = sitk.ReadImage(lab)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(bad))
    _assert_refused(tmp_path, capsys, _cli_finetune(tmp_path, img, str(bad), "--labels", "blob"), "bad.nii.gz", "[7]")


@pytest.mark.parametrize("kind", ["2d", "4d", "nan", "missing", "unreadable"])
def test_unusable_images_are_refused_naming_the_file(tmp_path, small_case, capsys, kind):
    _, lab = small_case
    # NIfTI I/O in SimpleITK turns NaN into 0 on reading; NRRD keeps it.
    path = tmp_path / (f"{kind}.nrrd" if kind == "nan" else f"{kind}.nii.gz")
    if kind == "2d":
        _write(np.zeros((24, 24), np.float32), path, spacing=(1.0, 1.0), origin=(0.0, 0.0))
    elif kind == "4d":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 16, 24, 24), np.float32)), str(path))
    elif kind == "nan":
        arr = np.zeros((16, 24, 24), np.float32)
        arr[1, 2, 3] = np.nan
        _write(arr, path)
    elif kind == "unreadable":
        path.write_bytes(b"not an image at all")
    code = _cli_finetune(tmp_path, str(path), lab, "--labels", "blob")
    _assert_refused(tmp_path, capsys, code, path.name)


def test_an_empty_labelmap_is_refused(tmp_path, small_case, capsys):
    img, _ = small_case
    empty = _write(np.zeros((16, 24, 24), np.uint8), tmp_path / "empty.nii.gz")
    _assert_refused(tmp_path, capsys, _cli_finetune(tmp_path, img, empty, "--labels", "blob"), "empty.nii.gz", "empty")


def test_plain_labelmaps_without_names_need_labels(tmp_path, small_case, capsys):
    img, lab = small_case
    _assert_refused(tmp_path, capsys, _cli_finetune(tmp_path, img, lab), "--labels")


def test_a_target_the_base_model_cannot_map_needs_labels(tmp_path):
    from TransferSegLib.training.finetune import target_label_list
    from TransferSegLib.models.base_model import BaseModel
    from TransferSegLib.training.networks import default_network_spec
    from TransferSegLib.data.recipe import Recipe
    from TransferSegLib.specs import Case

    base = BaseModel("b", default_network_spec(1, 2), ["background", "spleen"], Recipe(), (32, 32, 32))
    with pytest.raises(CaseError, match="liver"):
        target_label_list([], base, [Case(image="x.nii.gz", label="y.nii.gz", label_names={1: "liver"})])
    assert target_label_list([], base, [Case(image="x.nii.gz", label="y.nii.gz", label_names={1: "spleen"})]) == ["background", "spleen"]


def test_pretrained_strategies_need_a_base_model(tmp_path, small_case):
    img, lab = small_case
    from TransferSegLib.data.cases import cases_from_pairs

    spec = FinetuneSpec(base="none", cases=cases_from_pairs([img], [lab], ["blob"]), labels=["blob"],
                        strategy="last-layers", output=str(tmp_path / "m"), train=_tiny())
    with pytest.raises(ModelError, match="--base"):
        run_finetune(spec)
