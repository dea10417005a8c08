"""Diagnostics before designing codec v2 (issue 12, "Deliver 2"): where do the bits go, and what is a cheap floor?

Usage: ``.venv/bin/python bench/diagnostics.py [--groups val,heldout_grd_dn,heldout_geocoded] [--no-write]``;
prints one markdown table per diagnostic and writes ``bench/results/diagnostics.md`` and ``diagnostics.json``.
A few CPU minutes on one thread (the heavy parts are numpy; torch only runs v1's analysis and hyperprior).
``SARCODEC_ENGINE=DIR`` runs against another engine tree (e.g. ``git archive HEAD engine | tar -x -C /tmp/e``
and ``SARCODEC_ENGINE=/tmp/e/engine``) when the working tree's v2 core is mid-rewrite; the results record
which engine files ran and whether they match the commit.

Why these three measurements, and how each is made:

1. **Ideal code length against real bytes.** Before blaming (or crediting) a probability model, check that
   the entropy coder realises it. v1: every chunk of ``rd.sarcodec_code`` (the same analysis, the same
   32 x 32-latent chunks) is coded by the shipped ``LatentCoder``; the same symbols (``z`` and
   ``q = round(y - mu)``, rebuilt through the coder's own float64 parameter path and checked against the
   coder's ``y_hat``) are scored by ``-log2 p`` under the same tables (the z prior's ``pmf_table`` and
   the 64-entry Gaussian table). v2: the shipped coder (``dct_v2.encode_chunk`` with the default model, block
   size chosen per band): ``-log2 p`` of its decoded symbols under its own tables against the real chunk
   bytes at qualities 3, 5, 7, 9 (band side info reported apart). Overhead = real - ideal, split into the
   fixed chunk header and the rest (ANS flush, fixed-point probabilities, escapes).
2. **How many v1 latent channels carry rate.** A critically sampled 256-channel latent only earns its
   decoder cost if the channels are used. Per-channel share of the ideal ``y`` bits (the same scoring as
   in 1) on ``val`` at quality 5 (top) and 3 (default); how many channels hold 50/90/99 % of the bits and
   how many hold essentially nothing (< 0.1 % each).
3. **A fixed CDF 9/7 wavelet with a context-adaptive Laplace rule, no learning** -- the cheap floor any
   v2 design must beat (CODEC_NOTES.md reports such a prototype at about -6 % against the filled
   JPEG2000 on one scene; this re-measures it on the project's three evaluation groups):

   - the log code ``log2(DN) * 4000`` with nodata filled by ``blockdct.smooth_fill``, its rounded mean
     removed (16 side bits);
   - CDF 9/7 lifting with whole-sample symmetric extension (any size), 5 levels, fewer on small chips
     (``clip(floor(log2(min side)) - 2, 1, 5)``: the coarsest band keeps >= 4 samples a side); the lifting
     output is scaled to be orthonormal-ish and every subband's quantiser step is ``step / n_b`` with
     ``n_b`` its synthesis (basis-function L2) norm, measured numerically once, so every subband's
     quantisation error weighs the same in the pixel domain;
   - uniform dead-zone quantiser (``blockdct.quantize``, dead zone 0.15 step, so the zero bin is 1.3
     steps wide) with Laplace-centroid reconstruction (``blockdct.dequantize``) under each coefficient's
     own decoded scale;
   - the rule: coefficient ``(i, j)`` of a detail subband is a discretised Laplace over exactly the
     quantiser's bins with scale (in steps) ``s = a0 + a1 * m_nb + a2 * |q_parent|``, where ``m_nb`` is
     the mean ``|q|`` of the causal neighbours W, N, NW, NE (those inside the subband) and ``q_parent``
     the coefficient at ``(i // 2, j // 2)`` of the same orientation one level coarser (none at the
     coarsest level: ``a2`` dropped). ``a0 >= 0.02, a1, a2 >= 0`` are fitted per subband by maximum
     likelihood on the image itself (L-BFGS-B on the exact discretised likelihood), rounded to float16
     and the rate is recomputed with the rounded values; they cost 16 side bits each (+1 flag bit per
     subband; an all-zero subband sends only the flag). The coarsest LL band is rounded (no dead zone),
     DPCM-coded (left neighbour, first column from above) under one fitted Laplace (16 bits);
   - **contexts**: the main curve (``raster``) codes each subband in raster order. Its contexts (W, N,
     NW, NE, parent) are computed for the whole subband at once with array shifts; they only read
     coefficients that precede the current one in raster order, so the ideal code length is exactly
     what a serial raster-order decoder would achieve (that decoder would be row-serial, which is slow
     in Python but not a modelling problem). A second curve (``checkerboard``) is the parallel variant:
     pass 1 codes the (i + j) even positions with the parent only (``b0 + b2 * |q_parent|``), pass 2 the
     odd positions with the mean ``|q|`` of W, N, E, S (all from pass 1) and the parent; both passes are
     fully vectorised in a decoder too, so its cost against ``raster`` is what parallel decoding costs.
     ``shared`` keeps the raster contexts but shares the two context weights across the subbands of the
     image (``s = base_b * (1 + w1 * m_nb / max(base_b, 0.3) + w2 * |q_parent| / max(base_parent, 0.3))``,
     one base per subband + 2 weights per image), to see what the side bits of per-subband weights
     cost on chips. ``none`` drops every context (one Laplace per subband, ``a0`` only): its distance to
     the others is what the context rule earns;
   - rate = **ideal code length** (no entropy coder is run: from diagnostic 1 the constriction ANS adds
     ~1 % plus a few bytes per stream) + side bits (step as float32, mean, intensity gain, LL scale,
     per-subband flags and parameters), over ALL pixels like every codec in ``make eval``;
   - distortion exactly like the anchors': decoded log code plus an intensity-gain offset
     (``blockdct.intensity_offset``, stored in 1/8 code units, 16 bits) that makes the mean DN^2 match,
     back to uint16 DN with ``round(2^(code / 4000))`` clipped to [1, 65535], scored by
     ``heldout.measure`` (RMSE of 20*log10(DN) over valid pixels, pooled over the bands of a group);
   - comparison: ``anchors.compare`` (the BD-rate and equal-bpp RMSE ratio ``make eval`` uses) against the
     filled JPEG2000-on-log and JPEG XL-on-log curves cached by ``bench/v2_codec.py`` in
     ``bench/results/v2_anchors_<group>.json`` (computed with ``bench/anchors.py`` when the cache is
     missing). The v2 16 x 16 block-DCT core's real-byte curve (``bench/results/v2_b16_dz10.json``) is
     compared the same way for reference when present.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# $SARCODEC_ENGINE pins the engine (e.g. an unpacked `git archive HEAD engine`) while others edit the tree;
# the package is imported first so that heldout.py's own sys.path entry cannot shadow it.
ENGINE = Path(os.environ.get("SARCODEC_ENGINE", REPO / "engine")).resolve()
sys.path.insert(0, str(ENGINE))
import sarcodec  # noqa: E402, F401

sys.path.insert(1, str(REPO / "bench"))

import anchors  # noqa: E402
import heldout  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import minimize, minimize_scalar  # noqa: E402

from sarcodec.codec import blockdct  # noqa: E402
from sarcodec.codec.entropy import Y_RADIUS, Z_RADIUS, LatentCoder, gaussian_pmf_table, scale_table  # noqa: E402
from sarcodec.codec.model import SarCodec, load_checkpoint  # noqa: E402
from sarcodec.training.data import pad_to_multiple  # noqa: E402

try:  # the v2 core is being reworked concurrently; diagnostics 2 and 3 do not need it
    from sarcodec.codec import dct_entropy
except Exception as _exc:  # noqa: BLE001
    dct_entropy = None
    DCT_IMPORT_ERROR = f"{type(_exc).__name__}: {_exc}"

LOG_SCALE = 4000.0
V1_CHUNK = 32  # latents per chunk side, as bench/rd.py
V1_CHUNK_FIELD = 4  # bytes rd.py counts per chunk (length field) on top of the chunk bytes
V1_IMAGE_HEADER = 5  # bytes rd.py counts per image (float32 offset + quality)
V2_STEPS = [6.0, 3.0, 1.5, 0.75]  # dB: qualities 3, 5, 7, 9 of the default model
V2_DEAD_ZONE = 0.10
V2_CHUNK = 512
V2_CHUNK_HEADER = 2
WAVELET_STEPS = [float(s) for s in np.geomspace(8000.0, 200.0, 8)]
WAVELET_DEAD_ZONE = 0.15
MAX_LEVELS = 5
PARAM_BITS = 16
S_MIN = 0.02
RATIO_BPP = [0.25, 0.5, 1.0, 2.0, 3.0]
LN2 = math.log(2.0)
ANS_MIN_PROB = 2.0 ** -24  # constriction's fixed-point precision for the stack AnsCoder


# ====================================================================== 1 + 2: v1 latents
@dataclass
class V1Stats:
    """Pooled sums for one quality of v1 on a group."""

    quality: int
    pixels: int = 0
    chunks: int = 0
    images: int = 0
    ideal_y: float = 0.0
    ideal_z: float = 0.0
    float_y: float = 0.0
    float_z: float = 0.0
    tail_symbols: int = 0
    tail_float_bits: float = 0.0
    symbols: int = 0
    z_tail_symbols: int = 0
    z_symbols: int = 0
    z_tail_coded_bits: float = 0.0
    chunk_bits: float = 0.0
    channel_bits: np.ndarray | None = None
    channel_nonzero: np.ndarray | None = None


def _log_tables(pmf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log2 of the normalised float64 table and of its leaky version (every entry >= 2^-24, renormalised)."""
    p = pmf / pmf.sum(axis=1, keepdims=True)
    leaky = np.maximum(p, ANS_MIN_PROB)
    return np.log2(np.maximum(p, 1e-300)), np.log2(leaky / leaky.sum(axis=1, keepdims=True))


