"""Dual masking (VideoMAE V2): running-cell decoder mask, decoder on the kept tokens, V2's loss.

Reference: OpenGVLab/VideoMAEv2 (commit 29eab1e) dataset/masking_generator.py (Cell,
RunningCellMaskingGenerator), models/modeling_pretrain.py (PretrainVisionTransformer.forward),
engine_for_pretraining.py (loss on the encoder-masked tokens among the decoder-kept ones)."""

from __future__ import annotations

import json

import pytest
import torch

from progvid.errors import ConfigError, ProgvidError
from progvid.models import VideoMAE, sincos_table, videomae
from progvid.models.masking import running_cell_kept, running_cell_mask

TPL_FRAMES = (2, 4, 8, 16)


def tiny(**kw) -> VideoMAE:
    args = dict(num_frames=4, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=2,
                decoder_mask="running_cell")
    args.update(kw)
    torch.manual_seed(0)
    return videomae("tiny", **args)


def perturbed(model: VideoMAE) -> VideoMAE:
    """Non-trivial biases, norms and mask token, so that every parameter matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def v2_maps(t: int, h: int, w: int, drops: int) -> list[torch.Tensor]:
    """V2's four running-cell maps, by its definition rather than its code: a queue of `drops`
    ones then zeros, a pointer started at p and advanced once per slice before reading, the
    rotated queue read as a 2x2 cell and tiled over the slice. 1 = dropped by the decoder."""
    queue = [1] * drops + [0] * (4 - drops)
    maps = []
    for p in range(4):
        ptr, slices = p, []
        for _ in range(t):
            ptr += 1
            cell = [queue[(i + ptr) % 4] for i in range(4)]
            slices.append([[cell[2 * (y % 2) + (x % 2)] for x in range(w)] for y in range(h)])
        maps.append(torch.tensor(slices, dtype=torch.bool).flatten())
    return maps


# -- the running-cell pattern ---------------------------------------------------------------------

@pytest.mark.parametrize("ratio,drops", [(0.25, 1), (0.5, 2), (0.75, 3)])
@pytest.mark.parametrize("grid", [(1, 2, 2), (2, 4, 6), (8, 14, 14)])
def test_running_cell_is_v2s_pattern(ratio, drops, grid) -> None:
    t, h, w = grid
    mask = running_cell_mask(64, t, h, w, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (64, t * h * w) and mask.dtype == torch.bool
    maps = v2_maps(t, h, w, drops)
    which = [next(i for i, m in enumerate(maps) if torch.equal(row, m)) for row in mask]
    assert set(which) == {0, 1, 2, 3}  # every one of V2's 4 maps, and nothing else
    assert running_cell_kept(t, h, w, ratio) == t * h * w * (4 - drops) // 4


@pytest.mark.parametrize("ratio,drops", [(0.25, 1), (0.5, 2), (0.75, 3)])
def test_running_cell_ratio_exact_per_cell_and_clip(ratio, drops) -> None:
    t, h, w = 8, 6, 4
    mask = running_cell_mask(16, t, h, w, ratio, generator=torch.Generator().manual_seed(1))
    cells = mask.view(16, t, h // 2, 2, w // 2, 2).sum(dim=(3, 5))  # (B, t, h/2, w/2)
    assert (cells == drops).all()  # exactly k of the 4 tokens of every cell of every slice
    assert (mask.sum(1) == t * h * w * drops // 4).all()  # same count per sample, exact ratio
    assert (mask.view(16, t, h * w).sum(2) == h * w * drops // 4).all()  # and per slice


def test_running_cell_moves_over_time() -> None:
    t, h, w = 8, 4, 4
    for ratio, drops in ((0.25, 1), (0.5, 2), (0.75, 3)):
        mask = running_cell_mask(8, t, h, w, ratio, generator=torch.Generator().manual_seed(2))
        slots = mask.view(8, t, h // 2, 2, w // 2, 2)[:, :, 0, :, 0, :].reshape(8, t, 4)
        # slot j at slice t+1 takes the state slot j+1 had at slice t: the cell "runs"
        assert torch.equal(slots[:, 1:], slots[:, :-1].roll(-1, dims=2))
        assert not torch.equal(slots[:, 1:], slots[:, :-1])  # it does move
        assert torch.equal(slots[:, 4:], slots[:, :-4])  # period 4
        # each position is dropped in exactly k of every 4 consecutive slices
        window = mask.view(8, t, h * w).unfold(1, 4, 1).sum(-1)
        assert (window == drops).all()
        # every cell of a slice has the same pattern (V2 tiles one cell)
        cell_view = mask.view(8, t, h // 2, 2, w // 2, 2)
        assert torch.equal(cell_view, cell_view[:, :, :1, :, :1, :].expand_as(cell_view))


def test_running_cell_errors() -> None:
    for bad in (0.0, 0.1, 0.6, 1.0, 0.9):
        with pytest.raises(ConfigError, match="decoder_mask_ratio must be one of 0.25, 0.5, 0.75"):
            running_cell_mask(1, 1, 2, 2, bad)
        with pytest.raises(ConfigError, match="decoder_mask_ratio"):
            tiny(decoder_mask_ratio=bad)
    with pytest.raises(ConfigError, match="must be even"):
        running_cell_mask(1, 1, 7, 7, 0.5)
    with pytest.raises(ConfigError, match="must be even"):
        tiny(img_size=40)  # 5x5 tokens
    with pytest.raises(ConfigError, match="decoder_mask must be one of"):
        tiny(decoder_mask="run_cell")
    tiny(decoder_mask="none", decoder_mask_ratio=0.6)  # the ratio is unused when off
    model = tiny()
    with pytest.raises(ProgvidError, match="same number"):
        dmask = torch.zeros(2, 32, dtype=torch.bool)
        dmask[0, 0] = True
        model(torch.randn(2, 3, 4, 32, 32), decoder_mask=dmask)


def test_masks_reproducible_from_the_generator() -> None:
    model = tiny().train()
    video = torch.randn(2, 3, 8, 32, 32)
    a = model(video, generator=torch.Generator().manual_seed(3))
    b = model(video, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.decoder_mask, b.decoder_mask)
    assert torch.equal(a.loss, b.loss)
    # forward draws the encoder mask, then the decoder mask, from the one generator
    g = torch.Generator().manual_seed(3)
    mask = model.random_mask(2, 8, generator=g)
    dmask = model.random_decoder_mask(2, 8, generator=g)
    assert torch.equal(mask, a.mask) and torch.equal(dmask, a.decoder_mask)
    # so the encoder masks of a seeded run are the same with and without dual masking
    v1 = tiny(decoder_mask="none")
    assert torch.equal(v1.random_mask(2, 8, generator=torch.Generator().manual_seed(3)), mask)
    # the samples of a batch draw their own phase
    many = model.random_decoder_mask(64, 8, generator=torch.Generator().manual_seed(4))
    assert len({tuple(r.tolist()) for r in many}) == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_running_cell_on_cuda() -> None:
    on_gpu = running_cell_mask(8, 4, 4, 4, 0.5, "cuda", torch.Generator().manual_seed(0))
    on_cpu = running_cell_mask(8, 4, 4, 4, 0.5, "cpu", torch.Generator().manual_seed(0))
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), on_cpu)
    cuda_gen = torch.Generator("cuda").manual_seed(0)
    assert running_cell_mask(8, 4, 4, 4, 0.5, generator=cuda_gen).device.type == "cuda"


# -- the model ------------------------------------------------------------------------------------

def hand_loss(model: VideoMAE, video: torch.Tensor, mask: torch.Tensor, dmask: torch.Tensor):
    """V2's dual-masked forward, sample by sample and token by token."""
    latent = model.encoder(video, mask)  # (B, N_vis, D)
    n = mask.shape[1]
    d = model.mask_token.shape[-1]
    pos = sincos_table(n, d)
    target = model.normalized_target(video)
    preds, sq_sum, count = [], 0.0, 0
    for b in range(video.shape[0]):
        visible = [i for i in range(n) if not mask[b, i]]
        kept = [i for i in range(n) if not dmask[b, i]]
        tokens = [model.encoder_to_decoder(latent[b, j]) + pos[i] for j, i in enumerate(visible)]
        tokens += [model.mask_token[0, 0] + pos[i] for i in kept]  # every kept position
        x = torch.stack(tokens).unsqueeze(0)
        for blk in model.decoder.blocks:
            x = blk(x)
        pred = model.decoder.head(model.decoder.norm(x[0, len(visible):]))  # (N_kept, D)
        preds.append(pred)
        for row, i in enumerate(kept):
            if mask[b, i]:  # the loss: encoder-invisible tokens among the kept ones
                sq_sum = sq_sum + ((pred[row] - target[b, i]) ** 2).mean()
                count += 1
    return sq_sum / count, torch.stack(preds), count


