"""VideoMAE: masking, target construction, loss, gradients, determinism."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from progvid.errors import ConfigError, ProgvidError
from progvid.models import DECODER_SIZES, VideoMAE, random_mask, tube_mask, videomae


def tiny(**kw) -> VideoMAE:
    args = dict(num_frames=4, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=2)
    args.update(kw)
    return videomae("tiny", **args)


@pytest.mark.parametrize("frames", [2, 4, 8, 16])
def test_forward_shapes(frames: int) -> None:
    model = tiny()
    x = torch.randn(2, 3, frames, 32, 32)
    out = model(x)
    n = frames // 2 * 16
    nm = frames // 2 * int(0.9 * 16)
    assert out.mask.shape == (2, n) and out.mask.dtype == torch.bool
    assert out.pred.shape == out.target.shape == (2, nm, 2 * 8 * 8 * 3)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert model.num_tokens(frames) == n and model.decoder_output_dim == 384


def test_tube_mask_properties() -> None:
    g = torch.Generator().manual_seed(0)
    mask = tube_mask(8, 3, 4, 5, 0.9, device="cpu", generator=g)
    assert mask.shape == (8, 60) and mask.dtype == torch.bool and mask.device.type == "cpu"
    per_slice = mask.view(8, 3, 20)
    assert torch.equal(per_slice, per_slice[:, :1].expand(-1, 3, -1))  # same pattern over time
    assert (per_slice[:, 0].sum(1) == int(0.9 * 20)).all()
    assert (mask.sum(1) == 3 * 18).all()
    assert len({tuple(row.tolist()) for row in per_slice[:, 0]}) > 1  # differs across samples


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_masks_on_cuda() -> None:
    assert tube_mask(2, 2, 4, 4, 0.9, device="cuda").device.type == "cuda"
    on_gpu = tiny().random_mask(2, 4, "cuda", torch.Generator().manual_seed(0))
    on_cpu = tiny().random_mask(2, 4, "cpu", torch.Generator().manual_seed(0))
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu)


def test_random_mask_count_and_generator() -> None:
    mask = random_mask(16, 50, 0.75, generator=torch.Generator().manual_seed(1))
    assert (mask.sum(1) == int(0.75 * 50)).all()
    again = random_mask(16, 50, 0.75, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mask, again)
    model = tiny(mask_type="random", mask_ratio=0.5)
    m = model.random_mask(3, 8)
    assert m.shape == (3, 64) and (m.sum(1) == 32).all()
    with pytest.raises(ConfigError):
        random_mask(2, 10, 1.0)


def test_forward_deterministic_with_generator() -> None:
    model = tiny().eval()
    x = torch.randn(2, 3, 4, 32, 32)
    a = model(x, generator=torch.Generator().manual_seed(5))
    b = model(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.loss, b.loss)


def reference_target(model: VideoMAE, video: torch.Tensor, norm: bool) -> torch.Tensor:
    """Token-by-token loop, independent of the model's reshapes."""
    mean = torch.tensor(model.hparams["mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(model.hparams["std"]).view(1, -1, 1, 1, 1)
    pix = video * std + mean
    b, c, frames, h, w = video.shape
    ts, p = model.tubelet_size, model.patch_size
    rows = []
    for i in range(b):
        tokens = []
        for t in range(frames // ts):
            for y in range(h // p):
                for x in range(w // p):
                    cube = pix[i, :, t * ts:(t + 1) * ts, y * p:(y + 1) * p, x * p:(x + 1) * p]
                    per_channel = cube.reshape(c, -1)  # (C, t*p*p) in (t, p, p) order
                    if norm:
                        mu = per_channel.mean(1, keepdim=True)
                        sd = per_channel.std(1, unbiased=True, keepdim=True)
                        per_channel = (per_channel - mu) / (sd + 1e-6)
                    tokens.append(per_channel.T.reshape(-1))  # channel last
        rows.append(torch.stack(tokens))
    return torch.stack(rows)


@pytest.mark.parametrize("norm", [True, False])
def test_target_matches_loop_reference(norm: bool) -> None:
    model = tiny(norm_pix_loss=norm, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    video = torch.randn(2, 3, 4, 16, 24)
    target = model.normalized_target(video)
    torch.testing.assert_close(target, reference_target(model, video, norm), atol=1e-5, rtol=1e-5)


def test_patchify_roundtrip() -> None:
    model = tiny()
    video = torch.randn(2, 3, 6, 16, 24)
    tokens = model.patchify(video)
    assert tokens.shape == (2, 3 * 2 * 3, 384)
    assert torch.equal(model.unpatchify(tokens, (3, 2, 3)), video)


def test_loss_is_mse_over_masked_tokens_only() -> None:
    model = tiny()
    x = torch.randn(2, 3, 4, 32, 32)
    mask = model.random_mask(2, 4, generator=torch.Generator().manual_seed(0))
    out = model(x, mask)
    target = model.normalized_target(x)[mask].reshape(out.pred.shape)
    torch.testing.assert_close(out.target, target)
    torch.testing.assert_close(out.loss, F.mse_loss(out.pred, target))
    pred = out.pred.detach()
    # Pixels of a visible token are not part of the loss; those of a masked token are.
    visible = model.patchify(torch.zeros_like(x)).clone()
    t_vis, t_msk = (~mask[0]).nonzero()[0, 0], mask[0].nonzero()[0, 0]
    for tok, changes in ((t_vis, False), (t_msk, True)):
        bump = visible.clone()
        bump[0, tok] = torch.randn(bump.shape[-1])
        x2 = x + model.unpatchify(bump, (2, 4, 4))
        loss2, _ = model.forward_loss(x2, pred, mask)
        loss1, _ = model.forward_loss(x, pred, mask)
        assert torch.equal(loss1, loss2) != changes


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = tiny().train()
    model(torch.randn(2, 3, 4, 32, 32)).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_drop_path_only_in_train_mode() -> None:
    model = tiny(drop_path=0.5)
    x = torch.randn(4, 3, 4, 32, 32)
    mask = model.random_mask(4, 4)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x, mask).loss, model(x, mask).loss)
        model.train()
        torch.manual_seed(0)
        a = model(x, mask).loss
        torch.manual_seed(1)
        assert not torch.equal(a, model(x, mask).loss)


def test_grad_checkpointing_same_loss_and_grads() -> None:
    torch.manual_seed(0)
    plain, ckpt = tiny(drop_path=0.2), tiny(drop_path=0.2, grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 4, 32, 32)
    mask = plain.random_mask(2, 4)
    losses = []
    for model in (plain.train(), ckpt.train()):
        torch.manual_seed(7)
        out = model(x, mask)
        out.loss.backward()
        losses.append(out.loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_encoder_alone_extracts_features() -> None:
    model = tiny().eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        feats = model.encoder(x)
        pooled = model.encoder(x, apply_norm=False).mean(1)
    assert feats.shape == (2, 64, 64) and pooled.shape == (2, 64)
    assert model.encoder.embed_dim == 64


def test_hparams_rebuild_and_names() -> None:
    model = tiny()
    clone = VideoMAE.from_hparams(json.loads(json.dumps(model.hparams)))
    clone.load_state_dict(model.state_dict())
    keys = set(model.state_dict())
    assert {"mask_token", "encoder_to_decoder.weight", "decoder.head.weight",
            "encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.q_bias",
            "decoder.blocks.1.attn.v_bias", "encoder.norm.weight", "decoder.norm.bias"} <= keys
    assert "encoder_to_decoder.bias" not in keys and "pixel_mean" not in keys


def test_builder_sizes_and_errors() -> None:
    assert DECODER_SIZES["base"] == (384, 6) and DECODER_SIZES["huge"] == (640, 8)
    model = videomae("small", num_frames=2, img_size=32, depth=1, decoder_depth=1)
    assert (model.encoder.embed_dim, model.decoder.embed_dim, model.decoder.num_heads) == (
        384, 192, 3)
    assert model(torch.randn(1, 3, 2, 32, 32)).pred.shape == (1, 3, 2 * 16 * 16 * 3)
    with pytest.raises(ConfigError, match="unknown model size"):
        videomae("xl")
    with pytest.raises(ConfigError, match="unknown model option"):
        videomae("tiny", widht=2)
    with pytest.raises(ConfigError, match="mask_type"):
        tiny(mask_type="block")
    with pytest.raises(ConfigError, match="mask_ratio"):
        tiny(mask_ratio=0.0)
    with pytest.raises(ConfigError, match="mean/std"):
        tiny(mean=(0.5,))
    with pytest.raises(ProgvidError, match="mask must be bool"):
        tiny()(torch.randn(1, 3, 4, 32, 32), torch.zeros(1, 32))


@pytest.mark.parametrize("frames,mask_type", [(2, "tube"), (4, "random"), (8, "tube"),
                                              (16, "tube")])
def test_visible_only_embedding_is_the_same_function(frames: int, mask_type: str) -> None:
    """The encoder embeds only the visible cubes (linear map on gathered cubes); the old way ran
    the Conv3d on every cube and then dropped the masked ones. Same loss and gradients of every
    parameter up to float32 round-off."""
    from progvid.models import sincos_table
    from progvid.models.vit import run_blocks

    def old_encoder(enc, video, mask):
        x = enc.patch_embed(video)  # Conv3d on all tokens
        b, n, d = x.shape
        x = (x + sincos_table(n, d))[~mask].reshape(b, -1, d)
        return enc.norm(run_blocks(enc.blocks, x, False))

    model = tiny(mask_type=mask_type)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    g = torch.Generator().manual_seed(frames)
    video = torch.randn(2, 3, frames, 32, 32, generator=g)
    mask = model.random_mask(2, frames, generator=g)
    results = []
    for encode in (model.forward_encoder, lambda v, m: old_encoder(model.encoder, v, m)):
        model.zero_grad()
        latent = encode(video, mask)
        loss, _ = model.forward_loss(video, model.forward_decoder(latent, mask), mask)
        loss.backward()
        results.append((latent.detach(), loss.detach(),
                        {k: p.grad.clone() for k, p in model.named_parameters()}))
    (lat_new, loss_new, g_new), (lat_old, loss_old, g_old) = results
    torch.testing.assert_close(lat_new, lat_old, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_new, loss_old, atol=1e-6, rtol=1e-5)
    assert g_new.keys() == g_old.keys()
    for k in g_new:
        torch.testing.assert_close(g_new[k], g_old[k], atol=1e-5, rtol=1e-4, msg=k)
    assert g_new["encoder.patch_embed.proj.weight"].abs().sum() > 0


def test_mask_token_is_not_weight_decayed() -> None:
    """As the official pre-training model's no_weight_decay: the mask token (3-D, so the
    ndim rule alone would decay it) goes to the no-decay group."""
    from progvid.engine.trainer import param_groups

    model = VideoMAE(img_size=32, patch_size=8, num_frames=4, embed_dim=32, depth=1, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
    decay, no_decay = param_groups(model, 0.05)
    assert any(p is model.mask_token for p in no_decay["params"])
    assert not any(p is model.mask_token for p in decay["params"])


def test_mask_index_takes_what_boolean_indexing_takes() -> None:
    """`mask_index` + `take_rows` select the rows `x[mask]` selects, in the same order, with the
    same values and gradients (bitwise), and count when no count is given."""
    from progvid.models.masking import mask_index, take_rows

    g = torch.Generator().manual_seed(0)
    mask = tube_mask(3, 2, 4, 4, 0.75, generator=g)  # (3, 32), 24 masked per row
    x = torch.randn(3, 32, 5, generator=g, requires_grad=True)
    for select, count in ((mask, 24), (~mask, 8), (mask, None)):
        idx = mask_index(select, count)
        assert idx.shape == (3, 24 if count != 8 else 8) and idx.dtype == torch.long
        assert bool((idx[:, 1:] > idx[:, :-1]).all())  # ascending
        ours, ref = take_rows(x, idx), x[select].reshape(3, -1, 5)
        assert torch.equal(ours, ref)
        w = torch.randn_like(ref)
        (ga,) = torch.autograd.grad((ours * w).sum(), x)
        (gb,) = torch.autograd.grad((ref * w).sum(), x)
        assert torch.equal(ga, gb)


def test_given_counts_are_checked_on_cpu() -> None:
    model = tiny()
    x = torch.randn(2, 3, 4, 32, 32)
    mask = model.random_mask(2, 4, generator=torch.Generator().manual_seed(1))
    masked = model.mask_counts(4)[0]
    assert masked == int(mask[0].sum()) == 2 * int(0.9 * 16)
    torch.testing.assert_close(model(x, mask, num_masked=masked).loss, model(x, mask).loss)
    with pytest.raises(ProgvidError, match=f"every sample must mask {masked - 1} tokens"):
        model(x, mask, num_masked=masked - 1)
    with pytest.raises(ProgvidError, match="cannot hide 40"):
        model(x, mask, num_masked=40)


# ops that make the host wait for a GPU (or break a compiled graph): reading a value, or an
# output whose size depends on the data
_SYNCING = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.item",
            "aten.is_nonzero", "aten.unique", "aten._unique2", "aten.masked_scatter"}


@pytest.mark.parametrize("dual", [False, True])
def test_training_step_has_no_host_sync(monkeypatch: pytest.MonkeyPatch, dual: bool) -> None:
    """The pre-training step (masks drawn as `PretrainTask.step` draws them, forward, backward)
    calls no op that reads a tensor on the host or sizes its output from the data: on CUDA
    each would stall the host until the device drained its queue. Boolean indexing is such an
    op (it counts the mask first); the model gathers by position instead. Run on CPU with the
    checks that only CPU makes (free there, skipped on CUDA) turned off."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import progvid.models.masking as masking

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bad: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            name = str(func.overloadpacket)
            bool_index = name in ("aten.index", "aten.index_put", "aten.index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
            if name in _SYNCING or bool_index:
                self.bad.append(name)
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(masking, "_free_to_count", lambda mask: False)
    model = tiny(decoder_mask="running_cell" if dual else "none")
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(2, 3, 4, 32, 32)
    with Record() as rec:
        mask = model.random_mask(2, 4, generator=gen, img_size=(32, 32))
        dmask = model.random_decoder_mask(2, 4, generator=gen, img_size=(32, 32))
        masked, kept = model.mask_counts(4, img_size=(32, 32))
        model(video, mask, num_masked=masked, decoder_mask=dmask, num_kept=kept).loss.backward()
    assert (dmask is not None) == dual
    assert rec.bad == [], rec.bad
    with Record() as rec:  # the same step without the counts: boolean-free, but it counts
        model(video, mask, decoder_mask=dmask).loss.backward()
    assert rec.bad and set(rec.bad) <= {"aten._local_scalar_dense"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dual", [False, True])
def test_cuda_training_step_has_no_host_sync(dual: bool) -> None:
    """The same step on a GPU under CUDA's own sync detector (run by bench/gpu_check.sh)."""
    import warnings

    model = tiny(decoder_mask="running_cell" if dual else "none").cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    video = torch.randn(2, 3, 4, 32, 32, device="cuda")

    def step() -> None:
        mask = model.random_mask(2, 4, "cuda", generator=gen, img_size=(32, 32))
        dmask = model.random_decoder_mask(2, 4, "cuda", generator=gen, img_size=(32, 32))
        masked, kept = model.mask_counts(4, img_size=(32, 32))
        model(video, mask, num_masked=masked, decoder_mask=dmask, num_kept=kept).loss.backward()

    step()  # first calls build cached tables and kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert syncs == [], syncs
