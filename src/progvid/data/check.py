"""`progvid data check`: open every entry of a dataset in parallel and report the bad ones.

The quick check opens each video, reads its frame table and decodes its first and last frames:
missing, empty, truncated and non-video files. `deep` decodes every frame (`VideoReader.verify`):
damage in the middle of a file that the decoder reports (a packet that fails, a frame it flags
corrupt or conceals, and every frame predicted from one), plus a warning for a constant-rate
stream whose timestamps jump (a demuxer that skipped damaged data). Damage that no decoder
signal reveals (see `progvid.data.video`) passes both.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .datasets import (
    Sample,
    SampleSet,
    read_class_names,
    read_folder,
    read_list,
    read_ssv2,
    read_unlabeled,
)
from .video import VideoReader


@dataclass(frozen=True)
class BadEntry:
    path: str
    reason: str
    source: str | None = None
    line: int | None = None


@dataclass
class CheckReport:
    ok: int = 0
    bad: list[BadEntry] = field(default_factory=list)
    warnings: list[BadEntry] = field(default_factory=list)  # readable, but suspicious (deep)
    deep: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "bad": [{"path": b.path, "line": b.line, "reason": b.reason} for b in self.bad]}
        if self.deep:
            out["warnings"] = [{"path": w.path, "line": w.line, "reason": w.reason}
                               for w in self.warnings]
        return out


def inspect_sample(sample: Sample, deep: bool = False) -> tuple[str | None, str | None]:
    """(why the video is unusable or None, a warning or None). Quick: it opens and its first
    and last frames decode. Deep: every frame decodes clean, and its timestamps have no jump."""
    try:
        with VideoReader(sample.path) as reader:
            if deep:
                reader.verify()
                return None, reader.timestamp_gap()
            n = reader.info.frames
            reader.read([0, n - 1])
    except DataError as exc:
        return exc.reason, None
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        return f"{type(exc).__name__}: {exc}", None
    return None, None


def check_sample(sample: Sample, deep: bool = False) -> str | None:
    """None when the video is usable (see `inspect_sample`); else the reason."""
    return inspect_sample(sample, deep)[0]


def dataset_format(target: str | Path, fmt: str | None = None) -> str:
    """The layout of `target`: `fmt` when given, else from the file type (a .json file is an
    SSv2 split, a folder holds one sub-folder per class, anything else is a list file)."""
    if fmt is not None:
        return fmt
    target = Path(target)
    return "ssv2" if target.suffix == ".json" else "folder" if target.is_dir() else "list"


def read_dataset(
    target: str | Path, *, root: str | None = None, fmt: str | None = None,
    labels: str | None = None,
) -> SampleSet:
    """The samples (and class names, where the layout has them) of a list file, SSv2 split json
    or folder, as `progvid data check` and `progvid data prepare` read them."""
    target = Path(target)
    fmt = dataset_format(target, fmt)
    if fmt == "ssv2":
        if labels is None:
            raise DataError(target, "an SSv2 split needs --labels LABELS_JSON")
        return read_ssv2(target, labels, root or target.parent)
    if fmt == "folder":
        return read_folder(target, read_class_names(labels) if labels is not None else None)
    if fmt == "unlabeled":
        return read_unlabeled(target)
    names = read_class_names(labels) if labels is not None else None
    return SampleSet(read_list(target, root, len(names) if names else None), names)


def check_list(
    target: str | Path,
    *,
    root: str | None = None,
    fmt: str | None = None,
    labels: str | None = None,
    workers: int = 2,
    progress: bool = False,
    deep: bool = False,
) -> CheckReport:
    """Check every entry (`deep`: decode every frame); list-level problems (missing list,
    malformed line) raise DataError."""
    samples = read_dataset(target, root=root, fmt=fmt, labels=labels).samples
    report = CheckReport(deep=deep)
    # PyAV releases the GIL while demuxing and decoding, so threads overlap well here.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda s: inspect_sample(s, deep), samples)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(samples), desc="deep check" if deep else "check",
                           unit="video")
        for sample, (reason, warning) in zip(samples, results, strict=True):
            if reason is None:
                report.ok += 1
                if warning is not None:
                    report.warnings.append(
                        BadEntry(str(sample.path), warning, sample.source, sample.line))
            else:
                report.bad.append(BadEntry(str(sample.path), reason, sample.source, sample.line))
    return report
