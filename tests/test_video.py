"""Seek-based clip decoding: exact pixels vs a full decode, exact frame counts, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from progvid.data.video import VideoInfo, VideoReader, decode_all, probe, read_clip  # noqa: E402
from progvid.errors import DataError  # noqa: E402
from videos import (  # noqa: E402
    make_frames,
    write_audio_only,
    write_empty,
    write_garbage_packets,
    write_text_as_video,
    write_truncated,
    write_video,
)

pytestmark = pytest.mark.timeout(60)

N = 40
# name -> (file name, codec, extra write_video kwargs)
KINDS = {
    "h264-mp4": ("v.mp4", "libx264", {}),  # B-frames, edit list, dts < pts
    "vp9-webm": ("v.webm", "libvpx-vp9", {}),  # no frame count in the header
    "mpeg4-avi": ("v.avi", "mpeg4", {}),
    "mpeg4-bframes-avi": ("vb.avi", "mpeg4", {"bframes": 2}),  # AVI index is by dts
    "h264-mkv": ("v.mkv", "libx264", {}),  # first packets have no dts
    "h264-raw": ("v.h264", "libx264", {}),  # no timestamps at all: counting fallback
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """Each kind of video plus its full-decode reference frames."""
    root = tmp_path_factory.mktemp("videos")
    frames = make_frames(N)
    out = {}
    for kind, (name, codec, kwargs) in KINDS.items():
        path = write_video(root / name, frames, codec, fps=25, gop=12, **kwargs)
        out[kind] = (path, decode_all(path))
    return out


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_video(path, make_frames(300, height=24, width=32), "libx264", fps=30, gop=12)
    return path, decode_all(path)


INDEX_SETS = [
    [0],
    [N - 1],
    [N - 2, N - 1],
    list(range(16)),
    [5, 3, 3, N - 1, 0, 17],  # unsorted, repeated, both ends
    [11, 12, 13],  # across a keyframe
    [24, 23, 35, 36, 37],
    list(range(N - 1, -1, -1)),
    [1, 30, 2, 31],  # two groups, interleaved request order
]


@pytest.mark.parametrize("kind", KINDS)
def test_read_clip_matches_full_decode(videos, kind: str) -> None:
    path, ref = videos[kind]
    assert ref.shape == (N, 48, 64, 3)
    for indices in INDEX_SETS:
        clip = read_clip(path, indices)
        assert clip.dtype == torch.uint8 and clip.shape == (len(indices), 48, 64, 3)
        np.testing.assert_array_equal(clip.numpy(), ref[indices], err_msg=f"{kind} {indices}")


@pytest.mark.parametrize("kind", KINDS)
def test_reader_reuse_and_threads(videos, kind: str) -> None:
    path, ref = videos[kind]
    with VideoReader(path, threads=2) as reader:
        for indices in INDEX_SETS:
            np.testing.assert_array_equal(reader.read(indices).numpy(), ref[indices])
        # Every single frame, one call each: exercises seeks to every keyframe.
        for i in range(N):
            np.testing.assert_array_equal(reader.read([i]).numpy()[0], ref[i])


def _read_in_child(path: Path, queue) -> None:
    queue.put(read_clip(path, [0, 5], short_side=24).numpy())


def test_reading_after_fork(videos) -> None:
    """A loader worker forked after the parent decoded (and scaled) frames reads normally: the
    parent's swscale context is not reused across the fork (it deadlocked on its slice threads)."""
    import multiprocessing as mp

    path, _ = videos["h264-mp4"]
    parent = read_clip(path, [0, 5], short_side=24).numpy()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(path, queue))
    child.start()
    try:
        got = queue.get(timeout=30)
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(got, parent)


@pytest.mark.parametrize("kind", KINDS)
def test_clean_files_pass_the_deep_check(videos, kind: str) -> None:
    """`verify` (data check --deep) decodes every frame of a clean file without complaint,
    and its evenly spaced timestamps raise no warning."""
    path, ref = videos[kind]
    with VideoReader(path) as reader:
        assert reader.verify() == len(ref) and reader.timestamp_gap() is None
        np.testing.assert_array_equal(reader.read([5, 30]).numpy(), ref[[5, 30]])  # still reads


@pytest.mark.parametrize("kind", KINDS)
def test_probe_counts_decoded_frames(videos, kind: str) -> None:
    path, ref = videos[kind]
    info = probe(path)
    assert info == VideoInfo(frames=len(ref), fps=25.0, width=64, height=48, duration=N / 25)


def test_probe_ignores_missing_header_count(videos) -> None:
    path, ref = videos["vp9-webm"]
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # webm: the header has no count
    assert probe(path).frames == len(ref) == N


def test_short_side_resize(videos, tmp_path: Path) -> None:
    path, ref = videos["h264-mp4"]
    clip = read_clip(path, [0, 7, 39], short_side=32)
    assert clip.shape == (3, 32, 43, 3)  # 64 * 32 / 48 = 42.67 -> 43
    # Same as resizing the full-decode frames with swscale's bilinear filter.
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        expect = [frames[i].to_ndarray(width=43, height=32, format="rgb24") for i in (0, 7, 39)]
    np.testing.assert_array_equal(clip.numpy(), np.stack(expect))
    # Rough content check: the downscaled frame resembles a naive downscale of the reference.
    err = np.abs(clip.numpy()[1, ::2, ::2].astype(int) - ref[7, ::3, ::3][:16, :22].astype(int))
    assert err.mean() < 80
    # Portrait video: width is the short side.
    portrait = write_video(tmp_path / "p.mp4", make_frames(6, height=64, width=36), gop=3)
    assert read_clip(portrait, [0, 5], short_side=18).shape == (2, 32, 18, 3)
    assert read_clip(portrait, [1], short_side=36).shape == (1, 64, 36, 3)


