"""The streaming tiled engine: tiled output equals whole-image inference, at every scale and size."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from sarcodec.device import DevicePolicy
from sarcodec.errors import Cancelled, OutOfMemoryError
from sarcodec.memory_io import ArraySink, ArraySource
from sarcodec.progress import NullProgress
from sarcodec.runner import TileModel, run_tiled


def conv(cin, cout, k=3, stride=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, padding_mode="reflect")


def make_net(scale: float, seed: int = 0) -> tuple[nn.Module, int]:
    """A small random fully-convolutional net of the given scale, and its stride alignment."""
    torch.manual_seed(seed)
    if scale == 1:
        return nn.Sequential(conv(1, 8), nn.ReLU(), conv(8, 8), nn.ReLU(), conv(8, 1)), 1
    if scale < 1:  # encoder-like: four stride-2 stages
        return nn.Sequential(conv(1, 8, 5, 2), nn.ReLU(), conv(8, 8, 5, 2), nn.ReLU(),
                             conv(8, 8, 5, 2), nn.ReLU(), conv(8, 4, 5, 2)), 16
    k = int(scale)
    return nn.Sequential(conv(1, 8), nn.ReLU(), nn.Upsample(scale_factor=k, mode="nearest"), conv(8, 1)), 1


def whole(net: nn.Module, img: np.ndarray, multiple: int = 1) -> np.ndarray:
    h, w = img.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    x = torch.from_numpy(np.pad(img, ((0, ph), (0, pw)), mode="reflect"))[None, None]
    with torch.no_grad():
        return net(x)[0].numpy()


def run(net, img, *, scale=1, multiple=1, out_ch=1, nodata=None, **kw):
    model = TileModel(net, scale=scale, multiple_of=multiple, out_channels=out_ch)
    src = ArraySource(img, nodata=nodata)
    oh, ow = int(np.ceil(img.shape[0] * scale)), int(np.ceil(img.shape[1] * scale))
    sink = ArraySink(out_ch, oh, ow, nodata=nodata)
    report = run_tiled(model, src, sink, policy=DevicePolicy("cpu", batch_size=kw.pop("batch", 4)), **kw)
    return sink, report


@pytest.fixture
def img():
    return np.random.default_rng(1).gamma(2.0, 0.5, (700, 900)).astype(np.float32)


def test_tiled_matches_whole_image_in_the_interior_and_shows_no_seam(img):
    net, _ = make_net(1)
    sink, report = run(net, img)
    ref = whole(net, img)
    err = np.abs(sink.array - ref) / (np.abs(ref) + 1e-2)
    assert sink.closed and report.tiles == 20
    assert err[:, 8:-8, 8:-8].max() < 1e-4
    # seams: error on the tile boundaries (multiples of the 192-pixel step) is no worse than elsewhere
    boundary = np.abs(sink.array - ref)[:, 8:-8, 188:196].max()
    assert boundary < 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("scale", [1 / 16, 1, 2, 4, 16])
def test_every_scale_factor_matches_whole_image(scale):
    size = (300, 420) if scale == 1 else (60, 76) if scale > 1 else (600, 700)
    img = np.random.default_rng(2).gamma(2.0, 0.5, size).astype(np.float32)
    net, multiple = make_net(scale)
    out_ch = 4 if scale < 1 else 1
    # The encoder keeps only each tile's core (as the codec does): its receptive field (61 px) fits
    # inside the 64-pixel context on each side, so even its outputs must match exactly.
    geometry = {1: (256, 64, "cosine"), 2: (32, 16, "cosine"), 4: (32, 16, "cosine"), 16: (32, 16, "cosine")}
    tile, overlap, window = geometry.get(scale, (256, 128, "core"))
    sink, _ = run(net, img, scale=scale, multiple=multiple, out_ch=out_ch, tile_size=tile, overlap=overlap,
                  window=window)
    ref = whole(net, img, multiple)
    oh, ow = sink.array.shape[1:]
    ref = ref[:, :oh, :ow]
    m = 4 if scale < 1 else int(8 * max(scale, 1))
    err = np.abs(sink.array - ref)[:, m:-m, m:-m] / (np.abs(ref).max() + 1e-6)
    assert sink.array.shape[1:] == (int(np.ceil(size[0] * scale)), int(np.ceil(size[1] * scale)))
    assert np.isfinite(sink.array).all()
    assert err.max() < 1e-4


@pytest.mark.parametrize("shape", [(1, 1), (255, 257), (3000, 200)])
def test_any_input_size(shape):
    img = np.random.default_rng(3).gamma(2.0, 0.5, shape).astype(np.float32)
    net, _ = make_net(1)
    sink, _ = run(net, img)
    assert sink.array.shape == (1, *shape)
    assert np.isfinite(sink.array).all()
    if min(shape) > 20:
        ref = whole(net, img)
        assert np.abs(sink.array - ref)[:, 8:-8, 8:-8].max() < 1e-4 * np.abs(ref).max()


def test_encoder_on_a_one_pixel_image():
    net, multiple = make_net(1 / 16)
    sink, _ = run(net, np.ones((1, 1), np.float32), scale=1 / 16, multiple=multiple, out_ch=4)
    assert sink.array.shape == (4, 1, 1) and np.isfinite(sink.array).all()


def test_nodata_pixels_come_back_exactly_and_never_steer_the_model(img):
    net, _ = make_net(1)
    a = img.copy()
    a[100:180, 300:420] = -9999.0
    b = img.copy()
    b[100:180, 300:420] = 5.0e4  # different hidden values under the same mask
    b[b == 5.0e4] = -9999.0
    b2 = img.copy()
    b2[100:180, 300:420] = 123.0
    sa, _ = run(net, a, nodata=-9999.0)
    sb, _ = run(net, b2, nodata=123.0)
    mask = np.zeros(img.shape, bool)
    mask[100:180, 300:420] = True
    assert (sa.array[0][mask] == -9999.0).all()
    assert (sb.array[0][mask] == 123.0).all()
    np.testing.assert_array_equal(sa.array[0][~mask], sb.array[0][~mask])


def test_results_do_not_depend_on_tile_order(img):
    net, _ = make_net(1)
    grid_order, _ = run(net, img, batch=3)
    shuffled, _ = run(net, img, batch=3, order="shuffled", seed=7)
    np.testing.assert_allclose(shuffled.array, grid_order.array, rtol=0, atol=1e-6)


def test_rows_are_streamed_in_bands_not_held_for_the_whole_scene():
    img = np.random.default_rng(4).gamma(2.0, 0.5, (2000, 300)).astype(np.float32)
    net, _ = make_net(1)
    sink, _ = run(net, img)
    assert len(sink.writes) == 11  # one flush per tile row
    assert max(n for _, n in sink.writes) <= 256
    assert sum(n for _, n in sink.writes) == 2000


def test_bad_tiles_go_to_the_fallback_and_the_run_continues(img):
    net, _ = make_net(1)
    bad = img.copy()
    bad[10, 10] = np.nan  # only tile 0 sees it
    bad[650, 850] = 1e9  # extreme: only the last tile sees it
    seen = []

    def fallback(tile, tile_input, reason):
        seen.append((tile.index, reason))
        return np.zeros((1, tile.row.out_size, tile.col.out_size), np.float32)

    progress = NullProgress()
    sink, report = run(net, bad, fallback=fallback, progress=progress)
    assert sorted(i for i, _ in seen) == [0, 19]
    assert "non-finite" in dict(seen)[0] and "beyond" in dict(seen)[19]
    assert [i for i, _ in report.bad_tiles] == [0, 19]
    assert len(progress.warnings) == 2
    ref = whole(net, img)
    np.testing.assert_allclose(sink.array[:, 300:400, 300:400], ref[:, 300:400, 300:400], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("window", ["cosine", "partition"])
def test_weight_map_sums_to_one(img, window):
    net, _ = make_net(1)
    weights = ArraySink(1, *img.shape)
    sink, _ = run(net, img, weight_sink=weights, window=window)
    np.testing.assert_allclose(weights.array, 1.0, atol=1e-5)


def test_partition_window_matches_the_cosine_window_and_its_shards_reassemble(img):
    """``sarcodec infer``'s window: the cosine blend without weight sums, rows identical in any shard."""
    net, _ = make_net(2)
    cosine, _ = run(net, img, scale=2, window="cosine")
    partition, _ = run(net, img, scale=2, window="partition", batch=3)
    np.testing.assert_allclose(partition.array, cosine.array, rtol=1e-6, atol=1e-6)
    parts = ArraySink(1, *partition.array.shape[1:])
    for a, b in [(0, 383), (383, 384), (384, 1400)]:
        sink, _ = run(net, img, scale=2, window="partition", out_rows=(a, b))
        parts.array[:, a:b] = sink.array[:, a:b]
    np.testing.assert_array_equal(parts.array, partition.array)


