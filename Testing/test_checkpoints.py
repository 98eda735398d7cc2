"""Safe checkpoint loading: plain weights only, key mapping, head shapes, TorchScript networks."""

import pathlib

import pytest
import torch
from torch import nn

from TransferSegLib.specs import KeyMap
from TransferSegLib.models.packages import installed_package_file
from TransferSegLib.models.catalog import read_catalog, shipped_catalog_path
from TransferSegLib.models.checkpoints import TorchScriptNetwork, is_torchscript, load_state_dict, read_checkpoint
from TransferSegLib.errors import ModelError
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network, default_network_spec, network_parts


def _net(out_channels=3, filters=(8, 16, 32, 64)):
    spec = default_network_spec(1, out_channels)
    spec.args["filters"] = list(filters)
    return build_network(spec)


class _Touch:
    """Unpickling this would create a file: the stand-in for code hidden in a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_wrapper_keys_and_dataparallel_prefixes_are_removed(tmp_path):
    net = _net()
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}, "epoch": 7}, tmp_path / "c.pt")
    state, report = load_state_dict(tmp_path / "c.pt", KeyMap(), _net())
    assert set(state) == set(net.state_dict()) and not report.missing and not report.unexpected
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_networks_whose_own_keys_start_with_a_strippable_prefix_keep_them(tmp_path):
    spec = NetworkSpec("monai.networks.nets.UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                                    "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1})
    net = build_network(spec)
    assert all(k.startswith("model.") for k in net.state_dict())
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / "unet.pt")
    state, report = load_state_dict(tmp_path / "unet.pt", KeyMap(), build_network(spec))
    assert not report.missing and len(report.loaded) == len(net.state_dict())


def test_a_checkpoint_with_python_objects_is_refused_without_running_them(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": _net().state_dict(), "args": _Touch(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="Python objects") as caught:
        load_state_dict(tmp_path / "evil.pt", KeyMap(), _net())
    assert "torch.save(model.state_dict()" in str(caught.value)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_reported_as_damaged(tmp_path):
    torch.save(_net().state_dict(), tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="half.pt"):
        read_checkpoint(tmp_path / "half.pt")


def test_a_head_for_another_class_count_is_kept_for_adaptation_and_reported(tmp_path):
    torch.save(_net(out_channels=5).state_dict(), tmp_path / "five.pt")
    target = _net(out_channels=3)
    state, report = load_state_dict(tmp_path / "five.pt", KeyMap(), target)
    head = [k for k in target.state_dict() if network_parts(target).part_of(k) == "head"]
    assert head and set(report.shape_mismatch) == set(head)
    assert all(state[k].shape[0] == 5 for k in head)
    assert not report.missing


def test_a_network_that_does_not_match_its_weights_is_an_error(tmp_path):
    torch.save(_net(filters=(16, 32, 64, 128)).state_dict(), tmp_path / "big.pt")
    with pytest.raises(ModelError, match="does not match its checkpoint"):
        load_state_dict(tmp_path / "big.pt", KeyMap(), _net())
    state, report = load_state_dict(tmp_path / "big.pt", KeyMap(), _net(), strict_shapes=False)
    assert report.shape_mismatch and not set(report.shape_mismatch) & set(state)


def test_an_encoder_only_checkpoint_leaves_the_decoder_missing(tmp_path):
    net = _net()
    parts = network_parts(net)
    encoder = {k: v for k, v in net.state_dict().items() if parts.part_of(k) == "encoder"}
    torch.save({"model": {"backbone." + k: v for k, v in encoder.items()}}, tmp_path / "enc.pt")
    state, report = load_state_dict(tmp_path / "enc.pt", KeyMap(), _net())
    assert set(state) == set(encoder)
    assert report.missing and all(parts.part_of(k) != "encoder" for k in report.missing)


def test_rename_and_add_prefix_map_published_names_onto_the_network(tmp_path):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear1 = nn.Linear(4, 4)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = nn.ModuleDict({"mlp": Block()})
            self.out = nn.Linear(4, 2)

    model = Model()
    published = {"module.mlp.fc1.weight": torch.ones(4, 4), "module.mlp.fc1.bias": torch.zeros(4)}
    torch.save({"state_dict": published}, tmp_path / "ssl.pt")
    key_map = KeyMap(wrapper_keys=["state_dict"], strip_prefixes=["module."], add_prefix="vit.",
                     rename={"mlp.fc1.": "mlp.linear1."})
    state, report = load_state_dict(tmp_path / "ssl.pt", key_map, model)
    assert sorted(state) == ["vit.mlp.linear1.bias", "vit.mlp.linear1.weight"]
    assert sorted(report.missing) == ["out.bias", "out.weight"]


def test_a_checkpoint_matching_nothing_asks_for_a_better_key_map(tmp_path):
    torch.save({"state_dict": {"encoder.stem.weight": torch.ones(3)}}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="key_map"):
        load_state_dict(tmp_path / "other.pt", KeyMap(), _net())


class _Scripted(nn.Module):
    """A tiny segmentation net ending in softmax with a transposed-conv head, like deepbet's."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2, padding=1), nn.BatchNorm3d(4), nn.ReLU())
        self.head = nn.ConvTranspose3d(4, 2, 2, stride=2)

    def forward(self, x):
        return torch.softmax(self.head(self.body(x)), 1)


