"""MedicalNet's dilated ResNet: its checkpoints load strictly and its features are
the ones the weights were trained for.

The reference here is written from github.com/Tencent/MedicalNet ``models/resnet.py``
(commit 20f76aa): the parameter names and shapes of its ``ResNet`` and the strides
and dilations of its forward pass (stem stride 2, max-pool stride 2, layer2
stride 2, layer3 and layer4 stride 1 with dilation 2 and 4), and ``train.py``'s
checkpoint layout (``{"ecpoch", "batch_id", "state_dict", "optimizer"}``, keys
prefixed ``module.`` by DataParallel).
"""

from typing import Dict, List, Tuple

import pytest
import torch
from torch.nn import functional as F

from TransferSegLib.specs import KeyMap
from TransferSegLib.models.checkpoints import load_state_dict
from TransferSegLib.training.medicalnet import MedicalNetUNet
from TransferSegLib.specs import NetworkSpec
from TransferSegLib.training.networks import build_network, network_parts

LAYERS = {10: ("basic", [1, 1, 1, 1]), 18: ("basic", [2, 2, 2, 2]), 50: ("bottleneck", [3, 4, 6, 3])}
PLANES = [64, 128, 256, 512]
STRIDES = [1, 2, 1, 1]
DILATIONS = [1, 1, 2, 4]