class CancelAfter(NullProgress):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def advance(self, n=1):
        super().advance(n)
        if self.done >= self.n:
            self.cancel_token.cancel()


def test_cancel_mid_run_leaves_no_output(img, write_geotiff, tmp_path):
    import rasterio

    from sarcodec.raster_io import GeoTiffSink, RasterSource

    src_path = write_geotiff(img, "in.tif")
    out = tmp_path / "out" / "result.tif"
    out.parent.mkdir()
    net, _ = make_net(1)
    with rasterio.open(src_path) as ds:
        sink = GeoTiffSink(out, dict(ds.profile))
        with pytest.raises(Cancelled):
            run_tiled(TileModel(net), RasterSource(ds), sink, policy=DevicePolicy("cpu", 4),
                      progress=CancelAfter(8))
    assert os.listdir(out.parent) == []


class FlakyOOM(nn.Module):
    """Raises CUDA out-of-memory for batches larger than ``limit``, as a too-small GPU would."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit, self.calls = net, limit, []

    def forward(self, x):
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.net(x)


def test_out_of_memory_halves_the_batch_and_completes(img):
    net, _ = make_net(1)
    flaky = FlakyOOM(net, limit=2)
    progress = NullProgress()
    sink, report = run(flaky, img, batch=8, progress=progress)
    assert report.oom_retries == 2 and report.batch_size == 2
    assert max(flaky.calls[3:]) <= 2
    assert any("batch size 2" in w for w in progress.warnings)
    np.testing.assert_allclose(sink.array, run(net, img)[0].array, atol=1e-6)


def test_persistent_out_of_memory_is_a_typed_error(img):
    net, _ = make_net(1)
    with pytest.raises(OutOfMemoryError) as exc:
        run(FlakyOOM(net, limit=0), img, batch=4)
    assert exc.value.exit_code == 3


@pytest.mark.parametrize("cuts", [(0, 300, 700), (0, 1, 191, 192, 500, 700)])
def test_shards_of_output_rows_reassemble_the_full_run(img, cuts):
    """What torchrun ranks rely on: row shards run separately equal one full run."""
    net, _ = make_net(1)
    full, _ = run(net, img)
    parts = ArraySink(1, *img.shape)
    for a, b in zip(cuts, cuts[1:], strict=False):
        sink, report = run(net, img, out_rows=(a, b))
        assert all(a <= r0 and r0 + n <= b for r0, n in sink.writes)
        parts.array[:, a:b] = sink.array[:, a:b]
    np.testing.assert_array_equal(parts.array, full.array)


@pytest.mark.parametrize("window", ["cosine", "partition"])
def test_write_behind_gives_the_same_rows_warnings_and_weights(img, window):
    """``sarcodec infer``'s write-behind: batches finished on a worker thread, every value the same."""
    net, _ = make_net(2)
    bad = img.copy()
    bad[10, 10] = np.nan
    runs = []
    for behind in (False, True):
        progress, weights = NullProgress(), ArraySink(1, 1400, 1800)
        sink, report = run(net, bad, scale=2, window=window, batch=3, progress=progress, write_behind=behind,
                           weight_sink=weights if window == "cosine" else None)
        assert sink.closed and not sink.aborted and progress.done == report.tiles
        runs.append((sink, weights, report.bad_tiles, progress.warnings))
    (a, wa, bad_a, warn_a), (b, wb, bad_b, warn_b) = runs
    np.testing.assert_array_equal(b.array, a.array)
    np.testing.assert_array_equal(wb.array, wa.array)
    assert a.writes == b.writes and bad_a == bad_b and warn_a == warn_b and len(warn_a) == 1


