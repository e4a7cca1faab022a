"""Video ViT encoder: position table, token order, shapes, drop path, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from progvid.errors import ConfigError, ProgvidError
from progvid.models import ENCODER_SIZES, VisionTransformer, build_encoder, sincos_table
from progvid.models.vit import Attention, DropPath


def tiny_encoder(**kw) -> VisionTransformer:
    args = dict(img_size=32, patch_size=8, num_frames=4, embed_dim=64, depth=2, num_heads=4)
    args.update(kw)
    return VisionTransformer(**args)


def test_sincos_table_matches_formula() -> None:
    n, d = 12, 16
    table = sincos_table(n, d)
    ref = torch.empty(n, d, dtype=torch.float64)
    for pos in range(n):
        for j in range(d):
            angle = pos / math.pow(10000, 2 * (j // 2) / d)
            ref[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    assert table.dtype == torch.float32 and table.shape == (n, d)
    torch.testing.assert_close(table, ref.float(), atol=1e-6, rtol=0)


def test_shorter_clip_table_is_prefix_and_cached() -> None:
    long, short = sincos_table(128, 64), sincos_table(16, 64)
    assert torch.equal(long[:16], short)
    assert sincos_table(16, 64) is short  # cached per (n, dim, device)


def test_position_table_is_not_state() -> None:
    enc = tiny_encoder()
    assert not any("pos" in k for k in enc.state_dict())
    assert not any("pos" in n for n, _ in enc.named_parameters())


@pytest.mark.parametrize("frames", [2, 4, 8, 12, 16])
def test_shapes_for_any_frame_count(frames: int) -> None:
    enc = tiny_encoder().eval()
    x = torch.randn(2, 3, frames, 32, 32)
    n = enc.num_tokens(frames)
    assert n == frames // 2 * 16
    with torch.no_grad():
        assert enc(x).shape == (2, n, 64)
        mask = torch.zeros(2, n, dtype=torch.bool)
        mask[:, : n // 2] = True
        assert enc(x, mask).shape == (2, n - n // 2, 64)


def test_tokens_ordered_t_h_w() -> None:
    enc = tiny_encoder(patch_size=8)
    x = torch.zeros(1, 3, 4, 32, 32)
    x[:, :, 2:4, 16:24, 24:32] = 1.0  # cube (t=1, h=2, w=3) on a 2x4x4 grid
    with torch.no_grad():
        tokens = enc.patch_embed(x)[0] - enc.patch_embed.proj.bias
    changed = tokens.abs().sum(-1).nonzero().flatten().tolist()
    assert changed == [1 * 16 + 2 * 4 + 3]


def test_attention_matches_manual_computation() -> None:
    torch.manual_seed(0)
    attn = Attention(16, 2)
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, 5, 16)
    wq, wk, wv = attn.qkv.weight.chunk(3)
    q, k, v = x @ wq.T + attn.q_bias, x @ wk.T, x @ wv.T + attn.v_bias  # no key bias

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(2, 5, 2, 8).transpose(1, 2)

    w = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(8), dim=-1)
    ref = attn.proj((w @ heads(v)).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


def test_drop_path_only_in_train_mode() -> None:
    dp = DropPath(0.5)
    x = torch.ones(64, 3, 4)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    kept = y[:, 0, 0]
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 0 < (kept == 0).sum() < 64
    enc = tiny_encoder(drop_path=0.5, depth=4)
    assert [b.drop_path.drop_prob for b in enc.blocks] == pytest.approx([0, 1 / 6, 1 / 3, 0.5])
    x = torch.randn(4, 3, 4, 32, 32)
    with torch.no_grad():
        enc.eval()
        assert torch.equal(enc(x), enc(x))
        enc.train()
        torch.manual_seed(1)
        a = enc(x)
        torch.manual_seed(2)
        assert not torch.allclose(a, enc(x))


def test_grad_checkpointing_same_output_and_grads() -> None:
    torch.manual_seed(0)
    plain = tiny_encoder(drop_path=0.2).train()
    ckpt = tiny_encoder(drop_path=0.2, grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 4, 32, 32)
    outs = []
    for enc in (plain, ckpt):
        torch.manual_seed(3)
        y = enc(x)
        y.square().mean().backward()
        outs.append(y)
    torch.testing.assert_close(outs[0], outs[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_final_norm_and_apply_norm() -> None:
    enc = tiny_encoder().eval()
    x = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        raw = enc(x, apply_norm=False)
        torch.testing.assert_close(enc(x), enc.norm(raw))
    no_norm = tiny_encoder(final_norm=False)
    assert isinstance(no_norm.norm, torch.nn.Identity)
    assert not any(k.startswith("norm.") for k in no_norm.state_dict())


def test_bad_input_geometry_raises() -> None:
    enc = tiny_encoder()
    with pytest.raises(ProgvidError, match="does not tile"):
        enc(torch.randn(1, 3, 3, 32, 32))
    with pytest.raises(ProgvidError, match="expected video"):
        enc(torch.randn(1, 3, 32, 32))
    with pytest.raises(ProgvidError, match="same number"):
        mask = torch.zeros(2, 32, dtype=torch.bool)
        mask[0, 0] = True
        enc(torch.randn(2, 3, 4, 32, 32), mask)


def test_build_encoder_sizes_and_overrides() -> None:
    assert ENCODER_SIZES["base"] == (768, 12, 12) and ENCODER_SIZES["large"] == (1024, 24, 16)
    enc = build_encoder("small", img_size=32, patch_size=16, num_frames=2, depth=1)
    assert (enc.embed_dim, enc.depth, enc.num_heads, enc.mlp_ratio) == (384, 1, 6, 4.0)
    assert enc.blocks[0].norm1.eps == 1e-6
    assert enc.blocks[0].attn.qkv.bias is None
    with pytest.raises(ConfigError, match="unknown encoder size"):
        build_encoder("gigantic")
    with pytest.raises(ConfigError, match="unknown model option"):
        build_encoder("tiny", width=3)
