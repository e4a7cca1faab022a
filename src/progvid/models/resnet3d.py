"""3-D ResNet backbone (18 / 50 layers) for action recognition and as the HCML trunk.

Layout: video (B, C, T, H, W). Stem: conv 3x7x7, stride (1, 2, 2) + BN + ReLU + max-pool 1x3x3,
stride (1, 2, 2). Stages res2..res5 (`layer1`..`layer4`) use spatial strides 1, 2, 2, 2.

Temporal strides: 1 everywhere by default (no temporal down-sampling in the stem or the stages),
so every level keeps all T time steps and the HCML prime motion blocks always have frame pairs.
`temporal_strides` can set a stride of 2 on later stages (e.g. (1, 1, 2, 2)) to save compute.

Named levels: `level1`..`level4` are the outputs of res2..res5 (spatial /4, /8, /16, /32).
Parameter names follow the usual ResNet ones (conv1, bn1, layer{k}.{i}.conv1, ..., fc).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from progvid.errors import ConfigError

LEVELS: tuple[str, ...] = ("level1", "level2", "level3", "level4")
BASE_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
STEM_WIDTH = 64


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv3d(in_ch, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (carries the stride), 1x1x1 expand by 4 (ResNet-50)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv3d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_ch: int, out_ch: int, stride: tuple[int, int, int]) -> nn.Sequential | None:
    """Projection shortcut (1x1x1 conv + BN) when the shape changes, else identity (None)."""
    if in_ch == out_ch and stride == (1, 1, 1):
        return None
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm3d(out_ch)
    )


ARCHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class ResNet3D(nn.Module):
    """3-D ResNet. `forward_features` gives the named levels; `forward` gives logits."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int,
        width: float = 1.0,
        in_chans: int = 3,
        dropout: float = 0.5,
        temporal_strides: Sequence[int] = (1, 1, 1, 1),
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(temporal_strides) != 4:
            raise ConfigError("resnet3d: layers and temporal_strides need 4 entries (res2..res5)")
        stem = _scaled(STEM_WIDTH, width)
        self.conv1 = nn.Conv3d(
            in_chans, stem, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False
        )
        self.bn1 = nn.BatchNorm3d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        in_ch = stem
        self.feature_channels: dict[str, int] = {}
        stages = []
        for i, (n_blocks, base) in enumerate(zip(layers, BASE_WIDTHS, strict=True)):
            w = _scaled(base, width)
            stride = (int(temporal_strides[i]), 1 if i == 0 else 2, 1 if i == 0 else 2)
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(in_ch, w, stride if j == 0 else (1, 1, 1)))
                in_ch = w * block.expansion
            stages.append(nn.Sequential(*blocks))
            self.feature_channels[LEVELS[i]] = in_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_classes = num_classes
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        """res2..res5, i.e. the modules producing level1..level4."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def head(self, feat: Tensor) -> Tensor:
        """Global average pool over (T, H, W) + dropout + fc -> logits (B, num_classes)."""
        return self.fc(self.dropout(torch.flatten(feat.mean(dim=(2, 3, 4)), 1)))

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """{level1..level4: (B, C_l, T_l, H_l, W_l)}."""
        _check_video(x)
        x = self.stem(x)
        out: dict[str, Tensor] = {}
        for name, stage in zip(LEVELS, self.stages, strict=True):
            x = stage(x)
            out[name] = x
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)["level4"])


def _check_video(x: Tensor) -> None:
    if x.dim() != 5:
        raise ConfigError(f"expected a video (B, C, T, H, W), got shape {tuple(x.shape)}")


def resnet3d(
    depth: int = 18,
    *,
    num_classes: int,
    width: float = 1.0,
    in_chans: int = 3,
    dropout: float = 0.5,
    temporal_strides: Sequence[int] = (1, 1, 1, 1),
) -> ResNet3D:
    """Build a 3-D ResNet-18 or -50; `width` scales every channel count (0.25 for CPU tests)."""
    if depth not in ARCHS:
        raise ConfigError(f"resnet3d depth must be one of {sorted(ARCHS)}, got {depth}")
    if width <= 0:
        raise ConfigError(f"resnet3d width must be > 0, got {width}")
    block, layers = ARCHS[depth]
    return ResNet3D(
        block,
        layers,
        num_classes=num_classes,
        width=width,
        in_chans=in_chans,
        dropout=dropout,
        temporal_strides=temporal_strides,
    )


def resnet3d_from_hparams(hp: Mapping[str, object]) -> ResNet3D:
    """Rebuild from the JSON-safe settings a checkpoint carries (`resnet_depth`, `num_classes`,
    `width`, `dropout`, `temporal_strides`; other keys are ignored), kept on `.hparams`."""
    model = resnet3d(hp["resnet_depth"], num_classes=hp["num_classes"], width=hp["width"],
                     dropout=hp["dropout"], temporal_strides=tuple(hp["temporal_strides"]))
    model.hparams = dict(hp)
    return model
