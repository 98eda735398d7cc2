"""nnU-Net v2 model folders as models and base models, on a real model trained by nnunetv2 (Testing/data/nnunet).

The reference labelmaps in Testing/data/nnunet/reference were written by ``nnUNetv2_predict_from_modelfolder
-f all --disable_tta -device cpu`` (Utilities/make_nnunet_fixture.py); TransferSeg must agree with them.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytest.importorskip("dynamic_network_architectures")

from TransferSegLib.cli import main
from TransferSegLib.data.images import read_image
from TransferSegLib.data.sample_data import sample_cases
from TransferSegLib.errors import ModelError
from TransferSegLib.evaluation.metrics import dice_per_class
from TransferSegLib.inference.infer import predict_file
from TransferSegLib.models.resolve import resolve_base_model
from TransferSegLib.models.model_dir import load_model
from TransferSegLib.models.nnunet import read_nnunet_folder
from TransferSegLib.models.nnunet_weights import NnunetEnsemble, read_nnunet_checkpoint

DATA = Path(__file__).parent / "data" / "nnunet"
FOLDER = next((DATA / "Dataset990_TransferSegTiny").iterdir())
REFERENCE = DATA / "reference"
LABELS = ["background", "liver", "spleen", "kidney_left", "kidney_right"]


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(read_image(str(path)))


def _dice(pred: np.ndarray, ref: np.ndarray) -> dict:
    scores = dice_per_class(pred, ref, len(LABELS))
    return {LABELS[c]: float(scores[c]) for c in range(1, len(LABELS)) if (ref == c).any() or (pred == c).any()}


def test_the_folder_reads_as_nnunet_describes_it():
    folder = read_nnunet_folder(FOLDER)
    assert folder.labels == LABELS and folder.folds == ["all"] and folder.configuration == "3d_fullres"
    base = resolve_base_model(str(FOLDER))
    assert base.source == "nnunet" and base.labels == LABELS
    assert base.recipe.nnunet is not None and base.patch_size == (32, 64, 64)
    assert base.recipe.nnunet.config["normalization_schemes"] == ["CTNormalization"]
    # a fold folder names its fold
    assert resolve_base_model(str(FOLDER / "fold_all")).card["nnunet"]["folds"] == ["all"]


class _NotAWeight:
    pass


def test_checkpoints_load_weights_only_and_anything_else_is_refused(tmp_path):
    data = read_nnunet_checkpoint(FOLDER / "fold_all" / "checkpoint_final.pth")
    assert "network_weights" in data and data["trainer_name"].startswith("nnUNetTrainer")
    evil = tmp_path / "fold_all" / "checkpoint_final.pth"
    evil.parent.mkdir()
    torch.save(dict(data, logging=_NotAWeight()), str(evil))
    with pytest.raises(ModelError, match="Refusing"):
        read_nnunet_checkpoint(evil)


@pytest.mark.parametrize("case, image", [("ct_sm", "ts_ct"), ("ct_dicom", "ts_dicom")])
def test_prediction_agrees_with_nnunet_predict(tmp_path, case, image):
    """Dice >= 0.98 per class against nnUNetv2_predict's own output (TTA off on both)."""
    out = tmp_path / f"{case}.nii.gz"
    fractions = []
    predict_file(FOLDER, Path(sample_cases()[image].image), out, device="cpu", on_progress=fractions.append)
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0  # nnU-Net's windows, counted
    pred, ref = _array(out), _array(REFERENCE / f"{case}_nnunet.nii.gz")
    assert pred.shape == ref.shape
    scores = _dice(pred, ref)
    assert scores and all(d >= 0.98 for d in scores.values()), scores
    assert sitk.ReadImage(str(out)).GetSpacing() == pytest.approx(read_image(sample_cases()[image].image).GetSpacing())


def test_mirrored_prediction_agrees_with_nnunet_predict_with_its_default_mirroring(tmp_path):
    """``--tta`` against nnUNetv2_predict without ``--disable_tta``: the checkpoint's allowed mirroring axes,
    on nnU-Net's (z, y, x) arrays, every combination of them averaged as nnU-Net does."""
    out = tmp_path / "ct_sm_tta.nii.gz"
    predict_file(FOLDER, Path(sample_cases()["ts_ct"].image), out, device="cpu", tta=True)
    pred, ref = _array(out), _array(REFERENCE / "ct_sm_nnunet_tta.nii.gz")
    scores = _dice(pred, ref)
    assert scores and all(d >= 0.98 for d in scores.values()), scores
    plain = _array(REFERENCE / "ct_sm_nnunet.nii.gz")
    assert (ref != plain).any()  # nnU-Net's mirroring changes its labels here: the agreement is not the TTA-off one


