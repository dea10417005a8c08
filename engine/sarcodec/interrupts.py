"""Critical sections that a Ctrl-C or SIGTERM must not split.

The command line turns SIGINT, SIGTERM and SIGHUP into ``KeyboardInterrupt`` (``cli.interrupt_handlers``),
and Python raises it between any two bytecodes of the main thread. Two kinds of code must not be cut
there:

- **creating a temporary file and recording it for removal**: ``mkstemp`` or ``mkdtemp`` has made the
  file, the owner has not yet written its name down, and the cleanup that follows the interrupt cannot
  know it exists. A full-suite run on a loaded machine left exactly such a file (Python's own probe file
  of ``tempfile.gettempdir``) after a SIGTERM: the user was told "no partial output was left".
- **importing torch**: it runs Python callbacks inside pybind11 calls; an exception raised there
  reaches a C++ ``noexcept`` frame, which calls ``std::terminate`` (exit -6, a C++ message).
- **waiting for a worker thread** (:func:`result`, :func:`waiting`): ``threading.Condition.wait`` is
  Python code that releases and re-acquires its lock; an exception raised between those steps leaves
  the lock released twice ("RuntimeError: release unlocked lock", an internal error instead of exit
  130, seen in CI) or held, so that the worker can never hand over its result and the cleanup that
  waits for it hangs (seen in CI too). The wait lasts one batch or chunk row.

Inside :func:`deferred` the signal handler only records the signal (the cancel token is still set at
once, so worker threads stop); the interrupt is raised when the outermost block ends, after the file
has an owner. Only the main thread defers, because only it runs signal handlers: in any other thread
(the engine's read-ahead, the QGIS plugin's worker) a block is a no-op and cannot delay or steal the
main thread's interrupt.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class _State:
    """``depth`` > 0 while the main thread is inside :func:`deferred`; ``pending`` is a signal that waited."""

    depth = 0
    pending: str | None = None


_STATE = _State()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold an interrupt raised through :func:`interrupt` until the block ends, then raise it."""
    if not _in_main_thread():
        yield
        return
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
        if not _STATE.depth and _STATE.pending is not None:
            name, _STATE.pending = _STATE.pending, None
            raise KeyboardInterrupt(name)


def result(future: Future[T]) -> T:
    """``future.result()``, with a signal held (and the cancel token already set) until it returns."""
    with deferred():
        return future.result()


def waiting() -> contextlib.AbstractContextManager[None]:
    """A block that waits on worker threads (``Executor.map``, ``concurrent.futures.wait``)."""
    return deferred()


def interrupt(name: str) -> None:
    """What a signal handler calls: raise ``KeyboardInterrupt(name)`` now, or when the current block ends."""
    if _STATE.depth:
        _STATE.pending = name
        return
    raise KeyboardInterrupt(name)


def forget_pending() -> None:
    """Drop a recorded signal (new handlers are being installed for a new run)."""
    _STATE.pending = None


__all__ = ["deferred", "forget_pending", "interrupt", "result", "waiting"]
