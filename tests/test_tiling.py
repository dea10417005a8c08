"""Tile grid geometry and blending weights: coverage and partition of unity, for any size and scale."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sarcodec.blending import CosineWindow, RowBandAccumulator
from sarcodec.errors import UsageError
from sarcodec.tiling import TileGrid

SCALES = [Fraction(1, 16), Fraction(1), Fraction(2), Fraction(4), Fraction(16)]


def weight_sum(grid: TileGrid, kind: str = "cosine") -> np.ndarray:
    win = CosineWindow(grid, kind)
    total = np.zeros((grid.out_height, grid.out_width), np.float64)
    for t in grid:
        w = win.weights(t)
        y0, x0 = t.row.out_start, t.col.out_start
        h = min(w.shape[0], grid.out_height - y0)
        wd = min(w.shape[1], grid.out_width - x0)
        total[y0 : y0 + h, x0 : x0 + wd] += w[:h, :wd]
    return total


@st.composite
def grids(draw):
    scale = draw(st.sampled_from(SCALES))
    align = scale.denominator
    unit = max(align, 1)
    tile = draw(st.integers(1, 8)) * 16 * unit
    overlap = draw(st.integers(0, tile // (2 * unit))) * unit
    height = draw(st.integers(1, 700))
    width = draw(st.integers(1, 700))
    return TileGrid(height, width, scale=scale, tile_size=tile, overlap=overlap)


@settings(max_examples=150, deadline=None)
@given(grids(), st.sampled_from(["cosine", "core", "partition"]))
def test_weights_cover_every_output_pixel_and_sum_to_one(grid, kind):
    total = weight_sum(grid, kind)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


@settings(max_examples=150, deadline=None)
@given(grids())
def test_tiles_are_aligned_equal_sized_and_cover_the_raster(grid):
    align = grid.align
    for t in grid:
        assert t.y0 % align == 0 and t.x0 % align == 0
        assert t.height % align == 0 and t.width % align == 0
        assert t.row.out_size == t.height * grid.scale
    assert grid.row_spans[-1].start + grid.row_spans[-1].size >= grid.height
    assert grid.col_spans[-1].start + grid.col_spans[-1].size >= grid.width
    # consecutive tiles overlap by exactly the overlap (so the ramps pair up)
    for a, b in zip(grid.col_spans, grid.col_spans[1:], strict=False):
        assert a.start + a.size - b.start == grid.overlap


def test_streaming_band_rows_do_not_depend_on_height():
    short = TileGrid(300, 5000)
    tall = TileGrid(30000, 5000)
    assert short.max_band_rows() == tall.max_band_rows() == 256
    assert tall.rows_final_after(0) == 192  # rows the second tile row does not touch


def test_small_and_thin_rasters_get_small_tiles():
    g = TileGrid(1, 1, scale=Fraction(1, 16), tile_size=256, overlap=64)
    assert len(g) == 1 and g.tile(0, 0).height == 32 and (g.out_height, g.out_width) == (1, 1)
    strip = TileGrid(1, 100000, tile_size=256, overlap=64)
    assert strip.rows == 1 and strip.tile(0, 0).height == 32 and strip.tile(0, 0).width == 256


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(tile_size=250, overlap=64, scale=Fraction(1, 16)),  # not a multiple of the stride
        dict(tile_size=256, overlap=200),  # more than half the tile
        dict(tile_size=256, overlap=-16),
        dict(tile_size=0, overlap=0),
    ],
)
def test_bad_geometry_is_a_usage_error(kwargs):
    with pytest.raises(UsageError):
        TileGrid(1000, 1000, **kwargs)


def blend_stream(grid: TileGrid, kind: str, outputs: dict, first_tile_row: int = 0) -> np.ndarray:
    """Rows from first_tile_row's start, blended the way the runner streams them (grid order, band pops)."""
    acc = RowBandAccumulator(grid, 2, CosineWindow(grid, kind))
    acc.row0 = grid.row_spans[first_tile_row].out_start
    rows = []
    for r in range(first_tile_row, grid.rows):
        for c in range(grid.cols):
            acc.add(grid.tile(r, c), outputs[r * grid.cols + c])
        row0, blended, weight = acc.pop_rows(grid.rows_final_after(r))
        assert (weight is None) == (kind == "partition")
        rows.append(blended)
    return np.concatenate(rows, axis=1)


@settings(max_examples=120, deadline=None)
@given(grids(), st.integers(0, 3))
def test_partition_window_blends_like_the_cosine_window_without_weight_sums(grid, seed):
    """Stored first, added second, never divided: the cosine blend up to the rounding of its weight sum."""
    rng = np.random.default_rng(seed)
    outputs = {t.index: rng.uniform(0.5, 2.0, (2, t.row.out_size, t.col.out_size)).astype(np.float32) for t in grid}
    cosine = blend_stream(grid, "cosine", outputs)
    partition = blend_stream(grid, "partition", outputs)
    assert partition.shape == cosine.shape == (2, grid.out_height, grid.out_width)
    np.testing.assert_allclose(partition, cosine, rtol=5e-7, atol=0)
    # A stream that starts at a later tile row (a torchrun shard) gives the same rows below its first ramp.
    if grid.rows > 1:
        later = blend_stream(grid, "partition", outputs, first_tile_row=1)
        skip = grid.out_overlap
        start = grid.row_spans[1].out_start
        np.testing.assert_array_equal(later[:, skip:], partition[:, start + skip :])


def test_partition_window_copies_tile_cores_exactly():
    """Where one tile alone covers a pixel its output comes through bit for bit."""
    grid = TileGrid(300, 300, scale=2, tile_size=128, overlap=32)
    outputs = {t.index: np.full((2, t.row.out_size, t.col.out_size), 1.0 + t.index / 7, np.float32) for t in grid}
    out = blend_stream(grid, "partition", outputs)
    t = grid.tile(1, 1)
    ramp = grid.out_overlap
    core = out[:, t.row.out_start + ramp : t.row.out_start + t.row.out_size - ramp,
               t.col.out_start + ramp : t.col.out_start + t.col.out_size - ramp]
    assert core.size and (core == np.float32(1.0 + t.index / 7)).all()
