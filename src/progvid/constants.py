"""Constants shared by every layer (the ground floor: imports nothing from progvid)."""

from __future__ import annotations

# ImageNet channel statistics in 0-1 pixel units: VideoMAE's input normalization.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
