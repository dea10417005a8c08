"""SAR value domains: detection, log round trips, uncodable pixels, bounded band statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sarcodec.codec.domains import (
    L_DB_MAX,
    L_DB_MIN,
    LOG_SCALE_DB,
    BandStats,
    Domain,
    denormalise,
    detect_domain,
    estimate_band_stats,
    from_log,
    nodata_mask_of,
    normalise,
    parse_domain,
    to_log,
    uncodable_mask,
)
from sarcodec.errors import InputFileError

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

SAR_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "sar-train"


def _textured_intensity(shape=(256, 256), looks=1, seed=0) -> np.ndarray:
    """Smooth reflectivity (a few dB of texture) times gamma speckle: a plausible SAR intensity."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    refl_db = -12 + 6 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    speckle = rng.gamma(looks, 1.0 / looks, size=shape)
    return (10 ** (refl_db / 10) * speckle).astype(np.float32)


# -- detection ------------------------------------------------------------------------------------


def test_explicit_tags_win_over_values():
    values = np.array([-12.0, -3.0, -20.0], np.float32)
    assert detect_domain("float32", values, {"SAR_DOMAIN": "intensity"}) is Domain.INTENSITY
    assert detect_domain("float32", values, {"sarcodec_domain": "amplitude"}) is Domain.AMPLITUDE
    # ours wins over the dataset's own tag; the user's override wins over both
    tags = {"SAR_DOMAIN": "db", "SARCODEC_DOMAIN": "intensity"}
    assert detect_domain("float32", values, tags) is Domain.INTENSITY
    assert detect_domain("float32", values, tags, override="amplitude") is Domain.AMPLITUDE
    # a tag value we do not know is ignored, detection runs
    assert detect_domain("float32", values, {"SAR_DOMAIN": "sigma-nought"}) is Domain.DB


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "uint32", "int32"])
def test_integers_are_amplitude_dn(dtype):
    assert detect_domain(dtype, np.array([1, 2, 3], dtype=dtype), {}) is Domain.AMPLITUDE_DN


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "int8", "bool", "int64", "uint64", "float16"])
def test_unsupported_dtypes_name_the_dtype(dtype):
    with pytest.raises(InputFileError, match=np.dtype(dtype).name):
        detect_domain(dtype, np.zeros(3, dtype=dtype), {"SAR_DOMAIN": "intensity"})


def test_float_values_decide_between_db_intensity_amplitude():
    intensity = _textured_intensity(looks=1)
    assert detect_domain("float32", intensity.ravel(), {}) is Domain.INTENSITY
    assert detect_domain("float32", np.sqrt(intensity).ravel(), {}) is Domain.AMPLITUDE
    assert detect_domain("float32", (10 * np.log10(intensity)).ravel(), {}) is Domain.DB
    # multilooked intensity keeps enough spread
    assert detect_domain("float64", _textured_intensity(looks=4).ravel().astype(np.float64), {}) is (
        Domain.INTENSITY
    )
    # a few negative values (thermal noise removal) do not make a linear raster dB
    noisy = intensity.ravel().copy()
    noisy[:5] = -1e-4
    assert detect_domain("float32", noisy, {}) is Domain.INTENSITY
    # nothing valid at all: still a decision, no crash
    assert detect_domain("float32", np.array([], np.float32), {}) in set(Domain)


def test_negative_values_outside_db_range_are_refused():
    with pytest.raises(InputFileError, match="dB"):
        detect_domain("float32", np.linspace(-1e6, 1e6, 1000), {})


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "rel, expected",
    [
        ("airsar_intensity/sanfrancisco_T11_T22_T33.tif", Domain.INTENSITY),
        ("s1_grd_db/sen1floods11_spain_vv_vh_db.tif", Domain.DB),
        ("slc_amplitude/merlin_test_amplitude.tif", Domain.AMPLITUDE),
    ],
)
def test_detection_on_real_data_without_tags(rel, expected):
    path = SAR_TRAIN / rel
    if not path.exists():
        pytest.skip("shared SAR data not available")
    with rasterio.open(path) as ds:
        band = ds.read(1)
        valid = band[~nodata_mask_of(band, ds.nodata)]
        assert detect_domain(ds.dtypes[0], valid, {}) is expected
        assert detect_domain(ds.dtypes[0], valid, ds.tags()) is expected