def _scripted_file(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_Scripted().eval()), str(path))
    return path


def test_a_torchscript_file_is_not_accepted_as_plain_weights(tmp_path):
    path = _scripted_file(tmp_path)
    assert is_torchscript(path)
    with pytest.raises(ModelError, match="TorchScript"):
        load_state_dict(path, KeyMap(), _net())


def test_a_torchscript_network_gets_a_new_head_and_trains_every_parameter(tmp_path):
    path = _scripted_file(tmp_path)
    net = TorchScriptNetwork(path=str(path), out_channels=3, head="head", output="softmax")
    x = torch.randn(2, 1, 8, 8, 8)
    logits = net(x)
    assert logits.shape == (2, 3, 8, 8, 8)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, 8, 8, 8))).backward()
    for name, param in net.named_parameters():
        assert param.requires_grad and param.grad is not None and param.grad.abs().sum() > 0, name
    state, report = load_state_dict(path, KeyMap(wrapper_keys=[], strip_prefixes=[], add_prefix="net."),
                                    TorchScriptNetwork(path=str(path), out_channels=3, head="head", output="softmax"))
    assert set(report.shape_mismatch) == {"net.head.weight", "net.head.bias"}
    assert state["net.head.weight"].shape[1] == 2 and not report.missing


def test_the_softmax_output_is_turned_back_into_logits(tmp_path):
    path = _scripted_file(tmp_path)
    scripted = torch.jit.load(str(path))
    net = TorchScriptNetwork(path=str(path), output="softmax").eval()
    x = torch.randn(1, 1, 8, 8, 8)
    assert torch.allclose(torch.softmax(net(x), 1), scripted(x), atol=1e-6)


def test_deepbet_from_its_installed_package_is_trainable_end_to_end():
    if installed_package_file("deepbet", "data/models/model.pt") is None:
        pytest.skip("deepbet 1.0.2 is not installed (pip install deepbet==1.0.2 --no-deps)")
    entry = [e for e in read_catalog(shipped_catalog_path()) if e.name == "deepbet_brain_mr"][0]
    net = build_network(entry.network.with_out_channels(3))
    assert sum(p.numel() for p in net.parameters()) > 2_000_000
    # 64^3: at 32^3 the deepest level is a single voxel, which its instance norms map to 0 (no gradient).
    logits = net(torch.randn(1, 1, 64, 64, 64))
    assert logits.shape == (1, 3, 64, 64, 64)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 3, (1, 64, 64, 64))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert network_parts(net).head == ["net.tp_conv2"]
