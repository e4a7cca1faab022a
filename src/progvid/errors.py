"""Error types. A `ProgvidError` is a user mistake or bad input: the CLI prints its message on
one line and exits with code 2. Anything else is a runtime failure (exit 1).

An error raised inside a DataLoader worker comes back to the main process as a new exception
built from the worker's formatted traceback (torch calls `type(message=...)` when the type has
a `message` attribute); progvid's errors take that keyword and keep only the original one-line
message, so a bad file reported from any worker still reads `path: reason`.
"""

from __future__ import annotations


def _original_message(worker_message: str, type_name: str) -> str:
    """The `path: reason` line of an error re-raised from a DataLoader worker."""
    marker = f"{type_name}: "
    for line in reversed(worker_message.splitlines()):
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return worker_message.strip().splitlines()[-1] if worker_message.strip() else worker_message


class ProgvidError(Exception):
    """A user-facing error whose message names the file or field and the reason."""

    message = True  # see the module docstring: worker re-raises pass `message=`
    # raised identically by every rank of a distributed run (only rank 0 needs to print it)
    collective = False

    def __init__(self, *args: object, message: str | None = None) -> None:
        if message is not None:
            args = (_original_message(message, type(self).__name__),)
        super().__init__(*args)


class ConfigError(ProgvidError):
    """A config file or override is invalid."""


class DataError(ProgvidError):
    """A video or list file cannot be used. The message starts with the path (and line)."""

    def __init__(self, path: object = "", reason: str = "", line: int | None = None, *,
                 message: str | None = None) -> None:
        if message is not None:
            text = _original_message(message, type(self).__name__)
            path, _, reason = text.partition(": ")
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple:
        # Pickled across a process pool, rebuild from the parts: the default (type(*args)) would
        # take the whole message for the path and append an empty reason.
        return type(self), (self.path, self.reason, self.line)


class CheckpointError(ProgvidError):
    """A checkpoint is missing, malformed or unsafe to load."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped a run at a step boundary after saving a checkpoint; the CLI
    exits with 128 + the signal number (130, 143)."""

    def __init__(self, signum: int, checkpoint: object) -> None:
        import signal

        self.signum = signum
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"{signal.Signals(signum).name}: stopped at a step boundary; "
                         f"checkpoint {checkpoint}; continue with --resume auto")
