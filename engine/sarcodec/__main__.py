"""``python -m sarcodec``: the same command line as the ``sarcodec`` console script.

torchrun and environments without the console script on PATH start the tool this way.
"""

import contextlib
import os
import signal
import sys

EXIT_INTERRUPTED = 130  # sarcodec.errors.EXIT_INTERRUPTED (a test pins them equal); not imported yet
_main_entered = False


def _interrupted_at_start_up(signum: int, frame: object) -> None:
    """Ctrl-C/SIGTERM before ``main`` has its own handlers: nothing was written, so leave with 130.

    Without it, SIGTERM during the imports kills the process (status -15) and SIGINT prints a
    traceback. Once ``main`` is entered it installs its handlers, and when it restores this one on
    return, a late signal is ignored (``_exit`` then keeps the exit code).
    """
    if _main_entered:
        return
    with contextlib.suppress(OSError):
        os.write(2, b"sarcodec: error: interrupted during start-up; nothing was written\n")
    os._exit(EXIT_INTERRUPTED)


for _name in ("SIGINT", "SIGTERM", "SIGHUP"):
    with contextlib.suppress(AttributeError, OSError, ValueError):
        signal.signal(getattr(signal, _name), _interrupted_at_start_up)

from sarcodec.cli_streams import guard_standard_streams  # noqa: E402 - after the start-up handlers on purpose

guard_standard_streams()  # before any import can open a file onto a closed fd 0, 1 or 2

from sarcodec.cli import main  # noqa: E402


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
    global _main_entered
    _main_entered = True
    _exit(main())


if __name__ == "__main__":
    run()
