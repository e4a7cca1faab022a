"""Interop: parity with transformers' VideoMAEForPreTraining, export, official checkpoints.

The transformers tests skip when it is not installed; the official-layout tests always run."""

from __future__ import annotations

import sys

import pytest
import torch

from progvid.errors import CheckpointError, ProgvidError
from progvid.interop import export_hf, from_transformers, load_official_state_dict, to_transformers
from progvid.models import VideoMAE, sincos_table, videomae


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def tiny() -> VideoMAE:
    return videomae("tiny", num_frames=4, img_size=32, patch_size=8, embed_dim=64, depth=2,
                    num_heads=4, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=2)


def hf_tiny(transformers, norm_pix_loss: bool = True, use_mean_pooling: bool = False):
    config = transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        decoder_hidden_size=32, decoder_num_hidden_layers=2, decoder_num_attention_heads=2,
        decoder_intermediate_size=128, layer_norm_eps=1e-6, norm_pix_loss=norm_pix_loss,
        use_mean_pooling=use_mean_pooling,
    )
    torch.manual_seed(0)
    hf = transformers.VideoMAEForPreTraining(config).eval()
    with torch.no_grad():  # random values everywhere, so biases and norms are exercised too
        for p in hf.parameters():
            p.normal_(0.0, 0.1)
    return hf


def inputs(model: VideoMAE, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, 3, 4, 32, 32, generator=g)
    return video, model.random_mask(batch, 4, generator=g)


def hf_call(hf, video: torch.Tensor, mask: torch.Tensor):
    return hf(video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask)  # transformers: (B, T, C, H, W)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
@pytest.mark.parametrize("use_mean_pooling", [False, True])
def test_loss_parity_from_transformers(transformers, norm_pix_loss, use_mean_pooling) -> None:
    hf = hf_tiny(transformers, norm_pix_loss, use_mean_pooling)
    model = from_transformers(hf).eval()
    assert isinstance(model.encoder.norm, torch.nn.Identity) == use_mean_pooling
    video, mask = inputs(model)
    with torch.no_grad():
        ours, theirs = model(video, mask), hf_call(hf, video, mask)
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5
    torch.testing.assert_close(ours.pred, theirs.logits, atol=1e-5, rtol=1e-5)


def test_encoder_features_match(transformers) -> None:
    hf = hf_tiny(transformers)
    model = from_transformers(hf).eval()
    video, mask = inputs(model)
    with torch.no_grad():
        for m in (mask, None):
            ref = hf.videomae(video.permute(0, 2, 1, 3, 4), bool_masked_pos=m).last_hidden_state
            torch.testing.assert_close(model.encoder(video, m), ref, atol=1e-5, rtol=1e-5)


def test_to_transformers_parity_and_exact_round_trip(transformers) -> None:
    torch.manual_seed(1)
    model = tiny().eval()
    hf = to_transformers(model)
    assert isinstance(hf, transformers.VideoMAEForPreTraining)
    video, mask = inputs(model)
    with torch.no_grad():
        ours, theirs = model(video, mask), hf_call(hf, video, mask)
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5
    back = from_transformers(hf)
    assert back.hparams == model.hparams
    sd, sd_back = model.state_dict(), back.state_dict()
    assert sd.keys() == sd_back.keys()
    assert all(torch.equal(sd[k], sd_back[k]) for k in sd)


def test_export_hf_loads_with_from_pretrained(transformers, tmp_path) -> None:
    torch.manual_seed(2)
    model = tiny().eval()
    out = export_hf(model, tmp_path / "hf")
    assert (out / "config.json").is_file() and any(out.glob("*.safetensors"))
    hf = transformers.VideoMAEForPreTraining.from_pretrained(out).eval()
    video, mask = inputs(model)
    with torch.no_grad():
        ours, theirs = model(video, mask), hf_call(hf, video, mask)
    # Reloaded, the final decoder norm has transformers' fixed eps 1e-5 instead of 1e-6.
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-4
    back = from_transformers(hf).state_dict()
    assert all(torch.equal(v, back[k]) for k, v in model.state_dict().items())


