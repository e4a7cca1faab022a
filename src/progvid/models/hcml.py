"""HCML: Hierarchical Contrastive Motion Learning on a 3-D ResNet (seed 004, [0027]-[0058]).

Inference path (`HCMLTrunk`, what `deploy()` keeps): backbone stages; after stage l for each
configured level l, P^l = PMB_l(F^l) and Z^l = F^l + g^l(P^l) feeds the next stage. It never
uses the flow network: P^0 only serves as the contrastive target of the first level.
Training-only side branch: FlowNet (P^0, flow, L_recon) and LevelPredictors (L_contrastive).

Level membership (for progressive freezing): 0 = flow net; l = backbone stage l (level 1 also
owns the stem) + PMB_l + fusion_l + predictor_l; 5 = classifier (fc).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from progvid.errors import ConfigError

from .losses import TAU, ZETA, info_nce, reconstruction_loss, sample_locations
from .motion import (
    BETA,
    CV_STRIDE,
    DELTAS,
    MAX_DISPLACEMENT,
    FlowNet,
    Fusion,
    LevelPredictor,
    PrimeMotionBlock,
    resample_to,
)
from .resnet3d import ResNet3D, resnet3d

LEVELS = (1, 2, 3)  # res2..res4: res5 (7x7 at 224 px) is barely larger than the 13x13 window
NUM_SAMPLES = 16  # N locations per video: DPC contrasts a 4x4 = 16-position grid per video
LAMBDA = 1.0  # weight of L_recon in joint training; the seed gives none; L_recon is O(0.1-1)
# weight of each level's L_contrastive in joint training; the seed gives none. Each term is an
# InfoNCE over about a thousand candidates (about 4-7 nats, against L_cls about 1-2), so at 1 they
# crowd out classification: on 10% of the pan labels gamma 0.1 lifts HCML from random init by
# 20 points and leaves pre-trained HCML level or better (bench/hcml_pan.md, 3 seeds)
GAMMA = 0.1
HEAD_LEVEL = 5
MODES = ("infer", "flow", "motion", "joint")


@dataclass
class HCMLOutput:
    """What one forward produced; losses are None / absent when the mode skips them."""

    logits: Tensor | None = None
    flow: Tensor | None = None  # (B, 2, T, H, W), pair (t, t+1); last frame paired with itself
    motion: dict[int, Tensor] = field(default_factory=dict)  # level -> P^l (B, C, T, H, W)
    recon: Tensor | None = None
    contrastive: dict[int, Tensor] = field(default_factory=dict)

    def total(
        self,
        cls_loss: Tensor | None = None,
        *,
        recon_weight: float = LAMBDA,
        contrastive_weight: float | Mapping[int, float] = GAMMA,
    ) -> Tensor:
        """L = L_cls + lambda L_recon + sum_l gamma_l L_contrastive^l over the terms present."""
        terms: list[Tensor] = [] if cls_loss is None else [cls_loss]
        if self.recon is not None:
            terms.append(recon_weight * self.recon)
        for level, loss in self.contrastive.items():
            w = contrastive_weight if isinstance(contrastive_weight, float | int) else (
                contrastive_weight[level])
            terms.append(w * loss)
        if not terms:
            raise ConfigError("HCMLOutput.total: no loss term was computed in this mode")
        return torch.stack(terms).sum()


class HCMLTrunk(nn.Module):
    """Backbone + prime motion blocks + fusion: the deployable network (video -> logits)."""

    def __init__(
        self,
        backbone: ResNet3D,
        levels: Sequence[int] = LEVELS,
        *,
        beta: int = BETA,
        max_displacement: int = MAX_DISPLACEMENT,
        stride: int = CV_STRIDE,
    ) -> None:
        super().__init__()
        self.levels = _check_levels(levels)
        self.backbone = backbone
        self.pmb = nn.ModuleDict()
        self.fusion = nn.ModuleDict()
        for level in self.levels:
            ch = backbone.feature_channels[f"level{level}"]
            pmb = PrimeMotionBlock(ch, beta, max_displacement, stride)
            self.pmb[str(level)] = pmb
            self.fusion[str(level)] = Fusion(pmb.out_channels, ch)

    def forward_levels(
        self, video: Tensor, upto: int | None = None
    ) -> tuple[Tensor | None, dict[int, Tensor]]:
        """(logits, {level: P^l}); with `upto`, stop after that stage (logits None)."""
        if video.dim() != 5:
            raise ConfigError(f"expected a video (B, C, T, H, W), got shape {tuple(video.shape)}")
        x = self.backbone.stem(video)
        motion: dict[int, Tensor] = {}
        for level, stage in enumerate(self.backbone.stages, start=1):
            x = stage(x)
            stop = upto is not None and level >= upto
            if level in self.levels:
                motion[level] = self.pmb[str(level)](x)
                if not stop:  # Z^l only feeds the next stage
                    x = self.fusion[str(level)](x, motion[level])
            if stop:
                return None, motion
        return self.backbone.head(x), motion

    def forward(self, video: Tensor) -> Tensor:
        logits, _ = self.forward_levels(video)
        assert logits is not None
        return logits


class HCMLNet(nn.Module):
    """HCML training model: trunk + flow net (level 0) + level predictors.

    forward(video, mode=...):
      "infer"  logits and P^l (l >= 1) only;
      "flow"   flow net only: flow, P^0, recon (progressive phase 0);
      "motion" self-supervised: recon + contrastive for `levels` (default all), no logits;
      "joint"  everything: logits, recon, contrastive (L = L_cls + lambda L_recon + ...).
    """

    def __init__(
        self,
        backbone: ResNet3D,
        *,
        levels: Sequence[int] = LEVELS,
        flow_net: FlowNet | None = None,
        beta: int = BETA,
        max_displacement: int = MAX_DISPLACEMENT,
        stride: int = CV_STRIDE,
        predictor_hidden: int | None = None,
        deltas: Sequence[int] = DELTAS,
        num_samples: int = NUM_SAMPLES,
        tau: float = TAU,
        zeta: float = ZETA,
    ) -> None:
        super().__init__()
        self.trunk = HCMLTrunk(backbone, levels, beta=beta, max_displacement=max_displacement,
                               stride=stride)
        self.levels = self.trunk.levels
        self.flow_net = flow_net if flow_net is not None else FlowNet(backbone.conv1.in_channels)
        self.predictors = nn.ModuleDict()
        lower_ch = self.flow_net.out_channels
        for level in self.levels:
            upper_ch = self.trunk.pmb[str(level)].out_channels
            self.predictors[str(level)] = LevelPredictor(upper_ch, lower_ch, predictor_hidden,
                                                         deltas)
            lower_ch = upper_ch
        self.num_samples, self.tau, self.zeta = num_samples, tau, zeta
        self.frozen_below = 0

    @classmethod
    def from_hparams(cls, hp: Mapping[str, object]) -> HCMLNet:
        """Rebuild from the JSON-safe settings a checkpoint carries (the `model.hcml` config
        section plus `num_classes`); they are kept on `.hparams`, loss weights included."""
        backbone = resnet3d(hp["resnet_depth"], num_classes=hp["num_classes"], width=hp["width"],
                            dropout=hp["dropout"], temporal_strides=tuple(hp["temporal_strides"]))
        net = cls(backbone, levels=tuple(hp["levels"]), flow_net=FlowNet(3), beta=hp["beta"],
                  max_displacement=hp["max_displacement"], stride=hp["stride"],
                  deltas=tuple(hp["deltas"]), num_samples=hp["num_samples"], tau=hp["tau"],
                  zeta=hp["zeta"])
        net.hparams = dict(hp)
        return net

    @property
    def backbone(self) -> ResNet3D:
        return self.trunk.backbone

    def lower_level(self, level: int) -> int:
        """The level whose P is the contrastive target of `level` (0 = the flow net)."""
        i = self.levels.index(level)
        return 0 if i == 0 else self.levels[i - 1]

    # -- forward ---------------------------------------------------------------------------

    def forward(
        self,
        video: Tensor,
        *,
        mode: str = "joint",
        levels: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> HCMLOutput:
        if mode not in MODES:
            raise ConfigError(f"HCMLNet mode must be one of {MODES}, got {mode!r}")
        out = HCMLOutput()
        if mode == "infer":
            out.logits, out.motion = self.trunk.forward_levels(video)
            return out
        want = list(self.levels) if levels is None or mode != "motion" else sorted(levels)
        for level in want:
            if level not in self.levels:
                raise ConfigError(f"level {level} is not one of the HCML levels {self.levels}")
        if mode == "flow" or (mode == "motion" and want and self.lower_level(want[0]) == 0):
            out.flow, out.motion[0] = self.flow_net.forward_clip(video)
            out.recon = clip_reconstruction_loss(video, out.flow, self.zeta)
        if mode == "flow":
            return out
        if mode == "joint" and out.flow is None:
            out.flow, out.motion[0] = self.flow_net.forward_clip(video)
            out.recon = clip_reconstruction_loss(video, out.flow, self.zeta)
        logits, motion = self.trunk.forward_levels(video, upto=None if mode == "joint" else max(want))
        out.logits = logits
        out.motion.update(motion)
        for level in want:
            lower = out.motion[self.lower_level(level)]
            out.contrastive[level] = level_contrastive_loss(
                self.predictors[str(level)], out.motion[level], lower, self.num_samples,
                self.tau, generator)
        return out

    # -- progressive training --------------------------------------------------------------

    def level_modules(self, level: int) -> list[nn.Module]:
        """Modules owned by a level (see the module docstring)."""
        if level == 0:
            return [self.flow_net]
        if level == HEAD_LEVEL:
            return [self.backbone.fc]
        if not 1 <= level <= 4:
            raise ConfigError(f"levels are 0..{HEAD_LEVEL}, got {level}")
        bb = self.backbone
        mods: list[nn.Module] = [bb.conv1, bb.bn1] if level == 1 else []
        mods.append(bb.stages[level - 1])
        key = str(level)
        if key in self.trunk.pmb:
            mods += [self.trunk.pmb[key], self.trunk.fusion[key], self.predictors[key]]
        return mods

    def freeze_below(self, level: int) -> None:
        """Freeze every level < `level` (no gradients, BatchNorm in eval), unfreeze the rest."""
        if not 0 <= level <= HEAD_LEVEL + 1:
            raise ConfigError(f"freeze_below takes 0..{HEAD_LEVEL + 1}, got {level}")
        self.frozen_below = level
        for k in range(HEAD_LEVEL + 1):
            for m in self.level_modules(k):
                m.requires_grad_(k >= level)
        self.train(self.training)  # re-apply the BatchNorm modes

    def train(self, mode: bool = True) -> HCMLNet:
        super().train(mode)
        for k in range(self.frozen_below):  # frozen parts stay in eval whatever `mode` says
            for m in self.level_modules(k):
                m.eval()
        return self

    def trainable_for(self, phase: int | str) -> list[nn.Parameter]:
        """Set the freezing of a progressive phase and return the parameters it trains.

        0: the flow net (L_recon); l in levels: freeze below the previous level's successor
        and train levels (previous, l] (L_contrastive^l); "joint": everything.
        """
        if phase == "joint":
            self.freeze_below(0)
            return [p for p in self.parameters() if p.requires_grad]
        if phase == 0:
            self.freeze_below(0)
            return list(self.flow_net.parameters())
        if not isinstance(phase, int) or phase not in self.levels:
            raise ConfigError(f"phase must be 0, one of {self.levels} or 'joint', got {phase!r}")
        first = self.lower_level(phase) + 1
        self.freeze_below(first)
        return [p for k in range(first, phase + 1) for m in self.level_modules(k)
                for p in m.parameters()]

    def deploy(self) -> HCMLTrunk:
        """A standalone copy of the inference path (no flow net, no predictors), in eval."""
        trunk = copy.deepcopy(self.trunk)
        trunk.requires_grad_(True)
        return trunk.eval()


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(x) for x in levels}))
    if not out or out[0] < 1 or out[-1] > 4 or len(out) != len(tuple(levels)):
        raise ConfigError(f"HCML levels must be distinct values in 1..4, got {tuple(levels)}")
    return out


def clip_reconstruction_loss(video: Tensor, flow: Tensor, zeta: float = ZETA) -> Tensor:
    """L_recon over the real pairs (t, t+1), t < T-1 (the last self-pair is skipped: nothing
    to reconstruct); a one-frame clip uses its self-pair."""
    t = video.shape[2]
    k = max(t - 1, 1)
    f1 = video[:, :, :k]
    f2 = video[:, :, 1:] if t > 1 else video
    flat = lambda x: x.transpose(1, 2).flatten(0, 1)  # noqa: E731
    return reconstruction_loss(flat(f1), flat(f2), flat(flow[:, :, :k]), zeta)


def _gather(x: Tensor, idx: Tensor) -> Tensor:
    """(B, C, T, H, W) at flat spatial indices idx (B, N) -> (B, N, T, C)."""
    b, c, t = x.shape[:3]
    flat = x.flatten(3)
    ix = idx.to(x.device).view(b, 1, 1, -1).expand(b, c, t, idx.shape[1])
    return flat.gather(3, ix).permute(0, 3, 2, 1)


def level_contrastive_loss(
    predictor: LevelPredictor,
    upper: Tensor,
    lower: Tensor,
    num_samples: int = NUM_SAMPLES,
    tau: float = TAU,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mean over deltas of InfoNCE(f_delta([P^l_t, P^{l-1}_t]), P^{l-1}_{t+delta}).

    P^{l-1} is resampled onto P^l's (T, H, W) grid (`resample_to`); N locations per video are
    drawn once and shared by predictions and targets; time steps t = 0..T-1-delta. Deltas with
    no valid t (delta >= T) are skipped.
    """
    lower = resample_to(lower, upper.shape[2:])
    b, _, t, h, w = upper.shape
    idx = sample_locations(h, w, num_samples, generator, batch=b)
    up, lo = _gather(upper, idx), _gather(lower, idx)  # (B, N, T, C)
    deltas = [d for d in predictor.deltas if d < t]
    if not deltas:
        raise ConfigError(f"contrastive prediction needs T > min(deltas) = "
                          f"{min(predictor.deltas)}, got T = {t}")
    preds = predictor(up, lo)
    losses = [info_nce(preds[d][:, :, : t - d], lo[:, :, d:], tau) for d in deltas]
    return torch.stack(losses).mean()


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, *inputs: Tensor) -> int:
    """Multiply-accumulates of one forward: torch's FlopCounterMode / 2, plus the cost volumes
    of prime motion blocks (elementwise products the counter does not see): B*T*H*W*Cr*M."""
    extra = [0]

    def hook(m: nn.Module, args: tuple[Tensor, ...], _out: Tensor) -> None:
        b, _, t, h, w = args[0].shape
        extra[0] += b * t * h * w * m.reduced_channels * m.cost_channels

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, PrimeMotionBlock)]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        for hd in handles:
            hd.remove()
        module.train(was_training)
    return counter.get_total_flops() // 2 + extra[0]


def deploy_overhead(net: HCMLNet, video: Tensor) -> dict[str, int | float]:
    """Parameters and MACs of the deployed model against the plain backbone, for one input."""
    deployed = net.deploy()
    plain = copy.deepcopy(net.backbone)
    out: dict[str, int | float] = {
        "params_backbone": count_params(plain),
        "params_deploy": count_params(deployed),
        "macs_backbone": count_macs(plain, video),
        "macs_deploy": count_macs(deployed, video),
    }
    out["params_overhead"] = out["params_deploy"] / out["params_backbone"] - 1.0
    out["macs_overhead"] = out["macs_deploy"] / out["macs_backbone"] - 1.0
    return out


def trainable_names(module: nn.Module, params: Iterable[nn.Parameter]) -> list[str]:
    """Names of `params` inside `module` (to log what a phase trains)."""
    ids = {id(p) for p in params}
    return [n for n, p in module.named_parameters() if id(p) in ids]
