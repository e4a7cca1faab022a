"""HCML: InfoNCE and its negative sets, the assembled network, progressive freezing, deployment."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from progvid.errors import ConfigError
from progvid.models.hcml import (
    HCMLNet,
    count_macs,
    count_params,
    deploy_overhead,
    trainable_names,
)
from progvid.models.losses import info_nce, info_nce_bounds, negative_masks, sample_locations
from progvid.models.motion import FlowNet
from progvid.models.resnet3d import resnet3d


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops: a second thread only adds synchronization cost on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_info_nce_perfect_predictor_is_minimal() -> None:
    torch.manual_seed(0)
    b, n, t, c, tau = 2, 4, 3, 32, 0.2
    k = b * n * t
    # orthonormal targets: the perfect predictor's loss is then exactly known
    q, _ = torch.linalg.qr(torch.randn(c, k))
    target = q.t().reshape(b, n, t, c) * 3.0  # the scale must not matter (cosine)
    perfect = info_nce(target.clone(), target, tau)
    floor, orthogonal = info_nce_bounds(k, tau)
    assert floor <= perfect.item()
    assert perfect.item() == pytest.approx(orthogonal, rel=1e-4)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        while (perm == torch.arange(n)).any():  # a derangement: every prediction is wrong
            perm = torch.randperm(n, generator=g)
        assert info_nce(target[:, perm], target, tau) > perfect + 1.0
    random_pred = info_nce(torch.randn(b, n, t, c), target, tau)
    assert random_pred > perfect


def test_info_nce_matches_a_loop_over_anchors() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, 3, 2, 5), torch.randn(2, 3, 2, 5)
    p = nn.functional.normalize(pred.reshape(-1, 5), dim=1)
    t = nn.functional.normalize(target.reshape(-1, 5), dim=1)
    terms = [-(p[i] @ t[i] / 0.5 - torch.logsumexp(t @ p[i] / 0.5, 0)) for i in range(12)]
    torch.testing.assert_close(info_nce(pred, target, 0.5), torch.stack(terms).mean())
    with pytest.raises(ConfigError):
        info_nce(pred, target[:, :2], 0.5)


def test_negative_masks_counts_follow_the_seed() -> None:
    b, n, t = 3, 4, 5
    m = negative_masks(b, n, t)
    k = b * n * t
    assert {name: mask.shape for name, mask in m.items()} == dict.fromkeys(m, (k, k))
    assert (m["positive"].sum(1) == 1).all() and m["positive"].diagonal().all()
    assert (m["spatial"].sum(1) == (n - 1) * t).all()
    assert (m["temporal"].sum(1) == t - 1).all()
    assert (m["easy"].sum(1) == (b - 1) * n * t).all()
    cover = m["positive"].int() + m["spatial"].int() + m["temporal"].int() + m["easy"].int()
    assert (cover == 1).all()  # a partition of all candidates
    # same flattening as info_nce: row i of a (B, N, T, C) tensor reshaped to (-1, C)
    ids = torch.stack(torch.meshgrid(torch.arange(b), torch.arange(n), torch.arange(t),
                                     indexing="ij"), dim=-1).reshape(-1, 3)
    same = ids[:, None, :] == ids[None, :, :]
    assert torch.equal(m["temporal"], same[..., 0] & same[..., 1] & ~same[..., 2])


def test_sample_locations() -> None:
    g = torch.Generator().manual_seed(0)
    idx = sample_locations(4, 5, 6, g)
    assert idx.shape == (6,) and idx.unique().numel() == 6 and 0 <= idx.min() and idx.max() < 20
    batch = sample_locations(4, 5, 6, torch.Generator().manual_seed(1), batch=3)
    assert batch.shape == (3, 6) and all(row.unique().numel() == 6 for row in batch)
    again = sample_locations(4, 5, 6, torch.Generator().manual_seed(1), batch=3)
    assert torch.equal(batch, again)
    assert sorted(sample_locations(2, 2, 16, g).tolist()) == [0, 1, 2, 3]  # clamped to h*w


def small_net(**kw) -> HCMLNet:
    torch.manual_seed(0)
    backbone = resnet3d(18, num_classes=5, width=0.25)
    flow = FlowNet(3, feat_channels=(4, 8), dense_channels=(16, 16, 12, 8, 8))
    return HCMLNet(backbone, flow_net=flow, levels=(1, 2, 3), num_samples=8, **kw)


VIDEO_SHAPE = (2, 3, 4, 32, 32)


def test_joint_forward_outputs_and_losses() -> None:
    net = small_net()
    video = torch.randn(VIDEO_SHAPE)
    out = net(video, mode="joint", generator=torch.Generator().manual_seed(0))
    assert out.logits is not None and out.logits.shape == (2, 5)
    assert out.flow is not None and out.flow.shape == (2, 2, 4, 32, 32)
    assert sorted(out.motion) == [0, 1, 2, 3] and sorted(out.contrastive) == [1, 2, 3]
    assert out.motion[0].shape == (2, 8, 4, 8, 8) and out.motion[1].shape == (2, 4, 4, 8, 8)
    assert out.recon is not None and torch.isfinite(out.recon)
    cls = nn.functional.cross_entropy(out.logits, torch.tensor([0, 1]))
    total = out.total(cls, recon_weight=0.5, contrastive_weight={1: 1.0, 2: 0.5, 3: 0.25})
    expected = cls + 0.5 * out.recon + out.contrastive[1] + 0.5 * out.contrastive[2] \
        + 0.25 * out.contrastive[3]
    torch.testing.assert_close(total, expected)
    total.backward()
    assert net.flow_net.head.weight.grad is not None
    assert net.predictors["3"].w1.weight.grad is not None
    flow_only = net(video, mode="flow")
    assert flow_only.logits is None and not flow_only.contrastive and flow_only.recon is not None
    with pytest.raises(ConfigError):
        net(video, mode="pretrain")
    with pytest.raises(ConfigError):
        net(video[:, :, :1], mode="motion", levels=[2])  # T = 1: no future step to predict


def test_levels_with_temporal_downsampling_resample_the_lower_level() -> None:
    torch.manual_seed(0)
    backbone = resnet3d(18, num_classes=5, width=0.25, temporal_strides=(1, 2, 1, 1))
    flow = FlowNet(3, feat_channels=(4, 8), dense_channels=(8, 8, 8, 8, 8))
    net = HCMLNet(backbone, flow_net=flow, levels=(1, 2), num_samples=4)
    out = net(torch.randn(2, 3, 6, 32, 32), mode="motion")
    assert out.motion[1].shape[2] == 6 and out.motion[2].shape[2] == 3  # T halved at level 2
    assert all(torch.isfinite(v) for v in out.contrastive.values()) and out.logits is None


def test_zero_init_fusion_keeps_backbone_logits() -> None:
    net = small_net().eval()
    video = torch.randn(VIDEO_SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(net(video, mode="infer").logits, net.backbone(video))


def test_freeze_below_blocks_gradients_and_batchnorm_updates() -> None:
    net = small_net()
    params = net.trainable_for(2)  # phase 2: levels 0 and 1 frozen
    names = trainable_names(net, params)
    assert names and all(n.startswith(("trunk.backbone.layer2", "trunk.pmb.2", "trunk.fusion.2",
                                       "predictors.2")) for n in names)
    net.train()  # must not wake the frozen BatchNorms
    frozen = net.level_modules(0) + net.level_modules(1)
    frozen_bn = [m for f in frozen for m in f.modules() if isinstance(m, nn.BatchNorm3d)]
    assert frozen_bn and not any(m.training for m in frozen_bn)
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in frozen_bn]
    live_bn = net.trunk.pmb["2"].bn
    live_before = live_bn.running_mean.clone()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(params, lr=0.1)
    out = net(torch.randn(VIDEO_SHAPE), mode="motion", levels=[2])
    assert sorted(out.contrastive) == [2] and out.logits is None
    out.contrastive[2].backward()
    opt.step()
    for f in frozen:
        assert all(p.grad is None and not p.requires_grad for p in f.parameters())
    for m, (mean, var) in zip(frozen_bn, stats, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
    assert not torch.equal(live_bn.running_mean, live_before)
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(names)
    net.trainable_for("joint")
    assert all(p.requires_grad for p in net.parameters()) and net.flow_net.training


def test_phase_zero_trains_only_the_flow_net() -> None:
    net = small_net()
    params = net.trainable_for(0)
    assert {id(p) for p in params} == {id(p) for p in net.flow_net.parameters()}
    net(torch.randn(VIDEO_SHAPE), mode="flow").recon.backward()
    assert all(p.grad is None for p in net.trunk.parameters())
    with pytest.raises(ConfigError):
        net.trainable_for(4)


def test_deploy_matches_training_model_and_drops_side_branch() -> None:
    net = small_net()
    with torch.no_grad():  # make the fusion non-trivial, as after training
        for f in net.trunk.fusion.values():
            f.proj.weight.normal_(std=0.1)
    video = torch.randn(VIDEO_SHAPE)
    net.train()
    net(video, mode="joint")  # a training forward moves the BatchNorm statistics
    net.eval()
    deployed = net.deploy()
    assert not any(isinstance(m, FlowNet) for m in deployed.modules())
    with torch.no_grad():
        ref = net(video, mode="infer").logits
        torch.testing.assert_close(deployed(video), ref)
        assert not torch.allclose(net.backbone(video), ref)
    assert count_params(deployed) < count_params(net)
    report = deploy_overhead(net, video)
    assert report["params_deploy"] > report["params_backbone"]
    assert report["macs_deploy"] > report["macs_backbone"] > 0
    assert 0 < report["macs_overhead"] < 1.0


def test_count_macs_of_a_convolution() -> None:
    conv = nn.Conv3d(2, 3, (1, 3, 3), padding=(0, 1, 1), bias=False)
    assert count_macs(conv, torch.randn(1, 2, 2, 4, 4)) == 2 * 16 * 3 * 2 * 9
