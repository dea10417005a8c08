"""``python -m sarcodec``: the same command line as the ``sarcodec`` console script.

torchrun and environments without the console script on PATH start the tool this way.
"""

import contextlib
import os
import signal
import sys

from sarcodec.cli import main
from sarcodec.errors import EXIT_INTERRUPTED


def _exit(code: int) -> None:
    """Leave the process with ``code``, whatever signal comes late.

    Once ``main`` has returned, outputs are complete or cleaned up, so a Ctrl-C or SIGTERM arriving
    during interpreter shutdown (torch's teardown takes a while) must not turn exit 0 into a kill.
    After an interrupt, CPython re-raises SIGINT at exit (status -2 instead of 130) when the
    KeyboardInterrupt landed inside code run through ``PyRun_*`` (torch's import does), even though
    ``main`` caught it; ``os._exit`` keeps the documented 130.
    """
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    raise SystemExit(code)


def run() -> None:
    """Process entry point (``python -m sarcodec``; the console script should point here too)."""
    _exit(main())


if __name__ == "__main__":
    run()
