"""The base-model catalog: every entry loads through the same path a real download takes.

For each shipped entry a network is built from its spec, random weights are
written in the layout its publisher uses (wrapper keys, ``module.`` prefixes,
SuPreM's Universal-Model keys, MedicalNet's encoder, Swin UNETR SSL's renamed
keys), served from a local HTTP server as the entry's URL with the entry's kind
of checksum, resolved with ``resolve_catalog_model`` and loaded with
``load_state_dict``. A MONAI update that renames a network's tensors fails here.
"""

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from TransferSegLib.models import catalog, register, resolve
from TransferSegLib.models.packages import installed_package_file
from TransferSegLib.models.catalog import CatalogEntry, list_models, read_catalog
from TransferSegLib.models.register import add_user_model
from TransferSegLib.models.resolve import resolve_catalog_model
from TransferSegLib.models.checkpoints import load_state_dict
from TransferSegLib.cli import main as cli_main
from TransferSegLib.errors import DownloadError, ModelError
from TransferSegLib.training.networks import build_network, default_network_spec

SHIPPED = read_catalog(catalog.shipped_catalog_path())
DOWNLOADABLE = [e for e in SHIPPED if e.source == "catalog"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _swin_ssl_layout(state):
    """model_swinvit.pt as SwinUNETR.load_from reads it: module.<swin key>, MLP named fc1/fc2."""
    out = {}
    for key, value in state.items():
        if key.startswith("swinViT."):
            key = key[len("swinViT."):].replace("mlp.linear1.", "mlp.fc1.").replace("mlp.linear2.", "mlp.fc2.")
            out["module." + key] = value
    return {"state_dict": out}


def _suprem_layout(state, backbone: bool):
    """SuPreM's train.py checkpoint: {'net': DataParallel keys, optimizer, scheduler, epoch}; the Swin UNETR
    sits inside the Universal Model as 'backbone' and its head is not part of it."""
    prefix = "module.backbone." if backbone else "module."
    net = {prefix + k: v for k, v in state.items() if not (backbone and k.startswith("out."))}
    if backbone:
        net["module.organ_embedding"] = torch.randn(25, 512)
        net["module.precls_conv.0.weight"] = torch.randn(8, 48, 1, 1, 1)
    return {"net": net, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 1e-5, "params": [0]}]},
            "scheduler": {"last_epoch": 400, "base_lrs": [1e-4]}, "epoch": 400}


def _medicalnet_layout(state):
    """MedicalNet's resnet_N_23dataset.pth: {'state_dict': DataParallel keys of the 3D ResNet}."""
    return {"state_dict": {"module." + k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}}


#: How each publisher lays out its checkpoint (default: a bare state_dict, as MONAI bundles ship).
LAYOUTS = {
    "suprem_segresnet": lambda s: _suprem_layout(s, backbone=False),
    "suprem_swinunetr": lambda s: _suprem_layout(s, backbone=True),
    "swin_unetr_ssl": _swin_ssl_layout,
    "medicalnet_resnet10": _medicalnet_layout,
    "medicalnet_resnet50": _medicalnet_layout,
}


def _digest(path: Path, template) -> str:
    algorithm = template.split(":", 1)[0] if template and ":" in template else "sha256"
    digest = hashlib.new(algorithm)
    digest.update(path.read_bytes())
    return f"{algorithm}:{digest.hexdigest()}"


def _use_catalog(monkeypatch, tmp_path, entries):
    path = tmp_path / "catalog.json"
    payload = {"format": catalog.CATALOG_FORMAT, "version": catalog.CATALOG_VERSION,
               "models": [e.to_dict() if isinstance(e, CatalogEntry) else e for e in entries]}
    path.write_text(json.dumps(payload), encoding="utf-8")
    monkeypatch.setattr(catalog, "shipped_catalog_path", lambda: path)


