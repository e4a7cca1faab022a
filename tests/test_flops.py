"""Analytic FLOPs agree with torch's FlopCounterMode run on explicit attention math."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from progvid.cli import main
from progvid.errors import ConfigError
from progvid.models import videomae
from progvid.progressive.flops import model_flops, videomae_flops


def _explicit_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
    # plain matmuls so the counter sees QK^T and AV (it counts zero for CPU SDPA)
    s = scale if scale is not None else q.shape[-1] ** -0.5
    return torch.softmax((q @ k.transpose(-2, -1)) * s, dim=-1) @ v


@pytest.mark.parametrize("size,frames,img,mask_type,decoder_mask", [
    ("small", 16, 112, "tube", "none"), ("small", 2, 112, "tube", "none"),
    ("small", 4, 64, "random", "none"),
    ("small", 16, 128, "tube", "running_cell"), ("small", 2, 128, "tube", "running_cell"),
    ("small", 4, 64, "random", "running_cell"),
])
def test_flops_match_counter(size, frames, img, mask_type, decoder_mask, monkeypatch) -> None:
    monkeypatch.setattr(F, "scaled_dot_product_attention", _explicit_sdpa)
    model = videomae(size, num_frames=frames, img_size=img, mask_type=mask_type,
                     decoder_mask=decoder_mask).eval()
    video = torch.randn(1, 3, frames, img, img)
    gen = torch.Generator().manual_seed(0)
    mask = model.random_mask(1, frames, generator=gen)
    dmask = model.random_decoder_mask(1, frames, generator=gen)  # None when off
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(video, mask, decoder_mask=dmask)
    counted_macs = counter.get_total_flops() / 2  # the counter counts 2 per multiply-accumulate
    f = model_flops(model, frames, img)
    # progvid embeds the visible cubes only: the counter sees the executed figure ...
    assert f.executed_forward == pytest.approx(counted_macs, rel=0.01)
    # ... and the official convention adds the embedding of the masked cubes
    token_pixels = 3 * 2 * 16 * 16
    assert f.forward - f.executed_forward == (f.tokens - f.visible) * token_pixels * 384
    if dmask is not None:
        kept = int((~dmask).sum())
        assert (f.decoder_tokens, f.predicted) == (f.visible + kept, kept)


def test_dual_masking_flops_reference() -> None:
    """ViT-B 16x224, mask 0.9: V2's decoder ratio 0.5 keeps 784 of 1568 positions, so the
    decoder runs on 160 + 784 tokens; training MACs relative to VideoMAE v1."""
    kw = dict(embed_dim=768, depth=12, decoder_dim=384, decoder_depth=4, img_size=224)
    v1 = videomae_flops(num_frames=16, **kw)
    v2 = videomae_flops(num_frames=16, decoder_mask="running_cell", decoder_mask_ratio=0.5, **kw)
    assert (v2.decoder_tokens, v2.predicted) == (160 + 784, 784)
    assert (v1.decoder_tokens, v1.predicted) == (1568, 1568 - 160)
    assert v2.embed == v1.embed and v2.encoder == v1.encoder  # the encoder is unchanged
    assert v2.train / v1.train == pytest.approx(0.7291, abs=1e-3)
    assert v2.executed_train / v1.train == pytest.approx(0.6823, abs=1e-3)
    for frames in (2, 4, 8):  # every TPL stage length
        f = videomae_flops(num_frames=frames, decoder_mask="running_cell", **kw)
        assert f.decoder_tokens == frames // 2 * (20 + 98)
    with pytest.raises(ConfigError, match="decoder_mask_ratio"):
        videomae_flops(num_frames=16, decoder_mask="running_cell", decoder_mask_ratio=0.6, **kw)


def test_reference_numbers() -> None:
    b16 = videomae_flops(embed_dim=768, depth=12, decoder_dim=384, decoder_depth=4,
                         num_frames=16, img_size=224)
    b2 = videomae_flops(embed_dim=768, depth=12, decoder_dim=384, decoder_depth=4,
                        num_frames=2, img_size=224)
    # ARCHITECTURE.md: about 35.2 G at 16 frames and about 3.56 G at 2 frames (ViT-B, mask 0.9)
    assert b16.forward / 1e9 == pytest.approx(35.2, rel=0.01)
    assert b2.forward / 1e9 == pytest.approx(3.56, rel=0.01)
    assert b16.train == pytest.approx(3 * b16.forward)
    assert b16.visible == 8 * 20 and b16.tokens == 1568


def test_flops_cli_json(capsys) -> None:
    import json

    assert main(["flops", "--model", "base", "--frames", "16", "--size", "224",
                 "--mask-ratio", "0.9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gflops_forward"] == pytest.approx(35.44, rel=1e-3)
    assert out["gflops_train"] == pytest.approx(3 * out["gflops_forward"])
    assert main(["flops", "--frames", "3"]) == 2


def test_flops_cli_dual_masking(capsys) -> None:
    import json

    assert main(["flops", "--model", "base", "--frames", "16", "--size", "224",
                 "--decoder-mask", "running_cell", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ratio_to_v1"] == pytest.approx(out["gflops_train"] / out["v1_gflops_train"])
    assert 0.7 < out["ratio_to_v1"] < 0.75  # V2's rule: mask tokens at every kept position
    assert out["decoder_tokens"] == 160 + 784
    assert main(["flops", "--size", "112", "--decoder-mask", "running_cell"]) == 2  # 7x7 grid
