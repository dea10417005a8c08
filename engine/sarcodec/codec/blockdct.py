"""Block DCT transform, dead-zone quantiser and Laplace-centroid reconstruction (codec v2 core).

Why it looks like this (measured, see ``../shared/CODEC_NOTES.md`` and ``bench/v2_codec.py``):

- Sentinel-1 products are band-limited (resampled geocoded products, correlated GRD speckle), so a
  *large* orthonormal block DCT (16x16 or 32x32) resolves the spectral shape that 8x8 blocks and
  wavelets miss. The transform is orthonormal, so a uniform step in the coefficient domain is a
  uniform step in the log-pixel domain and the quantisation MSE carries over one to one.
- Values are log-domain samples (code units of ``log2(DN) * 4000`` or dB; the coder does not care).
  Nodata is filled smoothly first (:func:`smooth_fill`): a hard jump at a swath edge costs bits in
  every block it touches, a smooth fill costs almost none. The caller restores nodata from its mask.
- The quantiser has a small dead zone: ``q = sign(y) * floor(|y| + 0.5 - dz)`` with ``y = c / step``,
  so the zero bin is ``2 * (0.5 + dz)`` steps wide. Nonzero bins are reconstructed at the centroid
  of the coefficient's own (decoded) Laplace model inside the bin, not at the bin centre: for a
  Laplace of scale ``s`` (in steps) the centroid of ``[L, L + 1)`` is ``L + s - 1 / (exp(1/s) - 1)``.
  The DC coefficient uses plain rounding (dz = 0) and midpoint reconstruction.
- Ragged chunk edges are padded by edge replication to a multiple of the block size; only the
  ``H x W`` pixels are returned by :func:`inverse_blocks`.
"""

from __future__ import annotations

import math

