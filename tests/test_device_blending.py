"""The device path of the engine (issue 15), run here on the CPU: it must give the host path's rows bit for bit.

On CUDA ``run_tiled`` keeps batches on the device (pinned uploads, bad-tile checks and blending there,
one copy back per finished row band). Without a GPU the same code runs with torch device "cpu" when
``runner.DEVICE_BLENDING`` forces it; every comparison below is exact equality, which is what the
same float32 operations in the same order give.

The v1 encoder's chunk rows are entropy-coded on a worker beside the network: its containers must
stay byte-identical to coding inline, on either path.
"""

from __future__ import annotations

from concurrent.futures import Future
from fractions import Fraction

import numpy as np
import pytest
import torch

from sarcodec import runner
from sarcodec.blending import CosineWindow, RowBandAccumulator
from sarcodec.device_blending import DeviceRowBandAccumulator
from sarcodec.memory_io import ArraySink
from sarcodec.progress import NullProgress
from sarcodec.runner import PinnedStaging, _bad_tiles, _bad_tiles_on_device
from sarcodec.tiling import TileGrid

from .test_runner import make_net, run

GRIDS = [  # (height, width, scale, tile, overlap, window)
    (700, 900, Fraction(1), 256, 64, "cosine"),
    (255, 257, Fraction(1), 64, 16, "cosine"),
    (61, 77, Fraction(2), 32, 16, "cosine"),
    (600, 700, Fraction(1, 16), 256, 128, "core"),
    (300, 420, Fraction(1), 96, 30, "core"),  # odd overlap/2: a shared middle pixel
    (1, 1, Fraction(1), 256, 64, "cosine"),
]


