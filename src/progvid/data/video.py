"""Frame-exact, seek-based video clip decoding with PyAV.

Frame index ``i`` is the i-th frame in presentation order of the first video stream, i.e. what a
full decode from the start yields. On open we demux (never decode) every video packet once: the
sorted packet pts give the index <-> pts table and the frame count, and keyframe packets give
the seek points. A read then seeks to the keyframe at or before each group of wanted frames,
decodes forward, converts only the wanted frames, and stops at the last one.
"""

from __future__ import annotations

import bisect
import itertools
import os
import operator
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from progvid.errors import DataError

_AV_ERRORS = (av.error.FFmpegError, OSError)
_NEVER = 1 << 62  # a frame index no video reaches


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts. `frames` is counted from demuxed packets, not taken from the header."""

    frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds = frames / fps


def _reason(err: BaseException) -> str:
    # PyAV errors repeat the path in str(); strerror is the bare FFmpeg reason.
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except _AV_ERRORS as err:
        raise DataError(path, f"cannot open as a video container ({_reason(err)})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise DataError(path, f"no video stream (streams: {', '.join(kinds)})")
    return container


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to `short_side`, keeping aspect."""
    if short_side is None or min(width, height) == short_side:
        return width, height
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


# Frame tables of recently opened files, per process (a data-loader worker sees each video
# once per epoch): demuxing a whole file costs as much as decoding a few frames.
_TABLE_FIELDS = ("_timed", "_index_of", "_key_index", "_key_ts", "info")
_TABLES: dict[tuple[str, int, int], dict] = {}
_TABLES_MAX = 8192


def _cache_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _remember(key: tuple[str, int, int], table: dict) -> None:
    if len(_TABLES) >= _TABLES_MAX:
        _TABLES.pop(next(iter(_TABLES)))  # oldest first
    _TABLES[key] = table


_LOCAL = threading.local()


def _reformatter() -> VideoReformatter:
    """This thread's swscale wrapper (it keeps its context while sizes and formats repeat).

    Keyed by process too: a context made before a fork (a loader worker) must not be reused in
    the child, where the threads it was built around do not exist."""
    pid = os.getpid()
    if getattr(_LOCAL, "pid", None) != pid:
        _LOCAL.reformatter, _LOCAL.pid = VideoReformatter(), pid
    return _LOCAL.reformatter


