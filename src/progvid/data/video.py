"""Frame-exact, seek-based video clip decoding with PyAV.

Frame index ``i`` is the i-th frame in presentation order of the first video stream, i.e. what a
full decode from the start yields. On open we demux (never decode) every video packet once: the
sorted packet pts give the index <-> pts table and the frame count, and keyframe packets give
the seek points. A read then seeks to the keyframe at or before each group of wanted frames,
decodes forward, converts only the wanted frames, and stops at the last one.

Damaged files: a read raises `DataError` instead of returning a frame that may hold damaged
pixels: one whose packet failed to decode or was flagged corrupt by the demuxer (MPEG-TS does
after lost data), one the decoder flagged corrupt (FFmpeg sets that when its error concealment
ran), the first frame of a file that does not start on a keyframe unless it is intra-coded, and
every frame decoded after such a packet (or after the packet just before it, whose tail the
damage may have reached) until a keyframe starts a new group of pictures (`_Damage`). The decoder runs with `err_detect=crccheck+aggressive`, which
turns more damage into errors and changes nothing on a clean stream. On undamaged files a read
is bit-identical to a full decode.

What no decoder signal reveals, and so passes both `read` and `verify` (measured with 4 KB of
random or zero bytes written at 16 places in the middle of 60-frame 128x96 files, 32 damaged
files per format; frames counted with every frame read on its own):
* VP9 (WebM): the decoder reports nothing, ever: 98 frames in 32 of 32 files came back wrong
  (mean abs diff 23, max 255). Only the container may show it: WebM/Matroska resynchronize at
  the next cluster and drop frames silently, so later frames come back with correct pixels at
  the wrong index (648 such frames); `timestamp_gap` spots that in 26 of 32 files.
* H.264 with CABAC: damage that stays inside one slice can decode without error or concealment
  (4 KB of zeros inside an IDR frame; nothing logged even at debug level): 17 frames in 6 of 32
  Matroska files. In MP4 and MPEG-TS every such case also broke a neighbouring packet: 0 of
  32 left (44 wrong frames in 4 MP4 files and 204 in 31 TS files before these checks). CAVLC
  H.264 (x264 ultrafast, the synthetic dataset) and MPEG-4 part 2 (AVI): 0 wrong frames left
  (4 and 268 before).
* Frames lost by the container (AVI, Matroska, TS) shift every later index; their pixels are
  right.
Catching the rest needs a checksum recorded while the file was good (e.g. `sha256sum -c`).
"""

from __future__ import annotations

import bisect
import itertools
import operator
import os
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
_ERR_DETECT = "crccheck+aggressive"
_PICT_I = 1  # AV_PICTURE_TYPE_I


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


_TABLES_LOCK = threading.Lock()  # `data check` reads files from several threads


def _remember(key: tuple[str, int, int], table: dict) -> None:
    with _TABLES_LOCK:
        if len(_TABLES) >= _TABLES_MAX:
            _TABLES.pop(next(iter(_TABLES)), None)  # oldest first
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