def test_parse_domain_aliases_and_errors():
    assert parse_domain("DB") is Domain.DB
    assert parse_domain("amplitude-dn") is Domain.AMPLITUDE_DN
    assert parse_domain("power") is Domain.INTENSITY
    assert str(Domain.DB) == "db" and Domain("db") == "db"
    with pytest.raises(ValueError, match="unknown SAR domain"):
        parse_domain("phase")


# -- forward / inverse ----------------------------------------------------------------------------


def test_to_log_definitions():
    assert to_log(np.array([10.0]), "amplitude")[0] == pytest.approx(20.0)
    assert to_log(np.array([100], np.uint16), "amplitude_dn")[0] == pytest.approx(40.0)
    assert to_log(np.array([0.01]), "intensity")[0] == pytest.approx(-20.0)
    assert to_log(np.array([-7.5]), "db")[0] == pytest.approx(-7.5)
    assert to_log(np.array([1.0]), "db").dtype == np.float32
    out = to_log(np.array([0.0, -1.0, np.nan]), "intensity")
    assert not np.any(np.isfinite(out))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "uint32", "int32"])
def test_dn_round_trip_is_exact(dtype):
    hi = min(np.iinfo(dtype).max, 200_000)
    dn = np.unique(np.linspace(1, hi, 5000).astype(dtype))
    back = from_log(to_log(dn, "amplitude_dn"), "amplitude_dn", dtype, 0)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, dn)


@pytest.mark.parametrize("domain", ["amplitude", "intensity", "db"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_round_trip_is_close(domain, dtype):
    values = _textured_intensity().ravel().astype(dtype)
    if domain == "amplitude":
        values = np.sqrt(values)
    elif domain == "db":
        values = (10 * np.log10(values)).astype(dtype)
    back = from_log(to_log(values, domain), domain, dtype, None)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_allclose(back, values, rtol=2e-6, atol=1e-5 if domain == "db" else 0)


def test_valid_pixels_never_decode_to_nodata():
    ldb = np.array([-300.0, -50.0, 0.0, 3.0, 96.33, 500.0, np.nan, -np.inf, np.inf])
    dn = from_log(ldb, "amplitude_dn", "uint16", 0)
    assert dn.min() >= 1
    dn = from_log(ldb, "amplitude_dn", "uint16", 65535)
    assert dn.max() <= 65534 and dn.min() >= 1
    dn = from_log(np.array([0.0, 0.01]), "amplitude_dn", "uint16", 1)  # DN 1 is nodata here
    assert not np.any(dn == 1)
    db = from_log(np.array([0.0, -0.0, -12.0]), "db", "float32", 0.0)
    assert not np.any(db == 0.0)
    lin = from_log(ldb, "intensity", "float32", 0.0)
    assert np.all(lin > 0) and np.all(np.isfinite(lin))
    db = from_log(ldb, "db", "float64", -9999.0)
    assert np.all(db >= L_DB_MIN) and np.all(db <= L_DB_MAX)


def test_from_log_clips_to_dtype_range():
    out = from_log(np.array([200.0, -200.0]), "amplitude_dn", "uint8", None)
    assert out.tolist() == [255, 1]
    out = from_log(np.array([200.0]), "intensity", "float32", None)
    assert np.isfinite(out).all()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.uint16, st.integers(1, 300)), st.sampled_from([None, 0, 1, 65535]))
def test_dn_round_trip_property(dn, nodata):
    nd_mask = nodata_mask_of(dn, nodata)
    codable = ~nd_mask & ~uncodable_mask(dn, "amplitude_dn", nd_mask)
    back = from_log(to_log(dn, "amplitude_dn"), "amplitude_dn", "uint16", nodata)
    if nodata is not None:
        assert not np.any(back == nodata)
    ok = codable & (dn != nodata if nodata is not None else True)
    np.testing.assert_array_equal(back[ok], dn[ok])


# -- uncodable pixels -----------------------------------------------------------------------------


def test_uncodable_mask_linear_and_db():
    dn = np.array([0, 1, 100, 0], np.uint16)
    assert uncodable_mask(dn, "amplitude_dn", dn == 0).tolist() == [False] * 4  # 0 is nodata
    assert uncodable_mask(dn, "amplitude_dn", None).tolist() == [True, False, False, True]  # 0 is data
    f = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e-30, 1e-3, 1e30], np.float64)
    assert uncodable_mask(f, "intensity").tolist() == [True, True, True, True, True, True, False, True]
    assert uncodable_mask(f, "amplitude").tolist() == [True, True, True, True, True, True, False, True]
    d = np.array([np.nan, -np.inf, -0.0, -35.0, 12.0, -1e6, 1e6], np.float32)
    assert uncodable_mask(d, "db").tolist() == [True, True, False, False, False, True, True]
    nd = np.array([True, False, False, False, False, False, False])
    assert uncodable_mask(d, "db", nd).tolist() == [False, True, False, False, False, True, True]


