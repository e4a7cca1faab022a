"""Cost volume, warping, photometric/smoothness losses, flow net, prime motion block, fusion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from progvid.errors import ConfigError
from progvid.models import motion
from progvid.models.losses import (
    charbonnier,
    photometric_loss,
    reconstruction_loss,
    smoothness_loss,
)
from progvid.models.motion import (
    FlowNet,
    Fusion,
    LevelPredictor,
    PrimeMotionBlock,
    cost_volume,
    displacements,
    resample_to,
    warp,
)


@pytest.fixture(autouse=True)
def one_thread():
    """These ops are tiny: a second thread only adds synchronization cost (large on a loaded
    two-core machine), so run single-threaded and restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def naive_cost_volume(f1: torch.Tensor, f2: torch.Tensor, d: int, s: int) -> torch.Tensor:
    offs = displacements(d, s)
    n, _, h, w = f1.shape
    a, b = F.normalize(f1, dim=1, eps=1e-6), F.normalize(f2, dim=1, eps=1e-6)
    out = torch.zeros(n, len(offs) ** 2, h, w, dtype=f1.dtype)
    for i, dy in enumerate(offs):
        for j, dx in enumerate(offs):
            for y in range(h):
                for x in range(w):
                    if 0 <= y + dy < h and 0 <= x + dx < w:
                        out[:, i * len(offs) + j, y, x] = (a[:, :, y, x] * b[:, :, y + dy, x + dx]).sum(1)
    return out