class V1Scorer:
    """The shipped LatentCoder plus the float64 tables it builds, to score its symbols ideally."""

    def __init__(self, model: SarCodec) -> None:
        self.model = model
        self.coder = LatentCoder(model)
        with torch.no_grad():
            zp = copy.deepcopy(model.z_prior).to("cpu", torch.float64).eval().pmf_table(Z_RADIUS).numpy()
        yp = gaussian_pmf_table(scale_table(), Y_RADIUS)
        # Two scorings of the same symbols: the float64 tables as computed, and the tables as the coder
        # can realise them (constriction gives every symbol at least 2^-24: a leaky fixed-point model).
        self.z_logp, self.z_logp_leaky = _log_tables(zp)
        self.y_logp, self.y_logp_leaky = _log_tables(yp)

    def latents(self, img: heldout.Image, quality: int) -> np.ndarray:
        """The gained, unrounded latents of ``img`` exactly as ``rd.sarcodec_code`` computes them."""
        L = heldout.to_db(img.dn)
        offset = float(np.float32(np.median(L[img.valid])))
        x = np.where(img.valid, (L - offset) / 10.0, 0.0).astype(np.float32)
        xp = pad_to_multiple(x, self.model.stride)
        with torch.inference_mode():
            return self.model.analysis(torch.from_numpy(np.ascontiguousarray(xp))[None, None], quality)[0].numpy()

    @torch.no_grad()
    def symbols(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(z symbols, scale index, q, y_hat) of one chunk, mirroring ``LatentCoder.encode_chunk``."""
        c = self.coder
        _, h, w = y.shape
        hz, wz = c._grid(h, w)
        s = c.hyper_stride
        y64 = y.astype(np.float64)
        ypad = np.pad(y64, ((0, 0), (0, hz * s - h), (0, wz * s - w)), mode="edge")
        z = c.h_a(torch.from_numpy(ypad)[None])[0].numpy()
        z_sym = np.clip(np.rint(z), -Z_RADIUS, Z_RADIUS).astype(np.int64)
        mu, idx = c._params(z_sym, h, w)
        q = np.clip(np.rint(y64 - mu), -Y_RADIUS, Y_RADIUS).astype(np.int64)
        return z_sym, idx, q, (q + mu).astype(np.float32)

    def score(self, images: list[heldout.Image], quality: int) -> V1Stats:
        st = V1Stats(quality)
        m = self.model.latent_channels
        st.channel_bits = np.zeros(m)
        st.channel_nonzero = np.zeros(m)
        for img in images:
            y = self.latents(img, quality)
            st.pixels += int(img.dn.size)
            st.images += 1
            for r in range(0, y.shape[1], V1_CHUNK):
                for c in range(0, y.shape[2], V1_CHUNK):
                    yc = y[:, r:r + V1_CHUNK, c:c + V1_CHUNK]
                    data, y_hat = self.coder.encode_chunk(yc)
                    z_sym, idx, q, y_hat2 = self.symbols(yc)
                    if not np.array_equal(y_hat, y_hat2):
                        raise AssertionError("rebuilt v1 symbols differ from the LatentCoder's")
                    zc = np.arange(z_sym.shape[0]).reshape(-1, 1, 1)
                    st.ideal_z += float(-self.z_logp_leaky[zc, z_sym + Z_RADIUS].sum())
                    zf = -self.z_logp[zc, z_sym + Z_RADIUS]
                    st.float_z += float(zf.sum())
                    ztail = zf > -math.log2(ANS_MIN_PROB)
                    st.z_tail_symbols += int(ztail.sum())
                    st.z_symbols += int(z_sym.size)
                    st.tail_float_bits += float(zf[ztail].sum())
                    st.z_tail_coded_bits += float(-self.z_logp_leaky[zc, z_sym + Z_RADIUS][ztail].sum())
                    yb = -self.y_logp_leaky[idx, q + Y_RADIUS]
                    yf = -self.y_logp[idx, q + Y_RADIUS]
                    st.float_y += float(yf.sum())
                    tail = yf > -math.log2(ANS_MIN_PROB)
                    st.tail_symbols += int(tail.sum())
                    st.tail_float_bits += float(yf[tail].sum())
                    st.symbols += int(q.size)
                    st.channel_bits += yb.sum(axis=(1, 2))
                    st.channel_nonzero += (q != 0).sum(axis=(1, 2))
                    st.ideal_y += float(yb.sum())
                    st.chunk_bits += 8.0 * len(data)
                    st.chunks += 1
        return st


def channel_summary(bits: np.ndarray) -> dict:
    """How concentrated the rate is over channels: counts holding 50/90/99 % and < 0.1 % each."""
    total = float(bits.sum())
    share = bits / total
    order = np.argsort(-share)
    cum = np.cumsum(share[order])
    need = {f"channels_for_{p}pct": int(np.searchsorted(cum, p / 100.0) + 1) for p in (50, 90, 99)}
    eff = float(np.exp(-np.sum(share * np.log(np.maximum(share, 1e-300)))))
    return need | {
        "channels_below_0.1pct": int((share < 1e-3).sum()),
        "channels_below_0.01pct": int((share < 1e-4).sum()),
        "effective_channels": eff,  # exp(entropy of the share distribution)
        "top_share_pct": 100.0 * float(share[order[0]]),
        "top10_channels": [int(i) for i in order[:10]],
        "share_pct": [round(100.0 * float(v), 5) for v in share],
    }


def run_v1(images: list[heldout.Image], checkpoint: Path, log=print) -> dict:
    model = load_checkpoint(checkpoint)
    scorer = V1Scorer(model)
    out = {"checkpoint": str(checkpoint.relative_to(REPO)) if checkpoint.is_relative_to(REPO) else str(checkpoint),
           "latent_channels": int(model.latent_channels), "qualities": {}}
    for q in range(1, model.n_qualities + 1):
        t = time.perf_counter()
        st = scorer.score(images, q)
        ideal = st.ideal_y + st.ideal_z
        header = 8.0 * 5 * st.chunks  # LatentCoder chunk header: version byte + CRC-32
        rd_bits = st.chunk_bits + 8.0 * (V1_CHUNK_FIELD * st.chunks + V1_IMAGE_HEADER * st.images)
        row = {
            "quality": q, "images": st.images, "chunks": st.chunks, "pixels": st.pixels,
            "ideal_bpp": ideal / st.pixels, "ideal_y_bpp": st.ideal_y / st.pixels,
            "ideal_z_bpp": st.ideal_z / st.pixels, "z_share_pct": 100.0 * st.ideal_z / ideal,
            "float_model_bpp": (st.float_y + st.float_z) / st.pixels,
            "tail_symbols": st.tail_symbols, "symbols": st.symbols,
            "tail_symbol_ppm": 1e6 * st.tail_symbols / max(st.symbols, 1),
            "z_tail_symbols": st.z_tail_symbols, "z_symbols": st.z_symbols,
            "z_tail_symbol_ppm": 1e6 * st.z_tail_symbols / max(st.z_symbols, 1),
            "z_tail_coded_bpp": st.z_tail_coded_bits / st.pixels,
            "tail_float_bpp": st.tail_float_bits / st.pixels,
            "chunk_bpp": st.chunk_bits / st.pixels,
            "overhead_pct": 100.0 * (st.chunk_bits - ideal) / ideal,
            "overhead_bpp": (st.chunk_bits - ideal) / st.pixels,
            "header_bpp": header / st.pixels,
            "ans_overhead_bpp": (st.chunk_bits - header - ideal) / st.pixels,
            "ans_overhead_pct": 100.0 * (st.chunk_bits - header - ideal) / ideal,
            "rd_bpp": rd_bits / st.pixels,
            "rd_overhead_pct": 100.0 * (rd_bits - ideal) / ideal,
            "nonzero_symbol_pct": 100.0 * float(st.channel_nonzero.sum()) / float(
                model.latent_channels * sum(-(-i.dn.shape[0] // 16) * -(-i.dn.shape[1] // 16) for i in images)),
            "channels": channel_summary(st.channel_bits),
            "seconds": time.perf_counter() - t,
        }
        out["qualities"][str(q)] = row
        log(f"  v1 q{q}: ideal {row['ideal_bpp']:.4f} bpp, chunks {row['chunk_bpp']:.4f} bpp "
            f"({row['overhead_pct']:+.2f} %), 50/90/99 % of y bits in {row['channels']['channels_for_50pct']}/"
            f"{row['channels']['channels_for_90pct']}/{row['channels']['channels_for_99pct']} channels "
            f"({row['seconds']:.1f} s)", flush=True)
    return out


# ====================================================================== 1: v2 block-DCT core
def run_v2_overhead(images: list[heldout.Image], steps: list[float], log=print) -> dict:
    """The shipped v2 coder (``dct_v2.encode_chunk``, default model, block size chosen per band): the
    ideal code length of its symbols under its own model against the real chunk bytes."""
    from sarcodec.codec import dct_v2
    from sarcodec.codec.dct_entropy import _SCALES, _dc_residual, nll_bits, scale_index
    from sarcodec.codec.dct_fit import Sample, choose_block
    from sarcodec.codec.dct_fit import fit_band_params as fit_v2
    from sarcodec.codec.dct_model import load_model as load_v2

    model = load_v2(REPO / "resources/models/sarcodec_v2.npz")
    rows = []
    for step in steps:
        t = time.perf_counter()
        ideal = chunk_bits = side_bits = 0.0
        chunks = pixels = 0
        for img in images:
            x = heldout.to_db(img.dn)
            sample = Sample([np.where(img.valid, x, 0.0)[:V2_CHUNK, :V2_CHUNK]], [img.valid[:V2_CHUNK, :V2_CHUNK]])
            block = choose_block(sample, step, model.prior)
            params = fit_v2(sample, step, model.prior, block, band_blocks=x.size // block**2)
            coding = dct_v2.BandCoding(params, step)
            side_bits += 8.0 * len(params.to_bytes())
            pixels += int(x.size)
            for r in range(0, x.shape[0], V2_CHUNK):
                for c in range(0, x.shape[1], V2_CHUNK):
                    xs, vs = x[r:r + V2_CHUNK, c:c + V2_CHUNK], img.valid[r:r + V2_CHUNK, c:c + V2_CHUNK]
                    data, _ = dct_v2.encode_chunk(xs, vs, coding, model)
                    chunk_bits += 8.0 * len(data)
                    res = dct_entropy.decode_symbols(data, *xs.shape, step, params, model.prior)
                    if res is not None:
                        q, sidx = res
                        d = _dc_residual(q[0])
                        dcs = _SCALES[scale_index(np.array([max(np.mean(np.abs(d)), 1e-9)]))[0]]
                        ideal += float(nll_bits(d, np.full(d.shape, dcs), 0.0).sum())
                        ideal += float(nll_bits(q[1:], _SCALES[sidx[1:]], params.dead_zone).sum())
                    chunks += 1
        header = 8.0 * V2_CHUNK_HEADER * chunks
        row = {"step_db": step, "chunks": chunks, "pixels": pixels, "ideal_bpp": ideal / pixels,
               "chunk_bpp": chunk_bits / pixels, "overhead_pct": 100.0 * (chunk_bits - ideal) / ideal,
               "overhead_bpp": (chunk_bits - ideal) / pixels, "header_bpp": header / pixels,
               "ans_overhead_bpp": (chunk_bits - header - ideal) / pixels,
               "ans_overhead_pct": 100.0 * (chunk_bits - header - ideal) / ideal,
               "band_side_bpp": side_bits / pixels, "seconds": time.perf_counter() - t}
        rows.append(row)
        log(f"  v2 step {step:g} dB: ideal {row['ideal_bpp']:.4f} bpp, chunks {row['chunk_bpp']:.4f} bpp "
            f"({row['overhead_pct']:+.2f} %), side {row['band_side_bpp']:.4f} bpp ({row['seconds']:.1f} s)", flush=True)
    return {"block": "chosen per band", "dead_zone": V2_DEAD_ZONE, "chunk": V2_CHUNK, "rows": rows}


# ====================================================================== 3: CDF 9/7 wavelet floor
ALPHA, BETA, GAMMA, DELTA = -1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971
KAPPA = 1.230174104914001
LOW_GAIN, HIGH_GAIN = math.sqrt(2.0) / KAPPA, KAPPA / math.sqrt(2.0)  # orthonormal-ish (DC gain sqrt 2)


def _s_right(s: np.ndarray, nd: int) -> np.ndarray:
    """s[n + 1] for n < nd, mirrored at the end (whole-sample symmetric extension)."""
    return s[1:nd + 1] if len(s) > nd else np.concatenate([s[1:], s[-1:]])


def _d_pair(d: np.ndarray, ns: int) -> np.ndarray:
    """d[n - 1] + d[n] for n < ns, mirrored at both ends."""
    left = np.concatenate([d[:1], d[:ns - 1]])
    right = d if len(d) == ns else np.concatenate([d, d[-1:]])
    return left + right


def lift_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One CDF 9/7 analysis step along axis 0 (length >= 2) -> (low, high)."""
    s, d = x[0::2].copy(), x[1::2].copy()
    ns, nd = len(s), len(d)
    d += ALPHA * (s[:nd] + _s_right(s, nd))
    s += BETA * _d_pair(d, ns)
    d += GAMMA * (s[:nd] + _s_right(s, nd))
    s += DELTA * _d_pair(d, ns)
    return s * LOW_GAIN, d * HIGH_GAIN


def lift_inverse(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`lift_forward` along axis 0."""
    s, d = low / LOW_GAIN, high / HIGH_GAIN
    ns, nd = len(s), len(d)
    s = s - DELTA * _d_pair(d, ns)
    d = d - GAMMA * (s[:nd] + _s_right(s, nd))
    s = s - BETA * _d_pair(d, ns)
    d = d - ALPHA * (s[:nd] + _s_right(s, nd))
    x = np.empty((ns + nd,) + s.shape[1:], dtype=np.float64)
    x[0::2], x[1::2] = s, d
    return x


def wavelet_levels(shape: tuple[int, int]) -> int:
    """5 levels, fewer on small chips so the coarsest band keeps >= 4 samples a side."""
    return int(np.clip(int(math.log2(max(min(shape), 1))) - 2, 1, MAX_LEVELS))


def dwt2(x: np.ndarray, levels: int) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """-> (coarsest LL, [level 1 (finest) .. levels] each {'LH', 'HL', 'HH'}); first letter = vertical."""
    bands = []
    a = np.asarray(x, dtype=np.float64)
    for _ in range(levels):
        lo, hi = lift_forward(a.T)  # horizontal
        lo, hi = lo.T, hi.T
        ll, lh = lift_forward(lo)  # vertical on the horizontal lowpass
        hl, hh = lift_forward(hi)
        bands.append({"LH": lh, "HL": hl, "HH": hh})
        a = ll
    return a, bands


def idwt2(ll: np.ndarray, bands: list[dict[str, np.ndarray]]) -> np.ndarray:
    a = ll
    for b in reversed(bands):
        lo = lift_inverse(a, b["LH"])
        hi = lift_inverse(b["HL"], b["HH"])
        a = lift_inverse(lo.T, hi.T).T
    return a


@functools.cache
def synthesis_norms_1d(levels: int, n: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """L2 norms of the 1-D synthesis basis functions: (high band at level 1..L, low band at level 1..L)."""
    def norm(level: int, band: str) -> float:
        lens = [n]
        for _ in range(level):
            lens.append(-(-lens[-1] // 2))
        low = np.zeros(lens[level]) if band == "L" else np.zeros(lens[level - 1] - lens[level])
        if band == "L":
            low[len(low) // 2] = 1.0
            a = low
            start = level
        else:
            hi = low
            hi[len(hi) // 2] = 1.0
            a = lift_inverse(np.zeros(lens[level]), hi)
            start = level - 1
        for lv in range(start, 0, -1):
            a = lift_inverse(a, np.zeros(lens[lv - 1] - lens[lv]))
        return float(np.sqrt(np.sum(a * a)))

    return (tuple(norm(lv, "H") for lv in range(1, levels + 1)),
            tuple(norm(lv, "L") for lv in range(1, levels + 1)))


def subband_norm(level: int, orient: str, levels: int) -> float:
    """2-D synthesis norm of a subband (separable: product of the 1-D norms)."""
    hi, lo = synthesis_norms_1d(levels)
    pick = {"H": hi[level - 1], "L": lo[level - 1]}
    return pick[orient[0]] * pick[orient[1]]


def laplace_bits(n: np.ndarray, s: np.ndarray, dead_zone: float) -> np.ndarray:
    """Ideal bits of |symbols| ``n`` under a dead-zone-binned Laplace of scale ``s`` (steps), sign included."""
    t = 0.5 + dead_zone
    s = np.maximum(s, 1e-6)
    nats = np.where(n == 0, -np.log(-np.expm1(-t / s)),
                    LN2 + (np.maximum(n, 1) - 1 + t) / s - np.log(-np.expm1(-1.0 / s)))
    return nats / LN2


def _nll_and_grad(a: np.ndarray, feats: np.ndarray, n: np.ndarray, dead_zone: float) -> tuple[float, np.ndarray]:
    """Mean nats and gradient for scale ``s = a @ feats`` (feats: (k, N), first row ones)."""
    t = 0.5 + dead_zone
    s = np.maximum(a @ feats, 1e-6)
    zero = n == 0
    u = np.minimum(1.0 / s, 700.0)
    em1 = np.expm1(np.minimum(t * u, 700.0))
    nats = np.where(zero, -np.log(-np.expm1(-t * u)), LN2 + (n - 1 + t) * u - np.log(-np.expm1(-u)))
    g = np.where(zero, t * u * u / em1, -(n - 1 + t) * u * u + u * u / np.expm1(u))
    return float(nats.mean()), feats @ g / n.size


def fit_rule(feats: np.ndarray, n: np.ndarray, dead_zone: float) -> np.ndarray:
    """Maximum-likelihood ``a`` (>= 0, a0 >= S_MIN) of the linear scale rule, rounded to float16."""
    k = feats.shape[0]
    a0 = np.array([max(0.6 * float(n.mean()), 0.05)] + [0.3] * (k - 1))
    bounds = [(S_MIN, 1e4)] + [(0.0, 1e3)] * (k - 1)
    res = minimize(_nll_and_grad, a0, args=(feats, n, dead_zone), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 200})
    return np.asarray(res.x, dtype=np.float16).astype(np.float64)


def _shift_sum(a: np.ndarray, offsets: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of ``a`` at the neighbour offsets (dr, dc) that fall inside the array."""
    h, w = a.shape
    p = np.pad(a, 1)
    one = np.pad(np.ones_like(a), 1)
    s = np.zeros_like(a)
    c = np.zeros_like(a)
    for dr, dc in offsets:
        s += p[1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
        c += one[1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
    return s, c


CAUSAL = [(0, -1), (-1, 0), (-1, -1), (-1, 1)]  # W, N, NW, NE
CROSS = [(0, -1), (-1, 0), (0, 1), (1, 0)]  # W, N, E, S
ORIENTS = ("LH", "HL", "HH")


def code_subband(q: np.ndarray, parent: np.ndarray | None, context: str) -> tuple[float, float, np.ndarray]:
    """Ideal bits, side bits and per-coefficient decoded scale of one detail subband's symbols ``q``."""
    n = np.abs(q).astype(np.float64)
    if not n.any():
        return 0.0, 1.0, np.full(q.shape, S_MIN)
    par = _upsample_parent(parent, q.shape) if parent is not None and context != "none" else None
    dz = WAVELET_DEAD_ZONE
    scale = np.empty(q.shape)
    bits = 0.0
    side = 1.0
    if context == "raster":
        groups = [(np.ones(q.shape, dtype=bool), CAUSAL)]
    elif context == "none":
        groups = [(np.ones(q.shape, dtype=bool), None)]
    else:
        even = (np.add.outer(np.arange(q.shape[0]), np.arange(q.shape[1])) % 2) == 0
        groups = [(even, None), (~even, CROSS)]
    for mask, offs in groups:
        if not mask.any():
            continue
        rows = [np.ones(int(mask.sum()))]
        if offs is not None:
            s_, c_ = _shift_sum(n, offs)
            rows.append((s_ / np.maximum(c_, 1.0))[mask])
        if par is not None:
            rows.append(par[mask])
        feats = np.stack(rows)
        a = fit_rule(feats, n[mask], dz)
        s = np.maximum(a @ feats, 1e-6)
        scale[mask] = s
        bits += float(laplace_bits(n[mask], s, dz).sum())
        side += PARAM_BITS * len(a)
    return bits, side, scale


def _upsample_parent(parent: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The parent of every child position ``(i // 2, j // 2)``, clipped to the parent's extent."""
    ri = np.minimum(np.arange(shape[0]) // 2, parent.shape[0] - 1)
    ci = np.minimum(np.arange(shape[1]) // 2, parent.shape[1] - 1)
    return parent[np.ix_(ri, ci)]


def code_shared(qd: dict[tuple[int, str], np.ndarray], levels: int
                ) -> tuple[float, float, dict[tuple[int, str], np.ndarray]]:
    """Raster contexts with the context weights shared by all subbands of the image (``shared``).

    ``s = base_b * (1 + w1 * m_nb / max(base_b, 0.3) + w2 * |q_parent| / max(base_parent, 0.3))``: one
    base per subband (16 bits) and two weights per image (32 bits), fitted by alternating maximum
    likelihood (weights over all subbands at once, then each base); the final scales use the rounded
    (transmitted) values only, so a decoder computes the same.
    """
    dz = WAVELET_DEAD_ZONE
    n = {k: np.abs(q).astype(np.float64) for k, q in qd.items()}
    live = [k for k in qd if n[k].any()]
    nb, par = {}, {}
    for k in live:
        s_, c_ = _shift_sum(n[k], CAUSAL)
        nb[k] = (s_ / np.maximum(c_, 1.0)).ravel()
        pk = (k[0] + 1, k[1])
        par[k] = _upsample_parent(n[pk], n[k].shape).ravel() if k[0] < levels else np.zeros(n[k].size)
    flat = {k: n[k].ravel() for k in live}
    base = {k: float(fit_rule(np.ones((1, flat[k].size)), flat[k], dz)[0]) for k in live}
    w = np.array([0.0, 0.0])

    def activities(k: tuple[int, str]) -> tuple[np.ndarray, np.ndarray]:
        pk = (k[0] + 1, k[1])
        return nb[k] / max(base[k], 0.3), par[k] / max(base.get(pk, 1.0), 0.3)

    for _ in range(3):
        if not live:
            break
        acts = {k: activities(k) for k in live}
        feats = np.concatenate([np.stack([np.full(flat[k].size, base[k]), base[k] * acts[k][0],
                                          base[k] * acts[k][1]]) for k in live], axis=1)
        ncat = np.concatenate([flat[k] for k in live])
        res = minimize(_nll_and_grad, np.r_[1.0, w], args=(feats, ncat, dz), jac=True, method="L-BFGS-B",
                       bounds=[(1.0, 1.0), (0.0, 1e3), (0.0, 1e3)], options={"maxiter": 200})
        w = np.asarray(res.x[1:], dtype=np.float16).astype(np.float64)
        for k in live:
            g = 1.0 + w[0] * acts[k][0] + w[1] * acts[k][1]
            base[k] = float(fit_rule(g[None], flat[k], dz)[0])
    bits = 0.0
    side = float(len(qd)) + PARAM_BITS * (len(live) + 2)
    scales = {k: np.full(q.shape, S_MIN) for k, q in qd.items()}
    for k in live:
        a_nb, a_par = activities(k)
        s = np.maximum(base[k] * (1.0 + w[0] * a_nb + w[1] * a_par), 1e-6)
        bits += float(laplace_bits(flat[k], s, dz).sum())
        scales[k] = s.reshape(qd[k].shape)
    return bits, side, scales


def _dpcm(q: np.ndarray) -> np.ndarray:
    d = q.copy()
    d[:, 1:] = q[:, 1:] - q[:, :-1]
    d[1:, 0] = q[1:, 0] - q[:-1, 0]
    return d


def wavelet_code(img: heldout.Image, step: float, context: str) -> tuple[np.ndarray, float, float]:
    """Code one band with the fixed wavelet floor; returns (decoded uint16 DN, total bits, side bits)."""
    x = np.log2(np.maximum(img.dn, 1).astype(np.float64)) * LOG_SCALE
    xf = blockdct.smooth_fill(x, img.valid)
    mean = float(np.rint(xf.mean()))
    levels = wavelet_levels(x.shape)
    ll, bands = dwt2(xf - mean, levels)
    side = 32.0 + 16.0 + 16.0  # step (float32), mean (uint16), intensity offset (int16)
    keys = [(lv, o) for lv in range(levels, 0, -1) for o in ORIENTS]  # decoding order: coarse to fine
    steps = {k: step / subband_norm(k[0], k[1], levels) for k in keys}
    qd = {k: blockdct.quantize(bands[k[0] - 1][k[1]] / steps[k], WAVELET_DEAD_ZONE) for k in keys}
    if context == "shared":
        bits, sb, scales = code_shared(qd, levels)
        side += sb
    else:
        bits, scales = 0.0, {}
        for k in keys:
            parent = np.abs(qd[(k[0] + 1, k[1])]).astype(np.float64) if k[0] < levels else None
            b, sb, scales[k] = code_subband(qd[k], parent, context)
            bits += b
            side += sb
    rec_bands: list[dict[str, np.ndarray]] = [{} for _ in bands]
    for k in keys:
        rec_bands[k[0] - 1][k[1]] = blockdct.dequantize(qd[k], scales[k], WAVELET_DEAD_ZONE) * steps[k]
    qs = step / (synthesis_norms_1d(levels)[1][levels - 1] ** 2)
    qll = np.rint(ll / qs).astype(np.int64)
    d = np.abs(_dpcm(qll)).astype(np.float64)
    fit = minimize_scalar(lambda ls: float(laplace_bits(d, np.full(d.shape, math.exp(ls)), 0.0).sum()),
                          bounds=(math.log(0.05), math.log(1e5)), method="bounded")
    s_ll = float(np.float16(math.exp(fit.x)))
    bits += float(laplace_bits(d, np.full(d.shape, s_ll), 0.0).sum())
    side += PARAM_BITS
    rec = idwt2(qll * qs, rec_bands) + mean
    off = blockdct.intensity_offset(x, rec, img.valid, LOG_SCALE)
    off = float(np.clip(np.rint(off * 8.0), -32768, 32767) / 8.0)
    dn = np.clip(np.rint(2.0 ** ((rec + off) / LOG_SCALE)), 1, 65535)
    return np.where(img.valid, dn, 0).astype(np.uint16), bits + side, side


def anchor_curves(group: str, images: list[heldout.Image], log=print) -> tuple[dict[str, list[dict]], str]:
    """The filled JPEG2000/JPEG XL-on-log curves: bench/v2_codec.py's cache, else computed (not cached)."""
    cache = REPO / f"bench/results/v2_anchors_{group}.json"
    if cache.exists():
        return json.loads(cache.read_text()), str(cache.relative_to(REPO))
    log(f"  {cache.name} missing: running the anchors (not cached)")
    curves = {}
    for key, fn in (("j2k_log", anchors.jpeg2000_log), ("jxl_log", anchors.jpegxl_log)):
        pts = heldout.pool([fn(img) for img in images])
        curves[key] = [{"bpp": p.bpp, "rmse_db": p.rmse_db, "bias_pct": 100 * p.bias} for p in pts]
    return curves, "bench/anchors.py (computed now)"


def ratio_at(curve: list[dict], anchor: list[dict], bpp: float) -> float:
    ours, base = anchors.rmse_at(curve, bpp), anchors.rmse_at(anchor, bpp)
    return ours / base if ours == ours and base == base and base > 0 else float("nan")


def run_wavelet(group: str, images: list[heldout.Image], steps: list[float], contexts: list[str],
                log=print) -> dict:
    anchor, source = anchor_curves(group, images, log)
    anchor = {k: anchor[k] for k in ("j2k_log", "jxl_log")}
    # JPEG2000's main header is a fixed cost per file (large on chips of a few kpx); the payload-only curve
    # separates the coding gain from that overhead (our side bits stay counted).
    npx = sum(i.dn.size for i in images)
    hdr_bpp = 8.0 * sum(anchors.j2k_main_header_bytes(i) for i in images) / npx
    anchor["j2k_log_payload"] = [dict(p, bpp=p["bpp"] - hdr_bpp) for p in anchor["j2k_log"] if p["bpp"] > hdr_bpp]
    out: dict = {"images": len(images), "pixels": int(npx), "j2k_main_header_bpp": hdr_bpp,
                 "levels": sorted({wavelet_levels(i.dn.shape) for i in images}), "anchor_source": source,
                 "anchors": anchor, "curves": {}, "bd_rate_pct": {}, "rmse_ratio_at": {}}
    for ctx in contexts:
        t = time.perf_counter()
        curve = []
        for step in steps:
            pts, side = [], 0.0
            for img in images:
                dn, b, sb = wavelet_code(img, step, ctx)
                pts.append(heldout.measure(img, dn, b / 8.0, f"step{step:.0f}"))
                side += sb
            p = heldout.pool([pts])[0]
            curve.append({"step": step, "bpp": p.bpp, "rmse_db": p.rmse_db, "bias_pct": 100.0 * p.bias,
                          "side_bpp": side / p.pixels, "ssim": p.ssim, "enl_ratio": p.enl_ratio})
        out["curves"][ctx] = curve
        out["bd_rate_pct"][ctx] = {k: anchors.compare(curve, a)["bd_rate_pct"] for k, a in anchor.items()}
        out["rmse_ratio_at"][ctx] = {k: {str(b): ratio_at(curve, a, b) for b in RATIO_BPP} for k, a in anchor.items()}
        out.setdefault("seconds", {})[ctx] = time.perf_counter() - t
        bd = out["bd_rate_pct"][ctx]
        log(f"  wavelet/{ctx} {group}: {curve[0]['bpp']:.3f}-{curve[-1]['bpp']:.3f} bpp, BD-rate vs j2k_log "
            f"{bd['j2k_log']:+.1f} %, vs jxl_log {bd['jxl_log']:+.1f} % ({out['seconds'][ctx]:.1f} s)", flush=True)
    ref = REPO / "bench/results/v2_b16_dz10.json"
    if ref.exists():
        v2 = json.loads(ref.read_text()).get(group)
        if v2:
            curve = [{"bpp": r["bpp"], "rmse_db": r["rmse_db"]} for r in v2["curve"]]
            out["v2_b16_reference"] = {
                "source": str(ref.relative_to(REPO)),
                "bd_rate_pct": {k: anchors.compare(curve, a)["bd_rate_pct"] for k, a in anchor.items()},
                "rmse_ratio_at": {k: {str(b): ratio_at(curve, a, b) for b in RATIO_BPP} for k, a in anchor.items()}}
    return out


# ====================================================================== report
def _f(v: float | None, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def markdown(res: dict) -> list[str]:
    md = ["# Codec diagnostics (issue 12, Deliver 2)", "",
          f"Produced by `{res['command']}` in {res['seconds_total']:.0f} s on {res['machine']} "
          f"({res['environment']}). Method and definitions: the docstring of `bench/diagnostics.py`.", "",
          f"Engine: git HEAD {res['provenance']['git_head']}, "
          + ", ".join(f"`{k}` {v}" for k, v in res["provenance"]["files"].items()) + ".", ""]
    v1 = res.get("v1")
    if v1:
        md += ["## 1. Ideal code length against real bytes", "",
               f"### v1 (`{v1['checkpoint']}`), `LatentCoder` chunks on `val` "
               f"({v1['qualities']['1']['images']} bands, {v1['qualities']['1']['pixels'] / 1e6:.3f} Mpx)", "",
               "ideal = -log2 p of the coded z and y symbols under the coder's own tables as the ANS realises "
               "them (leaky: every symbol gets >= 2^-24); chunk = real `encode_chunk` bytes (5-byte header: "
               "version + CRC-32); rd.py = what `make eval` counts (chunk + 4-byte length per chunk + 5 bytes "
               "per image). bpp over all pixels; overhead = chunk - ideal; 'ANS etc.' = overhead less the headers.",
               "",
               "| quality | chunks | ideal bpp | of which z % | chunk bpp | overhead % | overhead bpp | "
               "header bpp | ANS etc. % | rd.py bpp | rd.py overhead % |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for q, r in v1["qualities"].items():
            md.append(f"| q{q} | {r['chunks']} | {r['ideal_bpp']:.4f} | {r['z_share_pct']:.1f} | "
                      f"{r['chunk_bpp']:.4f} | {r['overhead_pct']:+.2f} | {r['overhead_bpp']:.4f} | "
                      f"{r['header_bpp']:.4f} | {r['ans_overhead_pct']:+.2f} | {r['rd_bpp']:.4f} | "
                      f"{r['rd_overhead_pct']:+.2f} |")
        md += ["", "Symbols the float64 tables call (nearly) impossible (p < 2^-24; the ANS codes them at ~24 "
               "bits, the float model would charge more):", "",
               "| quality | float-model ideal bpp | y tail symbols per million | z tail symbols % | "
               "coded bpp spent on z tail symbols | z bpp |", "|---|---|---|---|---|---|"]
        for q, r in v1["qualities"].items():
            md.append(f"| q{q} | {r['float_model_bpp']:.4f} | {r['tail_symbol_ppm']:.1f} | "
                      f"{r['z_tail_symbol_ppm'] / 1e4:.2f} | {r['z_tail_coded_bpp']:.4f} | {r['ideal_z_bpp']:.4f} |")
        md.append("")
    if res.get("v2_skipped"):
        md += ["### v2 core", "", f"skipped: {res['v2_skipped']}", ""]
    v2 = res.get("v2")
    if v2:
        md += [f"### v2 (the shipped coder, block size chosen per band, dead zone {v2['dead_zone']}), ideal code "
               f"length of its symbols under its own model against `len(dct_v2.encode_chunk(...))` on `val`, chunks "
               f"of {v2['chunk']} px", "",
               "Band side info (`BandParams.to_bytes`, per band) is outside both and listed apart.", "",
               "| step dB | ideal bpp | chunk bpp | overhead % | overhead bpp | header bpp (2 B/chunk) | ANS etc. % | "
               "band side bpp |", "|---|---|---|---|---|---|---|---|"]
        for r in v2["rows"]:
            md.append(f"| {r['step_db']:g} | {r['ideal_bpp']:.4f} | {r['chunk_bpp']:.4f} | {r['overhead_pct']:+.2f} | "
                      f"{r['overhead_bpp']:.4f} | {r['header_bpp']:.4f} | {r['ans_overhead_pct']:+.2f} | "
                      f"{r['band_side_bpp']:.4f} |")
        md.append("")
    if v1:
        md += ["## 2. How many v1 latent channels carry rate (`val`, share of the ideal y bits)", "",
               f"{v1['latent_channels']} latent channels. 'effective' = exp(entropy of the per-channel share).", "",
               "| quality | y bpp | nonzero symbols % | channels for 50 % | 90 % | 99 % | channels < 0.1 % each | "
               "< 0.01 % | effective | largest share % |", "|---|---|---|---|---|---|---|---|---|---|"]
        for q in ("5", "3", "1", "2", "4"):
            r = v1["qualities"][q]
            c = r["channels"]
            tag = " (top)" if q == "5" else " (default)" if q == "3" else ""
            md.append(f"| q{q}{tag} | {r['ideal_y_bpp']:.4f} | {r['nonzero_symbol_pct']:.2f} | "
                      f"{c['channels_for_50pct']} | {c['channels_for_90pct']} | {c['channels_for_99pct']} | "
                      f"{c['channels_below_0.1pct']} | {c['channels_below_0.01pct']} | {c['effective_channels']:.1f} | "
                      f"{c['top_share_pct']:.2f} |")
        md.append("")
    wl = res.get("wavelet")
    if wl:
        md += ["## 3. Fixed CDF 9/7 wavelet + context Laplace rule (no learning) against the filled anchors", "",
               "Rate = ideal code length + side bits (not real bytes); distortion = the anchors' metric. "
               "`raster`: W, N, NW, NE + parent (serial decoder); `checkerboard`: two passes, parallel decoder; "
               "`shared`: raster contexts, weights shared by the subbands of an image; "
               "`none`: one Laplace per subband, no context. "
               "BD-rate with `anchors.compare` (negative = fewer bits than the anchor at equal dB-RMSE); "
               "'JPEG2000 payload' = the JPEG2000 curve less its main header (a fixed per-file cost: "
               + ", ".join(f"{g} {r['j2k_main_header_bpp']:.3f} bpp" for g, r in wl.items()) + "); "
               "RMSE ratio = our RMSE / the anchor's at equal bpp (- outside a curve's range). The v2 16 x 16 "
               "block-DCT core (real bytes, `bench/v2_codec.py`) is listed for reference.", ""]
        ctxs = list(next(iter(wl.values()))["curves"])
        md += ["| group | codec | BD vs JPEG2000-log % | BD vs JPEG XL-log % | BD vs JPEG2000 payload % | "
               + " | ".join(f"RMSE/better @{b:g}" for b in RATIO_BPP) + " |",
               "|---|---|---|---|---|" + "---|" * len(RATIO_BPP)]
        for g, r in wl.items():
            rows = [(f"wavelet {c}", r["bd_rate_pct"][c], r["rmse_ratio_at"][c]) for c in ctxs]
            if "v2_b16_reference" in r:
                ref = r["v2_b16_reference"]
                rows.append(("v2 b16 (ref.)", ref["bd_rate_pct"], ref["rmse_ratio_at"]))
            for name, bd, rat in rows:
                better = []
                for b in RATIO_BPP:
                    vals = [rat[k][str(b)] for k in ("j2k_log", "jxl_log")]
                    finite = [v for v in vals if v == v]
                    better.append(max(finite) if finite else float("nan"))  # the better anchor = lower RMSE
                md.append(f"| {g} | {name} | {_f(bd['j2k_log'], '+.1f')} | {_f(bd['jxl_log'], '+.1f')} | "
                          f"{_f(bd.get('j2k_log_payload'), '+.1f')} | "
                          + " | ".join(_f(v, ".3f") for v in better) + " |")
        md.append("")
        md += ["RMSE ratio against each anchor separately:", "",
               "| group | wavelet | anchor | " + " | ".join(f"@{b:g} bpp" for b in RATIO_BPP) + " |",
               "|---|---|---|" + "---|" * len(RATIO_BPP)]
        for g, r in wl.items():
            for c in [c for c in ("raster", "shared") if c in ctxs]:
                for k in ("j2k_log", "jxl_log", "j2k_log_payload"):
                    md.append(f"| {g} | {c} | {k} | " + " | ".join(_f(r["rmse_ratio_at"][c][k][str(b)], ".3f")
                                                                  for b in RATIO_BPP) + " |")
        md.append("")
        for g, r in wl.items():
            md += [f"### wavelet curve, {g} ({r['images']} bands, {r['pixels'] / 1e6:.3f} Mpx, levels "
                   f"{'/'.join(map(str, r['levels']))})", "",
                   "| step | " + " | ".join(f"{c} bpp | {c} RMSE dB | {c} side bpp" for c in ctxs)
                   + " | bias % (raster) |", "|---|" + "---|" * (3 * len(ctxs) + 1)]
            for i, step in enumerate(r["curves"][ctxs[0]]):
                cells = []
                for c in ctxs:
                    p = r["curves"][c][i]
                    cells += [f"{p['bpp']:.3f}", f"{p['rmse_db']:.3f}", f"{p['side_bpp']:.3f}"]
                md.append(f"| {step['step']:.0f} | " + " | ".join(cells)
                          + f" | {r['curves'][ctxs[0]][i]['bias_pct']:+.2f} |")
            md.append("")
    return md


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, float | np.floating):
        return None if o != o else float(o)
    if isinstance(o, np.integer):
        return int(o)
    return o


def provenance() -> dict:
    """Which engine files ran, and whether they are the committed ones (others edit this tree)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    head = git("rev-parse", "HEAD")
    files = {}
    for mod in (m for m in (blockdct, dct_entropy) if m is not None):
        data = Path(mod.__file__).read_bytes()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        rel = f"engine/sarcodec/codec/{Path(mod.__file__).name}"
        files[rel] = "= HEAD" if blob == git("rev-parse", f"HEAD:{rel}") else f"differs from HEAD (blob {blob[:10]})"
    return {"git_head": head[:12], "engine": str(ENGINE), "files": files}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", default=",".join(heldout.GROUPS), help="groups for diagnostic 3")
    ap.add_argument("--checkpoint", default=str(REPO / "resources/models/sarcodec_v1.pt"))
    ap.add_argument("--sections", default="1,2,3", help="which diagnostics (2 needs 1's v1 pass)")
    ap.add_argument("--contexts", default="raster,shared,checkerboard,none")
    ap.add_argument("--steps", default=None, help="wavelet steps in log-code units, comma-separated")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    sections = set(args.sections.split(","))
    args_s = " ".join(argv if argv is not None else sys.argv[1:])
    res: dict = {"command": f".venv/bin/python bench/diagnostics.py {args_s}".rstrip(),
                 "environment": f"nice {os.nice(0)}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
                                f"torch threads 1, {os.cpu_count()} CPUs"
                                + (f", SARCODEC_ENGINE={os.environ['SARCODEC_ENGINE']}"
                                   if os.environ.get("SARCODEC_ENGINE") else ""),
                 "machine": _cpu_name(), "threads": 1, "provenance": provenance()}
    val = heldout.load_group("val")
    if sections & {"1", "2"}:
        print("== v1 latent coder on val", flush=True)
        res["v1"] = run_v1(val, Path(args.checkpoint))
    if "1" in sections:
        print("== v2 block-DCT core on val", flush=True)
        try:
            if dct_entropy is None:
                raise AttributeError(f"sarcodec.codec.dct_entropy does not import ({DCT_IMPORT_ERROR})")
            res["v2"] = run_v2_overhead(val, V2_STEPS)
        except (TypeError, AttributeError, ImportError) as exc:  # an engine older than the shipped v2
            res["v2_skipped"] = f"this engine has no shipped v2 coder (sarcodec.codec.dct_v2): {exc}"
            print(f"  skipped: {res['v2_skipped']}", flush=True)
    if "3" in sections:
        steps = [float(s) for s in args.steps.split(",")] if args.steps else WAVELET_STEPS
        res["wavelet"] = {}
        for g in [g for g in args.groups.split(",") if g]:
            print(f"== wavelet floor on {g}", flush=True)
            images = val if g == "val" else heldout.load_group(g)
            res["wavelet"][g] = run_wavelet(g, images, steps, args.contexts.split(","))
    res["seconds_total"] = time.perf_counter() - t0
    md = markdown(res)
    print("\n".join(md))
    if not args.no_write:
        out = REPO / "bench/results"
        for name, text in (("diagnostics.md", "\n".join(md) + "\n"),
                           ("diagnostics.json", json.dumps(_clean(res), indent=1) + "\n")):
            (out / (name + ".tmp")).write_text(text)
            (out / (name + ".tmp")).replace(out / name)
        print(f"wrote {out / 'diagnostics.md'} and {out / 'diagnostics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