def test_a_key_bias_is_dropped_exactly(transformers) -> None:
    """transformers 5.0-5.2x (`qkv_bias`) give the key projection a bias, later releases and the
    official VideoMAE do not. A key bias shifts a query's logits by one constant, which softmax
    removes: converting drops it (any value) and exporting writes zeros, both exactly."""
    from progvid.interop.hf import _ours_to_hf, hf_to_ours

    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    b = torch.randn(8, generator=g)
    f = torch.nn.functional.scaled_dot_product_attention
    torch.testing.assert_close(f(q, k + b, v), f(q, k, v), atol=1e-6, rtol=1e-5)

    torch.manual_seed(4)
    model = tiny().eval()
    hf_sd = to_transformers(model).state_dict()
    prefixes = {k.rsplit(".attention.attention.", 1)[0] for k in hf_sd if ".attention.attention." in k}
    key_biases = {f"{p}.attention.attention.key.bias" for p in prefixes}
    assert len(key_biases) == 4  # two encoder and two decoder blocks
    with_bias = {**hf_sd, **{k: torch.randn(64 if "videomae" in k else 32) for k in key_biases}}
    ours = hf_to_ours(with_bias)
    assert ours.keys() == model.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in model.state_dict().items())
    out = _ours_to_hf(model.state_dict(), set(with_bias))
    assert out.keys() == with_bias.keys()
    assert all(torch.count_nonzero(out[k]) == 0 and out[k].shape == with_bias[k].shape
               for k in key_biases)


def test_to_transformers_warns_on_non_imagenet_stats(transformers) -> None:
    model = videomae("tiny", num_frames=2, img_size=16, patch_size=8, embed_dim=32, depth=1,
                     num_heads=2, decoder_embed_dim=16, decoder_num_heads=2, decoder_depth=1,
                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with pytest.warns(UserWarning, match="ImageNet"):
        to_transformers(model)


def test_missing_transformers_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ProgvidError, match=r"pip install 'progvid\[hf\]'"):
        to_transformers(tiny())


def official_layout(model: VideoMAE) -> dict:
    """What an official VideoMAE pretrain checkpoint looks like for this architecture."""
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    sd["module.pos_embed"] = sincos_table(model.num_tokens(), 32).unsqueeze(0)
    return {"model": sd, "epoch": 3}


def test_official_checkpoint_conversion() -> None:
    torch.manual_seed(3)
    model = tiny()
    converted = load_official_state_dict(official_layout(model))
    assert "pos_embed" not in converted
    fresh = tiny()
    fresh.load_state_dict(load_official_state_dict(official_layout(model), fresh), strict=True)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())
    plain = {"module": dict(model.state_dict())}
    assert load_official_state_dict(plain).keys() == model.state_dict().keys()


def test_official_checkpoint_bad_keys_are_listed() -> None:
    model = tiny()
    ckpt = official_layout(model)
    sd = ckpt["model"]
    sd["module.encoder.blocks.0.attn.qkv_weight"] = sd.pop("module.encoder.blocks.0.attn.qkv.weight")
    with pytest.raises(CheckpointError, match=r"missing keys: encoder\.blocks\.0\.attn\.qkv\.weight"):
        load_official_state_dict(ckpt, model)
    with pytest.raises(CheckpointError, match=r"unexpected keys: encoder\.blocks\.0\.attn\.qkv_weight"):
        load_official_state_dict(ckpt)
    sd["module.encoder.blocks.0.attn.qkv.weight"] = sd.pop("module.encoder.blocks.0.attn.qkv_weight")
    del sd["module.decoder.blocks.1.mlp.fc2.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.blocks\.1\.mlp\.fc2\.weight"):
        load_official_state_dict(ckpt)
    sd["module.decoder.blocks.1.mlp.fc2.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_official_state_dict(ckpt, model)
    sd["module.pos_embed"] = torch.randn(1, 32, 32)
    with pytest.raises(CheckpointError, match="learned position"):
        load_official_state_dict(ckpt)