@pytest.mark.parametrize(("d", "s"), [(2, 1), (3, 2), (6, 2)])
def test_cost_volume_equals_naive_loop(d: int, s: int) -> None:
    torch.manual_seed(0)
    f1, f2 = torch.randn(2, 3, 5, 6, dtype=torch.double), torch.randn(2, 3, 5, 6, dtype=torch.double)
    out = cost_volume(f1, f2, d, s)
    assert out.shape == (2, (2 * (d // s) + 1) ** 2, 5, 6)
    torch.testing.assert_close(out, naive_cost_volume(f1, f2, d, s))


def test_cost_volume_default_has_49_channels_and_gradcheck() -> None:
    assert len(displacements(6, 2)) ** 2 == 49
    torch.manual_seed(0)
    a = torch.randn(1, 4, 5, 7, dtype=torch.double, requires_grad=True)
    b = torch.randn(1, 4, 5, 7, dtype=torch.double, requires_grad=True)
    assert cost_volume(a.detach(), b.detach()).shape == (1, 49, 5, 7)
    assert torch.autograd.gradcheck(lambda x, y: cost_volume(x, y, 2, 1), (a, b))


def test_cost_volume_peaks_at_true_offset() -> None:
    torch.manual_seed(0)
    f1 = torch.randn(1, 8, 16, 16)
    f2 = torch.roll(f1, shifts=(2, -4), dims=(2, 3))  # f2(y + 2, x - 4) = f1(y, x)
    out = cost_volume(f1, f2, 6, 2)
    offs = displacements(6, 2)
    k = offs.index(2) * len(offs) + offs.index(-4)  # dy outer, dx inner
    best = out.argmax(dim=1)[0]
    assert (best[0:14, 4:16] == k).all()  # interior: y + 2 and x - 4 inside, no wrap-around
    torch.testing.assert_close(out[0, k, 0:14, 4:16], torch.ones(14, 12))


def test_cost_volume_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        cost_volume(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 5))
    with pytest.raises(ConfigError):
        cost_volume(torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4), backend="cuda")


@pytest.mark.skipif(motion._sampler is None, reason="spatial_correlation_sampler not installed")
def test_sampler_backend_matches_torch() -> None:  # pragma: no cover - optional package
    f1, f2 = torch.randn(2, 8, 9, 11), torch.randn(2, 8, 9, 11)
    ref = cost_volume(f1, f2, 6, 2, backend="torch")
    torch.testing.assert_close(cost_volume(f1, f2, 6, 2, backend="sampler"), ref)


def test_warp_identity_translation_and_mask() -> None:
    torch.manual_seed(0)
    img = torch.randn(2, 3, 7, 9)
    out, valid = warp(img, torch.zeros(2, 2, 7, 9))
    torch.testing.assert_close(out, img)
    assert valid.shape == (2, 1, 7, 9) and bool((valid == 1).all())
    u, v = 2, -1
    flow = torch.zeros(2, 2, 7, 9)
    flow[:, 0], flow[:, 1] = u, v
    out, valid = warp(img, flow)
    torch.testing.assert_close(out[:, :, 1:, :-2], img[:, :, :-1, 2:])  # out(y,x) = img(y-1,x+2)
    ys, xs = torch.meshgrid(torch.arange(7), torch.arange(9), indexing="ij")
    inside = (xs + u <= 8) & (ys + v >= 0)
    assert torch.equal(valid[0, 0].bool(), inside)


def test_warp_subpixel_is_bilinear() -> None:
    img = torch.arange(12.0).view(1, 1, 3, 4)
    flow = torch.zeros(1, 2, 3, 4)
    flow[:, 0] = 0.5
    out, valid = warp(img, flow)
    torch.testing.assert_close(out[0, 0, :, :3], img[0, 0, :, :3] + 0.5)
    assert valid[0, 0, :, 3].sum() == 0 and valid[0, 0, :, :3].all()


def test_warp_keeps_subpixel_flow_in_low_precision() -> None:
    # A bf16 flow (what the flow network gives under bf16 autocast) is warped at float32
    # positions: in bf16, x + 0.25 rounds back to x from x = 64 on, and the motion vanished.
    img = torch.arange(256.0).view(1, 1, 1, 256).expand(1, 1, 2, 256).contiguous()
    flow = torch.zeros(1, 2, 2, 256)
    flow[:, 0] = 0.25
    ref, ref_valid = warp(img, flow)
    for dtype in (torch.bfloat16, torch.float16):
        out, valid = warp(img, flow.to(dtype))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref)
        assert torch.equal(valid, ref_valid)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = warp(img, flow.to(torch.bfloat16))
    torch.testing.assert_close(out[0, 0, 0, 200:210], img[0, 0, 0, 200:210] + 0.25)
    low, _ = warp(img.to(torch.bfloat16), flow.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16  # the image's precision is kept for the result


def test_photometric_loss_ignores_out_of_bounds_pixels() -> None:
    torch.manual_seed(0)
    f1, f2 = torch.rand(2, 3, 8, 10), torch.rand(2, 3, 8, 10)
    flow = torch.zeros(2, 2, 8, 10)
    flow[:, 0] = 3.0  # columns x > 6 sample outside; frame2 columns 0..2 are never sampled
    base = photometric_loss(f1, f2, flow)
    f1_bad, f2_bad = f1.clone(), f2.clone()
    f1_bad[..., 7:] = float("inf")
    f2_bad[..., :3] = 1e6
    torch.testing.assert_close(photometric_loss(f1_bad, f2_bad, flow), base)
    warped, valid = warp(f2, flow)
    mask = valid.expand_as(f1)
    manual = (charbonnier(f1 - warped) * mask).sum() / mask.sum()
    torch.testing.assert_close(base, manual)


def test_charbonnier_and_smoothness() -> None:
    x = torch.tensor([0.0, 0.5, -2.0])
    torch.testing.assert_close(charbonnier(x), (x**2 + 1e-6) ** 0.45)
    const = torch.ones(1, 2, 6, 6) * 3.0
    floor = 4 * (1e-6) ** 0.45  # constant flow: only the eps floor of the four terms
    torch.testing.assert_close(smoothness_loss(const), torch.tensor(floor))
    ramp = torch.zeros(1, 2, 6, 6)
    ramp[:, 0] = torch.arange(6.0)
    rho1, rho0 = charbonnier(torch.tensor(1.0)), charbonnier(torch.tensor(0.0))
    # seed eq. 4: rho(u_x) + rho(u_y) + rho(v_x) + rho(v_y), each a mean over pixels
    torch.testing.assert_close(smoothness_loss(ramp), rho1 + 3 * rho0)
    f = torch.rand(1, 3, 6, 6)
    total = reconstruction_loss(f, f, ramp, zeta=0.5)
    torch.testing.assert_close(total, photometric_loss(f, f, ramp) + 0.5 * smoothness_loss(ramp))


def sinusoid_pairs(n: int, size: int, shift: tuple[float, float], g: torch.Generator, k: int = 6):
    """Random smooth textures (sums of sinusoids, wavelengths 6..16 px) and an exact sub-pixel
    translation of them: frame2(x, y) = frame1(x - u, y - v)."""
    ys = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1, 1)
    xs = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size, 1)
    freq = 2 * math.pi / (6 + 10 * torch.rand(n, 3, 1, 1, k, generator=g))
    ang = 2 * math.pi * torch.rand(n, 3, 1, 1, k, generator=g)
    phase = 2 * math.pi * torch.rand(n, 3, 1, 1, k, generator=g)
    kx, ky = freq * torch.cos(ang), freq * torch.sin(ang)

    def render(dx: float, dy: float) -> torch.Tensor:
        return torch.sin(kx * (xs - dx) + ky * (ys - dy) + phase).mean(-1)

    return render(0.0, 0.0), render(*shift)


