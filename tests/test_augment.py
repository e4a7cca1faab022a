"""Tests for progvid.data.augment and frame_ops: clip RandAugment and random erasing (VideoMAE
recipe).

Each op is checked against Pillow (used here only) on crops of a real photograph plus two
synthetic frames (flat regions with hard edges, and ramps). Tolerances found:
* point ops (Invert, Posterize, Solarize, SolarizeAdd, AutoContrast, Equalize) and the enhance
  ops (Color, Contrast, Brightness, Sharpness): identical;
* Rotate / Shear / Translate, nearest: identical; bicubic (VideoMAE's) and bilinear: never more
  than 1 grey level apart, on at most 0.5% (bicubic) / 5% (bilinear) of the values. Pillow
  truncates a float64 result and we a float32 one, so exact ties (mostly in bilinear
  translations, whose fraction is constant) can land on either side.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from progvid.data import augment as A
from progvid.data import frame_ops as O
from progvid.data import transforms as T


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def one_thread():
    """Clip augmentations run in single-threaded loader workers; a second thread on tiny clips
    only adds synchronization cost (hundreds of ms on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _photo_frames(h: int = 40, w: int = 52) -> list[np.ndarray]:
    import matplotlib.cbook as cbook

    photo = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    boxes = [(0, 0, 300, 240), (100, 150, 300, 310), (250, 60, 480, 240), (40, 300, 260, 480)]
    frames = [np.asarray(photo.crop(b).resize((w, h), Image.BILINEAR)) for b in boxes]
    flat = np.zeros((h, w, 3), np.uint8)  # flat areas and hard edges
    flat[:] = (40, 90, 200)
    flat[8:25, 5:30] = (250, 10, 128)
    flat[:, 40:] = 0
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1).astype(np.uint8)
    return [*frames, flat, ramp]


FRAMES = _photo_frames()
CLIP = torch.from_numpy(np.stack(FRAMES))  # (6, 40, 52, 3): height != width on purpose


def pil_clip(fn) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(fn(Image.fromarray(f))) for f in FRAMES]))


