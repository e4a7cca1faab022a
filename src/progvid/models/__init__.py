"""Models: the video ViT encoder, token masks and the VideoMAE pre-training model."""

from .masking import random_mask, tube_mask
from .videomae import DECODER_SIZES, VideoMAE, VideoMAEDecoder, VideoMAEOutput, videomae
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
