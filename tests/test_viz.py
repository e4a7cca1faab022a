"""Visualisation: reconstruction pictures, checkpoint end to end, loss curves, flow colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from progvid.data.transforms import Normalize
from progvid.engine.checkpoint import META, plain_state_dict, save_checkpoint
from progvid.errors import CheckpointError, DataError, ProgvidError
from progvid.figures import color_wheel, flow_to_color, plot_losses, recon_figure
from progvid.metrics import read_metrics, stage_changes, training_seconds
from progvid.models import VideoMAE, videomae
from progvid.viz import paste_prediction, recon_from_checkpoint, reconstruct
from videos import make_frames, write_text_as_video, write_video

_PNG = b"\x89PNG"


def tiny(**kw) -> VideoMAE:
    torch.manual_seed(0)
    return videomae("tiny", num_frames=4, img_size=32, patch_size=8, embed_dim=32, depth=1,
                    num_heads=2, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1, **kw)


def clip_and_video(model: VideoMAE) -> tuple[torch.Tensor, torch.Tensor]:
    """A random uint8 clip (T, H, W, C) and its normalized (1, C, T, H, W) tensor."""
    g = torch.Generator().manual_seed(1)
    clip = torch.randint(0, 256, (4, 32, 32, 3), generator=g, dtype=torch.uint8)
    video = Normalize(model.hparams["mean"], model.hparams["std"])(clip).unsqueeze(0)
    return clip, video


def test_reconstruct_keeps_visible_patches_and_greys_masked() -> None:
    model = tiny()
    clip, video = clip_and_video(model)
    out = reconstruct(model, video, generator=torch.Generator().manual_seed(0))
    for name in ("original", "masked", "reconstruction"):
        assert out[name].shape == (4, 32, 32, 3) and out[name].dtype == torch.uint8
    hidden = out["mask"]
    assert hidden.shape == (4, 32, 32) and hidden.dtype == torch.bool
    assert 0 < hidden.float().mean() < 1
    assert torch.equal(out["original"], clip)  # normalize -> un-normalize is lossless
    assert torch.equal(out["reconstruction"][~hidden], clip[~hidden])
    assert torch.equal(out["masked"][~hidden], clip[~hidden])
    assert (out["masked"][hidden] != clip[hidden]).float().mean() > 0.9
    assert not torch.equal(out["reconstruction"][hidden], clip[hidden])
    assert model.training  # mode restored


def test_reconstruct_uses_given_mask() -> None:
    model = tiny()
    _, video = clip_and_video(model)
    mask = torch.zeros(1, 32, dtype=torch.bool)
    mask[0, :5] = True  # the first 5 tokens: frames 0-1, top-left region
    out = reconstruct(model, video, mask=mask)
    assert out["mask"][:2].any() and not out["mask"][2:].any()


@pytest.mark.parametrize("norm_pix", [True, False])
def test_true_target_reconstructs_original(norm_pix: bool) -> None:
    model = tiny(norm_pix_loss=norm_pix)
    clip, video = clip_and_video(model)
    mask = model.random_mask(1, generator=torch.Generator().manual_seed(3))
    target = model.normalized_target(video)[mask].reshape(1, -1, model.decoder_output_dim)
    out = paste_prediction(model, video, target, mask)
    diff = (out["reconstruction"].int() - clip.int()).abs()
    assert diff.max() <= 1
    if norm_pix:  # skipping the per-token un-normalization would be far off
        naive = (target.clamp(0, 1) * 255).round()
        assert (naive - model.patchify(clip.permute(3, 0, 1, 2)[None].float())[mask]).abs().mean() > 20


def test_norm_pix_rows_show_what_is_copied_and_the_raw_prediction() -> None:
    model = tiny(norm_pix_loss=True)
    clip, video = clip_and_video(model)
    mask = model.random_mask(1, generator=torch.Generator().manual_seed(3))
    target = model.normalized_target(video)[mask].reshape(1, -1, model.decoder_output_dim)
    perfect = paste_prediction(model, video, target, mask)
    hidden = perfect["mask"]
    zero = paste_prediction(model, video, torch.zeros_like(target), mask)
    pred, tgt = "prediction, token-normalised", "target, token-normalised"
    assert torch.equal(perfect[pred], perfect[tgt])  # a perfect prediction matches its target
    assert torch.equal(zero[tgt], perfect[tgt])
    # a zero output is mid grey before the un-normalisation, and after it each hidden token is
    # its own mean colour: exactly the zero-output row, the same for any model
    assert (zero[pred][hidden].int() - 128).abs().max() <= 1
    assert (zero["reconstruction"][hidden].int() - zero["zero output, un-normalised"][hidden].int()).abs().max() <= 1
    assert torch.equal(perfect["zero output, un-normalised"], zero["zero output, un-normalised"])
    # a flat block per token: far from the clip inside the hidden tokens
    assert (zero["reconstruction"][hidden].float() - clip[hidden].float()).abs().mean() > 20
    plain = tiny(norm_pix_loss=False)
    target = plain.normalized_target(video)[mask].reshape(1, -1, plain.decoder_output_dim)
    assert "zero output, un-normalised" not in paste_prediction(plain, video, target, mask)


def test_recon_figure_writes_png(tmp_path: Path) -> None:
    model = tiny()
    _, video = clip_and_video(model)
    out = reconstruct(model, video)
    png = recon_figure(out, tmp_path / "sub" / "recon.png", title="tiny")
    three = recon_figure(reconstruct(tiny(norm_pix_loss=False), video), tmp_path / "three.png")
    assert png.stat().st_size > three.stat().st_size  # norm-pix: three more rows drawn
    assert png.read_bytes()[:4] == _PNG
    one = recon_figure(out, tmp_path / "one.png", frames=1)
    assert one.stat().st_size > 0


def _checkpoint(tmp_path: Path, model: VideoMAE, **meta) -> Path:
    data = {"num_frames": 4, "sampling_rate": 2, "sampler": "stride", "input_size": 32,
            "mean": model.hparams["mean"], "std": model.hparams["std"]}
    return save_checkpoint(tmp_path / "run", 1, plain_state_dict(model), {"step": 1},
                           {"task": "pretrain", "model": model.hparams, "data": data, **meta})


def test_recon_from_checkpoint_end_to_end(tmp_path: Path) -> None:
    model = tiny()
    ckpt = _checkpoint(tmp_path, model)
    video = write_video(tmp_path / "clip.mp4", make_frames(12, 40, 48), gop=6)
    png = recon_from_checkpoint(ckpt, video, tmp_path / "out.png", seed=1)
    assert png == tmp_path / "out.png" and png.read_bytes()[:4] == _PNG
    # a run folder resolves to its newest checkpoint
    again = recon_from_checkpoint(tmp_path / "run", video, tmp_path / "out2.png")
    assert again.stat().st_size > 0


def test_recon_from_checkpoint_errors(tmp_path: Path) -> None:
    model = tiny()
    video = write_video(tmp_path / "clip.mp4", make_frames(8, 32, 32), gop=4)
    with pytest.raises(CheckpointError, match="missing"):
        recon_from_checkpoint(tmp_path / "missing", video, tmp_path / "x.png")
    ckpt = _checkpoint(tmp_path, model)
    with pytest.raises(DataError, match="bad.mp4") as err:
        recon_from_checkpoint(ckpt, write_text_as_video(tmp_path / "bad.mp4"), tmp_path / "x.png")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="nothere.mp4"):
        recon_from_checkpoint(ckpt, tmp_path / "nothere.mp4", tmp_path / "x.png")
    meta = json.loads((ckpt / META).read_text())
    (ckpt / META).write_text(json.dumps({**meta, "model": {**meta["model"], "embed_dim": 64}}))
    with pytest.raises(CheckpointError, match="weights do not fit") as err:
        recon_from_checkpoint(ckpt, video, tmp_path / "x.png")
    assert "\n" not in str(err.value)
    del meta["model"]
    (ckpt / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="meta.json") as err:
        recon_from_checkpoint(ckpt, video, tmp_path / "x.png")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x.png").exists()


def _write_metrics(path: Path, stages: list[int], base: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": i, "stage": s, "loss": base / (i + 1), "flops": 1e9 * (i + 1)})
             for i, s in enumerate(stages)]
    path.write_text("\n".join(lines) + '\n{"step": 9, "loss"\n')  # a line cut by a crash
    return path


def test_plot_losses_two_runs(tmp_path: Path) -> None:
    a = _write_metrics(tmp_path / "a" / "metrics.jsonl", [0, 0, 0, 1, 1, 2], 1.0)
    b = _write_metrics(tmp_path / "b.jsonl", [0, 0, 0, 0], 2.0)
    recs = read_metrics(a)
    assert len(recs) == 6
    assert [r["step"] for r in stage_changes(recs)] == [3, 5]
    assert [r["flops"] for r in stage_changes(recs)] == [3e9, 5e9]  # at the old stage's end
    # records every 4 steps plus one at each stage's end: the line goes at the boundary
    sparse = [{"step": 3, "stage": 0, "flops": 4.0}, {"step": 5, "stage": 0, "flops": 6.0},
              {"step": 9, "stage": 1, "flops": 12.0}]
    assert stage_changes(sparse) == [{"stage": 1, "step": 6, "flops": 6.0}]
    assert stage_changes(read_metrics(b)) == []
    png = plot_losses([tmp_path / "a", b], tmp_path / "loss.png", keys=("loss", "flops"))
    assert png.read_bytes()[:4] == _PNG
    with pytest.raises(ProgvidError, match="nope.jsonl"):
        plot_losses([tmp_path / "nope.jsonl"], tmp_path / "x.png")
    with pytest.raises(ProgvidError, match="no records with acc"):
        plot_losses([b], tmp_path / "x.png", keys=("acc",))


def test_flow_to_color() -> None:
    wheel = color_wheel()
    assert wheel.shape == (55, 3) and wheel.min() >= 0 and wheel.max() == 255
    zero = flow_to_color(torch.zeros(2, 5, 7))
    assert zero.shape == (5, 7, 3) and zero.dtype == torch.uint8
    assert (zero == 255).all()  # no motion -> white
    flow = torch.zeros(2, 4, 8)
    flow[0, :, :4] = 1.0  # right
    flow[0, :, 4:] = -1.0  # left
    img = flow_to_color(flow).int()
    right, left = img[0, 0], img[0, 7]
    assert (right - left).abs().max() > 100
    assert right[0] > right[2] and left[2] > left[0]  # Middlebury: right reddish, left blue-ish
    down = flow_to_color(torch.stack([torch.zeros(3, 3), torch.ones(3, 3)]))
    assert not torch.equal(down[0, 0], img[0, 0].to(torch.uint8))
    half = flow_to_color(flow * 0.5, max_norm=1.0).int()  # half magnitude: paler colour
    assert (half[0, 0] >= img[0, 0]).all() and (half[0, 0] > img[0, 0]).any()
    nan = flow_to_color(torch.full((2, 2, 2), float("nan")))
    assert (nan == 255).all()
    with pytest.raises(ValueError, match="2, H, W"):
        flow_to_color(torch.zeros(3, 4, 4))
    assert np.asarray(flow_to_color(flow)).shape == (4, 8, 3)


def test_plot_losses_one_panel_per_key(tmp_path: Path, monkeypatch) -> None:
    import progvid.figures as figures

    path = tmp_path / "run" / "metrics.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps({"step": i, "stage": int(i > 4), "loss": 2.0 / (i + 1),
                                          "lr": 1e-4 * i, "flops": 1e9 * i}) for i in range(10)))
    shown = {}

    def keep(fig, out_png):
        shown["axes"] = [(ax.get_ylabel(), ax.get_xlabel(), [list(np.asarray(ln.get_ydata(), dtype=float))
                                                             for ln in ax.get_lines()])
                         for ax in fig.axes]
        return Path(out_png)

    monkeypatch.setattr(figures, "save_figure", keep)
    plot_losses([tmp_path / "run"], tmp_path / "l.png", keys=("loss", "lr"))
    axes = shown["axes"]
    assert [a[0] for a in axes] == ["loss", "loss", "lr", "lr"]  # rows: keys; columns: step, flops
    assert [a[1] for a in axes] == ["", "", "step", "cumulative FLOPs"]
    lr_curve = [y for y in axes[2][2] if len(y) == 10]  # the curve; the rest are stage lines
    assert lr_curve == [[pytest.approx(1e-4 * i) for i in range(10)]]
    assert max(axes[0][2][0]) == 2.0  # loss on its own axis, not flattened by another key
    with pytest.raises(ProgvidError, match="no records with acc$"):
        plot_losses([tmp_path / "run"], tmp_path / "l.png", keys=("loss", "acc"))


def test_flow_key_is_the_colour_code() -> None:
    from progvid.figures import flow_key

    key = flow_key(33, max_norm=2.0).int()
    assert key.shape == (33, 33, 3)
    assert (key[16, 16] == 255).all()  # the centre: no motion, white
    right, left, up, down = key[16, 32], key[16, 0], key[0, 16], key[32, 16]
    flows = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
    for name, pixel in zip(flows, (right, left, up, down), strict=True):
        u, v = flows[name]  # the rim of the key = flow_to_color at the rim's magnitude
        want = flow_to_color(torch.tensor([[[2.0 * u]], [[2.0 * v]]]), max_norm=2.0)[0, 0]
        assert (pixel - want.int()).abs().max() <= 1, name
    assert right[0] > right[2] and left[2] > left[0]


def test_flow_pictures_scale_and_pairs() -> None:
    from progvid.viz import MIN_RIM, flow_pictures

    video = torch.zeros(1, 3, 5, 8, 8)
    mean, std = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    tiny = torch.full((1, 2, 5, 8, 8), 0.005)  # a hundredth of a pixel: shown still (white)
    ts, rows, rim = flow_pictures(video, tiny, mean, std, pairs=4)
    assert ts == [0, 1, 2, 3] and rim == MIN_RIM
    assert all((r[2] >= 250).all() for r in rows)
    moving = torch.zeros(1, 2, 5, 8, 8)
    moving[0, 0, 1] = 3.0  # pair 1 moves right by 3 px, the others stand still
    ts, rows, rim = flow_pictures(video, moving, mean, std, pairs=4)
    assert rim == 3.0
    assert (rows[0][2] == 255).all() and (rows[1][2] < 200).any()


def test_recon_says_when_it_resizes(tmp_path: Path, capsys) -> None:
    model = tiny()
    ckpt = _checkpoint(tmp_path, model)
    video = write_video(tmp_path / "clip.mp4", make_frames(12, 40, 48), gop=6)
    recon_from_checkpoint(ckpt, video, tmp_path / "out.png")
    err = capsys.readouterr().err
    assert "clip.mp4: 48x40 video shrunk to the model's input size (short side 40 -> 32, " \
        "centre crop 32x32)" in err
    same = write_video(tmp_path / "same.mp4", make_frames(12, 32, 32), gop=6)
    recon_from_checkpoint(ckpt, same, tmp_path / "out2.png")
    assert "same.mp4" not in capsys.readouterr().err


def test_training_seconds_adds_resumed_segments() -> None:
    recs = [{"step": 9, "time": 1.0}, {"step": 19, "time": 2.5}, {"step": 24, "val_top1": 0.1},
            {"step": 19, "time": 0.5}, {"step": 29, "time": 1.5}]  # killed after 19, resumed
    assert training_seconds(recs) == pytest.approx(4.0)
    assert training_seconds([]) == 0.0
