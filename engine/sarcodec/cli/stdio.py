"""Standard input and output, and FIFOs: spooled through a private temporary folder.

The engine needs seekable files (GDAL, zip), so stdin (and a FIFO such as bash's ``<(cmd)``) is
spooled to a file first and stdout is written from a finished file: a pipe never sees a partial
container or GeoTIFF, and the folder is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sarcodec import interrupts
from sarcodec.cli_streams import copy_fifo, copy_stream, stream_was_closed
from sarcodec.errors import InputFileError

from .jobs import STDIN_NAME, STDIO, STDOUT_NAME, Job


class Scratch:
    """A private temporary folder for stdin/stdout spools, removed whatever happens.

    The engine needs seekable files (GDAL, zip), so stdin is spooled to a file first and stdout is
    written from a finished file: a pipe never sees a partial container or GeoTIFF.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self.aliases: dict[str, str] = {}  # spool path -> what the user called it ("<stdin>")

    def shown(self, text: str) -> str:
        """Engine messages name the spool file; the user should read ``<stdin>`` instead."""
        for path, name in self.aliases.items():
            text = text.replace(path, name)
        return text

    @property
    def path(self) -> Path:
        if self._path is None:
            with interrupts.deferred():  # a folder made but not yet recorded would outlive cleanup()
                self._path = Path(tempfile.mkdtemp(prefix="sarcodec-"))
        return self._path

    def cleanup(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


def _spool_stdin(scratch: Scratch, suffix: str) -> str:
    if stream_was_closed(0) or sys.stdin is None:
        raise InputFileError(f"{STDIN_NAME}: standard input is closed")
    return _spool(scratch, lambda out: copy_stream(sys.stdin.buffer, out), f"stdin{suffix}", STDIN_NAME)


def _spool(scratch: Scratch, copy: Callable[[Any], None], file_name: str, shown_as: str) -> str:
    """Copy a stream (stdin, a FIFO) into the scratch folder; GDAL and zip need a seekable file.

    ``copy`` writes into the open spool file. It waits for data in short slices
    (``cli_streams.copy_stream``/``copy_fifo``), so Ctrl-C or SIGTERM while waiting for a writer
    ends the run with 130; the spool file already lives in the scratch folder, which is removed.
    """
    target = scratch.path / file_name
    try:
        with open(target, "wb") as fh:
            copy(fh)
    except OSError as exc:
        raise InputFileError(f"{shown_as}: cannot read it into a temporary file: {exc.strerror or exc}") from None
    if target.stat().st_size == 0:
        raise InputFileError(f"{shown_as}: empty input")
    scratch.aliases[str(target)] = shown_as
    return str(target)


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def spooled_source(job: Job, scratch: Scratch, suffix: str) -> str:
    """What the engine opens for ``job``: the file itself, or a spool of stdin or of a FIFO.

    A FIFO (``mkfifo``, or bash's ``<(cmd)``, which is ``/dev/fd/N``) can be read only once and not
    seeked, so it is treated like stdin: its writer is waited for, then it is copied.
    """
    if job.source == STDIO:
        return _spool_stdin(scratch, suffix)
    if not _is_fifo(job.source):
        return job.source
    return _spool(scratch, lambda out: copy_fifo(job.source, out), f"fifo{suffix}", job.source_name)


def copy_to_stdout(path: str) -> None:
    if stream_was_closed(1) or sys.stdout is None or not hasattr(sys.stdout, "buffer"):
        raise InputFileError(f"{STDOUT_NAME}: standard output is closed; nothing was written")
    try:
        with open(path, "rb") as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The reader went away; point stdout at devnull so the interpreter's final flush is quiet.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise InputFileError(f"{STDOUT_NAME}: the reading end of the pipe was closed") from None
    except OSError as exc:
        raise InputFileError(f"cannot write standard output: {exc.strerror or exc}") from None
