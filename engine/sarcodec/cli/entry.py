"""From argv to an exit code: ``main`` parses, runs the command, and turns signals and failures into
one line on stderr and the documented exit code (``sarcodec.errors``).

Ctrl-C, SIGTERM and SIGHUP become ``KeyboardInterrupt`` (``interrupt_handlers``), which unwinds
through the engine's cleanup, so an interrupted run ends with 130 and leaves the previous file (or
nothing), never a partial one. ``main`` returns the code instead of exiting, so tests and
``python -m sarcodec`` share one code path.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from sarcodec import interrupts
from sarcodec.cli_streams import guard_standard_streams, messages_to_stderr, stream_was_closed
from sarcodec.errors import EXIT_FILE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from sarcodec.progress import CancelToken

from .jobs import STDIO, STDOUT_NAME
from .messages import PROG, error_line, say
from .parser import build_parser
from .run import report


@contextlib.contextmanager
def interrupt_handlers(cancel: CancelToken) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP all become ``KeyboardInterrupt`` plus a set cancel token.

    The exception unwinds through the engine's ``finally`` blocks (temporary files removed, nothing
    renamed into place); the token stops worker threads that poll it. Later signals while that
    cleanup runs are ignored so a second Ctrl-C cannot cut the cleanup short (SIGKILL still works).
    Inside ``interrupts.deferred`` (creating a temporary file, importing torch) the exception waits
    for the end of the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = threading.Event()
    interrupts.forget_pending()

    def handler(signum: int, frame: Any) -> None:
        if fired.is_set():
            return
        fired.set()
        cancel.cancel()
        interrupts.interrupt(signal.Signals(signum).name)

    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {}
    for sig in wanted:
        with contextlib.suppress(OSError, ValueError):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, old)


@contextlib.contextmanager
def _gdal_messages_to_log() -> Iterator[None]:
    """Route GDAL's own "ERROR 1: ..." lines to rasterio's logger for the whole run.

    Without an active ``rasterio.Env`` GDAL prints them straight to stderr (a truncated GeoTIFF gives
    three of them), which breaks the one-line error rule; the typed error still says what failed.
    """
    try:
        import rasterio
    except ImportError:  # pragma: no cover - the engine needs rasterio anyway
        yield
        return
    with rasterio.Env():
        yield


def _stdout_closed_for_data(args: argparse.Namespace) -> bool:
    """``-o -`` (or ``-`` in with no ``-o``) while stdout was closed at start-up (``>&-``)."""
    if not stream_was_closed(1) or args.command not in ("compress", "decompress", "infer"):
        return False
    return args.output == STDIO or (args.output is None and STDIO in args.inputs)


def _interrupted(exc: BaseException, args: argparse.Namespace | None, started: float) -> int:
    if args is not None and args.debug:
        traceback.print_exception(exc, file=sys.stderr)
    say(sys.stderr, error_line(f"interrupted after {time.monotonic() - started:.1f} s; no partial output was left"))
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, and return the exit code (also for ``--help`` and usage errors).

    The standard fds are checked before anything prints, and the signal handlers are in place
    before parsing (``--crs`` validation imports rasterio): from here on a Ctrl-C or SIGTERM
    always ends in exit 130 and one line.
    """
    guard_standard_streams()
    cancel = CancelToken()
    started = time.monotonic()
    args: argparse.Namespace | None = None
    with interrupt_handlers(cancel), messages_to_stderr():
        try:
            with interrupts.deferred():
                # The first call creates and removes a probe file in $TMPDIR: done here, where an
                # interrupt cannot cut between the two, and cached for every later temporary file.
                tempfile.gettempdir()
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help, --version and usage errors exit from inside argparse
                return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
            if getattr(args, "command", None) is None:
                say(sys.stderr, error_line(f"a command is required: compress, decompress, info, models or infer "
                                           f"(see '{PROG} --help')"))
                return EXIT_USAGE
            if _stdout_closed_for_data(args):
                say(sys.stderr, error_line(f"{STDOUT_NAME}: standard output is closed; nothing was written"))
                return EXIT_FILE
            with _gdal_messages_to_log():
                return args.handler(args, cancel)
        except KeyboardInterrupt as exc:
            return _interrupted(exc, args, started)
        except Exception as exc:  # noqa: BLE001 - plan-level failures (usage, model): one line
            if cancel.is_set():  # a signal came first: whatever broke on the way out is the interrupt
                return _interrupted(exc, args, started)
            return report(exc, None, bool(args is not None and args.debug))