def _bn(prefix: str, channels: int) -> Dict[str, Tuple[int, ...]]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def medicalnet_layout(depth: int, shortcut: str) -> Dict[str, Tuple[int, ...]]:
    """Parameter names and shapes of MedicalNet's ResNet-``depth`` trunk."""
    kind, counts = LAYERS[depth]
    expansion = 1 if kind == "basic" else 4
    keys = {"conv1.weight": (64, 1, 7, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    for layer, (planes, count, stride) in enumerate(zip(PLANES, counts, STRIDES), start=1):
        for block in range(count):
            p = f"layer{layer}.{block}"
            cin = inplanes if block == 0 else planes * expansion
            if kind == "basic":
                keys.update({f"{p}.conv1.weight": (planes, cin, 3, 3, 3), **_bn(f"{p}.bn1", planes),
                             f"{p}.conv2.weight": (planes, planes, 3, 3, 3), **_bn(f"{p}.bn2", planes)})
            else:
                keys.update({f"{p}.conv1.weight": (planes, cin, 1, 1, 1), **_bn(f"{p}.bn1", planes),
                             f"{p}.conv2.weight": (planes, planes, 3, 3, 3), **_bn(f"{p}.bn2", planes),
                             f"{p}.conv3.weight": (planes * 4, planes, 1, 1, 1), **_bn(f"{p}.bn3", planes * 4)})
            if block == 0 and (stride != 1 or inplanes != planes * expansion) and shortcut == "B":
                keys.update({f"{p}.downsample.0.weight": (planes * expansion, inplanes, 1, 1, 1),
                             **_bn(f"{p}.downsample.1", planes * expansion)})
        inplanes = planes * expansion
    return keys


def _random_state(layout: Dict[str, Tuple[int, ...]], seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".weight") and len(shape) == 1:
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * (0.1 if len(shape) > 1 else 0.05)
    return state


def _save_like_medicalnet(path, state: Dict[str, torch.Tensor]) -> None:
    """As MedicalNet's train.py: DataParallel keys, optimizer state included."""
    params = [torch.nn.Parameter(v.clone()) for k, v in state.items() if v.dtype.is_floating_point]
    optimizer = torch.optim.SGD(params, lr=0.001, momentum=0.9, weight_decay=1e-3)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    torch.save({"ecpoch": 3, "batch_id": 0, "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": optimizer.state_dict()}, str(path))


def reference_trunk(x: torch.Tensor, state: Dict[str, torch.Tensor], depth: int, shortcut: str) -> torch.Tensor:
    """MedicalNet's forward through layer4, in functional form (eval-mode batch norm)."""
    kind, counts = LAYERS[depth]
    expansion = 1 if kind == "basic" else 4

    def bn(t, p):
        return F.batch_norm(t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
                            state[f"{p}.bias"], training=False, eps=1e-5)

    out = F.relu(bn(F.conv3d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    out = F.max_pool3d(out, kernel_size=3, stride=2, padding=1)
    inplanes = 64
    for layer, (planes, count, stride, dilation) in enumerate(zip(PLANES, counts, STRIDES, DILATIONS), start=1):
        for block in range(count):
            p = f"layer{layer}.{block}"
            s = stride if block == 0 else 1
            if kind == "basic":
                y = F.relu(bn(F.conv3d(out, state[f"{p}.conv1.weight"], stride=s, padding=dilation, dilation=dilation),
                              f"{p}.bn1"))
                y = bn(F.conv3d(y, state[f"{p}.conv2.weight"], padding=dilation, dilation=dilation), f"{p}.bn2")
            else:
                y = F.relu(bn(F.conv3d(out, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
                y = F.relu(bn(F.conv3d(y, state[f"{p}.conv2.weight"], stride=s, padding=dilation, dilation=dilation),
                              f"{p}.bn2"))
                y = bn(F.conv3d(y, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            residual = out
            if block == 0 and (s != 1 or inplanes != planes * expansion):
                if shortcut == "B":
                    residual = bn(F.conv3d(out, state[f"{p}.downsample.0.weight"], stride=s), f"{p}.downsample.1")
                else:
                    pooled = F.avg_pool3d(out, kernel_size=1, stride=s)
                    zeros = pooled.new_zeros((pooled.shape[0], planes * expansion - pooled.shape[1]) + pooled.shape[2:])
                    residual = torch.cat([pooled, zeros], 1)
            out = F.relu(y + residual)
        inplanes = planes * expansion
    return out


@pytest.mark.parametrize("depth, shortcut", [(10, "B"), (18, "A"), (50, "B")])
def test_a_medicalnet_checkpoint_loads_strictly_and_gives_medicalnets_features(tmp_path, depth, shortcut):
    layout = medicalnet_layout(depth, shortcut)
    state = _random_state(layout, seed=depth)
    path = tmp_path / f"resnet_{depth}_23dataset.pth"
    _save_like_medicalnet(path, state)

    spec = NetworkSpec.from_dict({"_target_": "TransferSegLib.training.medicalnet.MedicalNetUNet", "spatial_dims": 3,
                                  "in_channels": 1, "out_channels": 3, "depth": depth})
    model = build_network(spec)
    encoder_keys = {k[len("encoder."):]: tuple(v.shape) for k, v in model.state_dict().items()
                    if k.startswith("encoder.")}
    assert encoder_keys == layout  # same names, same shapes, nothing more, nothing less

    key_map = KeyMap(wrapper_keys=["state_dict"], strip_prefixes=["module."], add_prefix="encoder.")
    loaded, report = load_state_dict(path, key_map, model)  # torch.load(weights_only=True) inside
    assert not report.unexpected and not report.shape_mismatch and len(report.loaded) == len(layout)
    model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in loaded.items()}, strict=True)

    model.eval()
    x = torch.randn(1, 1, 24, 32, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.encoder(x)
        expected = reference_trunk(x, state, depth, shortcut)
        logits = model(x)
    assert features[-1].shape == expected.shape == (1, 512 * (4 if depth == 50 else 1), 3, 4, 5)  # 1/8: dilated
    torch.testing.assert_close(features[-1], expected, rtol=1e-4, atol=1e-4)
    assert logits.shape == (1, 3, 24, 32, 40)


def test_monais_resnet_would_see_the_same_weights_on_a_coarser_grid():
    """Why the project has its own class: MONAI's ResNet takes the same tensors but
    strides layer3 and layer4 by 2 (with MONAI's default stride-1 stem: 1/16 of the
    input, against MedicalNet's 1/8 after its stride-2 stem)."""
    from monai.networks.nets import resnet10

    monai_net = resnet10(spatial_dims=3, n_input_channels=1, shortcut_type="B", bias_downsample=False,
                         feed_forward=False)
    ours = MedicalNetUNet(depth=10).encoder
    theirs_keys = {k: tuple(v.shape) for k, v in monai_net.state_dict().items()}
    ours_keys = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert ours_keys == theirs_keys
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        trunk = monai_net.layer4(monai_net.layer3(monai_net.layer2(monai_net.layer1(
            monai_net.maxpool(monai_net.act(monai_net.bn1(monai_net.conv1(x))))))))
    assert tuple(trunk.shape[2:]) == (2, 2, 2) and tuple(ours(x)[-1].shape[2:]) == (4, 4, 4)


def test_its_parts_are_named_for_the_transfer_strategies():
    model = MedicalNetUNet(depth=10, out_channels=2)
    parts = network_parts(model)
    names: List[str] = [n for n, _ in model.named_parameters()]
    assert {parts.part_of(n) for n in names if n.startswith("encoder.")} == {"encoder"}
    assert parts.part_of("head.weight") == "head" and parts.part_of("decoder.3.block.0.weight") == "last_block"
    assert parts.part_of("decoder.0.block.0.weight") == "decoder"