class VideoReader:
    """One open container plus its frame table; `read` may be called many times."""

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.path = Path(path)
        self._threads = threads
        # Running total of decoded frames: lets tests/benchmarks check we decode only what's needed.
        self.frames_decoded = 0
        self._want_pts: set[int] | None = None  # pts of the frames the current read() needs
        self._container = None
        self._use(_open(self.path))
        try:
            key = _cache_key(self.path)
            cached = _TABLES.get(key) if key is not None else None
            if cached is None:
                self._build_table()
                if key is not None:
                    _remember(key, {k: getattr(self, k) for k in _TABLE_FIELDS if hasattr(self, k)})
            else:  # the file is unchanged: reuse its frame table instead of demuxing it again
                for k, v in cached.items():
                    setattr(self, k, v)
        except BaseException:
            self.close()
            raise

    # -- setup -------------------------------------------------------------------------------
    def _use(self, container: av.container.InputContainer) -> None:
        """Adopt `container`; set decoder threading before the codec opens (first decode)."""
        self._container = container
        self._vs = container.streams.video[0]
        ctx = self._vs.codec_context
        # FFmpeg's default grabs every core; data-loader workers need explicit control.
        ctx.thread_count = self._threads
        if self._threads > 1:
            ctx.thread_type = "AUTO"

    def _build_table(self) -> None:
        stream = self._vs
        pts: list[int | None] = []
        keys: list[tuple[int | None, int | None]] = []  # (pts, dts) of keyframe packets
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:  # flush marker at EOF, or an AVI "dropped frame"
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append((packet.pts, packet.dts))
        except _AV_ERRORS as err:
            raise DataError(self.path, f"cannot demux video stream ({_reason(err)})") from None
        n = len(pts)
        if n == 0:
            raise DataError(self.path, "video stream has no frames")
        # Seeking by pts needs unique timestamps on every packet; otherwise fall back to
        # decoding from the start and counting frames (slow but exact).
        self._timed = None not in pts and len(set(pts)) == n
        tb = stream.time_base
        if self._timed:
            order = sorted(pts)  # type: ignore[type-var]
            self._index_of: dict[int, int] = {p: i for i, p in enumerate(order)}
            keys = sorted({k for k in keys if k[0] is not None}, key=lambda k: k[0])
            self._key_index = [self._index_of[k[0]] for k in keys]  # type: ignore[index]
            self._key_ts = keys
            span = order[-1] - order[0]
        else:
            self._key_index, self._key_ts, span = [], [], 0
        rate: Fraction | None = None
        if n > 1 and span > 0 and tb:
            rate = Fraction(n - 1) / (span * tb)  # measured from packets: headers can lie
        rate = rate or stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        ctx = stream.codec_context
        self.info = VideoInfo(n, fps, ctx.width, ctx.height, n / fps if fps else 0.0)

    def _reopen(self) -> None:
        self.close()
        self._use(_open(self.path))

    # -- decoding ----------------------------------------------------------------------------
    def _packets_from(self, k: int | None) -> tuple[Iterator[av.Packet], int]:
        """Packets starting at keyframe number `k` (or earlier), and the index just before
        the first frame they produce. `k=None` means from the very start of the file."""
        if k is not None:
            pts, dts = self._key_ts[k]
            targets = [pts] + ([dts] if dts is not None and dts < pts else [])  # type: ignore[operator]
            for target in targets:
                self._container.seek(target, stream=self._vs, backward=True, any_frame=False)
                demux = self._container.demux(self._vs)
                # Demuxers may land on a non-key packet; decoding from there is garbage.
                first = next((p for p in demux if p.is_keyframe and p.size), None)
                # Some demuxers index by dts, others by pts: accept only landings at or before
                # the wanted keyframe, else try the next target (or the start).
                at = self._index_of.get(first.pts) if first is not None else None  # type: ignore[arg-type]
                if at is not None and at <= self._key_index[k]:
                    return itertools.chain([first], demux), at - 1  # type: ignore[list-item]
        self._reopen()
        return self._container.demux(self._vs), -1

    def _frames_from(
        self, k: int | None, errors: list[str]
    ) -> Iterator[tuple[int, av.VideoFrame | None]]:
        """Decoded (index, frame) pairs in presentation order from keyframe `k`. The frame is
        None when it came out after a packet failed to decode and may reference lost data."""
        packets, last = self._packets_from(k)
        clean_from = -1  # after a decode error: first index known not to depend on it
        ctx = self._vs.codec_context
        # skipping is only safe to toggle per packet without frame threading (untested there)
        want = self._want_pts if self._threads <= 1 else None
        for packet in packets:
            if want is not None:
                # A non-reference frame nobody asked for: let the decoder drop it (no other
                # frame predicts from it, so the wanted frames are bit-identical).
                ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in want else "NONREF"
            try:
                frames = packet.decode()
            except _AV_ERRORS as err:
                errors.append(_reason(err))
                clean_from = _NEVER
                continue
            if clean_from == _NEVER and packet.is_keyframe and self._timed:
                # A keyframe and what follows it in presentation order cannot reference the
                # lost packet (closed GOP); without timestamps we cannot even count, so stay dirty.
                clean_from = self._index_of.get(packet.pts, _NEVER)  # type: ignore[arg-type]
            self.frames_decoded += len(frames)
            for frame in frames:
                idx = self._index_of.get(frame.pts) if self._timed else None  # type: ignore[arg-type]
                last = last + 1 if idx is None else idx
                yield last, frame if last >= clean_from else None

    def read(self, indices: Sequence[int], short_side: int | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) RGB frames at `indices` (any order, repeats allowed)."""
        if self._container is None:
            raise ValueError(f"VideoReader for {self.path} is closed")
        wanted = [operator.index(i) for i in indices]
        n = self.info.frames
        for i in wanted:
            if not 0 <= i < n:
                raise DataError(self.path, f"frame index {i} out of range for {n} frames")
        if short_side is not None and short_side < 1:
            raise ValueError(f"short_side must be >= 1, got {short_side}")
        if not wanted:
            w, h = _target_size(self.info.width, self.info.height, short_side)
            return torch.empty((0, h, w, 3), dtype=torch.uint8)
        positions: dict[int, list[int]] = {}
        for pos, i in enumerate(wanted):
            positions.setdefault(i, []).append(pos)
        if self._timed:
            order = sorted(self._index_of)
            self._want_pts = {order[i] for i in positions}
        out: np.ndarray | None = None
        size: tuple[int, int] = (0, 0)
        errors: list[str] = []
        frames: Iterator[tuple[int, av.VideoFrame | None]] | None = None
        seen = -1  # index of the last decoded frame in the current pass
        try:
            for i in sorted(positions):
                if self._timed:
                    k = bisect.bisect_right(self._key_index, i) - 1
                    key = self._key_index[k] if k >= 0 else 0
                    # Seek when the needed keyframe lies beyond what we've decoded: cheaper than
                    # decoding the gap. Otherwise keep decoding forward.
                    if frames is None or key > seen:
                        frames, seen = self._frames_from(k if k >= 0 else None, errors), -1
                elif frames is None:
                    frames = self._frames_from(None, errors)
                for idx, frame in frames:
                    seen = idx
                    if idx < i:
                        continue
                    if idx > i:
                        break
                    if frame is None or frame.is_corrupt:
                        why = f"after a failed packet: {errors[-1]}" if frame is None else "corrupt"
                        raise DataError(self.path, f"frame {i} not decodable ({why})")
                    if out is None:
                        size = _target_size(frame.width, frame.height, short_side)
                        out = np.empty((len(wanted), size[1], size[0], 3), dtype=np.uint8)
                    # Conversion (and resize) happen in C inside swscale.
                    # One swscale context per thread and process for all readers: building one
                    # costs ~2 ms, more than converting a small frame (frame.to_ndarray() would
                    # build one per call). One scaling thread: a loader worker owns one core, and
                    # swscale's own slice threads would not survive a fork.
                    arr = _reformatter().reformat(frame, width=size[0], height=size[1],
                                                  format="rgb24", threads=1).to_ndarray()
                    out[positions[i]] = arr
                    break
                else:
                    idx = -1
                if idx != i:
                    got = f"only {seen + 1} frames" if idx == -1 else f"next decoded is {idx}"
                    why = (
                        f"; {len(errors)} packet(s) failed to decode: {errors[0]}" if errors else ""
                    )
                    raise DataError(self.path, f"frame {i} not decodable ({got}{why})")
        except _AV_ERRORS as err:
            raise DataError(self.path, f"decoding failed ({_reason(err)})") from None
        assert out is not None
        return torch.from_numpy(out)

    # -- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        """Release the container; safe to call twice."""
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe(path: str | Path, *, threads: int = 1) -> VideoInfo:
    """Frame count, fps, size and duration of the first video stream, without decoding."""
    with VideoReader(path, threads=threads) as reader:
        return reader.info


def read_clip(
    path: str | Path, indices: Sequence[int], short_side: int | None = None, threads: int = 1
) -> torch.Tensor:
    """uint8 (T, H, W, 3) RGB frames at `indices` of the video at `path` (see VideoReader)."""
    with VideoReader(path, threads=threads) as reader:
        return reader.read(indices, short_side=short_side)


def decode_all(path: str | Path) -> np.ndarray:
    """Every frame, decoded from the start: uint8 (N, H, W, 3). Reference for tests/tools."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except _AV_ERRORS as err:
        raise DataError(path, f"decoding failed ({_reason(err)})") from None
    finally:
        container.close()
    if not frames:
        raise DataError(path, "no decodable frames")
    return np.stack(frames)