def solarize_add_pil(im: Image.Image, add: int, thresh: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return im.point(lut * 3)


EXACT_OPS = [
    ("invert", lambda c: O.invert(c), ImageOps.invert),
    ("autocontrast", lambda c: O.auto_contrast(c), ImageOps.autocontrast),
    ("equalize", lambda c: O.equalize(c), ImageOps.equalize),
]
EXACT_OPS += [
    (f"posterize{b}", lambda c, b=b: O.posterize(c, b), lambda im, b=b: ImageOps.posterize(im, b))
    for b in (1, 2, 3, 4, 8)
]
EXACT_OPS += [
    (f"solarize{t}", lambda c, t=t: O.solarize(c, t), lambda im, t=t: ImageOps.solarize(im, t))
    for t in (0, 77, 128, 201, 256)
]
EXACT_OPS += [
    (
        f"solarize_add{a}",
        lambda c, a=a: O.solarize_add(c, a),
        lambda im, a=a: solarize_add_pil(im, a),
    )
    for a in (0, 33, 77, 110)
]
ENHANCE = [
    ("color", O.color, ImageEnhance.Color),
    ("contrast", O.contrast, ImageEnhance.Contrast),
    ("brightness", O.brightness, ImageEnhance.Brightness),
    ("sharpness", O.sharpness, ImageEnhance.Sharpness),
]
EXACT_OPS += [
    (f"{name}{f}", lambda c, op=op, f=f: op(c, f), lambda im, cls=cls, f=f: cls(im).enhance(f))
    for name, op, cls in ENHANCE
    for f in (0.1, 0.37, 0.5, 1.0, 1.63, 1.9)
]


@pytest.mark.parametrize(
    "ours,ref", [(o, r) for _, o, r in EXACT_OPS], ids=[n for n, _, _ in EXACT_OPS]
)
def test_pixel_ops_identical_to_pil(ours, ref) -> None:
    out = ours(CLIP)
    assert out.dtype == torch.uint8 and out.shape == CLIP.shape
    assert torch.equal(out, pil_clip(ref))


RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
FILL = (128, 128, 128)


def _pil_affine(matrix_of):
    def fn(im: Image.Image, interp: str) -> Image.Image:
        return im.transform(
            im.size, Image.AFFINE, matrix_of(im), resample=RESAMPLE[interp], fillcolor=FILL
        )

    return fn


GEOMETRY = []
GEOMETRY += [
    (
        f"rotate{d}",
        lambda c, i, d=d: O.rotate(c, d, interpolation=i),
        lambda im, i, d=d: im.rotate(d, resample=RESAMPLE[i], fillcolor=FILL),
    )
    for d in (-30, -21, 5.5, 17.3, 90, 180)
]
GEOMETRY += [
    (
        f"shear_x{s}",
        lambda c, i, s=s: O.shear_x(c, s, interpolation=i),
        _pil_affine(lambda im, s=s: (1, s, 0, 0, 1, 0)),
    )
    for s in (-0.3, 0.13, 0.21)
]
GEOMETRY += [
    (
        f"shear_y{s}",
        lambda c, i, s=s: O.shear_y(c, s, interpolation=i),
        _pil_affine(lambda im, s=s: (1, 0, 0, s, 1, 0)),
    )
    for s in (-0.21, 0.3)
]
GEOMETRY += [
    (
        f"translate_x{p}",
        lambda c, i, p=p: O.translate_x_rel(c, p, interpolation=i),
        _pil_affine(lambda im, p=p: (1, 0, p * im.size[0], 0, 1, 0)),
    )
    for p in (-0.45, 0.1, 0.315)
]
GEOMETRY += [
    (
        f"translate_y{p}",
        lambda c, i, p=p: O.translate_y_rel(c, p, interpolation=i),
        _pil_affine(lambda im, p=p: (1, 0, 0, 0, 1, p * im.size[1])),
    )
    for p in (-0.315, 0.45)
]
# interpolation -> (largest difference, largest share of differing values)
AFFINE_TOLERANCE = {"nearest": (0, 0.0), "bicubic": (1, 0.005), "bilinear": (1, 0.05)}


@pytest.mark.parametrize("interp", list(AFFINE_TOLERANCE))
@pytest.mark.parametrize(
    "ours,ref", [(o, r) for _, o, r in GEOMETRY], ids=[n for n, _, _ in GEOMETRY]
)
def test_geometric_ops_match_pil(ours, ref, interp) -> None:
    out = ours(CLIP, interp)
    assert out.dtype == torch.uint8 and out.shape == CLIP.shape
    expected = pil_clip(lambda im: ref(im, interp))
    diff = (out.int() - expected.int()).abs()
    max_diff, max_share = AFFINE_TOLERANCE[interp]
    assert int(diff.max()) <= max_diff
    assert float((diff > 0).float().mean()) <= max_share


def test_affine_fill_and_identity() -> None:
    shifted = O.translate_x(CLIP, 1000.0, fill=(1, 2, 3))  # everything leaves the frame
    assert torch.equal(shifted, torch.tensor([1, 2, 3], dtype=torch.uint8).expand_as(CLIP))
    assert torch.equal(O.rotate(CLIP, 0.0), CLIP)
    assert torch.equal(O.translate_y(CLIP, 3.0, interpolation="bicubic")[:, :-3], CLIP[:, 3:])
    with pytest.raises(ValueError, match="interpolation"):
        O.rotate(CLIP, 10, interpolation="lanczos")
    with pytest.raises(ValueError, match="fill"):
        O.rotate(CLIP, 10, fill=(1, 2))


def test_right_angles_on_square_frames_are_exact() -> None:
    square = CLIP[:, :40, :40].contiguous()
    for deg in (90, 180, 270, -90):
        expected = torch.from_numpy(
            np.stack([np.asarray(Image.fromarray(f[:40, :40]).rotate(deg)) for f in FRAMES])
        )
        assert torch.equal(O.rotate(square, deg), expected)


def test_grey_clips_match_pil_l_mode() -> None:
    grey = [np.asarray(Image.fromarray(f).convert("L")) for f in FRAMES]
    clip = torch.from_numpy(np.stack(grey))[..., None]
    cases = [
        (O.equalize, ImageOps.equalize),
        (lambda c: O.contrast(c, 1.63), lambda im: ImageEnhance.Contrast(im).enhance(1.63)),
        (lambda c: O.sharpness(c, 0.37), lambda im: ImageEnhance.Sharpness(im).enhance(0.37)),
        (lambda c: O.color(c, 0.1), lambda im: ImageEnhance.Color(im).enhance(0.1)),
    ]
    for ours, ref in cases:
        expected = np.stack([np.asarray(ref(Image.fromarray(g))) for g in grey])[..., None]
        assert torch.equal(ours(clip), torch.from_numpy(expected))


def test_posterize_zero_bits_is_black() -> None:
    assert not O.posterize(CLIP, 0).any()  # recent Pillow raises; older Pillow gave black


# ------------------------------------------------------------------------------ RandAugment

ALWAYS = A.ClipRandAugment(prob=1.0)  # every slot applies: more ops exercised per draw


def timm_op_pil(im: Image.Image, name: str, args: tuple) -> Image.Image:
    """timm's op functions (auto_augment.py), as VideoMAE runs them on each PIL frame."""
    kw = {"resample": Image.BICUBIC, "fillcolor": FILL}
    w, h = im.size
    if name == "Rotate":
        return im.rotate(args[0], **kw)
    affine = {
        "ShearX": lambda v: (1, v, 0, 0, 1, 0),
        "ShearY": lambda v: (1, 0, 0, v, 1, 0),
        "TranslateXRel": lambda v: (1, 0, v * w, 0, 1, 0),
        "TranslateYRel": lambda v: (1, 0, 0, 0, 1, v * h),
    }
    if name in affine:
        return im.transform(im.size, Image.AFFINE, affine[name](args[0]), **kw)
    enhance = {
        "Color": ImageEnhance.Color,
        "Contrast": ImageEnhance.Contrast,
        "Brightness": ImageEnhance.Brightness,
        "Sharpness": ImageEnhance.Sharpness,
    }
    base = name.removesuffix("Increasing")
    if base in enhance:
        return enhance[base](im).enhance(args[0])
    if base == "Posterize":
        return im if args[0] >= 8 else ImageOps.posterize(im, args[0])
    if base == "Solarize":
        return ImageOps.solarize(im, args[0])
    if name == "SolarizeAdd":
        return solarize_add_pil(im, args[0])
    return {
        "AutoContrast": ImageOps.autocontrast,
        "Equalize": ImageOps.equalize,
        "Invert": ImageOps.invert,
    }[name](im)


def test_whole_draws_match_timm_ops_on_pil_frames() -> None:
    """A full draw (4 ops, all applied) against timm's PIL ops frame by frame. Off-by-one
    differences of the affine ops can move a value across a LUT step of a later Equalize or
    AutoContrast, so this allows a few larger differences; the per-op tests above are strict."""
    diffs = []
    for seed in range(10):
        draws = ALWAYS.sample(rng(seed))
        out = ALWAYS.apply(CLIP, draws)
        ref = []
        for f in FRAMES:
            im = Image.fromarray(f)
            for d in draws:
                im = timm_op_pil(im, d.name, d.args)
            ref.append(np.asarray(im))
        diffs.append((out.int() - torch.from_numpy(np.stack(ref)).int()).abs())
    diff = torch.stack(diffs)
    assert float((diff == 0).float().mean()) > 0.995
    assert float((diff > 1).float().mean()) < 0.001


@pytest.mark.parametrize("ra", [A.clip_randaugment(), ALWAYS], ids=["videomae", "prob1"])
def test_one_draw_for_every_frame(ra) -> None:
    identical = CLIP[:1].expand(4, -1, -1, -1).contiguous()
    for seed in range(12):
        out = ra(identical, rng(seed))
        assert out.dtype == torch.uint8 and out.shape == identical.shape
        assert all(torch.equal(out[0], out[i]) for i in range(1, 4))


def test_clip_result_equals_framewise_application_of_the_same_draw() -> None:
    """What VideoMAE does: the same ops and arguments on each frame, each frame's own stats."""
    for seed in range(4):
        draws = ALWAYS.sample(rng(seed))
        out = ALWAYS.apply(CLIP, draws)
        for i in range(CLIP.shape[0]):
            assert torch.equal(out[i], ALWAYS.apply(CLIP[i : i + 1], draws)[0])


def test_reproducible_and_fixed_rng_consumption() -> None:
    ra = A.clip_randaugment()
    for seed in range(5):
        assert torch.equal(ra(CLIP, rng(seed)), ra(CLIP, rng(seed)))
    outs = [ra(CLIP, rng(seed)) for seed in range(8)]
    assert len({o.numpy().tobytes() for o in outs}) > 4
    # the stream after a call is the same whatever was drawn, applied, or fed in
    after = set()
    for clip, prob in ((CLIP, 0.5), (CLIP.flip(1), 0.5), (CLIP, 0.0), (CLIP, 1.0)):
        r = rng(3)
        A.ClipRandAugment(prob=prob)(clip, r)
        after.add(r.random())
    r = rng(3)
    A.ClipRandAugment().sample(r)  # what the draw alone consumes
    assert after == {r.random()}
    with pytest.raises(ValueError, match="rng"):
        ra(CLIP, None)
    with pytest.raises(ValueError, match="uint8"):
        ra(CLIP.float(), rng())


def test_sampling_statistics() -> None:
    ra = A.clip_randaugment()  # m7, n4, mstd 0.5, p 0.5, increasing ops
    r = rng(1)
    draws = [d for _ in range(3000) for d in ra.sample(r)]
    assert len(draws) == 12000
    applied = np.mean([d.applied for d in draws])
    assert abs(applied - 0.5) < 0.02
    counts = np.array([sum(d.name == op for d in draws) for op in A.INCREASING_OPS])
    assert set(A.INCREASING_OPS) == {d.name for d in draws}
    assert np.all(np.abs(counts / len(draws) - 1 / 15) < 0.012)  # uniform choice
    mags = np.array([d.magnitude for d in draws])
    assert abs(mags.mean() - 7) < 0.02 and abs(mags.std() - 0.5) < 0.02
    assert mags.min() >= 0 and mags.max() <= 10
    signed = [d.negate for d in draws if d.name in A.SIGNED_OPS]
    assert abs(np.mean(signed) - 0.5) < 0.02
    assert not any(d.negate for d in draws if d.name not in A.SIGNED_OPS)
    # ops are drawn with replacement: some draws repeat an op
    r = rng(2)
    assert any(len({d.name for d in ra.sample(r)}) < 4 for _ in range(200))
    # magnitude noise is clipped to [0, 10]; mstd > 100 means uniform in [0, m]
    noisy_ra = A.ClipRandAugment(magnitude=9, magnitude_std=3)
    noisy = [d.magnitude for _ in range(300) for d in noisy_ra.sample(r)]
    assert max(noisy) == 10.0 and min(noisy) < 5
    uniform = np.array(
        [d.magnitude for _ in range(2000) for d in A.clip_randaugment("rand-m8-mstd101").sample(r)]
    )
    assert uniform.min() >= 0 and uniform.max() <= 8 and abs(uniform.mean() - 4) < 0.15


def test_level_to_args_follow_timm() -> None:
    m = 7.0  # l = 0.7
    lvl = A.level_to_args
    assert lvl("Rotate", m) == (0.7 * 30,) and lvl("Rotate", m, True) == (-(0.7 * 30),)
    assert lvl("ShearX", m) == (0.7 * 0.3,) and lvl("ShearY", m, True) == (-(0.7 * 0.3),)
    assert lvl("TranslateXRel", m) == (0.7 * 0.45,)
    assert lvl("PosterizeIncreasing", m) == (4 - 2,)
    assert lvl("SolarizeIncreasing", m) == (256 - 179,)
    assert lvl("SolarizeAdd", m) == (77,)
    assert lvl("ColorIncreasing", m) == (1 + 0.7 * 0.9,)
    assert lvl("SharpnessIncreasing", m, True) == (1 - 0.7 * 0.9,)
    assert lvl("AutoContrast", m) == lvl("Equalize", m) == lvl("Invert", m) == ()
    # the plain set (inc0) and the ends of the scale
    assert lvl("Posterize", m) == (2,) and lvl("Solarize", m) == (179,)
    assert lvl("Contrast", m) == (0.7 * 1.8 + 0.1,)
    assert lvl("PosterizeIncreasing", 10) == (0,) and lvl("SolarizeIncreasing", 10) == (0,)
    assert lvl("BrightnessIncreasing", 10, True) == (0.1,)  # max(0.1, 1 - 0.9)
    assert lvl("SolarizeIncreasing", 0) == (256,) and lvl("Rotate", 0) == (0.0,)
    with pytest.raises(ValueError, match="Cutout"):
        lvl("Cutout", m)


def test_spec_parsing() -> None:
    ra = A.clip_randaugment()
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std, ra.prob) == (7, 4, 0.5, 0.5)
    assert ra.ops == A.INCREASING_OPS and ra.magnitude_max == 10 and ra.interpolation == "bicubic"
    ra = A.clip_randaugment("rand-m9-n3-mstd1.0")
    assert (ra.magnitude, ra.num_ops, ra.magnitude_std) == (9, 3, 1.0)
    assert ra.ops == A.STANDARD_OPS
    ra = A.clip_randaugment("rand-inc1-p0.3-mmax12-n1")
    assert (ra.magnitude, ra.num_ops, ra.prob, ra.magnitude_max) == (10, 1, 0.3, 12)
    assert A.clip_randaugment("rand").num_ops == 2  # timm defaults: m10, n2
    assert A.clip_randaugment("rand-inc0").ops == A.STANDARD_OPS


