"""Error-bounded compression: no valid pixel of the decompressed raster moves by more than E dB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

import sarcodec
from sarcodec.codec import bounded, dct_v2, dn_cells
from sarcodec.codec.dct_fit import Sample, choose_block_params, fit_band_params
from sarcodec.codec.dct_model import load_model
from sarcodec.codec.domains import Domain, to_log
from sarcodec.codec.pipeline import (
    CompressOptions,
    DecompressOptions,
    compress_raster,
    container_info,
    decompress_container,
)
from sarcodec.errors import ContainerError, UsageError

from ..conftest import SHARED_DATA, speckled_scene


def _roundtrip(src, tmp_path, e, name="b"):
    npz, out = tmp_path / f"{name}.npz", tmp_path / f"{name}.tif"
    res = compress_raster(src, npz, CompressOptions(max_error_db=e))
    decompress_container(npz, out, DecompressOptions())
    with rasterio.open(src) as a, rasterio.open(out) as b:
        return res, a.read(), b.read(), npz


def _error_db(orig: np.ndarray, back: np.ndarray, factor: float | None) -> np.ndarray:
    a, b = orig.astype(np.float64), back.astype(np.float64)
    if factor is None:  # dB values
        return np.abs(b - a)
    return np.abs(factor * np.log10(b / a))


def _adversarial_dn() -> np.ndarray:
    """Speckle with what breaks naive bounds: saturation, a lone bright target, a checkerboard of
    extremes, constant areas, the darkest DN (1..3, where one DN step is 3.5-6 dB), nodata holes."""
    a = speckled_scene(600, 560, seed=31)
    a[:40, :] = 65535  # saturated rows
    a[300, 300] = 60000  # one bright target in dark clutter
    a[280:320, 280:320] = np.where(a[280:320, 280:320] > 60, 60, a[280:320, 280:320])
    yy, xx = np.mgrid[0:64, 0:64]
    a[100:164, 100:164] = np.where((yy + xx) % 2 == 0, 1, 65535)  # checkerboard of extremes
    a[200:260, 400:520] = 777  # constant
    a[400:460, 50:200] = (np.arange(60 * 150).reshape(60, 150) % 3 + 1)  # DN 1..3
    a[500:540, 500:540] = 0  # nodata hole
    return a.astype(np.uint16)


@pytest.mark.parametrize("e", [0.05, 0.1, 0.25, 0.5, 1.0])
def test_every_valid_pixel_is_within_the_bound_on_adversarial_dn(write_geotiff, tmp_path, e):
    scene = _adversarial_dn()
    src = write_geotiff(scene, nodata=0)
    res, orig, back, npz = _roundtrip(src, tmp_path, e)
    valid = orig != 0
    assert (back[~valid] == 0).all() and (back[valid] != 0).all()
    assert _error_db(orig[valid], back[valid], 20).max() <= e
    assert res.max_error_db == e
    info = container_info(npz)
    assert info["mode"] == "error-bounded" and info["max_error_db"] == e


@pytest.mark.parametrize("e", [0.25, 1.0])
def test_bound_and_bias_on_speckle(write_geotiff, tmp_path, e):
    scene = speckled_scene(700, 640, seed=32)
    src = write_geotiff(scene)
    res, orig, back, _ = _roundtrip(src, tmp_path, e)
    err = _error_db(orig, back, 20)
    assert err.max() <= e
    assert 0.3 * e < np.sqrt(np.mean(err**2)) < 0.7 * e  # uses the room it has: not lossless in disguise
    bias = np.mean(back.astype(float) ** 2) / np.mean(orig.astype(float) ** 2) - 1
    assert abs(bias) <= 0.005
    assert res.bpp < 16 * 0.6  # far below the raw 16 bits


@pytest.mark.parametrize("domain, factor", [("intensity", 10.0), ("amplitude", 20.0), ("db", None)])
def test_float_domains_are_bounded_in_their_own_units(write_geotiff, tmp_path, domain, factor):
    rng = np.random.default_rng(33)
    intensity = (np.exp(rng.normal(0, 1.0, (300, 330))) * rng.gamma(4.4, 1 / 4.4, (300, 330)) * 1e-3)
    intensity[:5, :5] = 1e-12  # very dark, still valid
    values = {"intensity": intensity, "amplitude": np.sqrt(intensity), "db": 10 * np.log10(intensity)}[domain]
    src = write_geotiff(values.astype(np.float32))
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(SAR_DOMAIN=domain)
    _, orig, back, _ = _roundtrip(src, tmp_path, 0.3)
    assert back.dtype == np.float32
    assert _error_db(orig, back, factor).max() <= 0.3


def test_uncodable_pixels_and_nodata_stay_exact(write_geotiff, tmp_path):
    rng = np.random.default_rng(34)
    intensity = (rng.gamma(4.4, 1 / 4.4, (200, 260)) * 0.05).astype(np.float32)
    intensity[10, 10], intensity[20, 30], intensity[150, 200] = np.nan, np.inf, -1.0
    src = write_geotiff(intensity)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(SAR_DOMAIN="intensity")
    _, orig, back, _ = _roundtrip(src, tmp_path, 0.2)
    for r, c in ((10, 10), (20, 30), (150, 200)):
        assert np.array_equal(back[0, r, c], orig[0, r, c], equal_nan=True)
    good = np.isfinite(orig) & (orig > 0)
    assert _error_db(orig[good], back[good], 10).max() <= 0.2


def test_windows_of_a_bounded_file_are_the_crop(write_geotiff, tmp_path):
    scene = speckled_scene(600, 700, seed=35)
    src = write_geotiff(scene, nodata=0)
    _, _, back, npz = _roundtrip(src, tmp_path, 0.4)
    with sarcodec.open(npz) as f:
        np.testing.assert_array_equal(f.read(1, window=((500, 560), (480, 600))), back[0, 500:560, 480:600])


@pytest.mark.parametrize("opts, message", [
    ({"max_error_db": 0.5, "quality": 3}, "not both"),
    ({"max_error_db": 0.0}, "positive"),
    ({"max_error_db": float("nan")}, "positive"),
    ({"max_error_db": 0.001}, "gains nothing over lossless"),
    ({"max_error_db": "abc"}, "number"),
])
def test_bad_bounds_are_usage_errors_and_write_nothing(write_geotiff, tmp_path, opts, message):
    src = write_geotiff(speckled_scene(64, 64, seed=1))
    out = tmp_path / "x.npz"
    with pytest.raises(UsageError, match=message) as exc:
        compress_raster(src, out, CompressOptions(**opts))
    assert exc.value.exit_code == 4 and not out.exists()


def test_v1_models_cannot_bound_the_error(write_geotiff, tmp_path, small_model):
    src = write_geotiff(speckled_scene(64, 64, seed=1))
    with pytest.raises(UsageError, match="needs a v2 model"):
        compress_raster(src, tmp_path / "x.npz", CompressOptions(max_error_db=0.5, model_path=small_model))


def test_real_grd_chips_are_bounded(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip("real SAR data not available: ../shared/data/sar-train is absent")
    chips = sorted((SHARED_DATA / "s1_grd_dn_chips").glob("20160518*.tif"))[:4]
    for i, chip in enumerate(chips):
        _, orig, back, _ = _roundtrip(chip, tmp_path, 0.25, name=f"c{i}")
        valid = orig != 0
        assert _error_db(orig[valid], back[valid], 20).max() <= 0.25, chip.name


# ------------------------------------------------------------------ integer cells (residual format 2)
@pytest.mark.parametrize("e", [0.01, 0.1, 0.25, 1.0, 20.0])
@pytest.mark.parametrize("factor", [20.0, 10.0])
@pytest.mark.parametrize("offset", [0.0, -0.25, 0.25])
def test_every_integer_is_within_the_bound_of_its_cells_representative(e, factor, offset):
    cells = bounded.cells_of(e, factor, round(offset * e / 1.0, 4) / 4 if offset else 0.0)
    v = np.r_[np.arange(1, 70001), np.array([2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1])]
    i = cells.index(v)
    r = cells.reps[i]
    assert (cells.starts[i] <= v).all() and np.all(np.diff(cells.starts) > 0) and cells.starts[0] == 1
    assert (np.abs(factor * np.log10(r / v)) <= e - 2 * bounded.MARGIN_DB + 1e-9).all()


def test_cell_lookups_agree_with_the_search_they_shortcut():
    cells = bounded.cells_of(0.25, 20.0, -0.01)
    v = np.arange(0, 65536)
    np.testing.assert_array_equal(cells.index(v.astype(np.uint16)), cells.index(v.astype(np.int64)))
    p = np.random.default_rng(39).uniform(0, 65535, 200_000)
    ref, tie, pos = cells.reference(p)
    big_ref, big_tie, big_pos = cells.reference(np.r_[p, 1e6])  # past the table: searched
    np.testing.assert_array_equal(ref, big_ref[:-1])
    assert not tie.any() and (pos >= 0).all() and (pos <= 1).all()
    np.testing.assert_array_equal(pos, big_pos[:-1])


def test_cell_ratios_are_pinned_because_the_bitstream_depends_on_them():
    """The decoder rebuilds the cells from E alone; these exact values are part of residual format 2
    (computed without libm, so every IEEE machine gets them)."""
    assert dn_cells.cell_ratio(0.1, 20.0, 2e-5) == 1.0115771250148087
    assert dn_cells.cell_ratio(1.0, 10.0, 2e-5) == 1.258919614241744
    assert abs(dn_cells.cell_ratio(0.37, 20.0, 0.0) - 10 ** (0.37 / 20)) < 1e-15
    cells = dn_cells.DnCells(dn_cells.cell_ratio(0.1, 20.0, 2e-5), dn_cells.cell_ratio(0.1, 20.0, 2e-5))
    assert len(cells) == 855 and cells.starts[86:89].tolist() == [87, 90, 93]


def _bounded_chunk(raw: np.ndarray, e: float, offset: float = 0.0):
    model = _model()
    valid = raw > 0
    ldb = np.where(valid, to_log(np.maximum(raw, 1), Domain.AMPLITUDE_DN), 0.0).astype(np.float64)
    step = bounded.base_step(e)
    sample = Sample([ldb], [valid])
    block, trial = choose_block_params(sample, step, model.prior, dead_zone=dct_v2.DEAD_ZONE)
    params = fit_band_params(sample, step, model.prior, block, dead_zone=dct_v2.DEAD_ZONE, band_blocks=64,
                             start=trial)
    coding = dct_v2.BandCoding(params, step, e, offset, 20.0)
    out = bounded.OutputModel(Domain.AMPLITUDE_DN, np.dtype("uint16"), float(np.median(ldb[valid])), 0)
    data, rec, exc = dct_v2.encode_bounded_chunk(raw, ldb, valid, ~valid, coding, model, out)
    return data, coding, model, out, valid, exc


def _model():
    return load_model(Path(sarcodec.__file__).resolve().parents[2] / "resources" / "models" / "sarcodec_v2.npz")


@pytest.mark.parametrize("e, offset", [(0.1, 0.0), (0.25, -0.05), (1.0, 0.2)])
def test_cell_chunks_decode_to_values_within_the_bound(e, offset):
    raw = _adversarial_dn()[:256, :256]
    data, coding, model, out, valid, exc = _bounded_chunk(raw, e, offset)
    base, residual = bounded.unpack(data)
    assert residual[0] == bounded.CELL_FORMAT
    dec = dct_v2.decode_chunk(data, *raw.shape, coding, model, ~valid)
    vals, _ = out.values(dec)
    vals = np.where(exc, raw, vals)
    assert out.error_db(vals[valid], raw[valid]).max() <= e


def test_a_tampered_cell_record_is_a_container_error_not_a_traceback():
    raw = speckled_scene(96, 96, seed=36)
    data, coding, model, _, valid, _ = _bounded_chunk(raw, 0.25)
    base, residual = bounded.unpack(data)
    bad = [bytes([bounded.CELL_FORMAT]), bytes([bounded.CELL_FORMAT, 250]) + residual[2:],
           residual[:-3], residual + b"\x00\x00\x00\x01", bytes([7]) + residual[1:]]
    rng = np.random.default_rng(37)
    for _ in range(30):
        junk = bytearray(residual)
        for i in rng.integers(2, len(junk), 4):
            junk[i] = int(rng.integers(0, 256))
        bad.append(bytes(junk))
    for tampered in bad:
        try:
            dec = dct_v2.decode_chunk(bounded.pack(base, tampered), *raw.shape, coding, model, ~valid)
        except ContainerError:
            continue
        assert dec.shape == raw.shape  # a corruption ANS cannot see decodes to some values, never crashes
    for tampered in bad[:5]:
        with pytest.raises(ContainerError):
            dct_v2.decode_chunk(bounded.pack(base, tampered), *raw.shape, coding, model, ~valid)


def test_integer_chunks_of_residual_format_1_still_decode():
    """Files written before integer cells (dB steps with lattice mode for integer bands) still read."""
    raw = speckled_scene(80, 80, seed=38)
    _, coding, model, out, valid, _ = _bounded_chunk(raw, 0.25)
    ldb = to_log(raw, Domain.AMPLITUDE_DN).astype(np.float64)
    base_bytes, base = dct_v2.encode_chunk(ldb, valid, coding, model)
    d, lat = coding.residual_offset_db, coding.lattice
    grid = bounded.residual_grid(base, 0.25, d, lat)
    k, exc = bounded.choose_residual(raw, ldb, base, valid, 0.25, out, d, lat, grid)
    old = bounded.pack(base_bytes, bounded.encode_residual(k, ~np.zeros(raw.shape, bool), grid.mode))
    dec = dct_v2.decode_chunk(old, *raw.shape, coding, model, None)
    np.testing.assert_array_equal(dec, bounded.reconstruct(base, k, d, lat, grid))
