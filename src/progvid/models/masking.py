"""Token masks: which tokens a masked model hides, and taking tokens by mask without host syncs.

Encoder masks (`tube_mask`, VideoMAE's default, and `random_mask`) and VideoMAE V2's
running-cell decoder mask (`running_cell_mask`) are bool (B, N) in token order (t, h, w), True =
masked / dropped, drawn from a generator so steps are reproducible, with the same count in every
row (`masked_count`, `running_cell_kept` give it without looking at the mask). `mask_order`,
`mask_index` and `take_rows` select tokens by position: the same tokens, in the same order, as
boolean indexing, without the host sync with which boolean indexing sizes its result on CUDA.
"""

from __future__ import annotations

import torch
from torch import Tensor

from progvid.errors import ConfigError, ProgvidError

MASK_TYPES = ("tube", "random")
DECODER_MASK_TYPES = ("none", "running_cell")
# VideoMAE V2's running cell: a 2x2 block of tokens (dataset/masking_generator.py lines 86-101:
# a queue of 4 entries read as `reshape(2, 2)` and tiled over each temporal slice).
CELL_SIDE = 2
CELL_SIZE = CELL_SIDE * CELL_SIDE


def _noise(
    batch: int, n: int, device: torch.device | str | None, generator: torch.Generator | None
) -> Tensor:
    """Uniform noise (B, n) on `device` (default: the generator's, else CPU). It is drawn on the
    generator's own device, so a CPU generator gives the same masks whatever the target device."""
    src = generator.device if generator is not None else torch.device(device or "cpu")
    noise = torch.rand(batch, n, device=src, generator=generator)
    return noise if device is None else noise.to(device)


def _keep_k_smallest(noise: Tensor, k: int) -> Tensor:
    """Bool mask (B, L) with True at the k smallest noise values of each row."""
    ids = noise.argsort(dim=1)[:, :k]
    mask = torch.zeros_like(noise, dtype=torch.bool)
    return mask.scatter_(1, ids, True)


def masked_count(ratio: float, total: int) -> int:
    """Tokens that a mask of `ratio` hides among `total` (per slice for tube masks): int(ratio *
    total), as the official VideoMAE generators."""
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"mask_ratio must be in (0, 1), got {ratio}")
    return int(ratio * total)


