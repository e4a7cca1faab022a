"""Models: the video ViT encoder and the VideoMAE pre-training model."""

from .videomae import (
    DECODER_SIZES,
    VideoMAE,
    VideoMAEDecoder,
    VideoMAEOutput,
    random_mask,
    tube_mask,
    videomae,
)
from .vit import ENCODER_SIZES, VisionTransformer, build_encoder, sincos_table

__all__ = [
    "DECODER_SIZES",
    "ENCODER_SIZES",
    "VideoMAE",
    "VideoMAEDecoder",
    "VideoMAEOutput",
    "VisionTransformer",
    "build_encoder",
    "random_mask",
    "sincos_table",
    "tube_mask",
    "videomae",
]
