"""progvid: compute-efficient self-supervised video pre-training and action recognition."""

__version__ = "0.1.0"
