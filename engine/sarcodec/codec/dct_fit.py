"""Encoder-side choices of codec v2: block size and per-band entropy parameters, by measurement.

Nothing here has to be reproducible by the decoder: whatever the encoder picks is written into the
band's side info (:class:`~sarcodec.codec.dct_entropy.BandParams`), so these fits may use floats,
``log``/``exp`` and scipy freely.

- :func:`fit_band_params` fits the spectrum shift ``theta`` (level, slope, curvature, anisotropy of the
  log spectrum relative to the learned prior) and the five context weights by maximum likelihood of
  the *discretised* model on sample windows of the band (Nelder-Mead on the ideal code length), then
  adds per-frequency corrections when the band is large enough for them to pay for themselves.
- :func:`choose_block` codes the sample windows with 8 x 8, 16 x 16 and 32 x 32 blocks and keeps the
  one with the lowest rate-distortion cost ``SSE + lambda * bits``. Measured on the held-out
  Sentinel-1 groups: 8 x 8 wins on small radar-geometry chips at high rates, 32 x 32 on geocoded
  patches at low rates, 16 x 16 in between; no single size is best everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sarcodec.codec import blockdct
from sarcodec.codec.dct_entropy import (
    _BASE_BOUNDS,
    BASE_GRID,
    BLOCK_SIZES,
    N_BASE,
    PSI_UNIT,
    WEIGHT_UNIT,
    BandParams,
    DctPrior,
    _Context,
    _nbr_mean,
    coefficients,
    context_scales,
    geometry,
    nll_bits,
    scale_index,
)

#: Rate-distortion multiplier in step^2 per bit for the block-size choice: the high-rate slope of a
#: uniform quantiser, dD/dR = -(ln 2 / 6) * step^2.
LAMBDA_BLOCK = math.log(2.0) / 6.0
#: Coefficients the Nelder-Mead loss looks at (a random subset of blocks beyond it): keeps a band's
#: fit around a second on two cores whatever the scene size. The block-size trial looks at fewer.
MAX_FIT_COEFS = 1 << 15
MAX_QUICK_COEFS = 1 << 13
#: Initial simplex of the fit: theta in index units (1/8 octave), log weights.
_SIMPLEX_STEPS = np.array([4.0, 8.0, 8.0, 8.0, 0.5, 0.5, 0.5, 0.5, 0.5])


@dataclass
class Sample:
    """Windows of one band the encoder fits on: log values (dB) and valid masks."""

    values: list[np.ndarray]
    valid: list[np.ndarray]

    @property
    def valid_pixels(self) -> int:
        return int(sum(v.sum() for v in self.valid))


def _features(q: np.ndarray, norm: np.ndarray, block: int) -> np.ndarray:
    """Context features (4, K, nbh, nbw) of known symbols, as ``dct_entropy._Context`` computes them."""
    geo = geometry(block)
    feats = np.zeros((4,) + q.shape)
    ctx = _Context(norm, np.zeros(5), geo, *q.shape[1:])

    for t in range(1, 2 * block - 1):
        ks = geo.diagonals[t - 1]
        s1 = (ctx.act[geo.nb1[ks]] + ctx.act[geo.nb2[ks]]) * 0.5
        feats[0, ks] = s1
        feats[1, ks] = _nbr_mean(s1)
        if ctx.count:
            s3 = ctx.run / ctx.count
            feats[2, ks] = s3
            feats[3, ks] = _nbr_mean(s3)
        ctx.update(t, q[ks])
    return feats


def _continuous_base(prior_table: np.ndarray, theta: np.ndarray, block: int) -> np.ndarray:
    """The base (dB) ``BandParams.base`` gives, for real-valued theta (fitting only)."""
    psi = geometry(block).psi.astype(np.float64)
    idx = prior_table + theta[0] + psi @ theta[1:] / PSI_UNIT
    return 2.0 ** (np.clip(idx, 0, N_BASE - 1) / 8.0 - 12.0)


def _symbols(sample: Sample, block: int, step: float, dead_zone: float) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for vals, valid in zip(sample.values, sample.valid, strict=True):
        if not valid.any():
            continue
        y = coefficients(vals, valid, block, step) / step
        q = blockdct.quantize(y, dead_zone)
        q[0] = np.rint(y[0])
        out.append((y, q))
    return out


def _subset(arrs: list[np.ndarray], n_blocks: int, keep: int, seed: int) -> list[np.ndarray]:
    """The same random subset of block positions from arrays shaped (..., nbh*nbw) (flattened)."""
    if n_blocks <= keep:
        return arrs
    sel = np.sort(np.random.default_rng(seed).choice(n_blocks, keep, replace=False))
    return [a[..., sel] for a in arrs]


def fit_band_params(sample: Sample, step: float, prior: DctPrior, block: int, *, dead_zone: float = 0.1,
                    band_blocks: int | None = None, quick: bool = False, seed: int = 0,
                    start: BandParams | None = None) -> BandParams:
    """Maximum-likelihood side info for one band at ``step`` (dB) with ``block`` x ``block`` blocks.

    ``band_blocks`` (blocks in the whole band) decides whether per-frequency corrections pay off: the
    bits they save on the sample are scaled up to the band and compared with their own size.
    ``quick`` (the block-size trial) fits the spectrum shift only, on fewer coefficients. ``start`` (the
    trial's result for this block size) starts the full fit there: one round instead of two.
    """
    from scipy.optimize import minimize

    table = prior.table(block).astype(np.float64)
    coded = _symbols(sample, block, step, dead_zone)
    dz_centi = int(round(dead_zone * 100))
    w0 = np.array(prior.weights, dtype=np.float64)
    if not coded:
        return BandParams(block, dz_centi, (0, 0, 0, 0), tuple(int(round(v * WEIGHT_UNIT)) for v in w0))
    ay = np.concatenate([np.abs(y[1:]).reshape(y.shape[0] - 1, -1) for y, _ in coded], axis=1)
    level = np.log2(max(float(ay.mean()) * step, 1e-6)) * 8.0 + 96.0 - float(np.mean(table[1:]))
    theta = np.array([level, 0.0, 0.0, 0.0])
    w = w0.copy()
    if start is not None and start.block == block:
        theta, w = np.array(start.theta, dtype=np.float64), start.weights
    n_blocks = ay.shape[1]
    keep = max(1, (MAX_QUICK_COEFS if quick else MAX_FIT_COEFS) // (block * block))
    for _ in range(1 if quick or start is not None else 2):
        base = _continuous_base(table, theta, block) / step
        norm = np.maximum(base, 0.3)
        feats = np.concatenate([_features(q, norm, block).reshape(4, q.shape[0], -1) for _, q in coded], axis=2)
        qa = np.concatenate([q.reshape(q.shape[0], -1) for _, q in coded], axis=1)
        f_s, q_s = _subset([feats[:, 1:], qa[1:]], n_blocks, keep, seed)

        def loss(p: np.ndarray, f_s: np.ndarray = f_s, q_s: np.ndarray = q_s, w: np.ndarray = w) -> float:
            b = _continuous_base(table, p[:4], block)[1:] / step
            ww = np.exp(np.clip(p[4:], -9.0, 3.0)) if p.size > 4 else w
            g = ww[0] + np.einsum("f,fkn->kn", ww[1:], f_s)
            return float(nll_bits(q_s, b[:, None] * g, dead_zone).sum())

        # quick (the block-size trial): the spectrum shift only, with the prior's weights
        start = theta if quick else np.r_[theta, np.log(np.maximum(w, 1e-3))]
        simplex = np.vstack([start, start + np.diag(_SIMPLEX_STEPS[: start.size])])
        res = minimize(loss, start, method="Nelder-Mead",
                       options={"maxiter": 60 if quick else 300, "xatol": 0.05, "fatol": 0.5,
                                "initial_simplex": simplex})
        theta = res.x[:4]
        if not quick:
            w = np.exp(np.clip(res.x[4:], -9.0, 3.0))
        # Only the product base * gain matters: keep the mean gain at 1 (the weights' uint8 range
        # then has its resolution where it is needed) and move the scale into the level.
        g_mean = float(np.mean(w[0] + np.einsum("f,fkn->kn", w[1:], f_s)))
        if g_mean > 0:
            w = w / g_mean
            theta = theta + np.array([8.0 * np.log2(g_mean), 0.0, 0.0, 0.0])
    theta_q = tuple(int(v) for v in np.clip(np.rint(theta), -128, 127))
    w_q = np.clip(np.rint(w * WEIGHT_UNIT), 0, 255).astype(np.int64)
    if w_q.sum() == 0:
        w_q[0] = 1
    params = BandParams(block, dz_centi, theta_q, tuple(int(v) for v in w_q))
    if quick or band_blocks is None:
        return params
    return _with_corrections(params, coded, step, prior, band_blocks)


def _with_corrections(params: BandParams, coded: list, step: float, prior: DctPrior, band_blocks: int) -> BandParams:
    """Add per-frequency corrections (1/8 octave, -16..16) when they save more bits than they cost."""
    import zlib

    block = params.block
    base = params.base(prior) / step
    shifts = np.arange(-16, 17)
    cost = np.zeros((shifts.size, block * block))
    sample_blocks = 0
    for _, q in coded:
        s = context_scales(q, base, params.weights, block)
        sample_blocks += q.shape[1] * q.shape[2]
        for i, sh in enumerate(shifts):
            m = 2.0 ** (sh / 8.0)
            cost[i] += nll_bits(q, s * m, params.dead_zone).reshape(q.shape[0], -1).sum(axis=1)
    best = shifts[np.argmin(cost, axis=0)]
    best[0] = 0
    saved = float((cost[16] - cost.min(axis=0))[1:].sum()) * band_blocks / max(sample_blocks, 1)
    idx = params.base_indices(prior)
    corr = (np.clip(idx + best, 0, N_BASE - 1) - idx).astype(np.int8)
    price = 8 * (len(zlib.compress(corr.tobytes(), 9)) + 4)
    if not corr.any() or saved < price:
        return params
    return BandParams(params.block, params.dz_centi, params.theta, params.weights_q, corr)


def sample_cost(sample: Sample, step: float, params: BandParams, prior: DctPrior) -> tuple[float, float]:
    """(ideal bits, squared dB error over valid pixels) of coding the sample with ``params``."""
    from sarcodec.codec.dct_entropy import _CENTROID, _SCALES, _dc_residual

    block = params.block
    bits = sse = 0.0
    base = params.base(prior) / step
    geo = geometry(block)
    for (_y, q), (vals, valid) in zip(_symbols(sample, block, step, params.dead_zone),
                                     [(v, m) for v, m in zip(sample.values, sample.valid, strict=True) if m.any()],
                                     strict=True):
        s = context_scales(q, base, params.weights, block)
        sidx = scale_index(s)
        bits += float(nll_bits(q[1:], _SCALES[sidx[1:]], params.dead_zone).sum())
        d = _dc_residual(q[0])
        dcs = _SCALES[scale_index(np.array([max(np.mean(np.abs(d)), 1e-9)]))[0]]
        bits += float(nll_bits(d, np.full(d.shape, dcs), 0.0).sum())
        n = np.abs(q)
        yhat = np.sign(q) * np.where(n > 0, n - 0.5 + params.dead_zone + _CENTROID[sidx], 0.0)
        yhat[0] = q[0]
        nbh, nbw = q.shape[1:]
        coef = np.zeros((nbh, nbw, block, block))
        coef[:, :, geo.zz[:, 0], geo.zz[:, 1]] = (yhat * step).transpose(1, 2, 0)
        rec = blockdct.inverse_blocks(coef, *vals.shape)
        sse += float(((rec - vals)[valid] ** 2).sum())
    return bits, sse


def choose_block(sample: Sample, step: float, prior: DctPrior, *, dead_zone: float = 0.1,
                 blocks: tuple[int, ...] = BLOCK_SIZES) -> int:
    """The block size with the lowest ``SSE + LAMBDA_BLOCK * step^2 * bits`` on the sample."""
    return choose_block_params(sample, step, prior, dead_zone=dead_zone, blocks=blocks)[0]


def choose_block_params(sample: Sample, step: float, prior: DctPrior, *, dead_zone: float = 0.1,
                        blocks: tuple[int, ...] = BLOCK_SIZES) -> tuple[int, BandParams | None]:
    """:func:`choose_block`, and the trial fit of the chosen size (a start for the full fit)."""
    best, best_j, best_params = blocks[0], math.inf, None
    for block in blocks:
        if block not in prior.tables:
            continue
        params = fit_band_params(sample, step, prior, block, dead_zone=dead_zone, quick=True)
        bits, sse = sample_cost(sample, step, params, prior)
        j = sse + LAMBDA_BLOCK * step * step * bits
        if j < best_j:
            best, best_j, best_params = block, j, params
    return best, best_params


def base_indices_of(base_db: np.ndarray) -> np.ndarray:
    """``BASE_GRID`` indices of scales in dB (training the prior)."""
    return np.searchsorted(_BASE_BOUNDS, np.asarray(base_db, dtype=np.float64)).astype(np.int64)


__all__ = ["BASE_GRID", "LAMBDA_BLOCK", "Sample", "base_indices_of", "choose_block", "choose_block_params",
           "fit_band_params",
           "sample_cost"]