def test_flow_net_learns_a_global_translation() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    u, v = 1.5, -1.0
    net = FlowNet(3, feat_channels=(8, 16), dense_channels=(32, 32, 24, 16, 8))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        f1, f2 = sinusoid_pairs(4, 32, (u, v), g)
        flow, _ = net(f1, f2)
        loss = reconstruction_loss(f1, f2, flow)
        opt.zero_grad()
        loss.backward()
        opt.step()
    f1, f2 = sinusoid_pairs(8, 32, (u, v), g)
    with torch.no_grad():
        flow, hidden = net(f1, f2)
    assert flow.shape == (8, 2, 32, 32) and hidden.shape == (8, 8, 8, 8)
    inner = flow[:, :, 4:-4, 4:-4]
    epe = ((inner[:, 0] - u) ** 2 + (inner[:, 1] - v) ** 2).sqrt().mean()
    assert epe < 0.5, f"end-point error {epe:.3f} px"


def test_flow_net_clip_pairs_adjacent_frames_and_last_with_itself() -> None:
    torch.manual_seed(0)
    net = FlowNet(3, feat_channels=(4, 8), dense_channels=(8, 8, 8, 8, 4)).eval()
    video = torch.randn(2, 3, 3, 16, 16)
    flow, p0 = net.forward_clip(video)
    assert flow.shape == (2, 2, 3, 16, 16) and p0.shape == (2, 4, 3, 4, 4)
    f_pair, h_pair = net(video[:, :, 0], video[:, :, 1])
    torch.testing.assert_close(flow[:, :, 0], f_pair, atol=1e-5, rtol=1e-4)
    f_last, h_last = net(video[:, :, 2], video[:, :, 2])
    torch.testing.assert_close(flow[:, :, 2], f_last, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p0[:, :, 2], h_last, atol=1e-5, rtol=1e-4)


def test_prime_motion_block_shapes_and_fusion_identity_at_init() -> None:
    torch.manual_seed(0)
    pmb = PrimeMotionBlock(32, beta=4)
    assert pmb.reduced_channels == 8 and pmb.cost_channels == 49
    x = torch.randn(2, 32, 3, 6, 6, requires_grad=True)
    p = pmb(x)
    assert p.shape == (2, 8, 3, 6, 6) and bool((p >= 0).all())
    fusion = Fusion(8, 32)
    z = fusion(x, p)
    torch.testing.assert_close(z, x)
    z.sum().backward()
    assert fusion.proj.weight.grad is not None and fusion.proj.weight.grad.abs().sum() > 0
    assert all(q.grad is not None for q in pmb.parameters())


def test_level_predictor_and_resampling() -> None:
    pred = LevelPredictor(6, 4, hidden=10, deltas=(1, 2, 3))
    out = pred(torch.randn(2, 5, 3, 6), torch.randn(2, 5, 3, 4))
    assert sorted(out) == [1, 2, 3] and all(o.shape == (2, 5, 3, 4) for o in out.values())
    assert len(pred.w2) == 3 and pred.w1.in_features == 10  # one shared W1
    lower = torch.arange(16.0).view(1, 1, 1, 4, 4).repeat(1, 2, 2, 1, 1)
    down = resample_to(lower, (2, 2, 2))
    torch.testing.assert_close(down[0, 0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert resample_to(lower, (2, 8, 8)).shape == (1, 2, 2, 8, 8)
    assert resample_to(lower, (2, 4, 4)) is lower