def tube_mask(
    batch: int, t_tokens: int, h_tokens: int, w_tokens: int, ratio: float,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """Tube masking: per sample, the same int(ratio*h*w) spatial positions are masked in every
    temporal slice (so the model cannot copy a token from the neighbouring frame).
    Returns bool (B, t*h*w), True = masked, token order (t, h, w)."""
    hw = h_tokens * w_tokens
    k = masked_count(ratio, hw)
    spatial = _keep_k_smallest(_noise(batch, hw, device, generator), k)  # (B, h*w)
    return spatial.unsqueeze(1).expand(batch, t_tokens, hw).reshape(batch, t_tokens * hw)


def random_mask(
    batch: int, num_tokens: int, ratio: float,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """Plain random masking: int(ratio*N) tokens per sample anywhere. Bool (B, N), True = masked."""
    k = masked_count(ratio, num_tokens)
    return _keep_k_smallest(_noise(batch, num_tokens, device, generator), k)


def running_cell_drops(ratio: float) -> int:
    """Tokens dropped per 2x2 cell for a running-cell `ratio`: 1, 2 or 3 for 0.25, 0.5, 0.75.

    V2 uses int(4 * ratio) and asserts 0 < it < 4 (masking_generator.py lines 86-88), silently
    rounding other ratios down; progvid accepts only the ratios the cell realises exactly."""
    drops = round(ratio * CELL_SIZE)
    if not 0 < drops < CELL_SIZE or abs(ratio * CELL_SIZE - drops) > 1e-9:
        allowed = ", ".join(str(k / CELL_SIZE) for k in range(1, CELL_SIZE))
        raise ConfigError(
            f"decoder_mask_ratio must be one of {allowed} for running_cell masking (the decoder "
            f"drops k of the {CELL_SIZE} tokens of each {CELL_SIDE}x{CELL_SIDE} cell), got {ratio}"
        )
    return drops


def check_cell_grid(h_tokens: int, w_tokens: int) -> None:
    """Running cells tile the token grid of a slice: it must be even both ways."""
    if h_tokens % CELL_SIDE or w_tokens % CELL_SIDE:
        raise ConfigError(
            f"running_cell decoder masking tiles {CELL_SIDE}x{CELL_SIDE} cells over the token grid, "
            f"which must be even: got {h_tokens}x{w_tokens} tokens per frame (choose img_size / "
            f"patch_size even, e.g. 224/16 or 32/8)"
        )


def running_cell_kept(t_tokens: int, h_tokens: int, w_tokens: int, ratio: float) -> int:
    """Tokens the decoder keeps per sample under `running_cell_mask` (the same for every sample)."""
    drops = running_cell_drops(ratio)
    check_cell_grid(h_tokens, w_tokens)
    return t_tokens * h_tokens * w_tokens * (CELL_SIZE - drops) // CELL_SIZE


def running_cell_mask(
    batch: int, t_tokens: int, h_tokens: int, w_tokens: int, ratio: float = 0.5,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """VideoMAE V2's running-cell decoder mask. Returns bool (B, t*h*w), True = dropped by the
    decoder, token order (t, h, w).

    Definition (OpenGVLab/VideoMAEv2 dataset/masking_generator.py, `Cell` and
    `RunningCellMaskingGenerator`, lines 11-113): the token grid of each temporal slice is tiled
    with 2x2 cells; cell slot j = 2 * (h % 2) + (w % 2) (row-major, as `reshape(2, 2)` then
    `np.tile`). A queue of 4 values holds k = ratio * 4 "drop" entries then 4 - k "keep" entries;
    with a start pointer p the queue is rotated by one more position at every temporal slice
    *before* it is read (`run_cell` then `get_cell`), so slot j of slice t is dropped iff
    (j + p + t + 1) mod 4 < k. Every cell of every slice drops exactly k of its 4 tokens; over
    time the dropped slots shift by one (slot j at slice t+1 takes the state of slot j+1 at t),
    so each position is dropped in k of every 4 consecutive slices. p is drawn uniformly from
    {0, 1, 2, 3} per sample (V2: `np.random.randint(cell_size)` over its 4 precomputed maps), here
    from `generator` on its own device like `tube_mask`, so masks are reproducible."""
    drops = running_cell_drops(ratio)
    check_cell_grid(h_tokens, w_tokens)
    src = generator.device if generator is not None else torch.device(device or "cpu")
    start = torch.randint(CELL_SIZE, (batch, 1, 1, 1), device=src, generator=generator)
    if device is not None:
        start = start.to(device)
    dev = start.device
    t = torch.arange(t_tokens, device=dev).view(1, -1, 1, 1)
    slot = (CELL_SIDE * (torch.arange(h_tokens, device=dev) % CELL_SIDE).view(1, 1, -1, 1)
            + (torch.arange(w_tokens, device=dev) % CELL_SIDE).view(1, 1, 1, -1))
    phase = (slot + start + t + 1) % CELL_SIZE  # (B, t, h, w)
    return (phase < drops).reshape(batch, t_tokens * h_tokens * w_tokens)


def check_mask(mask: Tensor, batch: int, num_tokens: int, count: int | None = None) -> None:
    """Reject masks that would silently mix tokens across samples when reshaped (and, with
    `count`, masks whose rows do not hide exactly `count` tokens each)."""
    if mask.dtype != torch.bool or tuple(mask.shape) != (batch, num_tokens):
        raise ProgvidError(
            f"mask must be bool ({batch}, {num_tokens}), got {mask.dtype} {tuple(mask.shape)}"
        )
    if count is not None and not 0 <= count <= num_tokens:
        raise ProgvidError(f"a mask of {num_tokens} tokens cannot hide {count} per sample")
    if not _free_to_count(mask):
        return
    counts = mask.sum(1)
    if bool((counts != (counts[0] if count is None else count)).any()):
        want = "the same number of" if count is None else f"{count}"
        raise ProgvidError(f"every sample must mask {want} tokens, got {counts.tolist()}")


def _free_to_count(mask: Tensor) -> bool:
    """Whether reading `mask`'s counts on the host is free: on CPU, not under compile (on a
    GPU it is a host sync, and it breaks a compiled graph)."""
    return mask.device.type == "cpu" and not torch.compiler.is_compiling()


def mask_index(select: Tensor, count: int | None = None) -> Tensor:
    """Positions of the True entries of each row of bool `select` (B, N), ascending: long
    (B, count). Indexing rows with it takes what `x[select].reshape(B, count, ...)` takes, in the
    same order, but without the host sync with which boolean indexing sizes its result on CUDA
    (and without breaking a compiled graph). `count` is the True entries per row (the same in
    every row); when it is not given it is counted, which is itself one host sync on CUDA."""
    if count is None:
        count = int(select[0].sum())
    return mask_order(~select)[:, :count]


def mask_order(mask: Tensor) -> Tensor:
    """Each row's positions (B, N), those where bool `mask` is False first, then those where it
    is True, both ascending: with k False per row, `[:, :k]` is `mask_index(~mask, k)` and
    `[:, k:]` is `mask_index(mask, N - k)`, from one sort."""
    return torch.argsort(mask.to(torch.uint8), dim=1, stable=True)


def take_rows(x: Tensor, index: Tensor) -> Tensor:
    """x (B, N, ...) -> (B, K, ...): each sample's rows at its positions `index` (B, K)."""
    return x[torch.arange(x.shape[0], device=x.device).unsqueeze(1), index]


__all__ = [
    "CELL_SIDE",
    "CELL_SIZE",
    "DECODER_MASK_TYPES",
    "MASK_TYPES",
    "check_cell_grid",
    "check_mask",
    "mask_index",
    "mask_order",
    "masked_count",
    "random_mask",
    "running_cell_drops",
    "running_cell_kept",
    "running_cell_mask",
    "take_rows",
    "tube_mask",
]