def _tile_output(rng: np.random.Generator, channels: int, tile) -> np.ndarray:
    """Values over several decades, signs mixed: rounding differences would show."""
    shape = (channels, tile.row.out_size, tile.col.out_size)
    return (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(np.float32)


@pytest.mark.parametrize(("height", "width", "scale", "tile", "overlap", "window"), GRIDS)
def test_device_accumulator_gives_the_numpy_rows_bit_for_bit(height, width, scale, tile, overlap, window):
    grid = TileGrid(height, width, scale=scale, tile_size=tile, overlap=overlap, multiple_of=scale.denominator)
    channels = 3
    win = CosineWindow(grid, window)
    host = RowBandAccumulator(grid, channels, win)
    dev = DeviceRowBandAccumulator(grid, channels, win, "cpu")
    rng = np.random.default_rng(height * width)
    rows_out = 0
    for r in range(grid.rows):
        for t in grid.row_tiles(r):
            out = _tile_output(rng, channels, t)
            host.add(t, out)
            dev.add(t, torch.from_numpy(out.copy()))
        end = grid.rows_final_after(r)
        a0, a, aw = host.pop_rows(end)
        b0, b, bw = dev.pop_rows(end)
        assert a0 == b0 and a.dtype == b.dtype == np.float32 and bw is not None
        np.testing.assert_array_equal(b, a)
        np.testing.assert_array_equal(bw, aw)
        rows_out += a.shape[1]
    assert rows_out == grid.out_height


def test_device_accumulator_grows_when_rows_are_held_back_and_takes_host_arrays():
    """Every tile added before any row is popped (the band must grow), fallbacks as numpy arrays."""
    grid = TileGrid(500, 300, tile_size=128, overlap=32)
    win = CosineWindow(grid, "cosine")
    host = RowBandAccumulator(grid, 2, win)
    dev = DeviceRowBandAccumulator(grid, 2, win, torch.device("cpu"), weight_rows=False)
    rng = np.random.default_rng(0)
    for t in grid:
        out = _tile_output(rng, 2, t)
        host.add(t, out)
        dev.add(t, out.copy())  # a host array, as a bad tile's fallback returns
    a0, a, _ = host.pop_rows(grid.out_height)
    b0, b, bw = dev.pop_rows(grid.out_height)
    assert a0 == b0 == 0 and bw is None
    np.testing.assert_array_equal(b, a)
    with pytest.raises(RuntimeError, match="flushed"):
        dev.add(grid.tile(0, 0), np.zeros((2, 128, 128), np.float32))


def test_popped_rows_belong_to_the_caller():
    """Sinks may keep rows (the codec's latent sink does): the next pop must not overwrite them."""
    grid = TileGrid(400, 200, tile_size=128, overlap=32)
    dev = DeviceRowBandAccumulator(grid, 1, CosineWindow(grid), "cpu")
    kept, copies = [], []
    for r in range(grid.rows):
        for t in grid.row_tiles(r):
            dev.add(t, torch.full((1, t.row.out_size, t.col.out_size), float(r + 1)))
        _, rows, weight = dev.pop_rows(grid.rows_final_after(r))
        kept.append((rows, weight))
        copies.append((rows.copy(), weight.copy()))
    assert grid.rows >= 3 and kept[-1][0].min() > kept[0][0].max()
    for (rows, weight), (rows_then, weight_then) in zip(kept, copies, strict=True):
        np.testing.assert_array_equal(rows, rows_then)
        np.testing.assert_array_equal(weight, weight_then)


def test_bad_tile_check_on_the_device_matches_the_host_check():
    rng = np.random.default_rng(3)
    batch = rng.standard_normal((9, 2, 8, 8)).astype(np.float32)
    batch[1, 0, 3, 3] = np.nan
    batch[2, 1, 0, 0] = np.inf
    batch[3, 0, 7, 7] = -np.inf
    batch[4, 0, 1, 1] = 1e9
    batch[5, 1, 2, 2] = -1e9
    batch[6, 0, 0, 0] = 1000.0  # exactly the limit: still fine
    batch[7, 0, 0, 0] = np.nextafter(np.float32(1000.0), np.float32(np.inf))
    batch[8, 0, 0, 0] = np.nan
    batch[8, 0, 0, 1] = 1e9  # non-finite wins
    expected = _bad_tiles(batch, 1000.0)
    assert expected == [None, "non-finite values", "non-finite values", "non-finite values",
                        "values beyond +/-1000", "values beyond +/-1000", None, "values beyond +/-1000",
                        "non-finite values"]
    assert _bad_tiles_on_device(torch.from_numpy(batch), 1000.0) == expected


def test_pinned_staging_copies_keep_the_layout_and_never_alias_the_buffer():
    staging = PinnedStaging(torch.device("cpu"))
    rng = np.random.default_rng(4)
    first = rng.standard_normal((4, 3, 5, 6)).astype(np.float32)
    channels_last = np.ascontiguousarray(rng.standard_normal((2, 5, 6, 3)).astype(np.float32)).transpose(0, 3, 1, 2)
    a = staging.upload(first)
    b = staging.upload(channels_last)
    c = staging.upload(first[:1].astype(np.float64))
    np.testing.assert_array_equal(a.numpy(), first)  # the second upload reused the buffer, not a's memory
    np.testing.assert_array_equal(b.numpy(), channels_last)
    assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
    assert c.dtype == torch.float64 and np.array_equal(c.numpy(), first[:1])


@pytest.fixture
def device_path(monkeypatch):
    """Runs of ``run_tiled`` in this test take the device path, on the CPU."""

    def both(*args, **kwargs):
        monkeypatch.setattr(runner, "DEVICE_BLENDING", None)
        host = run(*args, **kwargs)
        monkeypatch.setattr(runner, "DEVICE_BLENDING", True)
        seen = []
        original = runner.DeviceRowBandAccumulator.add
        monkeypatch.setattr(runner.DeviceRowBandAccumulator, "add",
                            lambda self, *a: (seen.append(1), original(self, *a))[1])
        dev = run(*args, **kwargs)
        assert seen, "the device path did not run"
        return host, dev

    return both


def _same_run(host, dev) -> None:
    (hs, hr), (ds, dr) = host, dev
    np.testing.assert_array_equal(ds.array, hs.array)
    assert ds.writes == hs.writes and ds.closed
    assert dr.bad_tiles == hr.bad_tiles and dr.tiles == hr.tiles


@pytest.fixture
def img():
    return np.random.default_rng(1).gamma(2.0, 0.5, (700, 900)).astype(np.float32)


@pytest.mark.parametrize("scale", [Fraction(1, 16), Fraction(1), Fraction(2)])
def test_run_tiled_on_the_device_path_equals_the_host_path(device_path, scale):
    size = (300, 420) if scale == 1 else (60, 76) if scale > 1 else (600, 700)
    img = np.random.default_rng(2).gamma(2.0, 0.5, size).astype(np.float32)
    net, multiple = make_net(float(scale))
    geometry = {Fraction(1): (256, 64, "cosine"), Fraction(2): (32, 16, "cosine")}
    tile, overlap, window = geometry.get(scale, (256, 128, "core"))
    _same_run(*device_path(net, img, scale=scale, multiple=multiple, out_ch=4 if scale < 1 else 1,
                           tile_size=tile, overlap=overlap, window=window))


def test_device_path_with_nodata_shuffled_order_and_a_weight_map(device_path, img, monkeypatch):
    net, _ = make_net(1)
    a = img.copy()
    a[100:180, 300:420] = -9999.0
    _same_run(*device_path(net, a, nodata=-9999.0, batch=3, order="shuffled", seed=7))
    maps = []
    for flag in (None, True):
        monkeypatch.setattr(runner, "DEVICE_BLENDING", flag)
        maps.append(ArraySink(1, *img.shape))
        run(net, img, weight_sink=maps[-1])
    np.testing.assert_array_equal(maps[1].array, maps[0].array)


@pytest.mark.parametrize("cuts", [(0, 300, 700), (0, 1, 191, 192, 500, 700)])
def test_device_path_shards_reassemble_the_full_host_run(img, cuts, monkeypatch):
    """torchrun ranks may sit on different kinds of machine: a shard's rows do not depend on the path."""
    net, _ = make_net(1)
    full, _ = run(net, img)
    monkeypatch.setattr(runner, "DEVICE_BLENDING", True)
    parts = ArraySink(1, *img.shape)
    for a, b in zip(cuts, cuts[1:], strict=False):
        sink, _ = run(net, img, out_rows=(a, b))
        parts.array[:, a:b] = sink.array[:, a:b]
    np.testing.assert_array_equal(parts.array, full.array)


class Misbehaving(torch.nn.Module):
    """Outputs NaN for tiles whose input mean is high and huge values where it is low."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        y = self.net(x).clone()
        m = x.flatten(1).mean(dim=1)
        y[m > 1.0025] = float("nan")
        y[m < 0.9965] = 1e9
        return y


def test_bad_tiles_on_the_device_path_reach_the_fallback_as_on_the_host(device_path, img):
    net, _ = make_net(1)
    bad = img.copy()
    bad[10, 10] = np.nan  # an input check (on the host, on the read-ahead thread)
    calls = []

    def fallback(tile, tile_input, reason):
        calls.append((tile.index, reason, float(tile_input[0, 5, 5])))
        return np.full((1, tile.row.out_size, tile.col.out_size), tile.index, np.float32)

    host, dev = device_path(Misbehaving(net), bad, fallback=fallback, progress=NullProgress())
    _same_run(host, dev)
    half = len(calls) // 2
    assert calls[:half] == calls[half:]
    reasons = {r for _, r, _ in calls[:half]}
    assert reasons == {"non-finite values", "model output has non-finite values",
                       "model output has values beyond +/-1e+06"}


# ----------------------------------------------------------------- v1 encoder: coding beside the network


class InlineExecutor:
    """Runs a job at once on the caller's thread: the v1 sink as it coded before the worker."""

    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed back through the future, as a pool does
            future.set_exception(exc)
        return future


@pytest.fixture(scope="module")
def v1_model(tmp_path_factory):
    from .conftest import random_checkpoint

    return random_checkpoint(tmp_path_factory.mktemp("models") / "small.pt", latent_channels=32,
                             hyper_channels=16, model_id="test-small")


@pytest.fixture
def v1_scene(write_geotiff):
    from .conftest import speckled_scene

    scene = speckled_scene(1100, 600, seed=12)
    scene[:, :20] = 0  # nodata border
    scene[700:720, 300:320] = 60000  # a tile the (patched) model fails on, in the second chunk row
    return write_geotiff(scene, nodata=0)


@pytest.fixture
def failing_bright_tiles(monkeypatch):
    from sarcodec.codec.model import SarCodec

    original = SarCodec.analysis

    def analysis(self, x, quality):
        y = original(self, x, quality)
        y[x.flatten(1).amax(dim=1) > 3.5] = float("nan")
        return y

    monkeypatch.setattr(SarCodec, "analysis", analysis)


def test_v1_chunk_rows_are_coded_on_the_worker_and_the_container_is_unchanged(
        v1_scene, v1_model, tmp_path, monkeypatch, failing_bright_tiles):
    """Coded on the worker, inline (as before), or after the device path: the same bytes (order, bad tiles, samples)."""
    import threading

    from sarcodec.codec import hyperprior_v1, workers
    from sarcodec.codec.pipeline import CompressOptions, compress_raster

    threads = set()
    code = hyperprior_v1.LatentChunkSink._code_chunk_row

    def recording(self, *args):
        threads.add(threading.current_thread().name.split("_")[0])
        return code(self, *args)

    monkeypatch.setattr(hyperprior_v1.LatentChunkSink, "_code_chunk_row", recording)
    opts = CompressOptions(model_path=v1_model, device="cpu", tile_size=256, overlap=64)
    data, bad_tiles = {}, {}
    for case, pool, device_blending in (("worker", workers.chunk_row_pool, None), ("inline", InlineExecutor, None),
                                        ("device path", workers.chunk_row_pool, True)):
        monkeypatch.setattr(hyperprior_v1, "chunk_row_pool", pool)
        monkeypatch.setattr(runner, "DEVICE_BLENDING", device_blending)
        bad_tiles[case] = compress_raster(v1_scene, tmp_path / "out.npz", opts).bad_tiles
        data[case] = (tmp_path / "out.npz").read_bytes()
        (tmp_path / "out.npz").unlink()
    assert threads == {"sarcodec-rows", "MainThread"}
    assert bad_tiles["worker"] >= 1 and len(set(bad_tiles.values())) == 1
    assert data["worker"] == data["inline"] == data["device path"]


def test_an_error_while_coding_on_the_worker_fails_the_run_and_leaves_no_file(v1_scene, v1_model, tmp_path,
                                                                              monkeypatch):
    from sarcodec.codec.entropy import LatentCoder
    from sarcodec.codec.pipeline import CompressOptions, compress_raster

    calls = []
    encode = LatentCoder.encode_chunk

    def failing(self, y):
        calls.append(1)
        if len(calls) > 3:
            raise OSError("disk vanished")
        return encode(self, y)

    monkeypatch.setattr(LatentCoder, "encode_chunk", failing)
    with pytest.raises(OSError, match="disk vanished"):
        compress_raster(v1_scene, tmp_path / "out.npz", CompressOptions(model_path=v1_model, device="cpu"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]