def test_decodes_only_what_the_clip_needs(long_video) -> None:
    path, ref = long_video
    with VideoReader(path) as reader:
        assert reader.info.frames == 300
        near_end = list(range(280, 296))
        np.testing.assert_array_equal(reader.read(near_end).numpy(), ref[near_end])
        assert reader.frames_decoded <= 16 + 12 + 4  # one GOP of lead-in plus reorder delay
        # Multi-clip sampling spread over the video seeks per group instead of decoding the gaps.
        reader.frames_decoded = 0
        spread = [290, 3, 150, 151, 152, 70]
        np.testing.assert_array_equal(reader.read(spread).numpy(), ref[spread])
        assert reader.frames_decoded <= 4 * (12 + 4)


def test_empty_indices(videos) -> None:
    path, _ = videos["h264-mp4"]
    assert read_clip(path, []).shape == (0, 48, 64, 3)
    assert read_clip(path, [], short_side=24).shape == (0, 24, 32, 3)


def test_numpy_and_tensor_indices(videos) -> None:
    path, ref = videos["vp9-webm"]
    np.testing.assert_array_equal(read_clip(path, np.array([3, 9])).numpy(), ref[[3, 9]])
    np.testing.assert_array_equal(read_clip(path, torch.tensor([4, 2])).numpy(), ref[[4, 2]])


# -- bad input: always DataError naming the file and the reason -------------------------------


def _error(fn, *args, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("fn", [probe, lambda p: read_clip(p, [0]), decode_all])
def test_missing_empty_and_non_video_files(tmp_path: Path, fn) -> None:
    cases = {
        tmp_path / "missing.mp4": "file not found",
        write_empty(tmp_path / "empty.mp4"): "empty file (0 bytes)",
        write_text_as_video(tmp_path / "text.mp4"): "cannot open as a video container",
        tmp_path: "not a regular file",
    }
    for path, reason in cases.items():
        err = _error(fn, path)
        assert str(err).startswith(f"{path}: ") and reason in err.reason, str(err)


def test_no_video_stream(tmp_path: Path) -> None:
    for path in (
        write_audio_only(tmp_path / "a.m4a"),
        write_audio_only(tmp_path / "a.wav", codec="pcm_s16le"),
    ):
        err = _error(probe, path)
        assert str(err) == f"{path}: no video stream (streams: audio)"
        assert "no video stream" in _error(read_clip, path, [0]).reason


def test_zero_decodable_frames(tmp_path: Path) -> None:
    path = write_garbage_packets(tmp_path / "garbage.mkv", n=10)
    assert probe(path).frames == 10  # packets are there, they just don't decode
    err = _error(read_clip, path, [0])
    assert str(err).startswith(f"{path}: frame 0 not decodable (only 0 frames; 10 packet(s)")
    assert _error(decode_all, path).reason.startswith("decoding failed (Invalid data")


def test_index_out_of_range(videos) -> None:
    path, _ = videos["h264-mp4"]
    for bad, first_bad in (([-1], -1), ([0, N], N), ([3, N + 100, -2], N + 100)):
        err = _error(read_clip, path, bad)
        assert err.reason == f"frame index {first_bad} out of range for {N} frames"


def test_truncated_mp4_moov_at_end(videos, tmp_path: Path) -> None:
    path = write_truncated(videos["h264-mp4"][0], tmp_path / "cut.mp4", 0.5)
    err = _error(read_clip, path, [0])
    assert str(err).startswith(f"{path}: cannot open as a video container")


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8, 0.97])
@pytest.mark.parametrize("kind", ["faststart-mp4", "vp9-webm", "mpeg4-avi", "h264-mkv"])
def test_truncated_never_returns_garbage(
    videos, tmp_path: Path, kind: str, fraction: float
) -> None:
    """Cut files either fail to open or give frames that a full decode of the original agrees
    with (matched by content, since a cut can drop frames mid-stream); the rest is DataError."""
    if kind == "faststart-mp4":  # moov up front: the truncated file still opens
        src = write_video(
            tmp_path / "fs.mp4", make_frames(N), container_options={"movflags": "faststart"}
        )
        ref = decode_all(src)
    else:
        src, ref = videos[kind]
    path = write_truncated(src, tmp_path / f"cut{src.suffix}", fraction)
    try:
        n = probe(path).frames
    except DataError as err:
        assert str(err).startswith(f"{path}: ")
        return
    assert n <= N
    ok = 0
    for i in range(n):
        try:
            frame = read_clip(path, [i]).numpy()[0]
        except DataError as err:
            assert str(err).startswith(f"{path}: frame {i} not decodable ("), str(err)
            continue
        assert any(np.array_equal(frame, r) for r in ref[max(0, i - 3) : i + 4]), (kind, i)
        ok += 1
    if fraction >= 0.5 and kind != "mpeg4-avi":  # AVI loses its index and most frames
        assert ok >= n // 2
    beyond = _error(read_clip, path, [n])
    assert beyond.reason == f"frame index {n} out of range for {n} frames"


def test_close_is_idempotent(videos) -> None:
    path, ref = videos["mpeg4-avi"]
    reader = VideoReader(path)
    np.testing.assert_array_equal(reader.read([2]).numpy()[0], ref[2])
    reader.close()
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read([0])
