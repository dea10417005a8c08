"""Tile geometry for running a fully-convolutional model over a raster of any size.

A model maps an input tile to an output tile ``scale`` times its size (1/16 for an encoder, 16 for
a decoder, 1, 2 or 4 for restoration or super-resolution). Tiles overlap by ``overlap`` input pixels
so every output pixel near a tile edge also gets a prediction from a neighbour that saw it with
context; the blending windows (``blending.py``) turn those predictions into one seamless value.

All tiles have the same size along an axis (the last one is reflect-padded past the raster edge
rather than shifted), so every overlap is exactly ``overlap`` pixels wide and the cosine ramps of two
neighbours add up to one. Offsets and sizes are multiples of ``multiple_of`` so a strided model sees
the same pixel phase in every tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from .errors import UsageError

DEFAULT_TILE_SIZE = 256
DEFAULT_OVERLAP = 64
MIN_TILE = 32


def as_scale(scale: int | float | Fraction) -> Fraction:
    """Exact output-pixels-per-input-pixel ratio (``0.0625`` becomes ``1/16``)."""
    value = Fraction(scale).limit_denominator(4096)
    if value <= 0:
        raise UsageError(f"model scale must be positive, got {scale}")
    return value


@dataclass(frozen=True)
class AxisSpan:
    """One tile's extent along one axis, in input and output pixels."""

    index: int
    start: int  # input offset (may run past the raster end: that part is padding)
    size: int  # input size
    out_start: int
    out_size: int
    lead_border: bool  # the tile starts at the raster start: no ramp there
    trail_border: bool  # the tile reaches the raster end: no ramp there


@dataclass(frozen=True)
class Tile:
    """A tile of the grid: where to read, where its output lands, which sides touch the border."""

    index: int
    row: AxisSpan
    col: AxisSpan

    @property
    def y0(self) -> int:
        return self.row.start

    @property
    def x0(self) -> int:
        return self.col.start

    @property
    def height(self) -> int:
        return self.row.size

    @property
    def width(self) -> int:
        return self.col.size


class TileGrid:
    """Row-major tiles over an ``height`` x ``width`` raster for a model of a given scale."""

    def __init__(
        self,
        height: int,
        width: int,
        *,
        scale: int | float | Fraction = 1,
        tile_size: int = DEFAULT_TILE_SIZE,
        overlap: int = DEFAULT_OVERLAP,
        multiple_of: int = 1,
    ) -> None:
        if height < 1 or width < 1:
            raise UsageError(f"raster size must be at least 1x1, got {height}x{width}")
        self.height = int(height)
        self.width = int(width)
        self.scale = as_scale(scale)
        # Offsets and sizes must map to whole output pixels and respect the model's stride.
        self.align = math.lcm(max(int(multiple_of), 1), self.scale.denominator)
        if tile_size < 1 or tile_size % self.align:
            raise UsageError(
                f"tile size {tile_size} must be a positive multiple of {self.align} for this model"
            )
        if overlap < 0 or overlap % self.align:
            raise UsageError(f"overlap {overlap} must be a non-negative multiple of {self.align} for this model")
        if overlap * 2 > tile_size:
            raise UsageError(f"overlap {overlap} must be at most half the tile size {tile_size}")
        self.tile_size = int(tile_size)
        self.overlap = int(overlap)
        self.out_height = math.ceil(self.height * self.scale)
        self.out_width = math.ceil(self.width * self.scale)
        self.row_spans = self._axis(self.height)
        self.col_spans = self._axis(self.width)

    def _axis(self, length: int) -> list[AxisSpan]:
        # A raster smaller than a tile along this axis gets one tile just big enough (at least
        # MIN_TILE, aligned), reflect-padded: tiny inputs (1x1) still satisfy the model's padding
        # needs, and a 1 x 100000 strip does not cost 100000 / 192 full square tiles.
        size = min(self.tile_size, self.align * math.ceil(max(length, MIN_TILE) / self.align))
        step = size - self.overlap if length > size else size
        count = 1 if length <= size else math.ceil((length - size) / step) + 1
        spans = []
        for i in range(count):
            start = i * step
            spans.append(
                AxisSpan(
                    index=i,
                    start=start,
                    size=size,
                    out_start=int(start * self.scale),
                    out_size=int(size * self.scale),
                    lead_border=i == 0,
                    trail_border=i == count - 1,
                )
            )
        return spans

    @property
    def rows(self) -> int:
        return len(self.row_spans)

    @property
    def cols(self) -> int:
        return len(self.col_spans)

    def __len__(self) -> int:
        return self.rows * self.cols

    @property
    def out_overlap(self) -> int:
        """Overlap in output pixels: the length of the blending ramps."""
        return int(self.overlap * self.scale)

    def row_tiles(self, r: int) -> list[Tile]:
        rs = self.row_spans[r]
        return [Tile(r * self.cols + c, rs, cs) for c, cs in enumerate(self.col_spans)]

    def tile(self, r: int, c: int) -> Tile:
        return Tile(r * self.cols + c, self.row_spans[r], self.col_spans[c])

    def __iter__(self) -> Iterator[Tile]:
        for r in range(self.rows):
            yield from self.row_tiles(r)

    def rows_final_after(self, r: int) -> int:
        """Output rows that no tile after tile row ``r`` touches: they can be written out."""
        if r + 1 >= self.rows:
            return self.out_height
        return min(self.row_spans[r + 1].out_start, self.out_height)

    def max_band_rows(self) -> int:
        """Most output rows held in memory at once by a streaming run (independent of height)."""
        return self.row_spans[0].out_size