@pytest.mark.parametrize(
    "spec,part",
    [
        ("augmix-m3", "augmix"),
        ("rand-m7-x3", "x3"),
        ("rand-m7-nfoo", "nfoo"),
        ("rand-m7.5", "m7.5"),
        ("rand--m7", "''"),
        ("rand-m7-m8", "m8"),
        ("rand-inc2", "inc2"),
        ("rand-p1.5", "p1.5"),
        ("rand-tweights", "tweights"),
        ("rand-m7-n4-mstd0.5-inc1-", "''"),
    ],
)
def test_malformed_spec_names_the_bad_part(spec, part) -> None:
    with pytest.raises(ValueError, match=re.escape(part)):
        A.clip_randaugment(spec)


def test_randaugment_on_compose_output_and_repr() -> None:
    tf = T.Compose([T.MultiScaleCrop(32), T.HorizontalFlip(), A.clip_randaugment()])
    out = tf(CLIP, rng(5))
    assert out.shape == (6, 32, 32, 3) and out.dtype == torch.uint8
    assert "m=7" in repr(A.clip_randaugment()) and "n=4" in repr(A.clip_randaugment())


# ------------------------------------------------------------------------------ random erasing


def normalised(t: int = 4, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, t, h, w, generator=g) * 4 + 10  # far from N(0, 1) noise


