"""One run per folder: an advisory lock held for the life of a run.

`<run>/.lock` is locked with `flock` (the kernel releases it when the process dies, however it
dies) and holds the owner's pid, host, start time and command, so a second run into the same
folder can say who is using it. A lock file left with content by a process that died (kill -9,
power loss) is taken over with a message; a run that ends normally clears it. On systems
without `fcntl` (Windows) runs are not locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ProgvidError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


class RunLocked(ProgvidError):
    """Another live process holds the run folder."""


class RunLock:
    """`with RunLock(run_dir) as lock:` - exclusive use of a run folder (see module doc)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # the dead owner's record, if any

    def acquire(self) -> RunLock:
        if fcntl is None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = describe_owner(_read(fd))
            os.close(fd)
            raise RunLocked(f"{self.run_dir}: run folder in use by {owner}; wait for it to "
                            "finish or choose another --out") from None
        previous = _read(fd)
        if previous:
            self.took_over = previous
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # a clean end leaves nothing to take over
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe_owner(record: dict[str, Any] | None) -> str:
    """One line on who holds (or held) a lock."""
    if not record:
        return "another process"
    since = record.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, int | float) else "?"
    return f"pid {record.get('pid')} on {record.get('host')} since {when} ({record.get('command', '')})"