class _Damage:
    """What one decode pass (a seek, then packets in decode order) learned about damaged data.

    Each packet sent to the decoder gets a sequence number. A packet is *bad* when decoding it
    fails, when the demuxer flags it corrupt, or when the decoder flags its frame corrupt
    (`frame.is_corrupt`: FFmpeg's error concealment ran, or the frame depends on a reference
    it never got). A frame may predict from
    any frame decoded before it, so its pixels are suspect when a bad packet precedes it in
    decode order, unless a keyframe decoded in between starts its group of pictures (a keyframe
    K clears the frames decoded after it that come at or after K in presentation order; leading
    pictures of an open GOP stay suspect). Without timestamps frames cannot be matched to
    packets: any bad packet makes every frame of the pass suspect. Frames shown before the
    pass's keyframe (leading pictures after a seek) are never bad: they belong to the previous
    group and are judged when it is read.
    """

    def __init__(self, timed: bool) -> None:
        self.timed = timed
        self.start = 0  # presentation index of the pass's first keyframe
        self.seq = -1  # sequence number of the last packet sent
        self.seq_of: dict[int, int] = {}  # packet pts -> sequence number
        self.bad: list[tuple[int, str]] = []  # (sequence number, reason), sorted
        self.keys: list[tuple[int, int]] = []  # (sequence number, index) of keyframe packets
        self.drained = False  # the decoder has given out every frame it holds
        # The pass starts on a packet that is not a keyframe (a file whose start is lost, as
        # in an AVI with a damaged index): its first frame must then be intra-coded.
        self.headless = False

    def sent(self, packet: av.Packet, index: int | None) -> int:
        self.seq += 1
        if self.seq == 0:
            self.headless = not packet.is_keyframe
        if packet.pts is not None:
            self.seq_of[packet.pts] = self.seq
        if packet.is_keyframe and index is not None:
            self.keys.append((self.seq, index))
        return self.seq

    def mark(self, seq: int, reason: str) -> None:
        # Damage seldom starts on a packet boundary, and the damaged tail of a packet often
        # decodes without any error (measured: the last 15 % of an H.264 IDR frame replaced by
        # random bytes, no error, no flag). Bytes just before a bad packet belong to the packet
        # demuxed before it, so that one is suspect too.
        for at in {max(seq - 1, 0), seq}:
            bisect.insort(self.bad, (at, reason))

    def saw(self, frame: av.VideoFrame, index: int) -> int | None:
        """Record a decoded frame; returns the sequence number of its packet (None untimed)."""
        seq = self.seq_of.get(frame.pts) if self.timed and frame.pts is not None else None
        if index < self.start:  # a leading picture of an open GOP: the previous group's
            return seq
        at = self.seq if seq is None else seq
        if frame.is_corrupt:
            self.mark(at, f"the decoder flagged frame {index} corrupt")
        if self.headless:  # the pass's first frame must stand alone: decoding starts there
            self.headless = False
            if not (frame.key_frame or frame.pict_type == _PICT_I):
                self.mark(at, f"frame {index} is predicted from data before the start of the "
                              "stream (no keyframe to decode from)")
        return seq

    def verdict(self, seq: int | None, index: int) -> str | None:
        """Why frame `index` (from packet `seq`) may hold damaged pixels; None if it cannot."""
        if not self.bad:
            return None
        if seq is None:
            return self.bad[0][1]
        k = bisect.bisect_right(self.bad, (seq, "\U0010ffff")) - 1
        if k < 0:
            return None
        b, why = self.bad[k]  # the newest bad packet decoded at or before this frame's
        if any(b < ks <= seq and ki <= index for ks, ki in self.keys):
            return None
        return why


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
        # Report damage instead of concealing it quietly: `aggressive` makes a slice that ends
        # with bits left over an error (how most damage to CAVLC H.264 and MPEG-4 shows),
        # `crccheck` verifies the checksums some codecs carry (FFV1). Neither changes a frame
        # that decodes cleanly.
        ctx.options = {"err_detect": _ERR_DETECT}

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
        self, k: int | None, damage: _Damage, errors: list[str]
    ) -> Iterator[tuple[int, av.VideoFrame, int | None]]:
        """Decoded (index, frame, decode sequence number) triples in presentation order from
        keyframe `k`; `damage` records every decoder error and corrupt flag on the way."""
        packets, last = self._packets_from(k)
        damage.start = last + 1
        ctx = self._vs.codec_context
        # skipping is only safe to toggle per packet without frame threading (untested there)
        want = self._want_pts if self._threads <= 1 else None
        if want is None and self._threads <= 1:
            ctx.skip_frame = "DEFAULT"
        for packet in packets:
            if want is not None:
                # A non-reference frame nobody asked for: let the decoder drop it (no other
                # frame predicts from it, so the wanted frames are bit-identical).
                ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in want else "NONREF"
            at = self._index_of.get(packet.pts) if self._timed else None  # type: ignore[arg-type]
            seq = damage.sent(packet, at)
            leading = at is not None and at < damage.start  # an open GOP's: the previous group's
            if packet.is_corrupt and not leading:  # MPEG-TS flags packets after lost data
                damage.mark(seq, "the demuxer flagged its packet corrupt")
            try:
                frames = packet.decode()
            except _AV_ERRORS as err:
                errors.append(_reason(err))
                if not leading:
                    damage.mark(seq, f"a packet failed to decode: {_reason(err)}")
                continue
            if packet.size == 0:  # a flush packet: the decoder has given out everything
                damage.drained = True
            self.frames_decoded += len(frames)
            for frame in frames:
                idx = self._index_of.get(frame.pts) if self._timed else None  # type: ignore[arg-type]
                last = last + 1 if idx is None else idx
                yield last, frame, damage.saw(frame, last)
        damage.drained = True

    def _settle(self, damage: _Damage | None, taken: list[tuple[int, int | None]]) -> None:
        """Drain the decoder so every frame of the pass is out (a concealed frame comes out
        after the B-frames that reference it), then fail on the first frame taken from the
        pass that may hold damaged pixels."""
        if damage is None or not taken:
            return
        if not damage.drained:
            damage.drained = True
            try:
                for frame in self._vs.codec_context.decode(None):
                    idx = self._index_of.get(frame.pts) if self._timed else None  # type: ignore[arg-type]
                    damage.saw(frame, -1 if idx is None else idx)
            except _AV_ERRORS as err:
                damage.mark(damage.seq, f"the decoder failed while flushing: {_reason(err)}")
        for i, seq in taken:
            why = damage.verdict(seq, i)
            if why is not None:
                raise DataError(self.path, f"frame {i} not decodable (damaged data: {why})")
        taken.clear()

    def read(self, indices: Sequence[int], short_side: int | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) RGB frames at `indices` (any order, repeats allowed).

        Raises `DataError` rather than return a frame that may hold damaged pixels: one the
        decoder could not decode or flagged corrupt, or one decoded after such a frame in the
        same group of pictures (see `_Damage`)."""
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
        frames: Iterator[tuple[int, av.VideoFrame, int | None]] | None = None
        damage: _Damage | None = None
        taken: list[tuple[int, int | None]] = []  # (index, decode seq) awaiting the pass verdict
        seen = -1  # index of the last decoded frame in the current pass
        # One swscale context per thread and process for all readers: building one costs ~2 ms,
        # more than converting a small frame (frame.to_ndarray() would build one per call).
        rgb = _reformatter()
        try:
            for i in sorted(positions):
                if self._timed:
                    k = bisect.bisect_right(self._key_index, i) - 1
                    key = self._key_index[k] if k >= 0 else 0
                    # Seek when the needed keyframe lies beyond what we've decoded: cheaper than
                    # decoding the gap. Otherwise keep decoding forward.
                    if frames is None or key > seen:
                        self._settle(damage, taken)
                        damage = _Damage(self._timed)
                        frames, seen = self._frames_from(k if k >= 0 else None, damage, errors), -1
                elif frames is None:
                    damage = _Damage(self._timed)
                    frames = self._frames_from(None, damage, errors)
                assert damage is not None
                for idx, frame, seq in frames:
                    seen = idx
                    if idx < i:
                        continue
                    if idx > i:
                        break
                    why = damage.verdict(seq, i)
                    if why is not None:
                        raise DataError(self.path, f"frame {i} not decodable (damaged data: {why})")
                    if out is None:
                        size = _target_size(frame.width, frame.height, short_side)
                        out = np.empty((len(wanted), size[1], size[0], 3), dtype=np.uint8)
                    # Conversion (and resize) happen in C inside swscale.
                    # One scaling thread: a loader worker owns one core, and swscale's own
                    # slice threads would not survive a fork.
                    arr = rgb.reformat(frame, width=size[0], height=size[1], format="rgb24",
                                       threads=1).to_ndarray()
                    out[positions[i]] = arr
                    taken.append((i, seq))
                    break
                else:
                    idx = -1
                if idx != i:
                    got = f"only {seen + 1} frames" if idx == -1 else f"next decoded is {idx}"
                    why = (
                        f"; {len(errors)} packet(s) failed to decode: {errors[0]}" if errors else ""
                    )
                    raise DataError(self.path, f"frame {i} not decodable ({got}{why})")
            self._settle(damage, taken)
        except _AV_ERRORS as err:
            raise DataError(self.path, f"decoding failed ({_reason(err)})") from None
        assert out is not None
        return torch.from_numpy(out)

    def verify(self) -> int:
        """Decode every frame from the start, converting none, and raise `DataError` at the
        first frame that is missing or may hold damaged pixels (as `read` would for it).
        Returns the frame count. This is what `progvid data check --deep` runs per file."""
        for _ in self.decode_checked():
            pass
        return self.info.frames

    @property
    def stream(self) -> av.video.stream.VideoStream:
        """The video stream read (its codec context holds the colour tags)."""
        return self._vs

    def decode_checked(self) -> Iterator[av.VideoFrame]:
        """Every frame from the start in presentation order, each checked as `verify` checks
        it: raises `DataError` at the first frame that is missing or may hold damaged pixels.
        Damage the decoder reveals only once drained is raised after the last frame, so a
        consumer (`data prepare`) must treat its output as finished only when this ends."""
        if self._container is None:
            raise ValueError(f"VideoReader for {self.path} is closed")
        n = self.info.frames
        self._want_pts = None  # decode every frame, skip none
        errors: list[str] = []
        damage = _Damage(self._timed)
        taken: list[tuple[int, int | None]] = []
        done = 0  # frames decoded in order so far
        try:
            for idx, _frame, seq in self._frames_from(None, damage, errors):
                if idx != done:
                    why = f"; {len(errors)} packet(s) failed to decode: {errors[0]}" if errors else ""
                    raise DataError(self.path, f"frame {min(idx, done)} not decodable "
                                               f"(next decoded is {idx}{why})")
                why = damage.verdict(seq, idx)
                if why is not None:
                    raise DataError(self.path, f"frame {idx} not decodable (damaged data: {why})")
                taken.append((idx, seq))
                done += 1
                yield _frame
            self._settle(damage, taken)
        except _AV_ERRORS as err:
            raise DataError(self.path, f"decoding failed ({_reason(err)})") from None
        if done != n:
            why = f"; {len(errors)} packet(s) failed to decode: {errors[0]}" if errors else ""
            raise DataError(self.path, f"frame {done} not decodable (only {done} of {n} frames "
                                       f"decoded{why})")

    def timestamp_gap(self) -> str | None:
        """Why frames look lost, else None: in a stream whose frames are evenly spaced except
        for one or two jumps of at least 1.5 steps, the jumps are where a demuxer skipped
        damaged data (Matroska/WebM resynchronizes at the next cluster and says nothing).
        Variable-rate streams (spacing not uniform elsewhere) are never reported."""
        if not self._timed or self.info.frames < 4:
            return None
        order = np.array(sorted(self._index_of), dtype=np.int64)
        deltas = np.diff(order)
        values, counts = np.unique(deltas, return_counts=True)
        step = int(values[counts.argmax()])
        odd = np.flatnonzero(deltas != step)
        if step <= 0 or not 0 < len(odd) <= 2 or np.any(deltas[odd] < 1.5 * step):
            return None
        tb = self._vs.time_base or Fraction(1)
        jumps = [f"{float((order[i] - order[0]) * tb):.3f} s to {float((order[i + 1] - order[0]) * tb):.3f} s "
                 f"after frame {i} (about {round(deltas[i] / step) - 1} frames)" for i in odd]
        return f"timestamps jump {'; '.join(jumps)} in an otherwise constant-rate stream: frames lost?"

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
