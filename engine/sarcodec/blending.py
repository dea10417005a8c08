"""Blending windows and the row-band accumulator that merges overlapping tile outputs.

Blending is order-independent by construction: each tile adds ``weight * value`` and ``weight``
into float32 buffers and the division happens once per pixel when a row is final. The runner also
adds tiles in grid order, so the floating-point sums themselves do not depend on which batch
finished first. Sides that touch the raster border get weight 1 (no ramp): a single tile covers
those pixels and a ramp there would only darken the edge.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np

from .tiling import AxisSpan, Tile, TileGrid

WindowKind = Literal["cosine", "core"]


@functools.lru_cache(maxsize=256)
def _axis_weights(size: int, ramp: int, lead: bool, trail: bool, kind: WindowKind) -> np.ndarray:
    w = np.ones(size, dtype=np.float32)
    if ramp <= 0:
        return w
    if kind == "cosine":
        # sin^2 rising over the overlap; the neighbour's falling cos^2 makes the pair sum to 1.
        # A guard band of ramp/8 at each end gives the outermost pixels, where the model saw
        # padding instead of context, no weight at all.
        guard = ramp // 8
        t = (np.arange(ramp, dtype=np.float64) - guard + 0.5) / (ramp - 2 * guard)
        rise = (np.sin(0.5 * math.pi * np.clip(t, 0.0, 1.0)) ** 2).astype(np.float32)
    elif kind == "core":
        # Hard split at the overlap midpoint: each output pixel comes from exactly one tile.
        # (An odd overlap leaves one middle pixel shared half and half.)
        twice = 2 * np.arange(ramp) + 1
        rise = np.where(twice > ramp, 1.0, np.where(twice == ramp, 0.5, 0.0)).astype(np.float32)
    else:  # pragma: no cover - guarded by the Literal type
        raise ValueError(kind)
    if not lead:
        w[:ramp] *= rise
    if not trail:
        w[size - ramp :] *= rise[::-1]
    return w


class CosineWindow:
    """Per-tile 2-D weights for a grid: separable products of 1-D ramps, cached per shape."""

    def __init__(self, grid: TileGrid, kind: WindowKind = "cosine") -> None:
        self.grid = grid
        self.kind: WindowKind = kind
        self._cache: dict[tuple, np.ndarray] = {}

    def axis(self, span: AxisSpan) -> np.ndarray:
        return _axis_weights(span.out_size, self.grid.out_overlap, span.lead_border, span.trail_border, self.kind)

    def weights(self, tile: Tile) -> np.ndarray:
        key = (tile.row.out_size, tile.row.lead_border, tile.row.trail_border,
               tile.col.out_size, tile.col.lead_border, tile.col.trail_border)
        w = self._cache.get(key)
        if w is None:  # a grid has few distinct tile shapes (inner, edges, corners): each made once
            w = self._cache[key] = np.outer(self.axis(tile.row), self.axis(tile.col))
            w.setflags(write=False)  # shared between tiles: a caller must not scale it in place
        return w


class RowBandAccumulator:
    """Weighted sums for the output rows that still receive contributions.

    Holds at most one tile-row of output rows (``grid.max_band_rows()``) times the output width,
    so memory depends on tile size and scene width, never on scene height.
    """

    def __init__(self, grid: TileGrid, channels: int, window: CosineWindow) -> None:
        self.grid = grid
        self.window = window
        self.channels = channels
        self.width = grid.out_width
        self.row0 = 0  # first output row held
        rows = grid.max_band_rows()
        self._sum = np.zeros((channels, rows, self.width), dtype=np.float32)
        self._weight = np.zeros((rows, self.width), dtype=np.float32)

    def _ensure(self, row_end: int) -> None:
        need = row_end - self.row0
        if need > self._weight.shape[0]:
            grow = need - self._weight.shape[0]
            self._sum = np.concatenate(
                [self._sum, np.zeros((self.channels, grow, self.width), np.float32)], axis=1
            )
            self._weight = np.concatenate([self._weight, np.zeros((grow, self.width), np.float32)], axis=0)

    def add(self, tile: Tile, output: np.ndarray) -> None:
        """Add one tile's output (C, out_h, out_w); parts past the raster end are dropped."""
        g = self.grid
        oy0, ox0 = tile.row.out_start, tile.col.out_start
        oy1 = min(oy0 + tile.row.out_size, g.out_height)
        ox1 = min(ox0 + tile.col.out_size, g.out_width)
        if oy0 < self.row0:
            raise RuntimeError("tile added after its rows were flushed")
        self._ensure(oy1)
        w = self.window.weights(tile)[: oy1 - oy0, : ox1 - ox0]
        r0, r1 = oy0 - self.row0, oy1 - self.row0
        self._sum[:, r0:r1, ox0:ox1] += output[:, : oy1 - oy0, : ox1 - ox0] * w
        self._weight[r0:r1, ox0:ox1] += w

    def pop_rows(self, row_end: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Finish rows up to ``row_end``: returns (first row, blended (C, n, W), weight sum (n, W))."""
        n = row_end - self.row0
        start = self.row0
        if n <= 0:
            empty = np.zeros((self.channels, 0, self.width), np.float32)
            return start, empty, np.zeros((0, self.width), np.float32)
        weight = self._weight[:n].copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            blended = self._sum[:, :n] / np.where(weight > 0, weight, 1.0)[None]
        # Move up only the rows still open (np.roll copied the whole band into a new one each time);
        # the freed rows at the bottom start from zero again.
        keep = self._weight.shape[0] - n
        if keep > 0:
            self._sum[:, :keep] = self._sum[:, n:].copy()
            self._weight[:keep] = self._weight[n:].copy()
        self._sum[:, max(keep, 0):] = 0
        self._weight[max(keep, 0):] = 0
        self.row0 = row_end
        return start, blended, weight