def erased_mask(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    return (before != after).any(dim=0)  # (T, H, W)


def test_erasing_probability_and_box_statistics() -> None:
    er = A.RandomErasing()  # 0.25, pixel, one box
    r = rng(7)
    H, W = 56, 72
    boxes = [er.params(H, W, r) for _ in range(4000)]
    assert abs(np.mean([bool(b) for b in boxes]) - 0.25) < 0.02
    hit = [b[0] for b in boxes if b]
    assert all(len(b) == 1 for b in boxes if b)
    areas = np.array([h * w / (H * W) for _, _, h, w in hit])
    aspects = np.array([math.log(h / w) for _, _, h, w in hit])
    assert all(
        0 <= top and 0 <= left and top + h <= H and left + w <= W and h < H and w < W
        for top, left, h, w in hit
    )
    assert areas.min() > 0.015 and areas.max() < 1 / 3 + 0.02  # rounding of h and w
    assert areas.min() < 0.03 and areas.max() > 0.3  # the whole range is used
    assert aspects.min() > math.log(0.3) - 0.15 and aspects.max() < -math.log(0.3) + 0.15
    assert aspects.min() < -1.0 and aspects.max() > 1.0
    assert abs(np.mean(aspects)) < 0.1  # log-uniform, symmetric


def test_erasing_same_box_every_frame_with_pixel_noise() -> None:
    clip = normalised()
    before = clip.clone()
    er = A.RandomErasing(prob=1.0)
    out = er(clip, rng(3))
    assert torch.equal(clip, before)  # not in place by default
    assert out.shape == clip.shape and out.dtype == clip.dtype
    mask = erased_mask(clip, out)
    assert mask.any() and all(torch.equal(mask[0], mask[i]) for i in range(1, clip.shape[1]))
    ys, xs = mask[0].nonzero(as_tuple=True)
    top, left, bottom, right = int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max())
    assert bool(mask[0, top : bottom + 1, left : right + 1].all())  # one rectangle
    assert int(mask[0].sum()) == (bottom - top + 1) * (right - left + 1)
    noise = out[:, :, top : bottom + 1, left : right + 1]
    assert abs(float(noise.mean())) < 0.15 and abs(float(noise.std()) - 1) < 0.15
    assert not torch.equal(noise[:, 0], noise[:, 1])  # fresh noise per frame (VideoMAE cube)
    assert torch.equal(out[:, :, ~mask[0]], clip[:, :, ~mask[0]])