def test_nodata_mask_of():
    a = np.array([0.0, np.nan, 1.0], np.float32)
    assert nodata_mask_of(a, None).tolist() == [False, False, False]
    assert nodata_mask_of(a, float("nan")).tolist() == [False, True, False]
    assert nodata_mask_of(a, 0).tolist() == [True, False, False]
    assert nodata_mask_of(np.array([0, 5], np.uint16), -9999).tolist() == [False, False]


def test_normalise_inverse():
    ldb = np.array([-30.0, -12.5, 0.0, 40.0], np.float32)
    x = normalise(ldb, -12.5)
    assert x.dtype == np.float32
    assert x[1] == 0.0 and x[0] == pytest.approx(-17.5 / LOG_SCALE_DB)
    np.testing.assert_allclose(denormalise(x, -12.5), ldb, atol=1e-5)


# -- band statistics ------------------------------------------------------------------------------


def test_band_stats_from_callable_reads_a_bounded_sample():
    height, width = 3000, 2000
    rng = np.random.default_rng(1)
    tile = (rng.gamma(1.0, 1.0, size=(64, 64)) * 400).astype(np.uint16) + 1
    read_pixels = []

    def read(r0, c0, h, w):
        read_pixels.append(h * w)
        out = np.resize(tile, (h, w)).copy()
        if r0 < 100:
            out[:] = 0  # a nodata border
        return out[None]  # (1, h, w) like a RasterSource raw read

    stats = estimate_band_stats(read, 1, "amplitude_dn", nodata=0, dtype="uint16", height=height,
                                width=width, max_pixels=100_000)
    assert sum(read_pixels) <= 110_000
    assert len(read_pixels) > 10  # spread over the scene, not one corner
    ldb = 20 * np.log10(tile.astype(np.float64))
    assert stats.offset_db == pytest.approx(np.median(ldb), abs=0.3)
    assert 0.75 < stats.valid_fraction < 1.0  # a coarse estimate: the first window row is border
    assert stats.uncodable_fraction == 0.0
    assert stats.dtype_min == 0 and stats.dtype_max == 65535
    assert stats.min_db <= stats.p01_db <= stats.offset_db <= stats.p99_db <= stats.max_db


def test_band_stats_from_dataset(tmp_path):
    values = _textured_intensity((300, 260))
    values[:10] = np.nan
    values[50, 50] = -1.0  # uncodable, not nodata
    path = tmp_path / "i.tif"
    with rasterio.open(path, "w", driver="GTiff", width=260, height=300, count=1, dtype="float32",
                       nodata=float("nan"), tiled=True, blockxsize=64, blockysize=64) as ds:
        ds.write(values, 1)
    with rasterio.open(path) as ds:
        stats = estimate_band_stats(ds, 1, "intensity")
        small = estimate_band_stats(ds, 1, "intensity", max_pixels=5000)
    valid = values[np.isfinite(values) & (values > 0)]
    assert stats.offset_db == pytest.approx(np.median(10 * np.log10(valid)), abs=0.01)
    assert stats.valid_fraction == pytest.approx(290 / 300, abs=1e-6)
    assert stats.uncodable_fraction == pytest.approx(1 / (290 * 260), rel=1e-3)
    assert small.count <= 5000 and small.offset_db == pytest.approx(stats.offset_db, abs=1.5)


def test_band_stats_all_nodata_and_json_round_trip():
    stats = estimate_band_stats(lambda r, c, h, w: np.zeros((h, w), np.uint16), 1, "amplitude_dn",
                                nodata=0, dtype="uint16", height=10, width=10)
    assert stats.count == 0 and stats.valid_fraction == 0.0
    text = json.dumps(stats.to_dict(), allow_nan=False)
    assert BandStats.from_dict(json.loads(text)) == stats
    bad = stats.to_dict()
    bad["offset_db"] = "x"
    with pytest.raises(ValueError):
        BandStats.from_dict(bad)
    del bad["offset_db"]
    with pytest.raises(ValueError):
        BandStats.from_dict(bad)
    with pytest.raises(ValueError):
        BandStats.from_dict([1, 2])
