"""Helpers that write small test videos (and deliberately broken files) with PyAV.

Importable from any test after `sys.path.insert(0, str(Path(__file__).parent))`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_frames(n: int = 40, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 (n, H, W, 3) frames with moving structure and a per-frame marker,
    so neighbouring frames decode to clearly different pixels."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for t in range(n):
        frame = np.roll(base, shift=2 * t, axis=1).astype(np.int32)
        frame[..., 0] = (frame[..., 0] // 2 + (xx + 3 * t) % 128).astype(np.int32)
        frame[..., 1] = (frame[..., 1] // 2 + (yy * 2 + 5 * t) % 128).astype(np.int32)
        # A bright block whose position encodes t: distinct content on every frame.
        by, bx = (t * 7) % max(1, height - 8), (t * 11) % max(1, width - 8)
        frame[by : by + 8, bx : bx + 8] = 255
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


_DEFAULT_PIX_FMT = {"libx264": "yuv420p", "libvpx-vp9": "yuv420p", "mpeg4": "yuv420p"}


def write_video(
    path: str | Path,
    frames: np.ndarray,
    codec: str = "libx264",
    fps: int = 25,
    gop: int = 12,
    *,
    bframes: int | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 (T, H, W, 3) RGB `frames` to `path` (container from the suffix).

    libx264 gets B-frames by default (`bframes=2`); mpeg4 gets none unless asked.
    """
    path = Path(path)
    t, h, w, _ = frames.shape
    opts: dict[str, str] = {}
    if codec == "libx264":
        nb = 2 if bframes is None else bframes
        params = f"bframes={nb}:keyint={gop}:min-keyint={gop}:scenecut=0"
        opts = {"preset": "veryfast", "x264-params": params}
    elif codec == "libvpx-vp9":
        opts = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    opts.update(options or {})
    with av.open(str(path), mode="w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = w, h
        stream.pix_fmt = _DEFAULT_PIX_FMT.get(codec, "yuv420p")
        stream.codec_context.gop_size = gop
        if codec == "mpeg4" and bframes:
            stream.codec_context.max_b_frames = bframes
        stream.options = opts
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio_only(path: str | Path, seconds: float = 0.5, codec: str = "aac") -> Path:
    """Write a file with one audio stream and no video stream (.m4a/.mp4 aac or .wav pcm)."""
    path = Path(path)
    rate = 16000
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        fmt = "fltp" if codec == "aac" else "s16"
        n = int(seconds * rate)
        samples = np.sin(np.arange(n) / 10.0).astype(np.float32)
        if fmt == "s16":
            samples = (samples * 10000).astype(np.int16)
        chunk = 1024
        for start in range(0, n, chunk):
            frame = av.AudioFrame.from_ndarray(
                samples[None, start : start + chunk], format=fmt, layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_garbage_packets(path: str | Path, n: int = 10, width: int = 64, height: int = 48) -> Path:
    """A container (.mkv) whose video stream holds `n` packets of random bytes: demuxes fine,
    decodes to zero frames."""
    path = Path(path)
    rng = np.random.default_rng(1)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 25)
        for i in range(n):
            packet = av.Packet(rng.integers(0, 256, size=200, dtype=np.uint8).tobytes())
            packet.stream = stream
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 25)
            packet.is_keyframe = True
            out.mux(packet)
    return path


def write_truncated(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first `fraction` of the bytes of `src` to `dst` (a file cut mid-write)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def write_text_as_video(path: str | Path) -> Path:
    """A text file saved under a video name."""
    path = Path(path)
    path.write_text("this is not a video, just some text pretending to be one\n" * 20)
    return path


def write_empty(path: str | Path) -> Path:
    """A 0-byte file."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_overwritten(
    src: str | Path, dst: str | Path, fraction: float = 0.5, size: int = 4096, seed: int = 0
) -> Path:
    """Copy `src` to `dst` with `size` random bytes written over it at `fraction` of its length
    (bit rot, a bad sector, a partial overwrite: the file keeps its size and opens fine)."""
    data = bytearray(Path(src).read_bytes())
    at = int(len(data) * fraction)
    size = min(size, len(data) - at)
    data[at : at + size] = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def remux_dropping(src: str | Path, dst: str | Path, drop: set[int]) -> Path:
    """Copy the video stream of `src` into `dst` without the packets at positions `drop` (in
    demux order): what a demuxer that skipped a damaged cluster hands the decoder."""
    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), mode="w") as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        packets = [p for p in inp.demux(stream) if p.size]
        for i, packet in enumerate(packets):
            if i not in drop:
                packet.stream = ostream
                out.mux(packet)
    return dst
