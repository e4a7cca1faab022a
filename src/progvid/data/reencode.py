"""Re-encoding one video so that clip reads from it are cheap (`progvid data prepare` runs it
over a whole dataset: `prepare.py`).

A clip read decodes from the keyframe at or before its first frame (see `video.py`). Videos as
downloaded use long keyframe intervals (x264's default is 250 frames) and large frames, so a
2-frame clip costs about as much as a 16-frame one. `reencode` writes h264 yuv420p mp4 with the
shorter side at `short_side` (never upscaled, even sides), a keyframe every `gop` frames, x264's
`fastdecode` tune by default, the same frame count and frame rate, and no audio; atomically (a
hidden part file, fsynced, then renamed), checking that every frame came through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..errors import DataError, ProgvidError
from .video import VideoInfo, VideoReader, probe

# Bump when the encoding itself changes: older outputs are then redone.
FORMAT_VERSION = 1
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow", "placebo")
DEFAULT_SHORT_SIDE = 320  # VideoMAE's Kinetics / SSv2 preprocessing
# Keyframe interval: a read decodes on average (gop - 1) / 2 frames before its first wanted one,
# but keyframes cost several times a predicted frame to decode (and to store); 16 measured
# cheapest per clip over 2- to 16-frame clips (bench/decode_cost.md has the sweep).
DEFAULT_GOP = 16
# x264 tunes; fastdecode (CAVLC, no deblocking, no weighted prediction) halves the decoding
# time of every frame for ~10% more bytes and ~0.2 dB PSNR (bench/decode_cost.md).
TUNES = ("fastdecode", "film", "animation", "grain", "stillimage", "psnr", "ssim", "zerolatency")
DEFAULT_TUNE = "fastdecode"
PART = ".part"  # the suffix of a file being written


@dataclass(frozen=True)
class EncodeSettings:
    """How a video is re-encoded (`prepare_dataset` records it per video in its manifest)."""

    short_side: int = DEFAULT_SHORT_SIDE
    gop: int = DEFAULT_GOP
    crf: int = 23
    preset: str = "veryfast"
    tune: str = DEFAULT_TUNE  # comma-separated x264 tunes, or "none"

    def check(self) -> None:
        if self.short_side < 16 or self.short_side % 2:
            raise ProgvidError(f"--short-side must be even and >= 16 (yuv420p needs even sides), "
                               f"got {self.short_side}")
        if self.gop < 1:
            raise ProgvidError(f"--gop must be >= 1 (frames between keyframes), got {self.gop}")
        if not 0 <= self.crf <= 51:
            raise ProgvidError(f"--crf must be in 0..51 (x264 quality; lower is better), got {self.crf}")
        if self.preset not in PRESETS:
            raise ProgvidError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.tune != "none" and not all(t in TUNES for t in self.tune.split(",")):
            raise ProgvidError(f"--tune must be none or x264 tunes from {', '.join(TUNES)} "
                               f"(comma-separated), got {self.tune!r}")

    def record(self) -> dict[str, Any]:
        return {"short_side": self.short_side, "gop": self.gop, "crf": self.crf,
                "preset": self.preset, "tune": self.tune, "version": FORMAT_VERSION}


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at `short_side` (never larger than the source),
    aspect kept, both even (h264 yuv420p)."""
    short = min(width, height)
    scale = min(1.0, short_side / short)
    w, h = width * scale, height * scale
    even = [max(2, int(round(v / 2)) * 2) for v in (w, h)]
    if short <= short_side:  # not resized: only drop an odd row/column
        even = [max(2, v - v % 2) for v in (width, height)]
    return even[0], even[1]


def _frame_rate(stream: Any, info: VideoInfo) -> Fraction:
    """The container's average rate when it agrees with the rate measured from the packets
    (what `probe` reports), else the measured one; 25 when neither is known."""
    avg = stream.average_rate
    if avg and info.fps and abs(float(avg) - info.fps) <= 1e-3 * info.fps:
        return Fraction(avg)
    if info.fps > 0:
        return Fraction(info.fps).limit_denominator(1001)
    return Fraction(avg) if avg else Fraction(25)