def test_predict_cli_takes_folds_and_ensembles_them(tmp_path, capsys):
    out = tmp_path / "pred.seg.nrrd"
    assert main(["predict", "--model", str(FOLDER), "--fold", "all", "--image", sample_cases()["ts_ct"].image,
                 "--output", str(out), "--device", "cpu"]) == 0
    assert "liver" in capsys.readouterr().out
    with pytest.raises(ModelError, match="fold"):
        load_model(FOLDER, folds=["3"])
    # two folds: the same weights twice average to the same logits
    two = tmp_path / "two" / FOLDER.name
    shutil.copytree(FOLDER, two)
    shutil.copytree(two / "fold_all", two / "fold_0")
    model, info = load_model(two)
    assert isinstance(model, NnunetEnsemble) and info.card["nnunet"]["ensembled_folds"] == ["0", "all"]
    x = torch.zeros(1, 1, 32, 64, 64)
    single, _ = load_model(FOLDER)
    with torch.no_grad():
        assert torch.allclose(model(x), single(x), atol=1e-5)


def _train(**kw):
    from TransferSegLib.specs import TrainConfig

    values = dict(iterations=2, time_budget=None, val_every=1000, patience=0, device="cpu", seed=0, batch_size=1)
    values.update(kw)
    return TrainConfig(**values)


def _finetune(base, output, strategy, labels=("liver", "stomach")):
    from TransferSegLib.training.finetune import FinetuneSpec, run_finetune

    spec = FinetuneSpec(base=str(base), cases=[sample_cases()["ts_ct"]], labels=list(labels), strategy=strategy,
                        output=str(output), train=_train())
    return run_finetune(spec)


@pytest.mark.parametrize("strategy", ["scratch", "full", "decoder", "last-layers", "staged"])
def test_fine_tuning_from_the_nnunet_base_works_with_every_strategy(tmp_path, strategy):
    base = read_nnunet_checkpoint(FOLDER / "fold_all" / "checkpoint_final.pth")["network_weights"]
    result = _finetune(FOLDER, tmp_path / "model", strategy)
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert meta["labels"] == ["background", "liver", "stomach"] and meta["strategy"] == strategy
    assert meta["recipe"]["nnunet"]["configuration"] == "3d_fullres"
    state = torch.load(result.model_dir / "model.pt", weights_only=True)
    encoder = "network.encoder.stages.0.0.convs.0.conv.weight"
    moved = not torch.equal(state[encoder], base[encoder[len("network."):]])
    # staged trains the head alone for the first 30 % of the iterations, then everything
    assert moved == (strategy in ("scratch", "full", "staged")), "decoder and last-layers freeze the encoder"
    if strategy != "scratch":  # the liver channel of the head starts from the base's liver channel
        assert meta["training"]["transfer"]["kept"] == ["background", "liver"]
    if strategy in ("decoder", "last-layers", "staged"):
        head = "decoder.seg_layers.0.weight"  # a deep-supervision head: trained by nothing, so still the base's
        assert torch.equal(state["network." + head][1], base[head][1])


def test_a_model_fine_tuned_from_nnunet_predicts_on_the_input_grid(tmp_path):
    result = _finetune(FOLDER, tmp_path / "model", "last-layers")
    out = tmp_path / "dicom.nii.gz"
    predict_file(result.model_dir, Path(sample_cases()["ts_dicom"].image), out, device="cpu")
    assert sitk.ReadImage(str(out)).GetSize() == read_image(sample_cases()["ts_dicom"].image).GetSize()


def _totalseg_home(tmp_path):
    """A TotalSegmentator home holding the fixture under TotalSegmentator's names: parts 1 and 2 of 'total' and
    the non-commercially licensed 'tissue_types' model (the copies rename their classes in dataset.json)."""
    results = tmp_path / "ts_home" / "nnunet" / "results"
    layout = {
        "Dataset291_TotalSegmentator_part1_organs_1559subj": None,
        "Dataset292_TotalSegmentator_part2_vertebrae_1532subj": ["vertebrae_L1", "vertebrae_L2", "vertebrae_L3", "vertebrae_L4"],
        "Dataset481_tissue_1559subj": None,
    }
    for dataset, names in layout.items():
        target = results / dataset / "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"
        shutil.copytree(FOLDER, target)
        if names:
            meta = json.loads((target / "dataset.json").read_text())
            meta["labels"] = dict({"background": 0}, **{n: i + 1 for i, n in enumerate(names)})
            (target / "dataset.json").write_text(json.dumps(meta))
    return tmp_path / "ts_home"


