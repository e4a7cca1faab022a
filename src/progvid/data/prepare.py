"""`progvid data prepare`: re-encode a dataset once so that every clip read is cheap.

`prepare_dataset` re-encodes every video of a dataset (any of the four layouts `progvid data
check` reads) in parallel worker processes, each video as `reencode.reencode` does it (short side,
short keyframe interval, same frames and rate); it writes `OUT/videos/...`, a list file per split
(`list` layout, paths relative to OUT, same labels) and `classes.txt` where the source had class
names.

Resume: each video is encoded to a hidden `.NAME.PID.part` file, fsynced, renamed to its final
name, and then recorded in `OUT/prepare.jsonl` (source path, size and mtime, the settings, output
size). On a rerun a video is done only when its record matches the source and the settings and
the output file has the recorded size; anything else (a `.part` left by a kill, a file renamed
but not recorded, a changed source) is encoded again. The list files are written last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError, ProgvidError
from .check import BadEntry, dataset_format, read_dataset
from .datasets import Sample, listed_at, read_class_names
from .reencode import DEFAULT_GOP, DEFAULT_SHORT_SIDE, DEFAULT_TUNE, PART, EncodeSettings, reencode

MANIFEST = "prepare.jsonl"
SKIPPED = "skipped.jsonl"
CLASSES = "classes.txt"
VIDEOS = "videos"
_LOCK = ".prepare.lock"


@dataclass
class PrepareReport:
    """What `prepare_dataset` did. `encoded + reused` videos are in the written lists."""

    out: Path
    lists: dict[str, Path]  # split name -> OUT/<name>.csv, in the order the sources were given
    classes: Path | None  # OUT/classes.txt, when the source had class names
    total: int  # distinct videos in all sources
    encoded: int  # re-encoded by this run
    reused: int  # already done by an earlier run (not redone)
    skipped: list[BadEntry] = field(default_factory=list)
    seconds: float = 0.0  # wall-clock of the whole run
    encode_seconds: float = 0.0  # summed per-video wall time in the workers (this run)
    encode_cpu_seconds: float = 0.0  # summed per-video CPU time in the workers (this run)
    overrides: list[str] = field(default_factory=list)  # `--set` lines to train on the result

    @property
    def prepared(self) -> int:
        return self.encoded + self.reused

    @property
    def list_path(self) -> Path:
        """The first split's list file (the training split when given first)."""
        return next(iter(self.lists.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "lists": {k: str(v) for k, v in self.lists.items()},
            "classes": str(self.classes) if self.classes else None, "total": self.total,
            "prepared": self.prepared, "encoded": self.encoded, "reused": self.reused,
            "skipped": [{"path": b.path, "source": b.source, "line": b.line, "reason": b.reason}
                        for b in self.skipped],
            "seconds": round(self.seconds, 3), "encode_seconds": round(self.encode_seconds, 3),
            "encode_cpu_seconds": round(self.encode_cpu_seconds, 3), "overrides": self.overrides,
        }


# --------------------------------------------------------------------------------------------
# the dataset


def _encode_job(job: tuple[str, str, str, dict[str, Any]]) -> dict[str, Any]:
    """Worker: re-encode one video; a record for the manifest, or {"error": reason}."""
    src, dst, rel, settings = job
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        st = os.stat(src)  # taken before reading: a source changed meanwhile is redone later
        info = reencode(src, dst, EncodeSettings(**{k: v for k, v in settings.items()
                                                     if k != "version"}))
    except DataError as exc:
        return {"src": src, "error": exc.reason}
    except FileNotFoundError:
        return {"src": src, "error": "file not found"}
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
        return {"src": src, "error": f"{type(exc).__name__}: {exc}"}
    return {"out": rel, "src": src, "src_size": st.st_size, "src_mtime_ns": st.st_mtime_ns,
            "settings": settings, "bytes": os.path.getsize(dst), "frames": info.frames,
            "fps": info.fps, "width": info.width, "height": info.height,
            "seconds": round(time.perf_counter() - wall, 4),
            "cpu_seconds": round(time.process_time() - cpu, 4)}


def _watch_parent() -> None:
    """Worker initializer: exit as soon as the run's process dies (a SIGKILL included) instead
    of lingering on the job queue or renaming files under a rerun. Not `getppid`: a forkserver
    worker's parent is the server, which every worker keeps alive. The parent sentinel is a
    pipe the run's process holds open; it reads EOF when that process is gone."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        mp.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="progvid-parent-watch").start()


def _pool_context() -> mp.context.BaseContext:
    """forkserver where available (never fork a possibly threaded torch parent; the preloaded
    server makes worker start-up cheap), spawn elsewhere."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, "av"])
        return ctx
    return mp.get_context("spawn")


def _run_jobs(jobs: list[tuple[str, str, str, dict[str, Any]]],
              workers: int) -> Iterator[dict[str, Any]]:
    """Results in completion order; at most a few jobs in flight per worker."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(_encode_job, jobs)
        return
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=_pool_context(),
                               initializer=_watch_parent)
    pending: set[Future] = set()
    todo = iter(jobs)
    try:
        while True:
            for job in todo:
                pending.add(pool.submit(_encode_job, job))
                if len(pending) >= 4 * workers:
                    break
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# a dataset


_UNSAFE = re.compile(r"[\s,]+")  # list files split on whitespace and commas


def _output_names(samples: list[Sample], bases: list[Path]) -> dict[str, str]:
    """Source path -> output path relative to OUT (`videos/<path under the base>.mp4`),
    without spaces or commas; distinct sources never share an output."""
    wanted: dict[str, str] = {}
    for sample, base in zip(samples, bases, strict=True):
        src = os.path.abspath(sample.path)
        if src in wanted:
            continue
        rel = os.path.relpath(src, base)
        if rel.startswith(".."):  # outside the dataset's folder: keep the name only
            rel = os.path.join("external", os.path.basename(src))
        rel = os.path.splitext(rel)[0]
        parts = [_UNSAFE.sub("_", p).lstrip(".") or "_" for p in Path(rel).parts]
        wanted[src] = "/".join([VIDEOS, *parts]) + ".mp4"
    count: dict[str, int] = {}
    for rel in wanted.values():
        count[rel] = count.get(rel, 0) + 1
    for src, rel in wanted.items():
        if count[rel] > 1:  # a.webm and a.mp4, or names equal once sanitised
            tag = hashlib.sha1(src.encode()).hexdigest()[:8]
            wanted[src] = f"{rel[:-4]}-{tag}.mp4"
    return wanted


def _split_name(target: Path) -> str:
    name = target.resolve().name if target.is_dir() else target.stem
    return _UNSAFE.sub("_", name) or "data"


def _base(target: Path, fmt: str, root: str | None) -> Path:
    """The folder the output tree mirrors (a list's paths are relative to it)."""
    if fmt in ("list", "ssv2"):
        return Path(os.path.abspath(root if root is not None else target.parent))
    return Path(os.path.abspath(target)).parent  # folder / unlabeled: keep the split's name


def _load_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Output path -> newest record. A torn last line (a kill mid-append) is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("out"), str):
            records[rec["out"]] = rec
    return records


def _is_done(rec: dict[str, Any] | None, src: str, out: Path, settings: dict[str, Any]) -> bool:
    if rec is None or rec.get("src") != src or rec.get("settings") != settings:
        return False
    try:
        st, dst = os.stat(src), os.stat(out / rec["out"])
    except OSError:
        return False
    return (st.st_size == rec.get("src_size") and st.st_mtime_ns == rec.get("src_mtime_ns")
            and dst.st_size == rec.get("bytes"))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}{PART}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One run per OUT at a time (the lock dies with its process, kill included)."""
    try:
        fd = os.open(out / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataError(out, f"cannot write here ({exc.strerror or exc})") from None
    try:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; one run at a time is the user's job
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise DataError(out, "another `progvid data prepare` is writing here") from None
        yield
    finally:
        os.close(fd)


def _prepare_out(out: Path, inputs: set[str]) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder")
    if os.path.abspath(out) in inputs:
        raise DataError(out, "is a source, not an output folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(out, f"cannot create the output folder ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataError(out, "output folder is not writable")
    mine = {MANIFEST, _LOCK}
    if not (out / MANIFEST).is_file() and any(p.name not in mine for p in out.iterdir()):
        raise DataError(out, f"is not empty and holds no {MANIFEST} (not a `progvid data "
                             "prepare` output); choose a new or empty folder")


def prepare_dataset(
    src: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    fmt: str | None = None,
    root: str | None = None,
    labels: str | None = None,
    short_side: int = DEFAULT_SHORT_SIDE,
    gop: int = DEFAULT_GOP,
    crf: int = 23,
    preset: str = "veryfast",
    tune: str = DEFAULT_TUNE,
    workers: int | None = None,
    progress: bool = False,
    echo: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Re-encode every video of the split(s) `src` into `out` (see the module docstring).

    `src` is one split or several (list files, SSv2 split jsons or folders, read like `progvid
    data check` reads them, with `fmt`, `root` and `labels`); give the training split first.
    Each split `S` becomes `OUT/S.csv`; class names (SSv2 labels, class folders, a `labels`
    classes.txt) go to `OUT/classes.txt`, with later splits' labels mapped to the first's names
    (or to those of an earlier run's `OUT/classes.txt`, so splits may also be prepared one run
    at a time into the same OUT).
    Bad videos are skipped, listed in `OUT/skipped.jsonl`, and each is passed to `echo` as one
    `BAD path: reason` line as it happens. Raises `DataError`/`ProgvidError` (one line) for bad
    options, an unusable source or output folder, or when no video could be prepared.
    """
    start = time.perf_counter()
    settings = EncodeSettings(short_side, gop, crf, preset, tune)
    settings.check()
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ProgvidError(f"--workers must be >= 1, got {workers}")
    if fmt is not None and fmt not in ("list", "ssv2", "folder", "unlabeled"):
        raise ProgvidError(f"--format must be list, ssv2, folder or unlabeled, got {fmt!r}")
    targets = [Path(src)] if isinstance(src, (str, Path)) else [Path(s) for s in src]
    if not targets:
        raise ProgvidError("no source given")
    out = Path(out)

    # -- read the sources (every list-level problem raises here, before anything is written)
    splits: list[tuple[str, list[Sample], str | None]] = []  # (name, samples, fmt)
    names: list[str] | None = None
    reference = str(targets[0])
    if (out / MANIFEST).is_file() and (out / CLASSES).is_file():
        # an earlier run (e.g. another split) fixed the label indices: keep them
        names, reference = read_class_names(out / CLASSES), str(out / CLASSES)
    samples_all: list[Sample] = []
    bases: list[Path] = []
    for target in targets:
        kind = dataset_format(target, fmt)
        sset = read_dataset(target, root=root, fmt=kind, labels=labels)
        samples = sset.samples
        if sset.class_names is not None:
            if names is None:
                names = list(sset.class_names)
            elif sset.class_names != names:  # e.g. a val folder lacking a class: map by name
                index = {n: i for i, n in enumerate(names)}
                missing = sorted(set(sset.class_names) - set(index))
                if missing:
                    raise DataError(target, f"class {missing[0]!r} is not a class of {reference}")
                samples = [Sample(s.path, index[sset.class_names[s.label]], s.source, s.line)
                           if s.label >= 0 else s for s in samples]
        name = _split_name(target)
        if name in (n for n, _, _ in splits) or name in ("classes", "skipped", "prepare"):
            raise DataError(target, f"would be written as {out / (name + '.csv')}, like another "
                                    "split; give splits with distinct names")
        splits.append((name, samples, kind))
        base = _base(target, kind, root)
        samples_all += samples
        bases += [base] * len(samples)
    inputs = {os.path.abspath(t) for t in targets} | {os.path.abspath(s.path) for s in samples_all}
    if labels is not None:
        inputs.add(os.path.abspath(labels))
    names_out = _output_names(samples_all, bases)
    written = {os.path.abspath(out / rel) for rel in names_out.values()}
    written |= {os.path.abspath(out / f"{n}.csv") for n, _, _ in splits}
    written |= {os.path.abspath(out / CLASSES)} if names is not None else set()
    clash = sorted(written & inputs)
    if clash:
        raise DataError(clash[0], f"would be overwritten by the output in {out}; choose another "
                                  "output folder")
    _prepare_out(out, inputs)

    with _locked(out):
        record = settings.record()
        manifest = _load_manifest(out / MANIFEST)
        done = {src_: rel for src_, rel in names_out.items()
                if _is_done(manifest.get(rel), src_, out, record)}
        videos = (out / VIDEOS).rglob(f".*{PART}") if (out / VIDEOS).is_dir() else ()
        for part in [*out.glob(f".*{PART}"), *videos]:
            part.unlink(missing_ok=True)  # left by a killed run (workers exit with the run)
        jobs = [(src_, str(out / rel), rel, record) for src_, rel in names_out.items()
                if src_ not in done]
        first_sample = {}
        for s in samples_all:
            first_sample.setdefault(os.path.abspath(s.path), s)
        report = PrepareReport(out, {}, None, total=len(names_out), encoded=0, reused=len(done))
        bad: dict[str, str] = {}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(names_out), initial=len(done), unit="video", file=sys.stderr,
                       desc=f"prepare {out}", dynamic_ncols=True)
        try:
            with open(out / MANIFEST, "a") as log:
                for res in _run_jobs(jobs, workers):
                    if "error" in res:
                        s = first_sample[res["src"]]
                        bad[res["src"]] = res["error"]
                        entry = BadEntry(str(s.path), res["error"], s.source, s.line)
                        report.skipped.append(entry)
                        line = f"BAD {_where(entry)}{entry.path}: {entry.reason}"
                        if bar is not None:
                            bar.write(line, file=sys.stderr)
                        elif echo is not None:
                            echo(line)
                    else:
                        log.write(json.dumps(res) + "\n")
                        log.flush()
                        os.fsync(log.fileno())
                        manifest[res["out"]] = res
                        done[res["src"]] = res["out"]
                        report.encoded += 1
                        report.encode_seconds += res["seconds"]
                        report.encode_cpu_seconds += res["cpu_seconds"]
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()

        # -- outputs: the compacted manifest, skipped files, classes, lists (last)
        report.skipped.sort(key=lambda b: (b.source or "", b.line or 0, b.path))
        # one line per output (the newest); other splits' records stay for their reruns
        _atomic_write(out / MANIFEST, "".join(json.dumps(manifest[r]) + "\n"
                                              for r in sorted(manifest)))
        _atomic_write(out / SKIPPED, "".join(
            json.dumps({"path": b.path, "source": b.source, "line": b.line, "reason": b.reason})
            + "\n" for b in report.skipped))
        if not done:
            first = report.skipped[0]
            raise DataError(out, f"nothing prepared: all {len(names_out)} videos failed (e.g. "
                                 f"{first.path}: {first.reason}); see {out / SKIPPED}")
        if names is not None:
            report.classes = out / CLASSES
            _atomic_write(report.classes, "".join(n + "\n" for n in names))
        for name, samples, _ in splits:
            lines = []
            for s in samples:
                rel = done.get(os.path.abspath(s.path))
                if rel is not None:
                    lines.append(rel if s.label < 0 else f"{rel} {s.label}")
            path = out / f"{name}.csv"
            _atomic_write(path, "".join(ln + "\n" for ln in lines))
            report.lists[name] = path
    split_names = list(report.lists)
    report.overrides = ["data.format=list", f"data.root={out}",
                        f"data.train={split_names[0]}.csv"]
    if len(split_names) > 1:
        report.overrides.append(f"data.val={split_names[1]}.csv")
    if report.classes is not None:
        report.overrides.append(f"data.classes={CLASSES}")
    report.seconds = time.perf_counter() - start
    return report


def _where(entry: BadEntry) -> str:
    return listed_at(entry.source, entry.line)
