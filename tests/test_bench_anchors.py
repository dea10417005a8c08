"""The evaluation's comparison maths and nodata fill (bench/anchors.py, bench/heldout.py).

These numbers decide whether the product meets its targets, so the BD-rate and the equal-bpp RMSE
ratio are checked on curves whose answer is known exactly.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

anchors = pytest.importorskip("anchors", reason="bench/anchors.py needs scipy and GDAL")
import heldout  # noqa: E402


def _curve(scale: float) -> list[tuple[float, float]]:
    bpp = np.geomspace(0.2, 4.0, 12)
    return [(scale * b, 2.0 * b ** -0.8) for b in bpp]


def test_bd_rate_of_a_curve_needing_10_percent_fewer_bits_is_minus_10():
    ref = _curve(1.0)
    res = anchors.compare(_curve(0.9), ref)
    assert res["bd_rate_pct"] == pytest.approx(-10.0, abs=0.05)
    assert anchors.compare(ref, ref)["bd_rate_pct"] == pytest.approx(0.0, abs=1e-9)


def test_rmse_ratio_at_equal_bpp_and_outside_the_anchor_range():
    ref = _curve(1.0)
    better = [(b, 0.8 * r) for b, r in ref[2:-2]] + [(10.0, 0.01)]
    ratios = anchors.compare(better, ref)["rmse_ratio"]
    assert ratios[:-1] == pytest.approx([0.8] * (len(better) - 1), rel=1e-6)
    assert math.isnan(ratios[-1])  # 10 bpp is beyond the anchor's sweep


def test_dominated_points_do_not_bend_the_curve():
    ref = _curve(1.0)
    noisy = ref + [(1.0, 50.0)]  # a broken setting: more bits and a worse error than a cheaper one
    assert anchors.compare(noisy, ref)["bd_rate_pct"] == pytest.approx(0.0, abs=1e-9)


def test_smooth_fill_keeps_valid_pixels_and_fills_holes_within_their_range():
    rng = np.random.default_rng(0)
    code = 28000 + 500 * rng.standard_normal((40, 50))
    valid = np.ones_like(code, bool)
    valid[:, :15] = False  # a nodata swath edge
    valid[20:25, 30:35] = False
    out = heldout.smooth_fill(code, valid)
    assert np.array_equal(out[valid], code[valid])
    assert np.isfinite(out).all()
    assert code[valid].min() <= out[~valid].min() and out[~valid].max() <= code[valid].max()


def test_log_code_round_trip_is_exact_for_typical_dn_and_zero_on_nodata():
    dn = np.array([[0, 1, 2, 30], [200, 1000, 20000, 65535]], np.uint16)
    img = heldout.Image("t", "t", dn, dn > 0)
    rec = anchors.from_log_code(anchors.log_code(img), img.valid)
    assert rec[0, 0] == 0
    assert np.array_equal(rec[dn <= 1000], dn[dn <= 1000])  # the code step is finer than 1 DN there
    rel = np.abs(rec[img.valid].astype(float) / dn[img.valid] - 1.0)
    assert rel.max() <= 2.0 ** (0.5 / anchors.LOG_SCALE) - 1.0 + 0.5 / 20000  # half a code step
