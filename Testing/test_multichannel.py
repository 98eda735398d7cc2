"""Multi-channel cases: named channel files, nnU-Net's _000k files, 4D NIfTI; grid
checks; and the BraTS network fine-tuned and run end to end on four channels.

The four channels are derived from the shipped MR (``multichannel_sample``): real
co-registered images with different contrasts, not real MR sequences.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from TransferSegLib.specs import Case
from TransferSegLib.data.cases import load_case
from TransferSegLib.data.channels import order_channels, read_channels
from TransferSegLib.specs import parse_image_argument
from TransferSegLib.data.manifest import cases_from_manifest
from TransferSegLib.errors import CaseError, ModelError
from TransferSegLib.models import catalog, register
from TransferSegLib.training.networks import build_network
from multichannel_sample import CHANNELS, MR, MR_LABELS, write_multichannel_mr

BRATS = {e.name: e for e in catalog.read_catalog(catalog.shipped_catalog_path())}["brats_mri_segmentation"]


def test_an_image_argument_names_its_channels_or_lists_them_in_order(tmp_path):
    assert parse_image_argument("a.nii.gz") == (["a.nii.gz"], [])
    assert parse_image_argument("a.nii.gz,b.nii.gz") == (["a.nii.gz", "b.nii.gz"], [])
    assert parse_image_argument("T1c=a.nii.gz, FLAIR=b.nii.gz") == (["a.nii.gz", "b.nii.gz"], ["T1c", "FLAIR"])
    assert parse_image_argument("/data/run=1/ct.nii.gz") == (["/data/run=1/ct.nii.gz"], [])  # a path, not a name
    with pytest.raises(CaseError, match="name every channel"):
        parse_image_argument("T1c=a.nii.gz,b.nii.gz")
    case = Case(image="T2=c.nii.gz,T1c=a.nii.gz", label="l.nii.gz")
    assert case.image == "c.nii.gz" and case.images == ["c.nii.gz", "a.nii.gz"] and case.channel_names == ["T2", "T1c"]
    again = Case.from_dict(json.loads(json.dumps(case.to_dict())))
    assert again == case
    assert "channels" not in Case(image="a.nii.gz").to_dict()  # single-channel specs stay as they were


def test_channels_are_put_in_the_models_order_by_name_or_refused_saying_what_is_needed():
    names = list(CHANNELS)
    given = ["f.nii.gz", "t2.nii.gz", "t1c.nii.gz", "t1.nii.gz"]
    assert order_channels(given, ["flair", "T2", "t1C", "T1"], names, 4, "case") == \
        ["t1c.nii.gz", "t1.nii.gz", "t2.nii.gz", "f.nii.gz"]
    assert order_channels(given, [], names, 4, "case") == given  # unnamed: taken in the model's order
    with pytest.raises(CaseError, match=r"needs 4 channel\(s\) \(T1c, T1, T2, FLAIR\), the case gives 1"):
        order_channels(["t1.nii.gz"], [], names, 4, "case")
    with pytest.raises(CaseError, match=r"missing \['FLAIR'\].*\['PD'\]"):
        order_channels(given, ["PD", "T2", "T1c", "T1"], names, 4, "case")


def test_every_channel_must_share_channel_0s_grid_and_a_4d_file_is_its_channels(tmp_path):
    files = write_multichannel_mr(tmp_path / "files")
    four_d, = write_multichannel_mr(tmp_path / "4d", layout="4d")
    from_files = read_channels([str(p) for p in files])
    from_4d = read_channels([str(four_d)])
    assert len(from_4d) == 4
    for a, b in zip(from_files, from_4d):
        np.testing.assert_allclose(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b), rtol=1e-6)
        assert np.allclose(a.GetOrigin(), b.GetOrigin()) and np.allclose(a.GetSpacing(), b.GetSpacing())
    moved = sitk.ReadImage(str(files[2]))
    moved.SetOrigin(tuple(o + 6.0 for o in moved.GetOrigin()))
    sitk.WriteImage(moved, str(tmp_path / "moved.nii.gz"))
    with pytest.raises(CaseError, match="moved.nii.gz' is not on the grid of"):
        read_channels([str(files[0]), str(tmp_path / "moved.nii.gz")])
    case = Case(image=[str(p) for p in files], label=str(MR_LABELS), label_names={5: "liver"}, unselected="background")
    loaded = load_case(case, ["background", "liver"])
    assert len(loaded.channels) == 4 and loaded.network_input is loaded.channels


def test_an_nnunet_dataset_with_four_channels_gives_four_named_files_per_case(tmp_path):
    root = tmp_path / "Dataset001_Derived"
    write_multichannel_mr(root / "imagesTr", case="mr_001", layout="nnunet")
    (root / "labelsTr").mkdir(parents=True)
    sitk.WriteImage(sitk.ReadImage(str(MR_LABELS)), str(root / "labelsTr" / "mr_001.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): n for i, n in enumerate(CHANNELS)}, "labels": {"background": 0, "liver": 5},
        "numTraining": 1, "file_ending": ".nii.gz"}))
    case, = cases_from_manifest(str(root / "dataset.json"))[0]
    assert [Path(p).name for p in case.images] == [f"mr_001_{k:04d}.nii.gz" for k in range(4)]
    assert case.channel_names == list(CHANNELS) and case.name == "mr_001"


def test_brats_fine_tunes_and_predicts_on_four_channels_end_to_end(tmp_path):
    """The BraTS bundle's network and recipe, random weights in its layout (the
    published ones cannot be downloaded here), fine-tuned on the derived four-channel
    case given in a scrambled, named order, then used to predict."""
    from TransferSegLib.inference.infer import predict_file
    from TransferSegLib.specs import FinetuneSpec
    from TransferSegLib.training.finetune import run_finetune
    from TransferSegLib.specs import TrainConfig

    files = write_multichannel_mr(tmp_path / "case")
    weights = tmp_path / "brats.pt"
    torch.manual_seed(0)
    torch.save(build_network(BRATS.network).state_dict(), weights)
    spec = {k: v for k, v in BRATS.to_dict().items() if k in ("network", "labels", "recipe", "patch_size", "key_map",
                                                              "modality", "card")}
    name = register.add_user_model(weights, name="brats-random", spec=spec, cache_root=tmp_path / "cache")
    scrambled = ",".join(f"{n}={files[CHANNELS.index(n)]}" for n in ("FLAIR", "T1", "T2", "T1c"))
    case = Case(image=scrambled, label=str(MR_LABELS), label_names={5: "liver"}, unselected="background")
    import os
    os.environ["TRANSFERSEG_CACHE"] = str(tmp_path / "cache")
    try:
        result = run_finetune(FinetuneSpec(
            base=name, cases=[case], labels=["liver"], strategy="full", output=str(tmp_path / "model"),
            train=TrainConfig(iterations=2, batch_size=1, val_every=2, device="cpu", seed=0, augment=False),
            patch_size=(64, 48, 16), offline=True))
    finally:
        os.environ.pop("TRANSFERSEG_CACHE", None)
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert meta["input_channels"] == list(CHANNELS) and meta["network"]["in_channels"] == 4
    assert meta["recipe"]["orientation"] == "stored"

    out = tmp_path / "pred.nii.gz"
    prediction = predict_file(result.model_dir, Path(",".join(f"{n}={files[CHANNELS.index(n)]}"
                                                              for n in ("T2", "T1c", "FLAIR", "T1"))), out)
    written = sitk.ReadImage(str(out))
    mr = sitk.ReadImage(str(MR))
    assert written.GetSize() == mr.GetSize() and np.allclose(written.GetOrigin(), mr.GetOrigin())
    assert prediction.labels == ["background", "liver"]
    with pytest.raises((CaseError, ModelError), match="needs 4 channel"):
        predict_file(result.model_dir, Path(str(files[0])), tmp_path / "one.nii.gz")
