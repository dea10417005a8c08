"""One rasterio dataset shared by several threads, used by one of them at a time.

A GDAL dataset handle is not thread-safe: two threads reading it at once share its block cache,
its libtiff state and, for a raster inside a zip (``/vsizip/``, how a Sentinel-1 ``.zip`` is
read), one inflate stream. Compression reads each band from two threads: the engine's read-ahead
thread loads the next batch of tiles while the main thread reads the raw pixels of each finished
chunk row (nodata mask, lossless fallbacks, quality samples). Unserialized, that fails on a busy
machine with "IReadBlock failed ... TIFFReadEncodedStrip() failed" or crashes the process
(issue 10, item 15). Serializing every access is what rasterio's concurrency guide recommends;
the reads are short next to the network that runs in between, so it costs no measurable time.
"""

from __future__ import annotations

import threading
from typing import Any


class SerialReads:
    """A dataset proxy: every attribute access and method call holds one lock per dataset.

    Attributes (``height``, ``nodata``, ``tags()``) also call into GDAL, so they are serialized
    as well, not only ``read``. Wrapping a ``SerialReads`` again returns it unchanged.
    """

    def __new__(cls, dataset: Any) -> SerialReads:
        if isinstance(dataset, SerialReads):
            return dataset
        return super().__new__(cls)

    def __init__(self, dataset: Any) -> None:
        if self is dataset:
            return
        object.__setattr__(self, "_dataset", dataset)
        object.__setattr__(self, "_lock", threading.RLock())

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            value = getattr(self._dataset, name)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked

    def __setattr__(self, name: str, value: Any) -> None:
        with self._lock:
            setattr(self._dataset, name, value)


__all__ = ["SerialReads"]