def test_shipped_catalog_is_versioned_and_flags_non_commercial_licenses():
    data = json.loads(catalog.shipped_catalog_path().read_text(encoding="utf-8"))
    assert data["format"] == "transferseg-catalog" and data["version"] == 1
    names = {e.name for e in SHIPPED}
    for required in ("spleen_ct_segmentation", "swin_unetr_btcv_segmentation", "wholeBody_ct_segmentation",
                     "brats_mri_segmentation", "suprem_segresnet", "suprem_swinunetr", "swin_unetr_ssl",
                     "medicalnet_resnet10", "deepbet_brain_mr"):
        assert required in names
    for entry in SHIPPED:
        assert entry.license, entry.name
        assert entry.non_commercial == ("NC" in entry.license), entry.name
        assert entry.labels == [] or entry.labels[0] == "background" or entry.name == "brats_mri_segmentation"
        if entry.source == "catalog":
            assert entry.url.startswith("https://") and entry.reference


@pytest.mark.parametrize("entry", DOWNLOADABLE, ids=[e.name for e in DOWNLOADABLE])
def test_every_catalog_entry_loads_through_the_download_path(entry, server, tmp_path, monkeypatch):
    root, base_url = server
    torch.manual_seed(0)
    published = build_network(entry.network).state_dict()
    file = root / f"{entry.name}.pt"
    torch.save(LAYOUTS.get(entry.name, lambda s: s)(published), file)
    try:
        served = CatalogEntry.from_dict(dict(entry.to_dict(), url=f"{base_url}/{file.name}",
                                             sha256=_digest(file, entry.sha256) if entry.sha256 else None))
        _use_catalog(monkeypatch, tmp_path, [served])
        if not served.verified:
            with pytest.raises(DownloadError, match="--allow-unverified"):
                resolve_catalog_model(entry.name, cache_root=tmp_path / "cache")
            assert not served.cached(tmp_path / "cache")
        base = resolve_catalog_model(entry.name, cache_root=tmp_path / "cache", allow_unverified=True)
        assert base.weights.is_file() and base.weights.is_relative_to(tmp_path / "cache")
        assert base.labels == entry.labels and base.encoder_only == entry.encoder_only
        state, report = load_state_dict(base.weights, base.key_map, build_network(base.network))
        fresh = set(report.missing)
        if entry.encoder_only:
            expected_fresh = {k for k in published if not k.startswith(("swinViT.", "encoder."))}
        elif entry.name == "suprem_swinunetr":
            expected_fresh = {k for k in published if k.startswith("out.")}
        else:
            expected_fresh = set()
        assert fresh == expected_fresh
        assert not report.shape_mismatch
        for key in report.loaded:
            assert torch.equal(state[key], published[key]), key
    finally:
        file.unlink()
        for path in (tmp_path / "cache").rglob("*.pt*"):
            path.unlink()


def test_a_download_with_the_wrong_checksum_is_refused_and_not_cached(server, tmp_path, monkeypatch):
    root, base_url = server
    net = build_network(default_network_spec(1, 2))
    torch.save(net.state_dict(), root / "tampered.pt")
    entry = dict(SHIPPED[0].to_dict(), name="tampered", network=default_network_spec(1, 2).to_dict(),
                 url=f"{base_url}/tampered.pt", sha256="md5:" + "0" * 32)
    _use_catalog(monkeypatch, tmp_path, [entry])
    with pytest.raises(DownloadError, match="md5"):
        resolve_catalog_model("tampered", cache_root=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("tampered.pt"))


def test_offline_mode_uses_cached_weights_and_explains_missing_ones(server, tmp_path, monkeypatch):
    root, base_url = server
    torch.save(build_network(default_network_spec(1, 2)).state_dict(), root / "tiny.pt")
    entry = dict(SHIPPED[0].to_dict(), name="tiny", network=default_network_spec(1, 2).to_dict(),
                 url=f"{base_url}/tiny.pt", sha256=_digest(root / "tiny.pt", "sha256:"))
    _use_catalog(monkeypatch, tmp_path, [entry])
    with pytest.raises(DownloadError, match="offline"):
        resolve_catalog_model("tiny", offline=True, cache_root=tmp_path / "cache")
    first = resolve_catalog_model("tiny", cache_root=tmp_path / "cache")
    (root / "tiny.pt").unlink()  # the server no longer has it: only the cache can answer
    again = resolve_catalog_model("tiny", offline=True, cache_root=tmp_path / "cache")
    assert again.weights == first.weights