import numpy as np


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``C`` (n x n, float64): coefficients are ``C @ X @ C.T``."""
    k = np.arange(n).reshape(-1, 1)
    i = np.arange(n).reshape(1, -1)
    c = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def zigzag_order(n: int) -> np.ndarray:
    """(n*n, 2) int frequency coordinates (u, v) sorted by u + v, then u: DC first.

    Every frequency's neighbours (u-1, v) and (u, v-1) come before it, which is what the
    frequency-major context model needs.
    """
    uv = [(u, v) for u in range(n) for v in range(n)]
    uv.sort(key=lambda t: (t[0] + t[1], t[0]))
    return np.array(uv, dtype=np.int64)


def smooth_fill(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels with a smooth mask-weighted multi-scale average of the valid ones.

    A pyramid of 2x2 mask-weighted means is built until every cell has support; going back down,
    each invalid pixel takes the (box-smoothed) coarser estimate. Valid pixels are returned
    unchanged. With no valid pixel at all the result is all zeros.
    """
    x = np.asarray(x, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if valid.all():
        return x.copy()
    if not valid.any():
        return np.zeros_like(x)
    levels: list[tuple[np.ndarray, np.ndarray]] = []
    v = np.where(valid, x, 0.0)
    w = valid.astype(np.float64)
    while True:
        levels.append((v, w))
        if (w > 0).all() or (v.shape[0] == 1 and v.shape[1] == 1):
            break
        h, wd = v.shape
        ph, pw = h % 2, wd % 2
        vp = np.pad(v, ((0, ph), (0, pw)))
        wp = np.pad(w, ((0, ph), (0, pw)))
        v = vp.reshape(vp.shape[0] // 2, 2, vp.shape[1] // 2, 2).sum(axis=(1, 3))
        w = wp.reshape(wp.shape[0] // 2, 2, wp.shape[1] // 2, 2).sum(axis=(1, 3))
    # Coarsest level: mean estimate everywhere (it has support everywhere or is 1x1).
    v, w = levels[-1]
    est = np.where(w > 0, v / np.maximum(w, 1e-300), (v.sum() / w.sum()))
    for v, w in reversed(levels[:-1]):
        up = np.repeat(np.repeat(est, 2, axis=0), 2, axis=1)[: v.shape[0], : v.shape[1]]
        up = _box3(up)
        est = np.where(w > 0, v / np.maximum(w, 1e-300), up)
        # Partially supported cells blend towards the coarse estimate (fewer valid pixels).
        if w.max() > 1:
            full = w.max()
            a = w / full
            est = np.where(w > 0, a * (v / np.maximum(w, 1e-300)) + (1 - a) * up, up)
    return np.where(valid, x, est)


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 box mean with edge replication (smoothing of the upsampled fill)."""
    p = np.pad(a, 1, mode="edge")
    s = sum(p[i : i + a.shape[0], j : j + a.shape[1]] for i in range(3) for j in range(3))
    return s / 9.0


def forward_blocks(x: np.ndarray, block: int) -> np.ndarray:
    """Orthonormal block DCT of an H x W image -> (nbh, nbw, block, block) float64 coefficients."""
    h, w = x.shape
    nbh, nbw = -(-h // block), -(-w // block)
    xp = np.pad(np.asarray(x, dtype=np.float64), ((0, nbh * block - h), (0, nbw * block - w)), mode="edge")
    c = dct_matrix(block)
    blocks = xp.reshape(nbh, block, nbw, block).transpose(0, 2, 1, 3)
    return np.einsum("ui,abij,vj->abuv", c, blocks, c, optimize=True)


def inverse_blocks(coef: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of :func:`forward_blocks`, cropped to ``height x width`` (float64)."""
    nbh, nbw, block, _ = coef.shape
    c = dct_matrix(block)
    blocks = np.einsum("ui,abuv,vj->abij", c, coef, c, optimize=True)
    return blocks.transpose(0, 2, 1, 3).reshape(nbh * block, nbw * block)[:height, :width]


def quantize(y: np.ndarray, dead_zone: float) -> np.ndarray:
    """Dead-zone uniform quantiser of ``y`` (already divided by the step) -> int64 symbols."""
    return (np.sign(y) * np.floor(np.abs(y) + 0.5 - dead_zone)).astype(np.int64)


def centroid_offset(scale: np.ndarray) -> np.ndarray:
    """Offset of a Laplace(scale)'s centroid above the lower edge of a unit bin, in [0, 0.5).

    ``s - 1 / (exp(1/s) - 1)``; tends to 0.5 for large ``s`` and to ``s`` for small ``s``.
    """
    s = np.asarray(scale, dtype=np.float64)
    inv = 1.0 / s
    with np.errstate(over="ignore"):
        off = s - 1.0 / np.expm1(np.minimum(inv, 700.0))
    return np.clip(off, 0.0, 0.5)


def dequantize(q: np.ndarray, scale: np.ndarray, dead_zone: float) -> np.ndarray:
    """Reconstruct ``y_hat`` (steps) from symbols ``q`` at the Laplace centroid of each bin."""
    n = np.abs(q).astype(np.float64)
    lower = n - 0.5 + dead_zone
    mag = np.where(n > 0, lower + centroid_offset(scale), 0.0)
    return np.sign(q) * mag


def intensity_offset(orig: np.ndarray, rec: np.ndarray, valid: np.ndarray, units_per_log2: float) -> float:
    """Log-domain offset (value units) that makes mean intensity (DN^2) of ``rec`` equal ``orig``'s.

    Log-domain coding under-estimates intensity (E[log x] < log E[x]); adding this offset to the
    decoded log values removes the bias. ``units_per_log2`` is 4000 for ``log2(DN) * 4000`` codes.
    """
    m = np.asarray(valid, dtype=bool)
    if not m.any():
        return 0.0
    k = 2.0 / units_per_log2  # intensity = 2 ** (k * value)
    o = orig[m] * k
    r = rec[m] * k
    ref = o.max()
    num = np.mean(np.exp2(o - ref))
    den = np.mean(np.exp2(r - ref))
    return float(np.log2(num / den) / k)