def test_erasing_modes_counts_and_determinism() -> None:
    clip = normalised()
    out = A.RandomErasing(1.0, mode="const")(clip, rng(1))
    assert bool((out[:, :, erased_mask(clip, out)[0]] == 0).all())
    out = A.RandomErasing(1.0, mode="rand")(clip, rng(1))
    region = out[:, :, erased_mask(clip, out)[0]]  # (C, T, n)
    assert bool((region == region[..., :1]).all())  # one value per channel and frame
    er = A.RandomErasing(1.0, count=3, min_count=3)
    assert all(len(er.params(64, 64, rng(s))) == 3 for s in range(5))
    er = A.RandomErasing(0.5)
    assert torch.equal(er(clip, rng(9)), er(clip, rng(9)))
    after = set()
    for prob in (0.0, 1.0):  # one draw from the caller's stream either way
        r = rng(4)
        A.RandomErasing(prob)(clip, r)
        after.add(r.random())
    r = rng(4)
    r.integers(2**63)
    assert after == {r.random()}
    inplace = clip.clone()
    assert A.RandomErasing(1.0, inplace=True)(inplace, rng(2)) is inplace
    assert not torch.equal(inplace, clip)
    with pytest.raises(ValueError, match="after Normalize"):
        A.RandomErasing()(CLIP, rng())
    with pytest.raises(ValueError, match="mode"):
        A.RandomErasing(mode="pixels")
    with pytest.raises(ValueError, match="probability"):
        A.RandomErasing(1.5)