def fsync(path: Path, directory: bool = False) -> None:
    """Flush a file (or a folder entry, after a rename) to disk. Folders cannot be opened or
    synced everywhere (Windows, some network file systems): the file's data is what counts."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _transcode(src: Path, tmp: Path, info: VideoInfo, size: tuple[int, int],
               settings: EncodeSettings) -> int:
    """Decode `src` from the start and encode every frame to `tmp`; returns frames written.
    The source is decoded as a training read decodes it (`VideoReader.decode_checked`): a frame
    that may hold damaged pixels fails the file instead of being re-encoded into a clean one."""
    import av  # deferred: only encoding needs it here

    errors = (av.error.FFmpegError, OSError)
    reader = VideoReader(src)  # one thread: one process per core
    n = 0
    try:
        ist = reader.stream
        rate = _frame_rate(ist, info)
        with av.open(str(tmp), mode="w", format="mp4") as out:
            options = {
                "preset": settings.preset, "crf": str(settings.crf),
                # a keyframe exactly every `gop` frames (no scene-cut keyframes), closed GOPs
                "x264-params": f"keyint={settings.gop}:min-keyint={settings.gop}:scenecut=0",
                "threads": "1",
            }
            if settings.tune != "none":
                options["tune"] = settings.tune
            ost = out.add_stream("libx264", rate=rate, options=options)
            ost.width, ost.height, ost.pix_fmt = size[0], size[1], "yuv420p"
            # keep the colour tags, so RGB conversion at read time matches the source's
            ic, oc = ist.codec_context, ost.codec_context
            oc.colorspace, oc.color_primaries, oc.color_trc = (
                ic.colorspace, ic.color_primaries, ic.color_trc)
            oc.color_range = 1  # MPEG (limited): full-range sources are converted below
            tb = Fraction(1) / rate
            try:
                for frame in reader.decode_checked():
                    img = frame.reformat(width=size[0], height=size[1], format="yuv420p",
                                         interpolation="BICUBIC", threads=1,
                                         src_color_range=frame.color_range or None,
                                         dst_color_range=1)
                    img.pts, img.time_base = n, tb  # constant rate, same count
                    img.pict_type = 0  # NONE: the source's keyframes must not force ours
                    out.mux(ost.encode(img))
                    n += 1
            except errors as err:
                raise DataError(src, f"re-encoding failed at frame {n} ({err})") from None
            out.mux(ost.encode())
    finally:
        reader.close()
    return n


def reencode(src: str | Path, dst: str | Path, settings: EncodeSettings | None = None) -> VideoInfo:
    """Re-encode one video to `dst` (mp4) atomically: a hidden part file, fsynced, renamed.
    Raises `DataError` (path: reason) when the source is unusable; returns the output's info."""
    settings = settings or EncodeSettings()
    src, dst = Path(src), Path(dst)
    info = probe(src)  # missing, empty, not a container, no video stream, no frames -> DataError
    size = output_size(info.width, info.height, settings.short_side)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}{PART}")
    try:
        n = _transcode(src, tmp, info, size, settings)
        if n != info.frames:
            raise DataError(src, f"only {n} of its {info.frames} frames decode")
        fsync(tmp)
        got = probe(tmp)
        if got.frames != info.frames:  # a guard: the encoder must not drop or add frames
            raise DataError(src, f"re-encoded to {got.frames} frames instead of {info.frames}")
        os.replace(tmp, dst)
        fsync(dst.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)
    return got


__all__ = ["DEFAULT_GOP", "DEFAULT_SHORT_SIDE", "DEFAULT_TUNE", "FORMAT_VERSION", "PART", "PRESETS", "TUNES",
           "EncodeSettings", "fsync", "output_size", "reencode"]
