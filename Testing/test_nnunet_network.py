"""nnU-Net's networks from plans: the class allow-list, the parts each strategy trains, head adaptation."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("dynamic_network_architectures")

from TransferSegLib.errors import ModelError
from TransferSegLib.training.networks import NetworkSpec, build_network, network_parts, patch_multiple
from TransferSegLib.training.nnunet_network import NnunetNetwork, resolve_class_name, to_nnunet_keys
from TransferSegLib.specs import STRATEGIES
from TransferSegLib.training.transfer import TRAINED_PARTS, adapt_head, apply_strategy

FIXTURE = Path(__file__).parent / "data" / "nnunet" / "Dataset990_TransferSegTiny"
TARGET = "TransferSegLib.training.nnunet_network.NnunetNetwork"

PLAIN = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    },
    "kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}

RESENC = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
    "arch_kwargs": {
        "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_blocks_per_stage": [1, 2, 2], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    },
    "kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _spec(arch, classes=3):
    return NetworkSpec(TARGET, dict(arch, in_channels=1, out_channels=classes))


@pytest.mark.parametrize("name, expected", [
    ("torch.nn.modules.conv.Conv3d", nn.Conv3d),
    ("torch.nn.Conv3d", nn.Conv3d),
    ("torch.nn.modules.instancenorm.InstanceNorm3d", nn.InstanceNorm3d),
    ("torch.nn.LeakyReLU", nn.LeakyReLU),
    ("torch.nn.modules.activation.LeakyReLU", nn.LeakyReLU),
    ("torch.nn.modules.dropout.Dropout3d", nn.Dropout3d),
    (None, None),
])
def test_plans_class_names_resolve_through_the_allow_list(name, expected):
    assert resolve_class_name(name, "conv_op", "plans.json") is expected


@pytest.mark.parametrize("name", [
    "os.system", "builtins.eval", "subprocess.Popen", "torch.nn.Module", "torch.load",
    "torch.nn.modules.activation.Conv3d",  # a real class, but not where the name says it is
    "torch.nn.modules.conv.os", "TransferSegLib.jobs.launch.start_worker", "torch.nn.Conv3d.__init__",
])
def test_plans_cannot_name_other_code(name):
    with pytest.raises(ModelError, match="Refusing"):
        resolve_class_name(name, "nonlin", "evil/plans.json")


def test_unknown_architectures_are_refused_before_anything_is_built():
    arch = dict(PLAIN, network_class_name="dynamic_network_architectures.architectures.primus.Primus")
    with pytest.raises(ModelError, match="PlainConvUNet and ResidualEncoderUNet"):
        build_network(_spec(arch))
    arch = dict(PLAIN, network_class_name="os.system")
    with pytest.raises(ModelError):
        build_network(_spec(arch))


def test_a_class_name_outside_kw_requires_import_is_refused():
    arch = json.loads(json.dumps(PLAIN))
    arch["kw_requires_import"] = ["conv_op", "norm_op", "dropout_op"]  # nonlin left as a string
    with pytest.raises(ModelError, match="_kw_requires_import"):
        build_network(_spec(arch))


@pytest.mark.parametrize("arch", [PLAIN, RESENC], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_networks_build_without_deep_supervision_and_keep_nnunet_keys(arch):
    model = build_network(_spec(arch, 4))
    assert isinstance(model, NnunetNetwork)
    out = model(torch.zeros(1, 1, 8, 16, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 8, 16, 16)
    keys = to_nnunet_keys(model.state_dict())
    assert all(not k.startswith("network.") for k in keys)
    assert any(k.startswith("decoder.seg_layers.") for k in keys)
    assert patch_multiple(_spec(arch)) == ((2, 4, 4) if arch is PLAIN else (4, 4, 4))


@pytest.mark.parametrize("arch", [PLAIN, RESENC], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_every_parameter_has_a_part_and_each_strategy_trains_its_parts(arch):
    model = build_network(_spec(arch))
    parts = network_parts(model)
    seen = {parts.part_of(n) for n, _ in model.named_parameters()}
    assert seen == {"encoder", "decoder", "last_block", "head"}
    assert all(parts.part_of(n) == "head" for n, _ in model.named_parameters() if ".seg_layers." in n)
    assert all(parts.part_of(n) == "encoder" for n, _ in model.named_parameters() if n.startswith("network.encoder."))
    for strategy in STRATEGIES:
        counts = apply_strategy(model, strategy)
        trained = {p for p, c in counts.items() if c > 0}
        assert trained == set(TRAINED_PARTS[strategy]), strategy


@pytest.mark.parametrize("arch", [PLAIN, RESENC], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_head_adaptation_maps_every_seg_layer_by_label_name(arch):
    base_labels = ["background", "liver", "spleen", "kidney_left"]
    target_labels = ["background", "pancreas", "liver"]
    torch.manual_seed(0)
    base_state = build_network(_spec(arch, len(base_labels))).state_dict()
    torch.manual_seed(1)
    model = build_network(_spec(arch, len(target_labels)))
    report = adapt_head(model, base_state, base_labels, target_labels)
    assert report.kept == ["background", "liver"] and report.new == ["pancreas"]
    seg_layers = [k for k in model.state_dict() if ".seg_layers." in k and k.endswith(".weight")]
    assert seg_layers and all(k in report.adapted_tensors for k in seg_layers)
    state = model.state_dict()
    for key in seg_layers:
        assert torch.equal(state[key][2], base_state[key][1])  # liver
        assert torch.equal(state[key][0], base_state[key][0])  # background
    body = [k for k in state if ".seg_layers." not in k]
    assert all(torch.equal(state[k], base_state[k]) for k in body)


def test_the_fixture_plans_build_the_network_its_checkpoint_holds():
    folder = next(FIXTURE.iterdir())
    plans = json.loads((folder / "plans.json").read_text())
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    spec = NetworkSpec(TARGET, {"in_channels": 1, "out_channels": 5,
                                "network_class_name": architecture["network_class_name"],
                                "arch_kwargs": architecture["arch_kwargs"],
                                "kw_requires_import": architecture["_kw_requires_import"]})
    from TransferSegLib.models.nnunet_weights import nnunet_state_dict

    model = build_network(spec)
    model.load_state_dict(nnunet_state_dict(folder / "fold_all" / "checkpoint_final.pth"), strict=True)
