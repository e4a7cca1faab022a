"""Video data: decoding, frame sampling, clip transforms, dataset layouts and loaders."""

from .video import VideoInfo, VideoReader, probe, read_clip

__all__ = ["VideoInfo", "VideoReader", "probe", "read_clip"]
