"""Fine-tuning classifier: shapes, head init, gradients, layer decay, loading pre-trained weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from progvid.engine.checkpoint import plain_state_dict, save_checkpoint
from progvid.errors import CheckpointError
from progvid.loading import LoadReport, classifier_from_pretrained
from progvid.models import VideoMAE, sincos_table, videomae
from progvid.models.classifier import VideoClassifier, classifier, layer_decay_groups

PRETRAIN_LEFTOVERS = {"mask_token", "encoder_to_decoder.weight", "encoder.norm.weight",
                      "encoder.norm.bias"}


def tiny_classifier(**kw) -> VideoClassifier:
    args = {"num_classes": 5, "num_frames": 4, "img_size": 32, "patch_size": 8,
            "embed_dim": 32, "depth": 2, "num_heads": 2, **kw}
    return classifier("tiny", **args)


def tiny_vmae() -> VideoMAE:
    torch.manual_seed(0)
    return videomae("tiny", num_frames=4, img_size=32, patch_size=8, embed_dim=32, depth=2,
                    num_heads=2, decoder_embed_dim=32, decoder_num_heads=2, decoder_depth=1)


def clip(frames: int = 4, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, frames, 32, 32, generator=torch.Generator().manual_seed(0))


def encoder_equal(model: VideoClassifier, vmae: VideoMAE) -> None:
    ours = model.encoder.state_dict()
    theirs = {k: v for k, v in vmae.encoder.state_dict().items() if not k.startswith("norm.")}
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        assert torch.equal(ours[k], v), k


def expected_unexpected(vmae: VideoMAE) -> list[str]:
    return sorted(k for k in vmae.state_dict() if k.startswith("decoder.") or k in
                  PRETRAIN_LEFTOVERS)


# -- model ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("frames", [2, 8, 16])
def test_shapes_any_frame_count(frames: int) -> None:
    model = tiny_classifier().eval()
    video = clip(frames)
    with torch.no_grad():
        assert model(video).shape == (2, 5)
        assert model.forward_features(video).shape == (2, 32)


def test_encoder_has_no_final_norm_and_features_are_fc_norm_of_mean() -> None:
    model = tiny_classifier().eval()
    assert not any(k.startswith("encoder.norm.") for k in model.state_dict())
    video = clip()
    with torch.no_grad():
        tokens = model.encoder(video, apply_norm=False)
        ref = torch.nn.functional.layer_norm(tokens.mean(1), (32,), model.fc_norm.weight,
                                             model.fc_norm.bias, eps=1e-6)
        torch.testing.assert_close(model.forward_features(video), ref)


def test_head_init_scale() -> None:
    torch.manual_seed(0)
    model = classifier("tiny", num_classes=400, embed_dim=192, depth=1, num_heads=3)
    std = model.head.weight.std().item()
    assert 0.9 * 0.02 * 0.001 < std < 1.1 * 0.02 * 0.001
    assert torch.count_nonzero(model.head.bias) == 0
    assert model.fc_norm.eps == 1e-6
    assert torch.equal(model.fc_norm.weight, torch.ones(192))


def test_gradient_flow_and_hparams_round_trip() -> None:
    model = tiny_classifier(head_dropout=0.5, drop_path=0.1).train()
    loss = model(clip()).logsumexp(-1).sum()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []
    import json

    hp = json.loads(json.dumps(model.hparams))
    again = VideoClassifier.from_hparams(hp)
    assert again.hparams == model.hparams
    assert set(again.state_dict()) == set(model.state_dict())
    assert model.no_weight_decay() == set()


def test_layer_decay_groups() -> None:
    model = tiny_classifier()
    groups = layer_decay_groups(model, base_weight_decay=0.05, layer_decay=0.75)
    scale: dict[str, float] = {}
    decay: dict[str, float] = {}
    for g in groups:
        assert len(g["params"]) == len(g["param_names"])
        for n in g["param_names"]:
            scale[n], decay[n] = g["lr_scale"], g["weight_decay"]
    names = [n for n, _ in model.named_parameters()]
    assert sorted(scale) == sorted(names)  # every parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(names)
    assert scale["head.weight"] == scale["fc_norm.weight"] == 1.0
    assert scale["encoder.blocks.1.attn.qkv.weight"] == 0.75
    assert scale["encoder.blocks.0.mlp.fc1.weight"] == 0.75**2
    assert scale["encoder.patch_embed.proj.weight"] == 0.75**3
    for n in names:
        no_decay = n.endswith(".bias") or "norm" in n or n.endswith(("q_bias", "v_bias"))
        assert decay[n] == (0.0 if no_decay else 0.05), n
    assert {g["layer_id"] for g in groups} == {0, 1, 2, 3}
    opt = torch.optim.AdamW(groups, lr=1.0)  # groups are valid AdamW groups
    for g in opt.param_groups:
        g["lr"] = 1e-3 * g.get("lr_scale", 1.0)
    assert len(opt.param_groups) == len(groups)


# -- loading --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[VideoMAE, Path]:
    vmae = tiny_vmae()
    with torch.no_grad():  # non-trivial norms and biases
        for p in vmae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    run_dir = tmp_path_factory.mktemp("pretrain_run")
    save_checkpoint(run_dir, 1, plain_state_dict(vmae), {"step": 1},
                    {"task": "pretrain", "model": vmae.hparams})
    return vmae, run_dir


def test_load_progvid_checkpoint(pretrained) -> None:
    vmae, run_dir = pretrained
    for src in (run_dir, run_dir / "checkpoints" / "step_00000001"):
        model, report = classifier_from_pretrained(src, num_classes=7)
        assert isinstance(report, LoadReport)
        assert report.kind == "progvid"
        encoder_equal(model, vmae)
        assert report.missing == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
        assert report.unexpected == expected_unexpected(vmae)
        assert model.head.out_features == 7 and model.hparams["depth"] == 2
        assert "missing (new)" in str(report)
    with torch.no_grad():  # the loaded encoder computes what the pre-trained one computes
        video = clip()
        torch.testing.assert_close(model.eval().encoder(video),
                                   vmae.eval().encoder(video, apply_norm=False))
    model, _ = classifier_from_pretrained(run_dir, num_classes=3, num_frames=8)
    assert model.hparams["num_frames"] == 8 and model(clip(8)).shape == (2, 3)


def test_load_official_pth(pretrained, tmp_path: Path) -> None:
    vmae, _ = pretrained
    sd = {f"module.{k}": v for k, v in vmae.state_dict().items()}
    sd["encoder.pos_embed"] = sincos_table(32, 32).unsqueeze(0)  # dropped: fixed table
    file = tmp_path / "checkpoint.pth"
    torch.save({"model": sd}, file)
    model, report = classifier_from_pretrained(file, num_classes=4, num_heads=2)
    assert report.kind == "official"
    encoder_equal(model, vmae)
    assert report.missing == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert report.unexpected == expected_unexpected(vmae)
    assert (model.hparams["patch_size"], model.hparams["tubelet_size"]) == (8, 2)


def test_load_official_finetuned_layout(pretrained, tmp_path: Path) -> None:
    """Official fine-tuned checkpoints: no `encoder.` prefix, fc_norm + head of another task."""
    vmae, _ = pretrained
    sd = {k.removeprefix("encoder."): v for k, v in vmae.encoder.state_dict().items()
          if not k.startswith("norm.")}
    sd.update({"fc_norm.weight": torch.full((32,), 2.0), "fc_norm.bias": torch.zeros(32),
               "head.weight": torch.zeros(400, 32), "head.bias": torch.zeros(400)})
    file = tmp_path / "finetuned.pth"
    torch.save({"module": sd}, file)
    model, report = classifier_from_pretrained(file, num_classes=4, num_heads=2)
    encoder_equal(model, vmae)
    assert torch.equal(model.fc_norm.weight, torch.full((32,), 2.0))
    assert report.missing == ["head.bias", "head.weight"]
    assert report.unexpected == ["head.bias", "head.weight"]  # the old head is not loaded


def test_load_transformers_folders(pretrained, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from progvid.interop import to_transformers

    vmae, _ = pretrained
    hf = to_transformers(vmae)
    hf.save_pretrained(str(tmp_path / "pretraining"))
    model, report = classifier_from_pretrained(tmp_path / "pretraining", num_classes=4)
    assert report.kind == "transformers"
    encoder_equal(model, vmae)
    assert report.missing == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert report.unexpected == expected_unexpected(vmae)

    hf.videomae.save_pretrained(str(tmp_path / "model"))  # VideoMAEModel
    model, report = classifier_from_pretrained(tmp_path / "model", num_classes=4)
    encoder_equal(model, vmae)
    assert report.unexpected == ["encoder.norm.bias", "encoder.norm.weight"]

    config = hf.config
    config.use_mean_pooling, config.num_labels = True, 6
    cls = transformers.VideoMAEForVideoClassification(config)
    cls.videomae.load_state_dict(
        {k: v for k, v in hf.videomae.state_dict().items() if not k.startswith("layernorm.")})
    cls.save_pretrained(str(tmp_path / "classification"))
    model, report = classifier_from_pretrained(tmp_path / "classification", num_classes=4)
    encoder_equal(model, vmae)
    assert torch.equal(model.fc_norm.weight, cls.fc_norm.weight.detach())
    assert report.missing == report.unexpected == ["head.bias", "head.weight"]


def test_corrupted_checkpoints_fail_naming_keys(pretrained, tmp_path: Path) -> None:
    vmae, _ = pretrained
    weights = plain_state_dict(vmae)
    missing_block = {k: v for k, v in weights.items() if not k.startswith("encoder.blocks.1.")}
    extra = {**weights, "encoder.blocks.0.attn.k_bias": torch.zeros(32)}
    for name, sd, key in (("missing", missing_block, "encoder.blocks.1."),
                          ("extra", extra, "encoder.blocks.0.attn.k_bias")):
        run_dir = tmp_path / name
        save_checkpoint(run_dir, 1, sd, {"step": 1}, {"task": "pretrain", "model": vmae.hparams})
        with pytest.raises(CheckpointError, match="do not fit") as info:
            classifier_from_pretrained(run_dir, num_classes=3)
        assert key in str(info.value) and "\n" not in str(info.value)
    file = tmp_path / "extra.pth"  # official layout: rejected by the key validation
    torch.save({"model": extra}, file)
    with pytest.raises(CheckpointError, match="k_bias"):
        classifier_from_pretrained(file, num_classes=3, num_heads=2)
    save_checkpoint(tmp_path / "ft", 1, weights, {"step": 1},
                    {"task": "finetune", "model_kind": "resnet3d", "model": {}})
    with pytest.raises(CheckpointError, match="not a VideoMAE encoder checkpoint .*'resnet3d'"):
        classifier_from_pretrained(tmp_path / "ft", num_classes=3)
    with pytest.raises(CheckpointError, match="not found"):
        classifier_from_pretrained(tmp_path / "nowhere", num_classes=3)


def test_shape_mismatch_fails(pretrained, tmp_path: Path) -> None:
    vmae, _ = pretrained
    weights = plain_state_dict(vmae)
    weights["encoder.blocks.0.mlp.fc1.bias"] = torch.zeros(7)
    save_checkpoint(tmp_path, 1, weights, {"step": 1}, {"task": "pretrain", "model": vmae.hparams})
    with pytest.raises(CheckpointError, match="shape mismatch: .*fc1.bias"):
        classifier_from_pretrained(tmp_path, num_classes=3)
