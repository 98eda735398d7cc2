"""Making base models: partial-label pretraining, self-supervised pretraining, and using them."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from TransferSegLib.specs import Case
from TransferSegLib.errors import CaseError, TrainingCancelled
from TransferSegLib.model_card import ModelCard
from TransferSegLib.specs import FinetuneSpec
from TransferSegLib.training.finetune import build_target_model, run_finetune
from TransferSegLib.training.loop import CHECKPOINT_LAST
from TransferSegLib.models.resolve import resolve_base_model
from TransferSegLib.training.pretrain import (
    MaskedReconstructionConfig, pretrain_masked_reconstruction, pretrain_partial_labels, union_labels,
)
from TransferSegLib.specs import TrainConfig


def _case(tmp_path, name, values):
    rng = np.random.default_rng(len(name))
    img = rng.normal(0, 20, (16, 24, 24)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[2:8, 4:12, 4:12] = 1
    lab[9:14, 12:20, 12:20] = 2
    img += lab * 80.0
    for path, arr in ((tmp_path / f"{name}_img.nii.gz", img), (tmp_path / f"{name}_lab.nii.gz", lab)):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((3.0, 3.0, 3.0))
        sitk.WriteImage(im, str(path))
    return Case(image=str(tmp_path / f"{name}_img.nii.gz"), label=str(tmp_path / f"{name}_lab.nii.gz"),
                label_names={1: values[0], 2: values[1]}, annotated=values[2], name=name)


def test_union_labels_withholds_excluded_classes():
    cases = [Case(image="a", label_names={1: "spleen", 2: "liver"}), Case(image="b", label_names={1: "Right Lung"}, annotated=["Right Lung"])]
    assert union_labels(cases, exclude=["liver"]) == ["spleen", "Right Lung"]
    with pytest.raises(CaseError):
        union_labels([Case(image="a", label_names={1: "liver"})], exclude=["liver"])


def test_partial_label_pretraining_writes_a_base_model_that_fine_tuning_can_start_from(tmp_path):
    # Case a annotates only spleen, case b only kidney: each case's other class is unknown, not background.
    a = _case(tmp_path, "a", ("spleen", "liver", ["spleen"]))
    b = _case(tmp_path, "b", ("liver", "kidney", ["kidney"]))
    config = TrainConfig(iterations=4, time_budget=None, val_every=1000, patience=0, device="cpu")
    result = pretrain_partial_labels([a, b], str(tmp_path / "base"), config, exclude=["liver"], patch_size=(16, 16, 16))
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert meta["labels"] == ["background", "spleen", "kidney"]
    base = resolve_base_model(str(result.model_dir))
    assert base.labels == ["background", "spleen", "kidney"]
    model, _, info = build_target_model(base, ["background", "liver", "kidney"], "last-layers", 0)
    assert info["kept"] == ["background", "kidney"] and info["new"] == ["liver"]
    pretrained = torch.load(result.model_dir / "model.pt", weights_only=True)
    key = "input_block.conv1.conv.weight"
    assert torch.equal(model.state_dict()[key], pretrained[key])


def test_masked_reconstruction_gives_an_encoder_only_base_model(tmp_path):
    a = _case(tmp_path, "a", ("x", "y", None))
    config = MaskedReconstructionConfig(patch_size=(16, 16, 16), iterations=3, device="cpu")
    out = pretrain_masked_reconstruction([a.image], str(tmp_path / "ssl"), config)
    base = resolve_base_model(str(out))
    assert base.encoder_only and base.labels == ["background"]
    assert ModelCard.load(out).classes == []  # the panel's reader accepts it: a card with no trained head
    model, _, info = build_target_model(base, ["background", "organ"], "decoder", 0)
    assert info["transfer"] == "encoder weights"
    pretrained = torch.load(out / "model.pt", weights_only=True)
    assert torch.equal(model.state_dict()["input_block.conv1.conv.weight"], pretrained["input_block.conv1.conv.weight"])
    assert model.state_dict()["output_block.conv.conv.weight"].shape[0] == 2
    spec = FinetuneSpec(base=str(out), cases=[_case(tmp_path, "c", ("organ", "other", None))], labels=["organ"],
                        strategy="decoder", output=str(tmp_path / "ft"), train=TrainConfig(iterations=2, time_budget=None, device="cpu", val_every=1000, patience=0),
                        patch_size=(16, 16, 16))
    assert run_finetune(spec).iterations == 2


def test_masked_reconstruction_runs_on_the_shared_loop_so_it_cancels_and_resumes(tmp_path):
    a = _case(tmp_path, "a", ("x", "y", None))
    config = MaskedReconstructionConfig(patch_size=(16, 16, 16), iterations=4, device="cpu")
    work, polls = tmp_path / "work", []

    def stop_before_the_third_iteration() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(TrainingCancelled, match="iteration 2"):
        pretrain_masked_reconstruction([a.image], str(tmp_path / "ssl"), config, work_dir=str(work),
                                       should_stop=stop_before_the_third_iteration)
    saved = torch.load(work / CHECKPOINT_LAST, weights_only=True)
    assert saved["state"]["iteration"] == 2 and not (tmp_path / "ssl").exists()
    out = pretrain_masked_reconstruction([a.image], str(tmp_path / "ssl"), config, work_dir=str(work), resume=True)
    card = ModelCard.load(out)
    assert card.training["iterations"] == 4 and card.encoder_only
    assert np.isfinite(card.metrics["final_reconstruction_l1"])
    assert not work.exists()  # a finished run leaves only the model folder


def _second_channel(case: Case, tmp_path, name: str) -> str:
    """A co-registered second channel of a case (another contrast of the same anatomy)."""
    image = sitk.ReadImage(case.image)
    other = sitk.GetImageFromArray(-0.5 * sitk.GetArrayFromImage(image) + 40.0)
    other.CopyInformation(image)
    path = tmp_path / f"{name}_t2.nii.gz"
    sitk.WriteImage(other, str(path))
    return str(path)


def test_masked_reconstruction_on_named_channels_gives_a_base_that_fine_tunes_on_them(tmp_path):
    a, b = _case(tmp_path, "a", ("x", "y", None)), _case(tmp_path, "bb", ("x", "y", None))
    images = [f"T1={a.image},T2={_second_channel(a, tmp_path, 'a')}",
              f"T2={_second_channel(b, tmp_path, 'bb')},T1={b.image}"]  # named: put in the first image's order
    config = MaskedReconstructionConfig(patch_size=(16, 16, 16), iterations=2, device="cpu")
    out = pretrain_masked_reconstruction(images, str(tmp_path / "ssl2"), config)
    card = ModelCard.load(out)
    assert card.input_channels == ["T1", "T2"] and card.encoder_only
    assert card.network.args["in_channels"] == 2 and card.network.out_channels == 2  # both channels rebuilt
    c = _case(tmp_path, "ccc", ("organ", "other", None))
    c = Case(image=f"T2={_second_channel(c, tmp_path, 'ccc')},T1={c.image}", label=c.label,
             label_names=c.label_names, name="ccc")
    spec = FinetuneSpec(base=str(out), cases=[c], labels=["organ"], strategy="decoder", output=str(tmp_path / "ft2"),
                        train=TrainConfig(iterations=2, time_budget=None, device="cpu", val_every=1000, patience=0),
                        patch_size=(16, 16, 16))
    assert run_finetune(spec).iterations == 2
    assert ModelCard.load(tmp_path / "ft2").input_channels == ["T1", "T2"]
    with pytest.raises(CaseError, match="same channels"):
        pretrain_masked_reconstruction([images[0], a.image], str(tmp_path / "ssl3"), config)
