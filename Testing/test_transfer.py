"""Transfer: head adaptation by label name and what each strategy freezes."""

import pytest
import torch

from TransferSegLib.errors import ConfigError, ModelError
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network, default_network_spec, network_parts
from TransferSegLib.specs import STRATEGIES, check_strategy
from TransferSegLib.training.transfer import TRAINED_PARTS, adapt_head, apply_strategy, inflate_2d_to_3d


def _pretrained(spec):
    torch.manual_seed(1)
    model = build_network(spec)
    return model.state_dict()


@pytest.mark.parametrize("spec", [
    default_network_spec(1, 4),
    NetworkSpec("UNet", dict(spatial_dims=3, in_channels=1, out_channels=4, channels=(8, 16, 32), strides=(2, 2), num_res_units=2)),
    NetworkSpec("SegResNet", dict(spatial_dims=3, in_channels=1, out_channels=4, init_filters=8)),
], ids=["DynUNet", "UNet", "SegResNet"])
def test_head_adaptation_keeps_matching_channels_bit_identical(spec):
    base_labels = ["background", "spleen", "Kidney Left", "liver"]
    target_labels = ["background", "liver", "pancreas", "kidney_left"]
    base_state = _pretrained(spec)
    torch.manual_seed(2)
    model = build_network(spec.with_out_channels(len(target_labels)))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = adapt_head(model, base_state, base_labels, target_labels)
    assert report.kept == ["background", "liver", "kidney_left"]
    assert report.new == ["pancreas"]
    assert report.dropped == ["spleen"]
    state = model.state_dict()
    parts = network_parts(model)
    assert report.adapted_tensors, "no head tensor was recognized"
    for key in report.adapted_tensors:
        assert parts.part_of(key) == "head"
    # Along every class axis, matched channels hold the base channel bit for bit and
    # the new class keeps its fresh initialization.
    pairs = [(0, 0), (1, 3), (3, 2)]
    for key, axes in report.adapted_tensors.items():
        t_idx = torch.tensor([t for t, _ in pairs])
        b_idx = torch.tensor([b for _, b in pairs])
        got, want = state[key], base_state[key]
        for axis in axes:
            got, want = got.index_select(axis, t_idx), want.index_select(axis, b_idx)
        assert torch.equal(got, want), key
        assert torch.equal(state[key].select(axes[0], 2), fresh[key].select(axes[0], 2)), key
    # Every non-head tensor is the pretrained one.
    for key, value in state.items():
        if key not in report.adapted_tensors:
            assert torch.equal(value, base_state[key]), key


def test_dynunet_output_conv_channels_are_copied_exactly():
    spec = default_network_spec(1, 3)
    base_state = _pretrained(spec)
    model = build_network(spec.with_out_channels(2))
    adapt_head(model, base_state, ["background", "a", "b"], ["background", "b"])
    w = model.state_dict()["output_block.conv.conv.weight"]
    bw = base_state["output_block.conv.conv.weight"]
    assert torch.equal(w[0], bw[0]) and torch.equal(w[1], bw[2])


def test_mismatched_weights_are_refused_with_a_clear_error():
    base_state = _pretrained(default_network_spec(1, 2))
    other = build_network(NetworkSpec("DynUNet", dict(default_network_spec(1, 2).args, filters=[8, 16, 32, 64])))
    with pytest.raises(ModelError, match="shape"):
        adapt_head(other, base_state, ["background", "x"], ["background", "x"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_freezes_exactly_what_it_says(strategy):
    model = build_network(default_network_spec(1, 2))
    parts = network_parts(model)
    apply_strategy(model, strategy)
    for name, param in model.named_parameters():
        assert param.requires_grad == (parts.part_of(name) in TRAINED_PARTS[strategy]), (strategy, name)
    trained = {parts.part_of(n) for n, p in model.named_parameters() if p.requires_grad}
    assert trained == set(TRAINED_PARTS[strategy])


def test_last_layers_trains_only_the_last_decoder_block_and_head():
    model = build_network(default_network_spec(1, 2))
    apply_strategy(model, "last-layers")
    trained = sorted({n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad})
    assert trained == ["output_block.conv", "upsamples.2"]


def test_unknown_strategy_is_named_in_the_error():
    with pytest.raises(ConfigError, match="bogus"):
        check_strategy("bogus")
    assert check_strategy("last_layers") == "last-layers"


def test_2d_weights_inflate_to_3d_with_the_same_slice_response():
    torch.manual_seed(0)
    net2 = build_network(NetworkSpec("BasicUNet", dict(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))))
    net3 = build_network(NetworkSpec("BasicUNet", dict(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))))
    missing = inflate_2d_to_3d(net2.state_dict(), net3, depth_mode="average")
    assert missing == []
    conv2 = net2.state_dict()["conv_0.conv_0.conv.weight"]
    conv3 = net3.state_dict()["conv_0.conv_0.conv.weight"]
    assert torch.allclose(conv3.sum(-1), conv2, atol=1e-6)
    with pytest.raises(ModelError):
        inflate_2d_to_3d(net2.state_dict(), net3, depth_mode="sideways")