@pytest.mark.parametrize("mask_type", ["tube", "random"])
def test_loss_matches_hand_computation(mask_type) -> None:
    model = perturbed(tiny(mask_type=mask_type, mask_ratio=0.75)).eval()
    g = torch.Generator().manual_seed(5)
    video = torch.randn(3, 3, 4, 32, 32, generator=g)
    mask = model.random_mask(3, 4, generator=g)
    dmask = model.random_decoder_mask(3, 4, generator=g)
    out = model(video, mask, decoder_mask=dmask)
    with torch.no_grad():
        loss, preds, count = hand_loss(model, video, mask, dmask)
    kept = 32 // 2
    assert out.pred.shape == out.target.shape == (3, kept, model.decoder_output_dim)
    torch.testing.assert_close(out.pred, preds, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out.loss, loss, atol=1e-6, rtol=1e-5)
    assert torch.equal(out.decoder_mask, dmask)
    assert torch.equal(out.loss_mask, torch.stack([mask[b][~dmask[b]] for b in range(3)]))
    assert int(out.loss_mask.sum()) == count
    assert torch.equal(out.target, model.normalized_target(video)[~dmask].view(3, kept, -1))


def test_decoder_runs_on_visible_plus_kept_tokens() -> None:
    model = tiny(img_size=64).train()  # 8x8 tokens, 4 slices: N = 256
    seen = []
    model.decoder.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    out = model(torch.randn(2, 3, 8, 64, 64), generator=torch.Generator().manual_seed(0))
    n, nv = 256, 4 * (64 - int(0.9 * 64))
    assert seen == [nv + n // 2] and out.pred.shape[1] == n // 2
    model.decoder_mask_type = "none"  # as a v1 model: all N tokens
    model(torch.randn(2, 3, 8, 64, 64), generator=torch.Generator().manual_seed(0))
    assert seen[-1] == n


@pytest.mark.parametrize("frames", TPL_FRAMES)
def test_gradients_reach_every_parameter(frames) -> None:
    model = perturbed(tiny()).train()
    out = model(torch.randn(2, 3, frames, 32, 32), generator=torch.Generator().manual_seed(6))
    assert out.decoder_mask is not None
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("frames", TPL_FRAMES)
@pytest.mark.parametrize("mask_type", ["tube", "random"])
def test_every_tpl_clip_length(frames, mask_type) -> None:
    model = tiny(mask_type=mask_type).train()
    out = model(torch.randn(2, 3, frames, 32, 32), generator=torch.Generator().manual_seed(7))
    n = frames // 2 * 16
    assert out.mask.shape == out.decoder_mask.shape == (2, n)
    assert (out.decoder_mask.sum(1) == n // 2).all()
    assert out.pred.shape == out.target.shape == (2, n // 2, model.decoder_output_dim)
    assert out.loss_mask.shape == (2, n // 2) and torch.isfinite(out.loss)
    out.loss.backward()


# -- default off, and interchangeable with v1 -----------------------------------------------------

def v1_forward(model: VideoMAE, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The forward pass as it was before decoder masking existed (VideoMAE v1)."""
    x = model.encoder_to_decoder(model.encoder(video, mask))
    b, _, d = x.shape
    pos = sincos_table(mask.shape[1], d, x.device).to(x.dtype).expand(b, -1, -1)
    pos_vis, pos_mask = pos[~mask].reshape(b, -1, d), pos[mask].reshape(b, -1, d)
    x = torch.cat([x + pos_vis, model.mask_token.to(x.dtype) + pos_mask], dim=1)
    pred = model.decoder(x, pos_mask.shape[1])
    target = model.normalized_target(video)[mask].reshape(pred.shape)
    return torch.nn.functional.mse_loss(pred.float(), target)


def test_default_off_is_bit_identical_and_draws_nothing() -> None:
    model = perturbed(tiny(decoder_mask="none")).train()
    assert "decoder_mask" not in model.hparams and model.decoder_mask_type == "none"
    g = torch.Generator().manual_seed(8)
    video = torch.randn(2, 3, 4, 32, 32, generator=g)
    mask = model.random_mask(2, 4, generator=g)
    state = g.get_state()
    out = model(video, mask, generator=g)
    assert torch.equal(g.get_state(), state)  # the step's generator stream is untouched
    assert out.decoder_mask is None and out.loss_mask is None
    assert torch.equal(out.loss, v1_forward(model, video, mask))
    # a dual-masking model with the same weights is the v1 model in eval mode (full decoder)
    dual = tiny()
    dual.load_state_dict(model.state_dict())
    assert torch.equal(dual.eval()(video, mask).loss, v1_forward(model, video, mask))
    assert dual(video, mask).decoder_mask is None


def test_hparams_round_trip_with_and_without_the_keys() -> None:
    dual = perturbed(tiny())
    assert (dual.hparams["decoder_mask"], dual.hparams["decoder_mask_ratio"]) == ("running_cell", 0.5)
    clone = VideoMAE.from_hparams(json.loads(json.dumps(dual.hparams)))
    clone.load_state_dict(dual.state_dict())
    assert clone.hparams == dual.hparams and clone.decoder_mask_type == "running_cell"
    g = torch.Generator().manual_seed(9)
    video = torch.randn(2, 3, 4, 32, 32, generator=g)
    a = dual.train()(video, generator=torch.Generator().manual_seed(1))
    b = clone.train()(video, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.loss, b.loss)
    # a dict written before the option existed: defaults (v1), same weights load strictly
    old = {k: v for k, v in dual.hparams.items() if not k.startswith("decoder_mask")}
    v1 = VideoMAE.from_hparams(old)
    assert v1.decoder_mask_type == "none" and v1.hparams == old
    v1.load_state_dict(dual.state_dict(), strict=True)  # no parameter added or renamed
    assert set(v1.state_dict()) == set(dual.state_dict())


def test_dual_checkpoint_fine_tunes_and_exports_like_v1(tmp_path) -> None:
    from progvid.engine.checkpoint import plain_state_dict, save_checkpoint
    from progvid.loading import classifier_from_pretrained, load_videomae

    dual = perturbed(tiny())
    save_checkpoint(tmp_path, 1, plain_state_dict(dual), {"step": 1},
                    {"task": "pretrain", "model": dual.hparams})
    back = load_videomae(tmp_path)
    assert back.decoder_mask_type == "running_cell"
    for k, v in dual.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    clf, _ = classifier_from_pretrained(tmp_path, num_classes=3)
    enc = {k.removeprefix("encoder."): v for k, v in dual.state_dict().items()
           if k.startswith("encoder.blocks.") or k.startswith("encoder.patch_embed.")}
    got = clf.encoder.state_dict()
    for k, v in enc.items():
        assert torch.equal(got[k], v), k
    transformers = pytest.importorskip("transformers")
    from progvid.interop import to_transformers

    hf = to_transformers(back)
    assert isinstance(hf, transformers.VideoMAEForPreTraining)


def test_eval_on_an_odd_token_grid_needs_no_decoder_cells() -> None:
    """A dual-masking model evaluated on clips whose token grid cannot hold running cells (here
    3x3) reconstructs every masked token as v1 does; only training, which draws the decoder mask,
    needs the even grid."""
    model = videomae("tiny", num_frames=4, img_size=32, patch_size=8, embed_dim=32, depth=1,
                     num_heads=2, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1,
                     decoder_mask="running_cell").eval()
    out = model(torch.randn(2, 3, 4, 24, 24), generator=torch.Generator().manual_seed(0))
    assert out.decoder_mask is None and out.pred.shape[1] == 2 * int(0.9 * 9)
    with pytest.raises(ConfigError, match="must be even"):
        model.train()(torch.randn(2, 3, 4, 24, 24))
