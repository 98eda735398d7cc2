"""A multi-channel model exported as a MONAI bundle: MONAI's own ``monai.bundle run``, given one file per
channel, predicts what ``transferseg predict`` predicts from the same files; the channel names travel."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from TransferSegLib.data.recipe import Recipe
from TransferSegLib.data.steps import IntensityStep
from TransferSegLib.inference.infer import predict_file
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.bundle import import_bundle
from TransferSegLib.models.bundle_export import export_bundle
from TransferSegLib.models.model_dir import save_model_dir
from TransferSegLib.training.networks import build_network, default_network_spec

CHANNELS = ["T1c", "FLAIR"]
LABELS = ["background", "tumor_core", "edema"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A two-channel model (random weights) with MONAI-expressible per-channel steps and a foreground crop."""
    torch.manual_seed(3)
    spec = default_network_spec(len(CHANNELS), len(LABELS))
    steps = [IntensityStep("zscore", over="nonzero", channel_wise=True)]
    recipe = Recipe(orientation="RAS", spacing=(2.0, 2.0, 2.0), intensity=steps, crop_foreground=True,
                    crop_threshold=0.0, crop_margin_mm=6.0)
    card = ModelCard(name="two-channel", network=spec, labels=LABELS, recipe=recipe, patch_size=(32, 32, 32),
                     input_channels=CHANNELS, modality="MR", base_model="none", strategy="scratch")
    return save_model_dir(tmp_path_factory.mktemp("model") / "mr2", build_network(spec).state_dict(), card)


def _channel(path: Path, seed: int, scale: float) -> Path:
    """An MR-like channel: a bright blob in a head-sized box, zero outside (as skull-stripped MR)."""
    rng = np.random.default_rng(seed)
    array = np.zeros((28, 40, 36), np.float32)  # (z, y, x)
    array[4:24, 6:34, 5:31] = rng.normal(300 * scale, 40 * scale, (20, 28, 26))
    array[9:18, 14:27, 11:24] += 400 * scale
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.8, 2.5))
    image.SetOrigin((-20.0, 12.0, 3.0))
    image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, -1))
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.filterwarnings("ignore")
def test_monai_runs_the_exported_two_channel_bundle_as_transferseg_predicts(model_dir, tmp_path):
    bundle = export_bundle(model_dir, tmp_path / "bundle")
    inputs = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]
    assert inputs["image"]["num_channels"] == 2 and inputs["image"]["channel_def"] == {"0": "T1c", "1": "FLAIR"}
    assert "'T1c.nii.gz', 'FLAIR.nii.gz'" in (bundle / "docs" / "README.md").read_text()
    t1c, flair = _channel(tmp_path / "t1c.nii.gz", 1, 1.0), _channel(tmp_path / "flair.nii.gz", 2, 0.6)

    ours = tmp_path / "transferseg.nii.gz"
    predict_file(model_dir, f"FLAIR={flair},T1c={t1c}", ours, device="cpu")  # named: put in the model's order
    command = [sys.executable, "-m", "monai.bundle", "run",
               "--config_file", str(bundle / "configs" / "inference.json"),
               "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
               "--image", f"['{t1c}', '{flair}']", "--output_dir", str(tmp_path / "eval")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = sorted((tmp_path / "eval").glob("*.nii.gz"))
    assert len(written) == 1
    a, b = sitk.ReadImage(str(ours)), sitk.ReadImage(str(written[0]))
    assert a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    left, right = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
    assert len(np.unique(left)) == 3  # every class predicted somewhere: agreement is not trivial
    assert float((left == right).mean()) >= 0.999


def test_the_channel_names_come_back_when_the_bundle_is_imported(model_dir, tmp_path):
    base = import_bundle(export_bundle(model_dir, tmp_path / "mr2.zip"), cache_root=tmp_path / "cache")
    assert base.card["input_channels"] == CHANNELS
    assert base.network.args["in_channels"] == 2
