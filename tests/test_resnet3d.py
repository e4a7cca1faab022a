"""3-D ResNet backbone: level shapes, logits, gradients to every parameter, builder errors."""

from __future__ import annotations

import pytest
import torch

from progvid.errors import ConfigError
from progvid.models.resnet3d import LEVELS, resnet3d


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: a second thread only adds synchronization cost on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# width 0.25: res2..res5 base widths 16, 32, 64, 128 (x4 for the bottleneck of ResNet-50)
EXPECTED = {18: (16, 32, 64, 128), 50: (64, 128, 256, 512)}


@pytest.mark.parametrize("depth", [18, 50])
def test_levels_logits_and_gradients(depth: int) -> None:
    torch.manual_seed(0)
    net = resnet3d(depth, num_classes=7, width=0.25)
    x = torch.randn(2, 3, 4, 32, 32)
    feats = net.forward_features(x)
    assert list(feats) == list(LEVELS)
    for i, name in enumerate(LEVELS):
        side = 32 // (4 * 2**i)  # stem /4, then res3..res5 halve
        assert feats[name].shape == (2, EXPECTED[depth][i], 4, side, side)  # T kept: stride 1
        assert net.feature_channels[name] == EXPECTED[depth][i]
    logits = net(x)
    assert logits.shape == (2, 7)
    logits.square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_temporal_strides_in_later_stages() -> None:
    net = resnet3d(18, num_classes=3, width=0.125, temporal_strides=(1, 1, 2, 2))
    feats = net.forward_features(torch.randn(1, 3, 8, 32, 32))
    assert [f.shape[2] for f in feats.values()] == [8, 8, 4, 2]


def test_eval_is_deterministic_and_dropout_only_in_train() -> None:
    net = resnet3d(18, num_classes=3, width=0.125, dropout=0.9).eval()
    x = torch.randn(1, 3, 2, 32, 32)
    assert torch.equal(net(x), net(x))


def test_builder_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        resnet3d(34, num_classes=3)
    with pytest.raises(ConfigError):
        resnet3d(18, num_classes=3, width=0.0)
    with pytest.raises(ConfigError):
        resnet3d(18, num_classes=3, width=0.125)(torch.randn(3, 32, 32))