def test_totalsegmentator_models_are_found_and_listed_with_their_licenses(tmp_path, monkeypatch, capsys):
    from TransferSegLib.models.catalog import find_model, totalsegmentator_entries

    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(_totalseg_home(tmp_path)))
    entries = {e.name: e for e in totalsegmentator_entries()}
    assert set(entries) == {"totalseg-total-organs", "totalseg-total-vertebrae", "totalseg-tissue_types"}
    assert entries["totalseg-total-organs"].labels == LABELS
    assert entries["totalseg-tissue_types"].non_commercial and "non-commercial" in entries["totalseg-tissue_types"].license
    assert not entries["totalseg-total-organs"].non_commercial
    assert entries["totalseg-total-organs"].url.endswith("/v2.0.0-weights/Dataset291_TotalSegmentator_part1_organs_1559subj.zip")
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "totalseg-total-organs" in listing and "totalseg-tissue_types" in listing and "(NC)" in listing
    base = resolve_base_model("totalseg-total-vertebrae")
    assert base.labels[1] == "vertebrae_L1" and base.source == "nnunet" and find_model("totalseg-total-organs")


def test_total_is_split_in_parts_and_the_part_knowing_the_labels_is_chosen(tmp_path, monkeypatch):
    from TransferSegLib.models.totalsegmentator import pick_part
    from TransferSegLib.training.finetune import FinetuneSpec, run_finetune

    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(_totalseg_home(tmp_path)))
    name, why = pick_part("totalseg-total", ["vertebrae_L2"])
    assert name == "totalseg-total-vertebrae" and "part vertebrae" in why
    name, why = pick_part("totalseg-total", ["liver", "pancreas"])
    assert name == "totalseg-total-organs" and "liver" in why
    assert pick_part("totalseg-total-organs", ["liver"]) == ("totalseg-total-organs", "")
    with pytest.raises(ModelError, match="none of them knows"):
        pick_part("totalseg-total", ["brain"])
    events = []

    class Recorder:
        def event(self, kind, **fields):
            events.append((kind, fields))

    spec = FinetuneSpec(base="totalseg-total", cases=[sample_cases()["ts_ct"]], labels=["spleen"],
                        strategy="last-layers", output=str(tmp_path / "model"), train=_train(iterations=1))
    run_finetune(spec, reporter=Recorder())
    started = next(f for k, f in events if k == "started")
    assert started["base"] == "totalseg-total-organs" and "part organs" in started["base_part"]


def test_export_nnunet_writes_a_folder_that_predicts_like_the_model(tmp_path, capsys):
    result = _finetune(FOLDER, tmp_path / "model", "full", labels=("liver", "spleen", "stomach"))
    out = tmp_path / "export" / "nnUNetTrainer__nnUNetPlansTiny__3d_fullres"
    assert main(["models", "export-nnunet", str(result.model_dir), str(out)]) == 0
    assert "nnUNetv2_predict_from_modelfolder" in capsys.readouterr().out
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "liver": 1, "spleen": 2, "stomach": 3}
    plans = json.loads((out / "plans.json").read_text())
    assert list(plans["configurations"]) == ["3d_fullres"]
    checkpoint = torch.load(out / "fold_all" / "checkpoint_final.pth", weights_only=True)
    # what nnUNetPredictor.initialize_from_trained_model_folder reads
    assert checkpoint["trainer_name"] == "nnUNetTrainer" and checkpoint["init_args"]["configuration"] == "3d_fullres"
    assert "inference_allowed_mirroring_axes" in checkpoint
    assert all(not k.startswith("network.") for k in checkpoint["network_weights"])
    assert checkpoint["network_weights"]["decoder.seg_layers.2.weight"].shape[0] == 4
    image = sample_cases()["ts_ct"].image
    # nnU-Net applies no clean-up: compare the networks' predictions without TransferSeg's
    predict_file(result.model_dir, Path(image), tmp_path / "a.nii.gz", device="cpu", largest_component=False)
    predict_file(out, Path(image), tmp_path / "b.nii.gz", device="cpu")
    assert np.array_equal(_array(tmp_path / "a.nii.gz"), _array(tmp_path / "b.nii.gz"))


def test_export_nnunet_refuses_other_architectures(tmp_path):
    from TransferSegLib.models.base_model import default_model_dir
    from TransferSegLib.models.nnunet_export import export_nnunet

    with pytest.raises(ModelError, match="not fine-tuned from an nnU-Net base"):
        export_nnunet(default_model_dir(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
