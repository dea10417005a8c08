"""Progress display for the command line: a rich bar on a terminal, plain log lines elsewhere.

The engine only knows ``sarcodec.progress.Progress``; this module adapts it to a terminal. Three
reasons shape it:

- stdout may be the data stream (``sarcodec compress - -o -``), so everything here writes to
  stderr and never to stdout;
- a bar full of carriage returns is noise in a log file or a CI job, so when stderr is not a
  terminal the adapter prints one line per 10 % instead;
- ``--quiet`` must silence progress and notes but never warnings, which tell the user something
  about their data (a missing CRS, bad tiles replaced by the original).
- a line is a line: a newline in a file name is written escaped (``sarcodec.cli_streams.one_line``)
  so it cannot split a progress line or forge a new ``sarcodec:`` one.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from sarcodec.cli_streams import one_line
from sarcodec.progress import BaseProgress, CancelToken

PLAIN_STEP = 0.10  # plain mode prints a line every 10 % of the work
FIXED_COLUMNS_WIDTH = 60  # bar, counts, percent, elapsed and ETA columns with their spacing


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:d}:{secs:02d}"


class CliProgress(BaseProgress):
    """Shared by the adapters: a name for the file being processed and warning/note output.

    ``prefix`` is the input's display name so that, with several inputs, every line says which
    file it is about. The adapter is a context manager so a live display is always torn down,
    even when the engine raises or the user presses Ctrl-C.
    """

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "", quiet: bool = False,
                 cancel: CancelToken | None = None) -> None:
        super().__init__(cancel)
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = prefix
        self.quiet = quiet

    def __enter__(self) -> CliProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop any live display; idempotent."""

    def _emit(self, text: str) -> None:
        if self.stream is None:  # a closed stderr: print(file=None) would write into stdout
            return
        try:
            print(one_line(text), file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed stderr must not turn a good run into a failure
            pass

    def _tagged(self, message: str) -> str:
        return f"sarcodec: {self.prefix}: {message}" if self.prefix else f"sarcodec: {message}"

    def info(self, message: str) -> None:
        super().info(message)
        if not self.quiet:
            self._emit(self._tagged(message))

    def warn(self, message: str) -> None:
        super().warn(message)
        self._emit(self._tagged(f"warning: {message}"))


class QuietProgress(CliProgress):
    """``--quiet``: counts and honours cancel, prints only warnings."""

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "", cancel: CancelToken | None = None):
        super().__init__(stream, prefix=prefix, quiet=True, cancel=cancel)


class PlainProgress(CliProgress):
    """One log line per 10 % step (and at the end): readable in files, CI logs and pipelines."""

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "", quiet: bool = False,
                 cancel: CancelToken | None = None, step: float = PLAIN_STEP) -> None:
        super().__init__(stream, prefix=prefix, quiet=quiet, cancel=cancel)
        self.step = step
        self._next_mark = step

    def start(self, total: int, label: str) -> None:
        self._next_mark = self.step
        super().start(total, label)

    def on_update(self) -> None:
        if self.quiet or not self.total:
            return
        fraction = self.fraction
        if self.done and fraction + 1e-9 >= self._next_mark:
            # Skip to the mark past the current fraction: a big advance prints one line, not several.
            while self._next_mark <= fraction + 1e-9:
                self._next_mark += self.step
            eta = "" if self.done >= self.total else f", ETA {_format_seconds(self.eta_seconds())}"
            label = f"{self.label} " if self.label else ""
            self._emit(self._tagged(f"{label}{fraction:4.0%} ({self.done}/{self.total}){eta}"))


class RichProgress(CliProgress):
    """A rich progress bar with ETA, drawn on stderr; only used when stderr is a terminal.

    Each ``start`` (the engine may run several passes: encode, then a quality estimate) adds a new
    task line so a finished pass stays visible with its elapsed time.
    """

    def __init__(self, stream: TextIO | None = None, *, prefix: str = "", quiet: bool = False,
                 cancel: CancelToken | None = None, console: object | None = None) -> None:
        super().__init__(stream, prefix=prefix, quiet=quiet, cancel=cancel)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        self.console = console if console is not None else Console(file=self.stream, stderr=True)
        # The engine's labels are long ("compress band 1/2: 121 tiles on CPU (4 threads)"): the
        # description is the column that gives way on a narrow terminal, never the numbers or ETA.
        fixed = {"no_wrap": True}
        self._bar = Progress(
            # markup off: a file named "scan[1].tif" must show as is, not as rich markup.
            TextColumn("{task.description}", style="bold", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=24, table_column=Column(**fixed)),
            MofNCompleteColumn(table_column=Column(**fixed)),
            TextColumn("{task.percentage:>3.0f}%", table_column=Column(**fixed)),
            TimeElapsedColumn(table_column=Column(**fixed)),
            TextColumn("ETA", table_column=Column(**fixed)),
            TimeRemainingColumn(table_column=Column(**fixed)),
            console=self.console,
            transient=False,
            refresh_per_second=8,
        )
        self._task: object | None = None
        self._running = False
        self._last_draw = 0.0

    def start(self, total: int, label: str) -> None:
        super().start(total, label)
        if not self._running:
            self._bar.start()
            self._running = True
        description = one_line(f"{self.prefix} {label}".strip() if self.prefix else label)
        room = max(12, self.console.width - FIXED_COLUMNS_WIDTH)
        if len(description) > room:
            description = description[: room - 1] + "…"
        self._task = self._bar.add_task(description, total=max(self.total, 1))

    def on_update(self) -> None:
        if self._task is None:
            return
        now = time.monotonic()
        # rich refreshes on its own timer; updating on every tile is wasted work on big scenes.
        if self.done >= self.total or now - self._last_draw > 0.05:
            self._bar.update(self._task, completed=self.done)
            self._last_draw = now

    def _emit(self, text: str) -> None:
        # Printing through the console keeps messages above the live bar instead of tearing it.
        try:
            self.console.print(one_line(text), markup=False, highlight=False)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self._running:
            try:
                self._bar.stop()
            except (OSError, ValueError):
                pass
            self._running = False


def make_progress(*, prefix: str, quiet: bool, cancel: CancelToken | None = None,
                  stream: TextIO | None = None) -> CliProgress:
    """The right adapter for where stderr goes: a bar on a terminal, lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return QuietProgress(stream, prefix=prefix, cancel=cancel)
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if interactive:
        return RichProgress(stream, prefix=prefix, cancel=cancel)
    return PlainProgress(stream, prefix=prefix, cancel=cancel)