# ------------------------------------------------------------------------------ train_transform


def test_train_transform_hook() -> None:
    plain = T.train_transform(32)
    assert len(plain.transforms) == 3  # crop, flip, normalize: defaults unchanged
    tf = T.train_transform(32, randaug="rand-m9-n2-mstd0.5-inc1", erase=0.25)
    kinds = [type(s).__name__ for s in tf.transforms]
    assert kinds == [
        "MultiScaleCrop",
        "HorizontalFlip",
        "ClipRandAugment",
        "Normalize",
        "RandomErasing",
    ]
    out = tf(CLIP, rng(0))
    assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32
    assert torch.equal(out, tf(CLIP, rng(0)))
    kinds = [type(s).__name__ for s in T.train_transform(32, randaug=True, erase=True).transforms]
    assert kinds[2] == "ClipRandAugment" and kinds[-1] == "RandomErasing"
    assert len(T.train_transform(32, randaug=False, erase=0).transforms) == 3
    with pytest.raises(ValueError, match="randaug"):
        T.train_transform(32, randaug=3)
    with pytest.raises(ValueError, match="'rand'"):
        T.train_transform(32, randaug="m9-n2")


def test_config_switches_the_recipe_on(synth_dir) -> None:
    """`data.randaug` / `data.erase_prob` put both steps into the training clips; a bad spec is
    a one-line ConfigError naming the field."""
    from progvid.config import DataConfig
    from progvid.data.clips import train_dataset
    from progvid.data.datasets import build_samples
    from progvid.errors import ConfigError

    d = DataConfig(root=str(synth_dir), train="train.csv", input_size=32, num_frames=4,
                   sampling_rate=2, randaug="rand-m9-n2-mstd0.5-inc1", erase_prob=1.0)
    samples = build_samples(d, "train").samples
    ds = train_dataset(d, samples, frames=4, seed=0)
    names = [type(t).__name__ for t in ds.transform.transforms]
    assert names == ["MultiScaleCrop", "HorizontalFlip", "ClipRandAugment", "Normalize",
                     "RandomErasing"]
    plain = train_dataset(d.model_copy(update={"randaug": None, "erase_prob": 0.0}), samples,
                          frames=4, seed=0)
    a, b = ds[(0, 1)]["video"], plain[(0, 1)]["video"]
    assert a.shape == b.shape == (1, 3, 4, 32, 32) and not torch.equal(a, b)
    with pytest.raises(ConfigError, match=r"^data\.randaug: .*'mX'"):
        train_dataset(d.model_copy(update={"randaug": "rand-mX"}), samples, frames=4, seed=0)
