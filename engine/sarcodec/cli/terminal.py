"""What the CLI does differently when a person is at a terminal.

A missing CRS is asked for on a terminal (Enter keeps none) and only warned about in a pipeline;
binary data is never written to a terminal (``jobs.plan_jobs``).
"""

from __future__ import annotations

import sys
from typing import Any

from sarcodec.cli_streams import one_line

from .messages import PROG, say, warn_line
from .options import crs_is_valid


def is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def interactive() -> bool:
    return is_tty(sys.stdin) and is_tty(sys.stderr)


def _ask_crs(name: str) -> str | None:
    """Prompt on the terminal until a valid CRS or Enter (keep none); EOF keeps none too."""
    for _attempt in range(3):
        try:
            sys.stderr.write(f"{PROG}: CRS for {one_line(name)} (EPSG:XXXX or WKT, Enter keeps none): ")
            sys.stderr.flush()
            answer = sys.stdin.readline()
        except (OSError, ValueError):
            return None
        if not answer:  # EOF
            sys.stderr.write("\n")
            return None
        answer = answer.strip()
        if not answer:
            return None
        if crs_is_valid(answer):
            return answer
        say(sys.stderr, warn_line(f"{answer[:60]!r} is not a CRS: expected EPSG:XXXX or WKT"))
    return None


def resolve_crs(name: str, has_valid_crs: bool | None, option: str | None, *, interactive: bool) -> str | None:
    """The CRS to hand the engine: ``--crs``, else an answer on a terminal, else none with a warning.

    ``None`` for ``has_valid_crs`` means the CLI could not tell; then only ``--crs`` is passed on.
    """
    if option or has_valid_crs is None or has_valid_crs:
        return option
    if interactive:
        answer = _ask_crs(name)
        if answer:
            return answer
        say(sys.stderr, warn_line(f"{name}: no valid CRS; the output will have none"))
        return None
    say(sys.stderr, warn_line(f"{name}: no valid CRS; the output will have none (set one with --crs)"))
    return None
