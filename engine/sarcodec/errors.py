"""Typed errors, one class per exit code.

Callers (the CLI, the QGIS plugin, torchrun ranks) never parse messages: they catch
``SarcodecError`` and read ``exit_code``. The mapping lives here and nowhere else, so the README,
``--help`` and the code cannot drift apart.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FILE = 1
EXIT_MODEL = 2
EXIT_OOM = 3
EXIT_USAGE = 4
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FILE: "input/output file error (missing, unreadable, corrupt or unsupported file; disk full)",
    EXIT_MODEL: "model error (missing, corrupt or incompatible checkpoint)",
    EXIT_OOM: "out of memory, even at batch size 1",
    EXIT_USAGE: "usage error (bad option value)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM or cancel)",
}


class SarcodecError(Exception):
    """Base of every error the tool reports as one line and an exit code."""

    exit_code: int = EXIT_FILE

    def __init__(self, message: str) -> None:
        # One line only: a user reads this in a terminal or the QGIS log panel.
        super().__init__(" ".join(str(message).split()))


class InputFileError(SarcodecError):
    """A file to read or write is missing, unreadable, malformed or unsupported."""

    exit_code = EXIT_FILE


class ContainerError(InputFileError):
    """A compressed container is damaged, truncated, of an unknown version or not ours."""


class DamagedChunkError(ContainerError):
    """One entropy-coded chunk failed its checksum or did not decode; others may be fine."""

    def __init__(self, message: str, chunk_index: int) -> None:
        super().__init__(message)
        self.chunk_index = chunk_index


class ModelError(SarcodecError):
    """A checkpoint is missing, corrupt, unsafe or of another architecture."""

    exit_code = EXIT_MODEL


class OutOfMemoryError(SarcodecError):
    """The device ran out of memory even with one tile per batch."""

    exit_code = EXIT_OOM


class UsageError(SarcodecError):
    """An option value is invalid (never confused with a model error)."""

    exit_code = EXIT_USAGE


class Cancelled(SarcodecError):
    """The user cancelled (Ctrl-C, SIGTERM, the QGIS Cancel button)."""

    exit_code = EXIT_INTERRUPTED
