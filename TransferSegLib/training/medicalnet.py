"""MedicalNet's 3D ResNet encoder (Tencent Med3D) under a U-Net decoder.

MedicalNet's ResNets are not MONAI's: after a stride-2 stem, a stride-2 max-pool
and a stride-2 ``layer2``, its ``layer3`` and ``layer4`` keep the resolution
(stride 1) and dilate their 3x3x3 convolutions by 2 and 4 (github.com/Tencent/
MedicalNet, ``models/resnet.py``). MONAI's ResNet strides by 2 there. Loaded into
MONAI's, the pretrained weights fit tensor for tensor, yet every layer3/layer4
filter is applied on a grid 2x / 4x coarser than the one it learned on: other
features. This encoder reproduces MedicalNet's layers with MedicalNet's parameter
names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``; residual shortcut ``A``
(parameter-free: average-pool and zero channels) or ``B`` (1x1x1 convolution, no
bias, + batch norm)), so a MedicalNet checkpoint loads strictly into ``encoder``.

The decoder and head are new (MedicalNet's own segmentation head is a per-task
layer trained on its 23 datasets and is not published for transfer): skip
connections from the stem (1/2), ``layer1`` (1/4) and ``layer2`` + ``layer4``
(1/8), up to full resolution.
"""

from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: depth -> (block, blocks per layer); from MedicalNet's resnet10 .. resnet200.
DEPTHS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
          152: ("bottleneck", (3, 8, 36, 3)), 200: ("bottleneck", (3, 24, 36, 3))}
#: The shortcut each published MedicalNet checkpoint was trained with (its README).
PUBLISHED_SHORTCUT = {10: "B", 18: "A", 34: "A", 50: "B", 101: "B", 152: "B", 200: "B"}


def _conv3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class _ZeroPadShortcut(nn.Module):
    """Shortcut ``A``: sub-sample by average pooling (kernel 1) and append zero channels."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        pad = out.new_zeros((out.shape[0], self.out_channels - out.shape[1]) + tuple(out.shape[2:]))
        return torch.cat([out, pad], dim=1)


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, downsample) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv3(cin, planes, stride, dilation), nn.BatchNorm3d(planes)
        self.conv2, self.bn2 = _conv3(planes, planes, 1, dilation), nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, downsample) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv3d(cin, planes, 1, bias=False), nn.BatchNorm3d(planes)
        self.conv2, self.bn2 = _conv3(planes, planes, stride, dilation), nn.BatchNorm3d(planes)
        self.conv3, self.bn3 = nn.Conv3d(planes, planes * 4, 1, bias=False), nn.BatchNorm3d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class MedicalNetEncoder(nn.Module):
    """The dilated ResNet trunk; ``forward`` returns the stem, layer1, layer2 and
    layer4 features (1/2, 1/4, 1/8, 1/8 of the input size)."""

    def __init__(self, depth: int = 10, in_channels: int = 1, shortcut_type: str = "B") -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"MedicalNet has no ResNet-{depth}; depths are {sorted(DEPTHS)}")
        if shortcut_type not in ("A", "B"):
            raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}")
        kind, counts = DEPTHS[depth]
        block = _Basic if kind == "basic" else _Bottleneck
        self.shortcut_type = shortcut_type
        self.inplanes = 64
        self.conv1 = nn.Conv3d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.layer1 = self._layer(block, 64, counts[0], 1, 1)
        self.layer2 = self._layer(block, 128, counts[1], 2, 1)
        self.layer3 = self._layer(block, 256, counts[2], 1, 2)
        self.layer4 = self._layer(block, 512, counts[3], 1, 4)
        self.channels = [64, 64 * block.expansion, 128 * block.expansion, 512 * block.expansion]
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def _layer(self, block, planes: int, count: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = None
        out = planes * block.expansion
        if stride != 1 or self.inplanes != out:
            downsample = (_ZeroPadShortcut(out, stride) if self.shortcut_type == "A" else
                          nn.Sequential(nn.Conv3d(self.inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm3d(out)))
        layers = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = out
        layers += [block(out, planes, 1, dilation, None) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        stem = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(F.max_pool3d(stem, kernel_size=3, stride=2, padding=1))
        f2 = self.layer2(f1)
        return [stem, f1, f2, self.layer4(self.layer3(f2))]


class _Up(nn.Module):
    """Upsample x2 (trilinear), concatenate the skip, two 3x3x3 conv + instance norm + ReLU."""

    def __init__(self, cin: int, skip: int, cout: int, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.block = nn.Sequential(
            nn.Conv3d(cin + skip, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
            nn.LeakyReLU(0.01, inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if x.shape[2:] != skip.shape[2:]:
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.block(torch.cat([x, skip], dim=1))


class MedicalNetUNet(nn.Module):
    """Segmentation network: MedicalNet encoder (``encoder.*``, the pretrained part)
    + a new decoder (``decoder.*``) + a 1x1x1 head (``head``). Patch sides must be
    multiples of 8 (three stride-2 stages)."""

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2, depth: int = 10,
                 shortcut_type: str = "", decoder_channels: Sequence[int] = (128, 64, 32, 16)) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError("MedicalNet's networks are 3D")
        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs 4 widths, got {list(decoder_channels)}")
        shortcut = shortcut_type or PUBLISHED_SHORTCUT.get(depth, "B")
        self.encoder = MedicalNetEncoder(depth, in_channels, shortcut)
        stem, c1, c2, c4 = self.encoder.channels
        d = list(decoder_channels)
        self.input_block = nn.Sequential(nn.Conv3d(in_channels, d[3], 3, padding=1, bias=False),
                                         nn.InstanceNorm3d(d[3], affine=True), nn.LeakyReLU(0.01, inplace=True))
        self.decoder = nn.ModuleList([_Up(c4, c2, d[0]), _Up(d[0], c1, d[1]), _Up(d[1], stem, d[2]),
                                      _Up(d[2], d[3], d[3])])
        self.head = nn.Conv3d(d[3], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem, f1, f2, f4 = self.encoder(x)
        y = self.decoder[0](f4, f2)
        y = self.decoder[1](y, f1)
        y = self.decoder[2](y, stem)
        y = self.decoder[3](y, self.input_block(x))
        return self.head(y)

    @staticmethod
    def part_prefixes() -> Dict[str, List[str]]:
        """Parameter-name prefixes of its parts (``training.networks.network_parts``)."""
        return {"encoder": ["encoder"], "decoder": ["input_block", "decoder"], "last_block": ["decoder.3"],
                "head": ["head"]}
