"""Error-bounded coding: no valid pixel moves by more than E dB (``compress --max-error-db E``).

Design (lossy base plus residual, as in DLPR): each chunk is first coded by codec v2 at a step of
about ``3.5 E**0.55`` dB (the base, :func:`base_step`), then the log-domain residual ``L - L_base`` is
quantised with step ``2 (E - |d|)``: ``k = round((L - L_base) / step)``, and the decoder outputs
``L_base + step k + d``, within ``step / 2 + |d| = E`` of ``L``. The reconstruction offset ``d``
cancels the mean-intensity bias that log-domain quantisation leaves (about +0.9 % at E = 1 dB
without it): it is measured on the band's sample chunks at planning time and costs
``log2(E / (E - |d|))`` bits per pixel (|d| <= E / 4).
The residual is coded with ``constriction`` under one discretised Laplace per chunk (its scale index
is in the chunk), because after a good base it is close to i.i.d. speckle: a context model over the
residual's neighbours saved about 1 % in the prototypes (``bench/results/bounded.md``).

The bound must hold on the values a user reads, in the raster's own data type, not only in floating
point: an integer DN is rounded after ``10**(L/20)``, and the DN lattice is coarse for dark pixels
(DN 1 to 2 is 6 dB). Two things keep it:

- **Steps that leave room for the rounding** (``residual_grid``): for integer linear types the step
  of each pixel shrinks by the rounding's own error at the DN the base predicts, and where that
  leaves less than half the bound (dark pixels: the DN lattice is coarser than the bound) the pixel
  is coded exactly as the integer ``DN - round(P)`` under its own Laplace (lattice mode). Measured on
  the held-out GRD chips, without this 8-11 % of the pixels at E <= 0.25 dB fell to the (far more
  expensive) lossless fallback.
- **Checked candidates.** Elsewhere the encoder runs the decoder's own arithmetic on every candidate
  (``k``, then ``k-1``, ``k+1``, ``k-2``, ``k+2``) and keeps the first whose output value is within the
  bound with a margin, and whose rounding is not within 1e-6 of a tie (so that another machine's
  ``pow`` cannot round it the other way).

A pixel neither keeps within the bound is stored losslessly (the container's fallback records, as NaN
and zero pixels already are). The bound is therefore checked for every pixel at compression time,
before the file is renamed into place.

Chunk record of a bounded band: ``u32 length of the base chunk``, the base chunk (``dct_entropy``),
then the residual: one byte format version (1), one byte scale index of the log-mode symbols, one of
the lattice-mode symbols, ANS words (log-mode pixels in raster order, then lattice-mode pixels).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from sarcodec.codec import dct_entropy
from sarcodec.codec.domains import Domain, denormalise, from_log
from sarcodec.errors import ContainerError
from sarcodec.vocabulary import MAX_ERROR_DB, MIN_ERROR_DB

#: The base's quantiser step is ``BASE_STEP_DB * E**BASE_STEP_POWER``: measured on the held-out groups
#: (total bits of base plus residual), the best base step is about 10 E at E = 0.1 dB and 3.5 E at
#: E = 1 dB; a fixed 6 E cost 2-13 % more at the ends.
BASE_STEP_DB = 3.5
BASE_STEP_POWER = 0.55
#: Smallest bound (below it the residual is near-lossless float noise: a lossless GeoTIFF is better)
#: and largest (beyond it the quality levels serve better); in ``sarcodec.vocabulary``.
#: Safety margins against another machine's last-bit float differences (pow, BLAS summation order).
MARGIN_DB = 1e-5
TIE_MARGIN = 1e-6
RESIDUAL_FORMAT = 1
_LEN = struct.Struct("<I")
_CANDIDATES = (0, -1, 1, -2, 2)


def check_bound(value: object) -> float:
    """``--max-error-db`` validated: a finite number in [MIN_ERROR_DB, MAX_ERROR_DB] dB, or ValueError."""
    try:
        e = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"the maximum error must be a number of dB, got {value!r}") from None
    if not math.isfinite(e) or e <= 0:
        raise ValueError(f"the maximum error must be a positive number of dB, got {value!r}")
    if e < MIN_ERROR_DB:
        raise ValueError(f"a maximum error of {e:g} dB is below {MIN_ERROR_DB} dB, where error-bounded coding "
                         "gains nothing over lossless: write a lossless GeoTIFF (e.g. COMPRESS=ZSTD) instead")
    if e > MAX_ERROR_DB:
        raise ValueError(f"a maximum error of {e:g} dB is above {MAX_ERROR_DB} dB: use --quality instead")
    return e


def base_step(max_error_db: float) -> float:
    """Quantiser step (dB) of the base for a bound of ``max_error_db``."""
    return float(f"{BASE_STEP_DB * max_error_db ** BASE_STEP_POWER:.6g}")


def residual_step(e: float, offset_db: float) -> float:
    """Quantiser step of the residual: bins of this width around ``offset_db`` stay within ``e``."""
    return 2.0 * (e - abs(offset_db))


def bias_offset(l_orig: np.ndarray, base: np.ndarray, e: float) -> float:
    """Residual offset (dB, |d| <= e/4, rounded to 1e-4) that cancels the mean-intensity bias on a sample.

    ``l_orig`` and ``base`` are the valid pixels' L_dB and their base; the bias is measured with the
    offset applied (two fixed-point rounds: the offset changes the bins it is measured on).
    """
    if not l_orig.size:
        return 0.0
    ref = float(l_orig.max())
    i_orig = float(np.sum(10.0 ** ((l_orig - ref) / 10.0)))
    d = 0.0
    for _ in range(3):
        step = residual_step(e, d)
        l_hat = base + step * np.rint((l_orig - base) / step) + d
        i_hat = float(np.sum(10.0 ** ((l_hat - ref) / 10.0)))
        if i_hat <= 0 or i_orig <= 0:
            return 0.0
        d = float(np.clip(d + 10.0 * math.log10(i_orig / i_hat), -e / 4, e / 4))
    return round(d, 4)


class OutputModel:
    """The decoder's conversion from L_dB to output values, run by the encoder to check the bound.

    ``values(l_db)`` is exactly what ``band_writer.BandWriter`` writes for decoded L_dB (float32 model
    domain, the band's offset, no gain, ``from_log`` into the original type), so the encoder sees the
    pixels a user will read. ``error_db`` measures them against the original the way users do.
    """

    def __init__(self, domain: Domain, dtype: np.dtype, offset_db: float, nodata: float | None) -> None:
        self.domain, self.dtype, self.offset, self.nodata = domain, np.dtype(dtype), float(offset_db), nodata

    def values(self, l_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(output values, safe): ``safe`` is False where integer rounding sits within a hair of a tie."""
        x = ((l_db - self.offset) / 10.0).astype(np.float32)  # dct_v2.normalised, as the decoder feeds BandWriter
        l32 = denormalise(x, self.offset) + np.float32(0.0)
        out = from_log(l32, self.domain, self.dtype, self.nodata)
        if self.dtype.kind in "ui" and self.domain.is_linear:
            with np.errstate(over="ignore"):
                pre = np.power(10.0, np.asarray(l32, dtype=np.float64) / self.domain.log_factor)
            safe = np.abs(pre - np.floor(pre) - 0.5) > TIE_MARGIN
        else:
            safe = np.ones(out.shape, bool)
        return out, safe

    def error_db(self, out: np.ndarray, original: np.ndarray) -> np.ndarray:
        """|error| in dB of ``out`` against ``original`` (float64; inf where either is not a positive value)."""
        a = np.asarray(out, dtype=np.float64)
        b = np.asarray(original, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.domain is Domain.DB:
                err = np.abs(a - b)
            else:
                err = np.abs(self.domain.log_factor * np.log10(a / b))
        return np.where(np.isfinite(err), err, np.inf)


@dataclass(frozen=True)
class ResidualGrid:
    """Per pixel of a chunk: the residual step, lattice mode, its predicted integer, and tie pixels."""

    step: np.ndarray
    mode: np.ndarray
    pred: np.ndarray
    unsafe: np.ndarray


def residual_grid(base: np.ndarray, e: float, offset_db: float, factor: float | None) -> ResidualGrid:
    """The residual's quantiser for each pixel of a chunk, from the decoded base (coder and decoder alike).

    ``factor``: 20 for amplitude DN, 10 for intensity, None for types without an integer lattice (one
    step everywhere then). With a lattice, a pixel's output is rounded to an integer after the residual
    is added, which costs up to ``slack = factor * log10(1 + 0.5 / P)`` dB at the predicted value
    ``P = 10**(L_base / factor)``: the step shrinks by twice that, so the rounded value still lands
    within the bound. Where the slack eats more than half the bound (dark pixels), no value but the
    original is safe, and the pixel is coded exactly as the integer ``DN - round(P)`` (lattice mode).
    Ties matter because another machine's ``exp`` may fall on the other side of them: the encoder
    stores such pixels losslessly.
    """
    full = residual_step(e, offset_db)
    if factor is None:
        none = np.zeros(base.shape, bool)
        return ResidualGrid(np.full(base.shape, full), none, np.zeros(base.shape, np.int64), none)
    with np.errstate(over="ignore"):
        p = np.exp(base * (math.log(10.0) / factor))
    slack = np.log1p(0.5 / np.maximum(p, 0.5)) * (factor / math.log(10.0))
    room = full / 2.0 - slack  # half-width left for the residual bins
    mode = room < full / 4.0
    unsafe = np.abs(room - full / 4.0) <= 1e-9 * full
    if mode.any():
        unsafe |= mode & (np.abs(p - np.floor(p) - 0.5) <= TIE_MARGIN)
    pred = np.where(mode, np.rint(np.minimum(p, 1e9)), 0).astype(np.int64)
    return ResidualGrid(np.where(mode, full, 2.0 * room), mode, pred, unsafe)


def choose_residual(raw: np.ndarray, l_orig: np.ndarray, base: np.ndarray, valid: np.ndarray, e: float,
                    out: OutputModel, offset_db: float, lattice: float | None,
                    grid: ResidualGrid) -> tuple[np.ndarray, np.ndarray]:
    """(k per pixel, exceptions): the residual symbols, and valid pixels neither mode keeps within ``e``."""
    step, mode, pred, unsafe = grid.step, grid.mode, grid.pred, grid.unsafe
    k0 = np.rint((np.where(valid, l_orig, base) - base) / step)
    k = k0.copy()
    ok = ~valid | unsafe  # unsafe pixels fall to the lossless store (ok=False below for valid ones)
    if mode.any():
        sel = valid & mode & ~unsafe
        k[sel] = raw[sel].astype(np.float64) - pred[sel]
        vals, safe = out.values(lattice * np.log10(np.maximum(pred[sel] + k[sel], 1.0)))
        exact = safe & (np.asarray(vals, dtype=np.float64) == raw[sel].astype(np.float64))
        idx = np.flatnonzero(sel)[exact]
        ok.flat[idx] = True
        k0[mode] = k[mode]
    for dk in _CANDIDATES:
        todo = ~ok & ~mode
        if not todo.any():
            break
        cand = k0[todo] + dk
        vals, safe = out.values(base[todo] + step[todo] * cand + offset_db)
        good = safe & (out.error_db(vals, raw[todo]) <= e - MARGIN_DB)
        idx = np.flatnonzero(todo)[good]
        k.flat[idx] = cand[good]
        ok.flat[idx] = True
    exceptions = valid & (~ok | unsafe)
    return np.where(exceptions, 0, k).astype(np.int64), exceptions


def encode_residual(k: np.ndarray, coded: np.ndarray, mode: np.ndarray | None = None) -> bytes:
    """The residual symbols of the ``coded`` pixels: log-mode ones, then lattice-mode ones, each under
    one Laplace fitted to them."""
    mode = np.zeros(k.shape, bool) if mode is None else mode
    writer = dct_entropy._Writer()
    head = [RESIDUAL_FORMAT]
    for group in (coded & ~mode, coded & mode):
        kv = k[group]
        idx = int(dct_entropy.scale_index(np.array([max(float(np.mean(np.abs(kv))), 1e-9)]))[0]) if kv.size else 0
        head.append(idx)
        if kv.size:
            writer.add_signed(kv.ravel(), np.full(kv.size, idx), dct_entropy._models(0))
    return bytes(head) + writer.finish().astype("<u4", copy=False).tobytes()


def decode_residual(data: bytes, coded: np.ndarray, mode: np.ndarray | None = None) -> np.ndarray:
    """Residual symbols (0 where not coded) of a chunk: the inverse of :func:`encode_residual`."""
    if len(data) < 3 or data[0] != RESIDUAL_FORMAT or max(data[1], data[2]) >= dct_entropy.N_SCALES \
            or (len(data) - 3) % 4:
        raise ContainerError("the residual of an error-bounded chunk is damaged")
    mode = np.zeros(coded.shape, bool) if mode is None else mode
    k = np.zeros(coded.shape, dtype=np.int64)
    try:
        reader = dct_entropy._Reader(np.frombuffer(data[3:], dtype="<u4").astype(np.uint32))
        for group, idx in ((coded & ~mode, data[1]), (coded & mode, data[2])):
            n = int(group.sum())
            if n:
                k[group] = reader.signed(np.full(n, idx), dct_entropy._models(0))
        if not reader.coder.is_empty():
            raise ContainerError("the residual of an error-bounded chunk has trailing data")
    except ContainerError:
        raise
    except Exception as exc:  # noqa: BLE001 - constriction raises plain errors on bad streams
        raise ContainerError(f"the residual of an error-bounded chunk does not decode: {exc}") from None
    return k


def pack(base: bytes, residual: bytes) -> bytes:
    return _LEN.pack(len(base)) + base + residual


def unpack(data: bytes) -> tuple[bytes, bytes]:
    if len(data) < _LEN.size:
        raise ContainerError("an error-bounded chunk is truncated")
    (n,) = _LEN.unpack_from(data)
    if n > len(data) - _LEN.size:
        raise ContainerError("an error-bounded chunk is truncated")
    return data[_LEN.size : _LEN.size + n], data[_LEN.size + n :]


def reconstruct(base: np.ndarray, k: np.ndarray, offset_db: float, lattice: float | None,
                grid: ResidualGrid) -> np.ndarray:
    """L_dB the decoder outputs: the base plus the dequantised residual, or the exact integer in lattice mode."""
    mode, pred = grid.mode, grid.pred
    out = base + grid.step * k + offset_db
    if mode.any():
        out[mode] = lattice * np.log10(np.maximum(pred[mode] + k[mode], 1.0))
    return out


__all__: list[str] = ["BASE_STEP_DB", "BASE_STEP_POWER", "MAX_ERROR_DB", "MIN_ERROR_DB", "OutputModel", "ResidualGrid",
                      "base_step", "bias_offset", "check_bound", "choose_residual", "decode_residual",
                      "encode_residual", "pack", "reconstruct", "residual_grid", "residual_step", "unpack"]
