"""Run logging: a progress bar on a terminal, plain lines otherwise, TensorBoard scalars and a
JSONL metrics file (one object per logged step). Only rank 0 writes anything."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..metrics import METRICS_FILE

# A fixed-width bar: the postfix (loss, lr, throughput, whole-plan ETA) never squeezes it.
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:12}| {n_fmt}/{total_fmt} {elapsed}{postfix}"


class RunLogger:
    """`work(step)`, when given, is the work the first `step` steps do (e.g. their FLOPs): the
    ETA then extrapolates work, not steps, and so covers the whole plan (TPL's early short-clip
    steps are cheap and would make a per-step ETA far too short)."""

    def __init__(self, run_dir: str | Path, *, total_steps: int, start_step: int = 0,
                 enabled: bool = True, tensorboard: bool = True, progress: bool | None = None,
                 line_every: float = 30.0, work: Callable[[int], float] | None = None) -> None:
        self.enabled = enabled
        self._work = work
        self.run_dir = Path(run_dir)
        self.total = total_steps
        self.metrics_path = self.run_dir / METRICS_FILE
        self._tb = None
        self._bar = None
        self._last_line = 0.0
        self._line_every = line_every
        self._t0 = time.time()
        self._start = start_step
        self._postfix: dict[str, Any] = {}
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if start_step == 0 and self.metrics_path.exists():
            self.metrics_path.unlink()  # a fresh run starts a fresh record
        elif start_step > 0:
            self._truncate_after(start_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=start_step or None)
            except ImportError:  # tensorboard is a dependency; tolerate a broken install
                self._tb = None
        use_bar = sys.stderr.isatty() if progress is None else progress
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step",
                             dynamic_ncols=True, file=sys.stderr, bar_format=BAR_FORMAT)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop records the interrupted run logged past its last checkpoint."""
        if not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("step", -1) < step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        self.metrics_path.write_text("".join(k + "\n" for k in keep))

    def set_description(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(text, refresh=False)

    def advance(self, steps: int = 1, postfix: dict[str, Any] | None = None) -> None:
        if self._bar is not None:
            self._postfix.update(postfix or {})
            self._postfix["eta"] = self._eta(self._bar.n + steps - 1)
            self._bar.set_postfix(self._postfix, refresh=False)
            self._bar.update(steps)

    def set_postfix(self, **values: float) -> None:
        """Values shown beside the bar until changed (e.g. the last logged loss)."""
        self._postfix.update({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()})
        if self._bar is not None:
            self._bar.set_postfix(self._postfix, refresh=False)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        step = int(record["step"])
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    tag = f"val/{k[4:]}" if k.startswith("val_") else f"train/{k}"
                    self._tb.add_scalar(tag, v, step)
        if self._bar is None:
            now = time.time()
            if now - self._last_line >= self._line_every or step + 1 >= self.total:
                self._last_line = now
                shown = " ".join(f"{k}={_fmt(v)}" for k, v in record.items()
                                 if k in ("step", "stage", "frames", "epoch", "loss", "lr",
                                          "clips_per_s", "data_wait_fraction"))
                eta = self._eta(step)
                print(f"[progvid] {shown} eta={eta}", file=sys.stderr, flush=True)

    def _eta(self, step: int) -> str:
        """Time left after step `step` (0-based) at the pace since this logger started."""
        if self._work is None:
            done, left = step + 1 - self._start, self.total - step - 1
        else:
            now = self._work(step + 1)
            done, left = now - self._work(self._start), self._work(self.total) - now
        if done <= 0:
            return "?"
        secs = max((time.time() - self._t0) / done * left, 0.0)
        return (f"{int(secs // 86400)}d" if secs >= 86400 else "") + time.strftime(
            "%H:%M:%S", time.gmtime(secs))

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
