"""The one progress and cancel interface of the engine.

The engine reports work in units (tiles) and asks whether to stop between batches. Front ends
adapt it: the CLI draws a rich bar, the QGIS plugin forwards to ``QgsProcessingFeedback``, torchrun
ranks forward to rank 0's log. Keeping a single small interface means none of them needs to know how
the engine schedules work, and cancellation behaves the same everywhere.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

from .errors import Cancelled


@runtime_checkable
class Progress(Protocol):
    """What the engine needs from a front end."""

    def start(self, total: int, label: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def cancelled(self) -> bool: ...


class CancelToken:
    """A thread-safe flag a front end sets and the engine polls between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class BaseProgress:
    """Counting, ETA and cancel handling shared by every adapter; subclasses only draw.

    ``done``/``total`` are kept here so an adapter can show percent and ETA without the engine
    knowing how it is drawn.
    """

    def __init__(self, cancel: CancelToken | None = None) -> None:
        self.cancel_token = cancel or CancelToken()
        self.total = 0
        self.done = 0
        self.label = ""
        self._t0 = time.monotonic()
        self.messages: list[str] = []
        self.warnings: list[str] = []

    def start(self, total: int, label: str) -> None:
        self.total = max(int(total), 0)
        self.done = 0
        self.label = label
        self._t0 = time.monotonic()
        self.on_update()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total) if self.total else self.done + n
        self.on_update()

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def cancelled(self) -> bool:
        return self.cancel_token.is_set()

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def eta_seconds(self) -> float | None:
        """Remaining time from the average rate so far; None until there is a rate."""
        if not self.done or not self.total:
            return None
        elapsed = time.monotonic() - self._t0
        return elapsed / self.done * (self.total - self.done)

    def on_update(self) -> None:
        """Hook for adapters that draw; the base class draws nothing."""


class NullProgress(BaseProgress):
    """Silent progress for library use and tests; still honours a cancel token."""


def check_cancelled(progress: Progress) -> None:
    """Raise ``Cancelled`` if the front end asked to stop: the single place the engine checks."""
    if progress.cancelled():
        raise Cancelled("cancelled by the user")
