"""In-memory tile sources and sinks: for library callers holding arrays, and for tests."""

from __future__ import annotations

import numpy as np

from .raster_io import nodata_valid, padded_read


class ArraySource:
    """Tiles from a (C, H, W) or (H, W) array, reflect-padded, nodata replaced by ``fill``."""

    def __init__(self, array: np.ndarray, *, nodata: float | None = None, fill: float = 0.0) -> None:
        self.array = array[None] if array.ndim == 2 else array
        self.channels, self.height, self.width = self.array.shape
        self.nodata = nodata
        self.fill = np.float32(fill)

    def _raw(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        return self.array[:, y0 : y0 + h, x0 : x0 + w]

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        block = padded_read(self._raw, self.height, self.width, y0, x0, h, w).astype(np.float32)
        valid = nodata_valid(block, self.nodata)
        if valid is not None:
            block[:, ~valid] = self.fill
        return block

    def valid_mask(self, y0: int, x0: int, h: int, w: int) -> np.ndarray | None:
        return nodata_valid(self._raw(y0, x0, h, w), self.nodata)


class ArraySink:
    """Collects finished rows into one float32 array (C, H, W); invalid pixels get ``nodata``."""

    def __init__(self, channels: int, height: int, width: int, *, nodata: float | None = None) -> None:
        self.array = np.full((channels, height, width), np.nan, dtype=np.float32)
        self.width = width
        self.nodata = nodata
        self.closed = False
        self.aborted = False
        self.writes: list[tuple[int, int]] = []

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None) -> None:
        n = block.shape[1]
        self.array[:, row0 : row0 + n] = block
        if valid is not None and self.nodata is not None:
            self.array[:, row0 : row0 + n][:, ~valid] = self.nodata
        self.writes.append((row0, n))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
