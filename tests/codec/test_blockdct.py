"""v2 block-DCT codec core: exact symbol round trip, determinism, edge sizes, damaged data."""

from __future__ import annotations

import numpy as np
import pytest

from sarcodec.codec import blockdct, dct_entropy
from sarcodec.errors import ContainerError


def _speckled(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Correlated log-speckle on a smooth field, in log2(DN)*4000 code units."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    field = 30000 + 3000 * np.sin(yy / 23.0) * np.cos(xx / 31.0)
    n = rng.standard_normal((h + 2, w + 2))
    n = (n[:-2, :-2] + n[1:-1, 1:-1] + n[2:, 2:] + n[1:-1, :-2]) / 2.0
    return field + 1400 * n


def _roundtrip(x: np.ndarray, valid: np.ndarray, step: float, block: int = 16):
    params = dct_entropy.BandParams.from_bytes(
        dct_entropy.fit_band_params(x, valid, step, block=block).to_bytes())
    data, q = dct_entropy.encode_chunk(x, valid, step, params, return_symbols=True)
    res = dct_entropy.decode_symbols(data, *x.shape, params)
    return params, data, q, res


@pytest.mark.parametrize("shape", [(1, 1), (17, 300), (64, 64), (33, 47)])
@pytest.mark.parametrize("block", [16, 32])
def test_symbols_round_trip_exactly(shape, block):
    x = _speckled(*shape)
    valid = np.ones(shape, dtype=bool)
    params, data, q, res = _roundtrip(x, valid, 400.0, block)
    assert res is not None
    np.testing.assert_array_equal(res[0], q)
    rec = dct_entropy.decode_chunk(data, *shape, 400.0, params)
    assert rec.shape == shape
    # Quantisation error per pixel is bounded by the step in RMS terms.
    assert np.sqrt(np.mean((rec - x) ** 2)) < 400.0


def test_decode_is_deterministic_and_error_shrinks_with_step():
    x = _speckled(96, 130, seed=3)
    valid = np.ones(x.shape, dtype=bool)
    errs = []
    for step in (2000.0, 500.0, 100.0):
        params = dct_entropy.fit_band_params(x, valid, step)
        data = dct_entropy.encode_chunk(x, valid, step, params)
        a = dct_entropy.decode_chunk(data, *x.shape, step, params)
        b = dct_entropy.decode_chunk(bytes(data), *x.shape, step, dct_entropy.BandParams.from_bytes(params.to_bytes()))
        np.testing.assert_array_equal(a, b)
        errs.append(np.sqrt(np.mean((a - x) ** 2)))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.35 * 100.0 + 5


def test_constant_chunk_is_tiny_and_exact():
    x = np.full((40, 70), 31234.0)
    valid = np.ones(x.shape, dtype=bool)
    params = dct_entropy.fit_band_params(x, valid, 300.0)
    data = dct_entropy.encode_chunk(x, valid, 300.0, params)
    rec = dct_entropy.decode_chunk(data, *x.shape, 300.0, params)
    assert len(data) < 40
    assert np.max(np.abs(rec - x)) <= 300.0


def test_all_nodata_chunk_decodes_to_zeros():
    x = _speckled(20, 20)
    valid = np.zeros(x.shape, dtype=bool)
    params = dct_entropy.fit_band_params(_speckled(20, 20), np.ones(x.shape, bool), 300.0)
    data = dct_entropy.encode_chunk(x, valid, 300.0, params)
    assert len(data) <= 8
    np.testing.assert_array_equal(dct_entropy.decode_chunk(data, 20, 20, 300.0, params), 0.0)


def test_nodata_is_filled_smoothly_and_valid_pixels_kept():
    x = _speckled(64, 64)
    valid = np.ones(x.shape, dtype=bool)
    valid[:, :20] = False
    x_bad = np.where(valid, x, 0.0)  # a hard 0 next to ~30000 must not leak into valid pixels
    params = dct_entropy.fit_band_params(x_bad, valid, 300.0)
    rec = dct_entropy.decode_chunk(dct_entropy.encode_chunk(x_bad, valid, 300.0, params), 64, 64, 300.0, params)
    assert np.sqrt(np.mean((rec - x)[valid] ** 2)) < 300.0


def test_extreme_values_use_escapes_and_round_trip():
    x = _speckled(32, 48)
    x[5, 5] = 64000.0  # brightest uint16 DN
    x[10:12, 30:40] = 0.0  # DN 1
    valid = np.ones(x.shape, dtype=bool)
    params, data, q, res = _roundtrip(x, valid, 20.0)
    assert np.abs(q).max() >= dct_entropy.ESC  # escapes exercised
    np.testing.assert_array_equal(res[0], q)


def test_damaged_chunk_raises_container_error():
    x = _speckled(32, 32)
    valid = np.ones(x.shape, dtype=bool)
    params = dct_entropy.fit_band_params(x, valid, 300.0)
    data = bytearray(dct_entropy.encode_chunk(x, valid, 300.0, params))
    data[-1] ^= 0xFF
    with pytest.raises(ContainerError):
        dct_entropy.decode_chunk(bytes(data), 32, 32, 300.0, params)
    with pytest.raises(ContainerError):
        dct_entropy.decode_chunk(bytes(data[:3]), 32, 32, 300.0, params)


def test_transform_is_orthonormal_and_inverts():
    x = _speckled(37, 50)
    c = blockdct.forward_blocks(x, 16)
    np.testing.assert_allclose(blockdct.inverse_blocks(c, 37, 50), x, atol=1e-7)
    m = blockdct.dct_matrix(16)
    np.testing.assert_allclose(m @ m.T, np.eye(16), atol=1e-12)


def test_intensity_offset_removes_bias():
    rng = np.random.default_rng(1)
    orig = 30000 + 1400 * rng.standard_normal((50, 50))
    rec = orig - 300 * np.abs(rng.standard_normal((50, 50)))
    valid = np.ones(orig.shape, bool)
    off = blockdct.intensity_offset(orig, rec, valid, 4000.0)
    ratio = np.mean(np.exp2(2 * (rec + off) / 4000)) / np.mean(np.exp2(2 * orig / 4000))
    assert abs(ratio - 1) < 1e-9
