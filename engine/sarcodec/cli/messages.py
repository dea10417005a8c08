"""What the user reads: one-line errors and warnings on stderr, summaries, sizes.

Every line the CLI prints goes through here, so a failure is always exactly one ``sarcodec: error:``
line (control characters in file names and exception texts escaped, ``cli_streams.one_line``) and a
closed stream never turns success into failure.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from sarcodec.cli_streams import one_line

PROG = "sarcodec"


def say(stream: TextIO | None, text: str) -> None:
    """Print and flush, tolerating a closed stream (a summary must not turn success into failure).

    ``stream`` None (Python's stand-in for a closed fd) prints nothing: ``print(file=None)`` would
    write to stdout, which may be the data stream.
    """
    if stream is None:
        return
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        pass


def error_line(message: str) -> str:
    """The single stderr line every failure produces; control characters (a newline in a file
    name, a multi-line exception text) are escaped so it stays one line and names stay exact."""
    return f"{PROG}: error: {one_line(message)}"


def warn_line(message: str) -> str:
    return f"{PROG}: warning: {one_line(message)}"


def say_summary(ctx: Any, text: str) -> None:
    """A per-file summary as one line (names escaped); on stderr (``-o -``) it starts with ``sarcodec:``."""
    line = one_line(text)
    say(ctx.messages, f"{PROG}: {line}" if ctx.messages is sys.stderr else line)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable, keeps type checkers calm