def test_a_copy_of_the_published_file_is_verified_and_used_instead_of_downloading(tmp_path, monkeypatch, capsys):
    copy = tmp_path / "carried-on-a-usb-stick.pt"
    torch.save(build_network(default_network_spec(1, 2)).state_dict(), copy)
    entry = dict(SHIPPED[0].to_dict(), name="tiny", network=default_network_spec(1, 2).to_dict(),
                 url="http://127.0.0.1:9/never-contacted/tiny.pt", sha256=_digest(copy, "sha256:"),
                 size_bytes=copy.stat().st_size)
    _use_catalog(monkeypatch, tmp_path, [entry])
    monkeypatch.setenv("TRANSFERSEG_CACHE", str(tmp_path / "cache"))
    assert cli_main(["models", "download", "tiny", "--file", str(copy)]) == 0
    cached = tmp_path / "cache" / "models" / "tiny" / "tiny.pt"
    assert cached.read_bytes() == copy.read_bytes() and copy.exists()
    base = resolve_catalog_model("tiny", offline=True)  # from the cache, no network
    assert base.weights == cached
    other = tmp_path / "another-file.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(DownloadError, match="another-file.pt"):
        resolve.download_model("tiny", local_file=other)
    assert cached.read_bytes() == copy.read_bytes()  # the verified copy is untouched


def test_a_2d_network_is_inflated_into_a_registered_3d_base_model(tmp_path, monkeypatch, capsys):
    from TransferSegLib.specs import NetworkSpec

    args = dict(in_channels=1, out_channels=3, features=(4, 4, 8, 8, 16, 4))
    net_2d = build_network(NetworkSpec("BasicUNet", dict(args, spatial_dims=2)))
    torch.save({"state_dict": {"module." + k: v for k, v in net_2d.state_dict().items()}}, tmp_path / "slices.pt")
    spec = dict(SHIPPED[0].to_dict(), network=NetworkSpec("BasicUNet", dict(args, spatial_dims=3)).to_dict(),
                labels=["background", "liver", "spleen"], key_map={"wrapper_keys": ["state_dict"],
                                                                   "strip_prefixes": ["module."]})
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("TRANSFERSEG_CACHE", str(tmp_path / "cache"))
    assert cli_main(["models", "inflate", "--checkpoint-2d", str(tmp_path / "slices.pt"), "--spec",
                     str(tmp_path / "spec.json"), "--name", "slices-3d", "--depth-mode", "center"]) == 0
    base = resolve_catalog_model("slices-3d")
    assert base.source == "user" and base.labels == ["background", "liver", "spleen"]
    net_3d = build_network(base.network)
    state, report = load_state_dict(base.weights, base.key_map, net_3d)
    assert not report.missing and not report.unexpected
    net_3d.load_state_dict(state)
    kernel_2d = net_2d.state_dict()["conv_0.conv_0.conv.weight"]
    kernel_3d = net_3d.state_dict()["conv_0.conv_0.conv.weight"]
    assert torch.equal(kernel_3d[..., 1], kernel_2d) and not kernel_3d[..., 0].any()  # middle slice only
    # A slice-constant volume gives the 2D network's answer on every slice (center mode, first conv).
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        y2 = torch.nn.functional.conv2d(x, kernel_2d, padding=1)
        y3 = torch.nn.functional.conv3d(x[..., None].expand(-1, -1, -1, -1, 5), kernel_3d, padding=1)
    assert torch.allclose(y3[..., 2], y2, atol=1e-5)
    spec["network"] = NetworkSpec("BasicUNet", dict(args, spatial_dims=2)).to_dict()
    (tmp_path / "spec2d.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ModelError, match="spatial_dims 3"):
        register.add_inflated_model(tmp_path / "slices.pt", tmp_path / "spec2d.json", "flat")


def test_installed_package_model_is_listed_and_loads_its_network_file(tmp_path):
    if installed_package_file("deepbet", "data/models/model.pt") is None:
        pytest.skip("deepbet 1.0.2 is not installed (pip install deepbet==1.0.2 --no-deps)")
    assert "deepbet_brain_mr" in [e.name for e in list_models(tmp_path)]
    base = resolve_catalog_model("deepbet_brain_mr", cache_root=tmp_path)
    assert base.source == "package" and base.labels == ["background", "brain"] and base.modality == "MR"
    network = build_network(base.network)
    state, report = load_state_dict(base.weights, base.key_map, network)
    assert not report.missing and not report.unexpected and len(report.loaded) == len(network.state_dict())


def test_a_missing_package_is_not_listed_and_resolving_it_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "installed_package_file", lambda package, resource: None)
    assert "deepbet_brain_mr" not in [e.name for e in list_models(tmp_path)]
    assert "deepbet_brain_mr" in [e.name for e in list_models(tmp_path, include_unavailable=True)]
    with pytest.raises(ModelError, match=r"pip install deepbet==1\.0\.2"):
        resolve_catalog_model("deepbet_brain_mr", cache_root=tmp_path)


