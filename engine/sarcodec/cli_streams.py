"""The command line's standard streams: what may reach them, and in which form.

Three promises to users shape this module:

- **The data stream carries data only.** With ``-o -`` stdout is a container or a GeoTIFF. When a
  shell closes fd 2 (``2>&-``), Python sets ``sys.stderr`` to None and ``print(file=None)`` writes
  to *stdout*; worse, the next ``open()`` gets fd 2, and GDAL's C-level messages land in that file.
  So before anything prints, every closed standard fd is pointed at ``/dev/null`` (checked with
  ``os.fstat``, which sees the fd itself, not Python's wrapper), and a closed stdout is remembered
  so that ``-o -`` fails up front instead of after the coding.
- **Every stderr line starts with ``sarcodec:``.** Python warnings (rasterio's
  ``NotGeoreferencedWarning`` prints two lines with a source path) and GDAL's messages (routed to
  rasterio's logger) go through one logging handler that writes one ``sarcodec: warning: ...``
  line each.
- **A file name cannot split a line.** Control characters (a newline in a file name) are written
  escaped, ``repr``-style, wherever a line is built (``one_line``).

And one promise about reading them: **Ctrl-C or SIGTERM while waiting for input ends the run.**
stdin and FIFOs are copied to a seekable spool (``copy_stream``, ``copy_fifo``) by waiting for data
in slices of ``WAIT_SLICE_MS``. A plain blocking ``open()`` or ``read()`` loses a signal that arrives
just before the system call starts (the handler has run its check, the call then sleeps until a
writer comes: possibly forever), and GDAL reading a FIFO itself never returns to Python at all. A
FIFO is opened without waiting for its writer (``O_NONBLOCK``), then polled: on Linux a FIFO that
never had a writer reports nothing, one whose writer left reports end of file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import sys
import warnings
from collections.abc import Iterator
from typing import Any, BinaryIO

from sarcodec.raster_text import UNDECODED_ITEM_MESSAGE

PREFIX = "sarcodec"
STANDARD_FDS = (0, 1, 2)
# Loggers whose records reach the user: GDAL via rasterio.Env, rasterio itself, the engine.
ROUTED_LOGGERS = ("rasterio", "sarcodec")
# Warnings the engine already reports in its own words: NotGeoreferencedWarning says "no
# geotransform", which is normal for GCP-based Sentinel-1 scenes and is otherwise covered by the
# CLI's "no valid CRS" warning.
SUPPRESSED_WARNINGS = ("NotGeoreferencedWarning",)

_closed: set[int] = set()


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 in a file name (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return ch.encode("unicode_escape").decode("ascii")


def one_line(text: object) -> str:
    """``text`` as one line: trailing whitespace dropped, control characters escaped (``\\n``).

    Only characters that are not printable are escaped, so names in any script stay readable and a
    name already escaped is unchanged (escaping twice gives the same line).
    """
    value = str(text).rstrip()
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in value)


def guard_standard_streams() -> frozenset[int]:
    """Point every closed standard fd (0, 1, 2) at ``/dev/null``; return the ones that were closed.

    Called first thing by ``main``. Checked at the fd level: ``sys.stderr`` may be a wrapper
    around a closed fd, or None, and what matters is what the next ``open()`` or GDAL's C code
    gets. Idempotent: a second call in the same process reports the fds closed at the first.
    """
    for fd in STANDARD_FDS:
        try:
            os.fstat(fd)
        except OSError:
            _closed.add(fd)
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        if getattr(sys, name) is None:  # Python found the fd closed at start-up
            _closed.add(fd)
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))  # noqa: SIM115 - lives as long as the process
    return frozenset(_closed)


def stream_was_closed(fd: int) -> bool:
    """Whether standard fd ``fd`` was closed when the process started (see ``guard_standard_streams``)."""
    return fd in _closed


WAIT_SLICE_MS = 200  # longest a signal that came just before a wait can go unnoticed
COPY_CHUNK = 1 << 20


def _copy_fd(fd: int, out: BinaryIO) -> None:
    """Copy ``fd`` to end of file into ``out``, never sleeping longer than ``WAIT_SLICE_MS`` at a time."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)  # end of file and errors are reported whatever is asked for
    while True:
        if not poller.poll(WAIT_SLICE_MS):
            continue  # each pass runs the Python signal handlers: an interrupt raises here
        try:
            chunk = os.read(fd, COPY_CHUNK)
        except BlockingIOError:  # woken without data (another reader took it)
            continue
        if not chunk:
            return
        out.write(chunk)


def copy_stream(stream: Any, out: BinaryIO) -> None:
    """Copy a binary stream (stdin) into ``out``; a signal while waiting for data ends the wait.

    Reads the stream's file descriptor directly (nothing may have been read through ``stream``
    before); an object without one (a test's ``BytesIO``) is copied as it is.
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is None or not hasattr(select, "poll"):
        shutil.copyfileobj(stream, out, COPY_CHUNK)
        return
    _copy_fd(fd, out)


def copy_fifo(path: str, out: BinaryIO) -> None:
    """Copy a FIFO into ``out``: wait for a writer and its data, then read to end of file.

    Opened with ``O_NONBLOCK``, which never waits for a writer, so the wait happens in ``_copy_fd``'s
    slices, where a Ctrl-C or SIGTERM is acted on.
    """
    if not hasattr(select, "poll"):  # pragma: no cover - every platform sarcodec supports has poll
        with open(path, "rb") as fh:
            shutil.copyfileobj(fh, out, COPY_CHUNK)
        return
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _copy_fd(fd, out)
    finally:
        os.close(fd)


def write_line(line: str) -> None:
    """One line on the current ``sys.stderr`` (looked up per call: tests redirect it), errors ignored."""
    stream = sys.stderr
    if stream is None:  # never stdout: that may be the data stream
        return
    try:
        print(one_line(line), file=stream, flush=True)
    except (OSError, ValueError):
        pass


def warning_line(message: object) -> str:
    return f"{PREFIX}: warning: {one_line(message)}"


class _StderrHandler(logging.Handler):
    """Log records (GDAL through rasterio, Python warnings) as ``sarcodec: warning: ...`` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith(UNDECODED_ITEM_MESSAGE):
            return  # a tag that is not UTF-8: sarcodec.raster_text reads it, nothing is lost
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not break a run
            message = str(record.msg)
        kind = "error" if record.levelno >= logging.ERROR else "warning"
        write_line(f"{PREFIX}: {kind}: {one_line(message)}")


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` replacement: one line, no source path, duplicates of ours dropped."""
    if category.__name__ in SUPPRESSED_WARNINGS:
        return
    logging.getLogger(PREFIX).warning("%s", " ".join(str(message).split()))


@contextlib.contextmanager
def messages_to_stderr() -> Iterator[None]:
    """For one run: Python warnings and routed loggers write ``sarcodec:`` lines on stderr.

    Without it, logging's last-resort handler prints GDAL's warnings raw and ``warnings`` prints
    two lines with a source path. Everything is restored afterwards (``main`` runs in-process in
    tests and from the QGIS plugin's worker).
    """
    handler = _StderrHandler(logging.WARNING)
    saved = []
    for name in ROUTED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.level))
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.WARNING:
            logger.setLevel(logging.WARNING)
    previous_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = previous_show
        for logger, propagate, level in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)


__all__ = ["copy_fifo", "copy_stream", "guard_standard_streams", "messages_to_stderr", "one_line",
           "stream_was_closed", "warning_line", "write_line"]
