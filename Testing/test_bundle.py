"""MONAI bundles: a fine-tuned model exported as a bundle predicts, through MONAI's own
bundle machinery, the labelmap ``transferseg predict`` writes; bundles import as base models."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from TransferSegLib.models.bundle import import_bundle
from TransferSegLib.models.bundle_export import export_bundle
from TransferSegLib.models.register import add_user_model
from TransferSegLib.models.resolve import resolve_catalog_model
from TransferSegLib.models.checkpoints import load_state_dict
from TransferSegLib.errors import DownloadError, ModelError
from TransferSegLib.inference.infer import predict_file
from TransferSegLib.model_card import ModelCard
from TransferSegLib.models.model_dir import save_model_dir
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network, default_network_spec
from TransferSegLib.data.recipe import IntensitySpec, Recipe

LABELS = ["background", "liver", "spleen"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny 'fine-tuned' model: the default network with random weights and a 3 mm CT recipe."""
    torch.manual_seed(0)
    spec = default_network_spec(1, 3)
    recipe = Recipe(orientation="RAS", spacing=(3.0, 3.0, 3.0), intensity=IntensitySpec("window", -175.0, 250.0))
    card = ModelCard(name="tiny-liver", network=spec, labels=LABELS, recipe=recipe, patch_size=(32, 32, 32),
                     base_model="none", strategy="scratch", modality="CT", metrics={"mean_dice": 0.5})
    return save_model_dir(tmp_path_factory.mktemp("model") / "tiny", build_network(spec).state_dict(), card)