def test_an_unknown_name_lists_the_catalog(tmp_path):
    with pytest.raises(ModelError, match="spleen_ct_segmentation"):
        resolve_catalog_model("no-such-model", cache_root=tmp_path)


def _user_spec(out_channels=3):
    return {"network": default_network_spec(1, out_channels).to_dict(), "labels": ["background", "liver", "spleen"],
            "recipe": {"orientation": "RAS", "spacing": [3, 3, 3]}, "patch_size": [32, 32, 32], "modality": "CT",
            "license": "CC-BY-4.0", "key_map": {"wrapper_keys": ["model"], "strip_prefixes": ["module."]}}


def test_a_user_checkpoint_is_validated_registered_and_resolved(tmp_path):
    net = build_network(default_network_spec(1, 3))
    checkpoint = tmp_path / "mine.pt"
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}, "epoch": 3}, checkpoint)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(_user_spec()), encoding="utf-8")
    assert add_user_model(checkpoint, name="my-liver", spec=spec, cache_root=tmp_path / "cache") == "my-liver"
    assert (tmp_path / "cache" / "user_models.json").is_file()
    entry = [e for e in list_models(tmp_path / "cache") if e.name == "my-liver"][0]
    assert entry.source == "user" and entry.status(tmp_path / "cache") == "local"
    base = resolve_catalog_model("my-liver", cache_root=tmp_path / "cache")
    state, report = load_state_dict(base.weights, base.key_map, build_network(base.network))
    assert not report.missing and torch.equal(state["output_block.conv.conv.weight"],
                                              net.state_dict()["output_block.conv.conv.weight"])
    torch.save(net.state_dict(), checkpoint)  # the file changes behind TransferSeg's back
    with pytest.raises(ModelError, match="checksum differs"):
        resolve_catalog_model("my-liver", cache_root=tmp_path / "cache")


def test_a_user_checkpoint_that_does_not_fit_its_spec_is_not_registered(tmp_path):
    net = build_network(default_network_spec(1, 3))
    checkpoint = tmp_path / "mine.pt"
    torch.save(net.state_dict(), checkpoint)
    wrong = _user_spec()
    wrong["network"]["filters"] = [8, 16, 32, 64]
    with pytest.raises(ModelError, match="do not fit"):
        add_user_model(checkpoint, name="broken", spec=wrong, cache_root=tmp_path / "cache")
    with pytest.raises(ModelError, match="catalog model"):
        add_user_model(checkpoint, name="spleen_ct_segmentation", spec=_user_spec(), cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache" / "user_models.json").exists()


def test_command_line_lists_adds_and_refuses_unverified_downloads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRANSFERSEG_CACHE", str(tmp_path / "cache"))
    net = build_network(default_network_spec(1, 3))
    torch.save(net.state_dict(), tmp_path / "mine.pt")
    (tmp_path / "spec.json").write_text(json.dumps(_user_spec()), encoding="utf-8")
    assert cli_main(["models", "add", "--name", "cli-model", "--checkpoint", str(tmp_path / "mine.pt"),
                     "--spec", str(tmp_path / "spec.json")]) == 0
    assert cli_main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "spleen_ct_segmentation" in listing and "cli-model" in listing and "(NC)" in listing
    assert cli_main(["models", "download", "suprem_segresnet"]) == 2
    assert "--allow-unverified" in capsys.readouterr().err
    assert cli_main(["models", "remove", "cli-model"]) == 0
    assert "cli-model" not in [e.name for e in list_models()]
