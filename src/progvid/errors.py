"""Error types. A `ProgvidError` is a user mistake or bad input: the CLI prints its message on
one line and exits with code 2. Anything else is a runtime failure (exit 1)."""

from __future__ import annotations


class ProgvidError(Exception):
    """A user-facing error whose message names the file or field and the reason."""


class ConfigError(ProgvidError):
    """A config file or override is invalid."""


class DataError(ProgvidError):
    """A video or list file cannot be used. The message starts with the path (and line)."""

    def __init__(self, path: object, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class CheckpointError(ProgvidError):
    """A checkpoint is missing, malformed or unsafe to load."""
