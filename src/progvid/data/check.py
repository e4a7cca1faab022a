"""`progvid data check`: decode every entry of a dataset in parallel and report the bad ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .datasets import Sample, read_folder, read_list, read_ssv2, read_unlabeled
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

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok,
                "bad": [{"path": b.path, "line": b.line, "reason": b.reason} for b in self.bad]}


def check_sample(sample: Sample) -> str | None:
    """None when the video opens and its first and last frames decode; else the reason."""
    try:
        with VideoReader(sample.path) as reader:
            n = reader.info.frames
            reader.read([0, n - 1])
    except DataError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        return f"{type(exc).__name__}: {exc}"
    return None


def dataset_samples(target: str | Path, root: str | None = None, fmt: str | None = None,
                    labels: str | None = None) -> list[Sample]:
    """The samples of any dataset layout `data check` accepts: a list file, an SSv2 split json
    (with `labels`), a folder per class, or an unlabeled folder (`fmt`, default from the target:
    .json -> ssv2, a folder -> folder, else a list)."""
    target = Path(target)
    if fmt is None:
        fmt = "ssv2" if target.suffix == ".json" else "folder" if target.is_dir() else "list"
    if fmt == "ssv2":
        if labels is None:
            raise DataError(target, "an SSv2 split needs --labels LABELS_JSON")
        return read_ssv2(target, labels, root or target.parent).samples
    if fmt == "folder":
        return read_folder(target).samples
    if fmt == "unlabeled":
        return read_unlabeled(target).samples
    num_classes = None
    if labels is not None:
        from .datasets import read_class_names

        num_classes = len(read_class_names(labels))
    return read_list(target, root, num_classes)


def check_list(
    target: str | Path,
    *,
    root: str | None = None,
    fmt: str | None = None,
    labels: str | None = None,
    workers: int = 2,
    progress: bool = False,
) -> CheckReport:
    """Check every entry; list-level problems (missing list, malformed line) raise DataError."""
    samples = dataset_samples(target, root, fmt, labels)
    report = CheckReport()
    # PyAV releases the GIL while demuxing and decoding, so threads overlap well here.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(check_sample, samples)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(samples), desc="check", unit="video")
        for sample, reason in zip(samples, results, strict=True):
            if reason is None:
                report.ok += 1
            else:
                report.bad.append(BadEntry(str(sample.path), reason, sample.source, sample.line))
    return report