class FailingSink(ArraySink):
    """Fails on its ``fail_at``-th row band, on whatever thread writes; records the writing threads."""

    def __init__(self, *args, fail_at: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.fail_at = fail_at
        self.threads: set[str] = set()

    def write_rows(self, row0, block, valid=None):
        import threading

        self.threads.add(threading.current_thread().name)
        if len(self.writes) == self.fail_at:
            raise OSError("No space left on device")
        super().write_rows(row0, block, valid)

    def abort(self) -> None:
        assert len(self.writes) == self.fail_at  # the writer has stopped: nothing lands after the abort
        super().abort()


@pytest.mark.parametrize("fail_at", [0, 2, 4])
def test_a_write_behind_error_is_raised_as_it_is_and_the_sink_aborted(img, fail_at):
    net, _ = make_net(2)
    model = TileModel(net, scale=2)
    sink = FailingSink(1, 1400, 1800, fail_at=fail_at)
    progress = NullProgress()
    with pytest.raises(OSError, match="^No space left on device$"):
        run_tiled(model, ArraySource(img), sink, policy=DevicePolicy("cpu", batch_size=2), tile_size=64,
                  overlap=16, window="partition", progress=progress, write_behind=True)
    assert sink.aborted and not sink.closed
    assert all(name.startswith("sarcodec-write") for name in sink.threads)
    assert progress.done < progress.total