def _ct(path: Path, spacing, direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1)) -> Path:
    """A CT-like image whose axes run against RAS on two axes, so reorientation is exercised."""
    rng = np.random.default_rng(1)
    array = rng.normal(-50, 150, (30, 50, 44)).astype(np.int16)  # (z, y, x)
    array[10:20, 15:35, 10:30] += 250
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 5.0))
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def _monai_bundle_prediction(bundle: Path, image: Path, out_dir: Path) -> sitk.Image:
    """MONAI's own command line, as the bundle's README tells a user to run it.

    In a separate process also because ``monai.bundle run`` turns autograd off
    for the whole interpreter (the bundle's ``initialize`` step).
    """
    command = [sys.executable, "-m", "monai.bundle", "run",
               "--config_file", str(bundle / "configs" / "inference.json"),
               "--meta_file", str(bundle / "configs" / "metadata.json"),
               "--bundle_root", str(bundle), "--image", str(image), "--output_dir", str(out_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = sorted(out_dir.glob("*.nii.gz"))
    assert len(written) == 1
    return sitk.ReadImage(str(written[0]))


def _agreement(model_dir, bundle, image, tmp_path) -> float:
    ours = tmp_path / "transferseg.nii.gz"
    predict_file(model_dir, image, ours, device="cpu")
    theirs = _monai_bundle_prediction(bundle, image, tmp_path / "eval")
    a, b = sitk.ReadImage(str(ours)), theirs
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    left, right = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
    assert len(np.unique(left)) == 3  # a prediction with every class: agreement is not trivial
    return float((left == right).mean())


@pytest.mark.filterwarnings("ignore")
def test_the_exported_bundle_run_by_monai_predicts_what_transferseg_predicts(model_dir, tmp_path):
    bundle = export_bundle(model_dir, tmp_path / "bundle")
    for part in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md", "LICENSE"):
        assert (bundle / part).is_file(), part
    channel_def = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"]
    assert channel_def["pred"]["channel_def"] == {"0": "background", "1": "liver", "2": "spleen"}
    image = _ct(tmp_path / "ct.nii.gz", spacing=(3.0, 3.0, 3.0))
    assert _agreement(model_dir, bundle, image, tmp_path) >= 0.999


@pytest.mark.filterwarnings("ignore")
def test_the_exported_bundle_agrees_when_the_image_must_be_resampled(model_dir, tmp_path):
    bundle = export_bundle(model_dir, tmp_path / "bundle")
    image = _ct(tmp_path / "ct.nii.gz", spacing=(2.0, 2.5, 4.0))
    assert _agreement(model_dir, bundle, image, tmp_path) >= 0.999


def test_an_exported_bundle_imports_back_as_the_same_base_model(model_dir, tmp_path):
    zipped = export_bundle(model_dir, tmp_path / "tiny-liver.zip")
    assert zipfile.is_zipfile(zipped)
    base = import_bundle(zipped, cache_root=tmp_path / "cache")
    assert base.labels == LABELS and base.patch_size == (32, 32, 32) and base.source == "bundle"
    # The body crop travels as CropForegroundd with a margin in voxels: 10 mm at 3 mm is 4 voxels, read
    # back as 12 mm, which is again 4 voxels, so the imported model crops exactly as the exported one.
    exported = Recipe(spacing=(3.0, 3.0, 3.0), intensity=IntensitySpec("window", -175.0, 250.0))
    assert exported.crop_foreground and exported.crop_threshold == -500.0
    assert base.recipe.to_dict() == dict(exported.to_dict(), crop_margin_mm=12.0)
    assert base.network.to_dict() == default_network_spec(1, 3).to_dict()
    state, report = load_state_dict(base.weights, base.key_map, build_network(base.network))
    assert not report.missing and not report.unexpected
    reference = torch.load(Path(model_dir) / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in reference.items())
    with pytest.raises(ModelError, match="already exists"):
        export_bundle(model_dir, zipped)


def _zoo_style_bundle(root: Path, config_extra=None, network_def=None) -> Path:
    """A bundle laid out as the MONAI model zoo's are: @ references, literal transforms, plain model.pt."""
    net_def = network_def or {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                              "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "batch"}
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    metadata = {"version": "0.1.0", "name": "Zoo organ",
                "network_data_format": {"inputs": {"image": {"modality": "CT", "num_channels": 1}},
                                        "outputs": {"pred": {"channel_def": {"0": "background", "1": "kidney"}}}}}
    config = {
        "image_key": "image", "roi": [64, 64, 48],
        "network_def": net_def,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "@image_key"},
            {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
            {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "LPS"},
            {"_target_": "Spacingd", "keys": "@image_key", "pixdim": "$[1.5, 1.5, 2.0]", "mode": "bilinear"},
            {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": -57, "a_max": 164, "b_min": 0,
             "b_max": 1, "clip": True}]},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": "@roi", "overlap": 0.5},
    }
    config.update(config_extra or {})
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    (root / "LICENSE").write_text("Apache License\nVersion 2.0, January 2004\n")
    return root


def test_a_zoo_style_bundle_becomes_a_base_model_with_its_labels_recipe_and_weights(tmp_path):
    root = _zoo_style_bundle(tmp_path / "zoo")
    spec = NetworkSpec.from_dict(json.loads((root / "configs" / "inference.json").read_text())["network_def"])
    net = build_network(spec)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    base = import_bundle(root)
    assert base.labels == ["background", "kidney"] and base.modality == "CT" and base.license == "Apache-2.0"
    assert base.recipe.orientation == "LPS" and base.recipe.spacing == (1.5, 1.5, 2.0)
    step, = base.recipe.intensity
    assert (step.op, step.low, step.high, step.clamp) == ("window", -57, 164, True)
    assert base.patch_size == (64, 64, 48)
    state, report = load_state_dict(base.weights, base.key_map, build_network(base.network))
    assert len(report.loaded) == len(net.state_dict()) and not report.missing

    name = add_user_model(root, name="zoo-kidney", cache_root=tmp_path / "cache")
    resolved = resolve_catalog_model(name, cache_root=tmp_path / "cache")
    assert resolved.name == "zoo-kidney" and resolved.labels == ["background", "kidney"]


def test_bundle_expressions_are_never_evaluated_on_import(tmp_path):
    marker = tmp_path / "code-ran"
    root = _zoo_style_bundle(tmp_path / "zoo", network_def={
        "_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
        "strides": [2], "num_res_units": f"$__import__('pathlib').Path({str(marker)!r}).touch() or 1"})
    torch.save({}, root / "models" / "model.pt")
    with pytest.raises(ModelError, match="network_def"):
        import_bundle(root)
    assert not marker.exists()


def test_removed_monai_arguments_are_dropped_and_noted(tmp_path):
    root = _zoo_style_bundle(tmp_path / "zoo", network_def={
        "_target_": "SwinUNETR", "img_size": 96, "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
        "feature_size": 12})
    torch.save({}, root / "models" / "model.pt")
    base = import_bundle(root)
    assert "img_size" not in base.network.args
    assert any("img_size" in note for note in base.card["import_notes"])
    build_network(base.network)


def test_a_bundle_without_weights_says_where_they_are_listed(tmp_path):
    root = _zoo_style_bundle(tmp_path / "zoo")
    (root / "large_files.yml").write_text("large_files:\n- path: models/model.pt\n")
    with pytest.raises(ModelError, match="large_files.yml"):
        import_bundle(root)


def test_a_bundle_zip_escaping_its_folder_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("bundle/configs/metadata.json", "{}")
        zf.writestr("../outside.txt", "gotcha")
    with pytest.raises(DownloadError, match="climbs out"):
        import_bundle(evil, cache_root=tmp_path / "cache")
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "cache" / "outside.txt").exists()
