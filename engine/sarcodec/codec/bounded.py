"""Error-bounded coding: no valid pixel moves by more than E dB (``compress --max-error-db E``).

Design (lossy base plus residual, as in DLPR): each chunk is first coded by codec v2 at a coarse step
(the base, :func:`base_step`), then the residual between the original and the base is quantised so
that every decoded value is within E of the original, and coded with ``constriction``.

**Integer linear bands** (uint16 GRD DN, integer intensity) are quantised in integer cells
(``codec/dn_cells.py``): the widest runs of integers one output integer can stand for. The symbol is
``cell(DN) - cell(round(P))`` (P the base's value) and the decoder outputs the cell's representative.
This replaced dB steps shrunk by the DN rounding's error plus an exact "lattice mode" for dark
pixels, which wasted most at small bounds (at DN 100 and E = 0.1 dB a step spanned 1.3 integers,
a cell spans 3). The entropy model is one Laplace scale index per chunk, scaled per pixel by the
representative over the width of the reference cell (the spread grows with the value, the cells with
their width), its table centred where P sits in its reference cell (``dn_cells.POSITIONS`` bins per half
cell, mirrored: a prediction near a cell's upper edge makes +1 as likely as 0; 3-5 % of the bits at
E = 1 dB, little at 0.1 where cells are single integers). With the cells the best base is coarser
(``CELL_BASE_STEP_DB``). Measured on the evaluation groups (``bench/results/bounded.md``) against dB
steps: 7-13 % smaller files at E <= 0.5 dB and 4-8 % at 1 dB on the radar-geometry DN groups; on the
geocoded group (median DN 200, where the steps' rounding slack was small) 7 % at 0.1 dB, 1-3 % at
0.25-0.5 dB, 2 % larger at 1 dB. Tried and not kept (with the older, finer base): per-pixel scale
contexts from the base's local activity (3 x 3 standard deviation of the base, 2-4 buckets, a scale
each per chunk: no gain, 0.1 % more with their side bytes); buckets of cell width instead of the
representative/width scaling (0.3 % more).

Cells are maximal, so their representatives cannot move inside them; their mean-intensity bias (up
to +1.6 % at E = 1 dB on the validation group: values crowd towards the prediction) is removed by
taking ``2 |d|`` off one side of every cell (``cells_of``), with the band's offset ``d`` the smallest
of ``0, +-E/40, ... +-E/4`` whose bias on the sample chunks is within 0.1 % (:func:`bias_offset`;
the bias changes in jumps as the cells move, so it is measured at each candidate).

**Other bands** (float, dB) are quantised in dB steps ``2 (E - |d|)`` around the base:
``k = round((L - L_base) / step)``, output ``L_base + step k + d``, one Laplace per chunk; ``d``
cancels the mean-intensity bias of log-domain quantisation (about +0.9 % at E = 1 dB without it) at
``log2(E / (E - |d|))`` bits per pixel. Integer bands written before integer cells used these steps
too, with each pixel's step shrunk by the DN rounding's error and dark pixels coded as exact integers
(lattice mode); they still decode (residual format 1).

The bound must hold on the values a user reads, in the raster's own data type, not only in floating
point, so the encoder runs the decoder's own arithmetic (:class:`OutputModel`) on every candidate:
the value's own cell, then its neighbours (cells), or ``k``, ``k-1``, ``k+1``, ``k-2``, ``k+2`` (steps),
and keeps the first whose output value is within the bound with a margin and whose rounding is not
within 1e-6 of a tie (so that another machine's ``pow`` cannot round it the other way). Pixels whose
base sits within 1e-9 of a cell boundary are not coded at all (another machine's ``exp`` might put
them in the other cell). A pixel nothing keeps within the bound is stored losslessly (the container's
fallback records, as NaN and zero pixels already are): the bound is checked for every pixel at
compression time, before the file is renamed into place.

Chunk record of a bounded band: ``u32 length of the base chunk``, the base chunk (``dct_entropy``),
then the residual: format 2 (cells), one byte version, one byte scale index, ANS words of the coded
pixels in raster order; format 1 (steps), one byte version, one byte scale index of the step symbols,
one of the lattice-mode symbols, ANS words (step pixels in raster order, then lattice pixels).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from sarcodec.codec import dct_entropy, dn_cells
from sarcodec.codec.domains import Domain, denormalise, from_log
from sarcodec.errors import ContainerError
from sarcodec.vocabulary import MAX_ERROR_DB, MIN_ERROR_DB

#: The base's quantiser step is ``BASE_STEP_DB * E**BASE_STEP_POWER`` for bands coded in dB steps:
#: measured on the held-out groups (total bits of base plus residual), the best base step is about
#: 10 E at E = 0.1 dB and 3.5 E at E = 1 dB; a fixed 6 E cost 2-13 % more at the ends.
BASE_STEP_DB = 3.5
BASE_STEP_POWER = 0.55
#: Integer linear bands (integer cells) do best with a coarser base, ``CELL_BASE_STEP_DB *
#: E**CELL_BASE_STEP_POWER`` (2.7 dB at E = 0.1, 5 dB at E = 1): where the cells are single integers the
#: residual is coded nearly losslessly whatever the base, so bits spent on the base buy little.
#: Measured on the three evaluation groups against the dB-step formula: 3-8 % fewer bits at E <= 0.5 dB,
#: the sweep's optimum within 1 % in every group.
CELL_BASE_STEP_DB = 5.0
CELL_BASE_STEP_POWER = 0.27
#: Smallest bound (below it the residual is near-lossless float noise: a lossless GeoTIFF is better)
#: and largest (beyond it the quality levels serve better); in ``sarcodec.vocabulary``.
#: Safety margins against another machine's last-bit float differences (pow, BLAS summation order).
MARGIN_DB = 1e-5
TIE_MARGIN = 1e-6
#: Residual record versions: 1, steps in dB (float bands; integer bands before integer cells, still
#: decoded); 2, integer cells (integer linear bands).
RESIDUAL_FORMAT = 1
CELL_FORMAT = 2
#: Integer cells: candidate offsets (each side, up to E/4) and the mean-intensity bias accepted on the sample.
CELL_OFFSETS = 10
CELL_BIAS = 0.001
_LEN = struct.Struct("<I")
#: How a damaged residual is named in errors (the base chunk says "v2 chunk").
RESIDUAL_WHAT = "the residual of an error-bounded chunk"
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


def base_step(max_error_db: float, lattice: float | None = None) -> float:
    """Quantiser step (dB) of the base for a bound of ``max_error_db`` (``lattice``: an integer linear
    band's dB per decade, coded in integer cells)."""
    if lattice is not None:
        return float(f"{CELL_BASE_STEP_DB * max_error_db ** CELL_BASE_STEP_POWER:.6g}")
    return float(f"{BASE_STEP_DB * max_error_db ** BASE_STEP_POWER:.6g}")


def residual_step(e: float, offset_db: float) -> float:
    """Quantiser step of the residual: bins of this width around ``offset_db`` stay within ``e``."""
    return 2.0 * (e - abs(offset_db))


def bias_offset(l_orig: np.ndarray, base: np.ndarray, e: float, factor: float | None = None) -> float:
    """Residual offset (dB, |d| <= e/4, rounded to 1e-4) that cancels the mean-intensity bias on a sample.

    ``l_orig`` and ``base`` are the valid pixels' L_dB and their base; the bias is measured with the
    offset applied (fixed-point rounds: the offset changes the bins it is measured on). ``factor``:
    an integer linear band's dB per decade, whose values are coded in integer cells (``cells_of``).
    """
    if not l_orig.size:
        return 0.0
    ref = float(l_orig.max())
    i_orig = float(np.sum(10.0 ** ((l_orig - ref) / 10.0)))
    if factor is not None:
        return _cell_offset(l_orig, e, factor)
    d = 0.0
    for _ in range(3):
        step = residual_step(e, d)
        l_hat = base + step * np.rint((l_orig - base) / step) + d
        i_hat = float(np.sum(10.0 ** ((l_hat - ref) / 10.0)))
        if i_hat <= 0 or i_orig <= 0:
            return 0.0
        d = float(np.clip(d + 10.0 * math.log10(i_orig / i_hat), -e / 4, e / 4))
    return round(d, 4)


def _cell_offset(l_orig: np.ndarray, e: float, factor: float) -> float:
    """The smallest offset of the integer cells whose mean-intensity bias on the sample is within
    ``CELL_BIAS``, else the one of least bias: how the cells group integers changes in jumps as
    they move, so the bias is measured at each candidate rather than followed to a fixed point."""
    dn, count = np.unique(np.rint(10.0 ** (l_orig / factor)), return_counts=True)
    power = factor / 10.0  # intensity is value**2 for amplitude, value for intensity
    i_orig = float(np.sum(count * dn**power))
    best, best_bias = 0.0, math.inf
    for j in range(2 * CELL_OFFSETS + 1):  # 0, -1, +1, -2, +2, ... steps of E / (4 CELL_OFFSETS)
        d = round(e / 4 * ((j + 1) // 2) / CELL_OFFSETS * (1 if j % 2 == 0 else -1), 4)
        cells = cells_of(e, factor, d)
        bias = abs(float(np.sum(count * cells.reps[cells.index(dn)].astype(np.float64) ** power)) / i_orig - 1.0)
        if bias < best_bias:
            best, best_bias = d, bias
        if bias <= CELL_BIAS:
            break
    return best


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
        raise ContainerError(f"{RESIDUAL_WHAT} is damaged")
    mode = np.zeros(coded.shape, bool) if mode is None else mode
    k = np.zeros(coded.shape, dtype=np.int64)
    with dct_entropy.ans_reader(data[3:], RESIDUAL_WHAT) as reader:
        for group, idx in ((coded & ~mode, data[1]), (coded & mode, data[2])):
            n = int(group.sum())
            if n:
                k[group] = reader.signed(np.full(n, idx), dct_entropy._models(0))
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



def code_residual(raw: np.ndarray, l_orig: np.ndarray, base: np.ndarray, valid: np.ndarray, coded: np.ndarray,
                  e: float, out: OutputModel, offset_db: float, lattice: float | None
                  ) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(residual record, decoded L_dB, exceptions) of one chunk whose base is ``base``.

    ``coded``: the pixels the decoder knows carry a symbol (outside the chunk's nodata); ``valid``: the
    pixels to hold within ``e``. Integer linear bands (``lattice`` = dB per decade) are coded in integer
    cells, other bands in dB steps.
    """
    if lattice is not None:
        return _code_cells(raw, base, valid, coded, e, out, lattice, offset_db)
    grid = residual_grid(base, e, offset_db, None)
    k, exceptions = choose_residual(raw, l_orig, base, valid, e, out, offset_db, None, grid)
    return encode_residual(k, coded), reconstruct(base, k, offset_db, None, grid), exceptions


def decode_residual_chunk(data: bytes, base: np.ndarray, coded: np.ndarray, e: float, offset_db: float,
                          lattice: float | None) -> np.ndarray:
    """L_dB of one chunk from its base and residual record (either format)."""
    if lattice is not None and data[:1] == bytes([CELL_FORMAT]):
        return _decode_cells(data, base, coded, e, lattice, offset_db)
    grid = residual_grid(base, e, offset_db, lattice)
    return reconstruct(base, decode_residual(data, coded, grid.mode), offset_db, lattice, grid)


def cells_of(e: float, factor: float, offset_db: float = 0.0) -> dn_cells.DnCells:
    """The integer cells of bound ``e`` (``factor`` dB per decade), with room for the float path's margin.

    ``offset_db`` moves the representatives by shortening one side of every cell by ``2 |offset_db|``
    (negative: the representatives sit lower in their cells), as the offset of the dB steps does.
    """
    full = dn_cells.cell_ratio(e, factor, 2 * MARGIN_DB)
    short = dn_cells.cell_ratio(e, factor, 2 * MARGIN_DB + 2 * abs(offset_db))
    return dn_cells.cells(short, full) if offset_db < 0 else dn_cells.cells(full, short)


def _code_cells(raw: np.ndarray, base: np.ndarray, valid: np.ndarray, coded: np.ndarray, e: float,
                out: OutputModel, factor: float, offset_db: float) -> tuple[bytes, np.ndarray, np.ndarray]:
    cells = cells_of(e, factor, offset_db)
    ref, tie, pbin, mirrored = dn_cells.reference_of(base, cells, factor)
    last = len(cells) - 1
    rep_db = dn_cells.rep_db(cells, factor)
    own = np.where(valid, cells.index(np.where(valid, raw, 1)), ref)
    sym = np.zeros(base.shape, np.int64)
    ok = ~valid | tie
    for dk in (0, -1, 1):  # the value's own cell, else a neighbour whose representative still holds
        todo = ~ok
        if not todo.any():
            break
        cell = np.clip(own[todo] + dk, 0, last)
        vals, safe = out.values(rep_db[cell])
        good = safe & (out.error_db(vals, raw[todo]) <= e - MARGIN_DB)
        idx = np.flatnonzero(todo)[good]
        sym.flat[idx] = cell[good] - ref.flat[idx]
        ok.flat[idx] = True
    exceptions = valid & (~ok | tie)
    sym[exceptions] = 0
    carry = coded & ~tie
    s, rc, pb = np.where(mirrored, -sym, sym)[carry], ref[carry], pbin[carry]
    column = np.clip(s, -dct_entropy.ESC, dct_entropy.ESC) + dct_entropy.ESC
    scale = 0
    if s.size:  # the scale of least bits (on every 4th symbol) among those next to the mean's
        guess = int(dct_entropy.scale_index(np.array([max(float(np.mean(np.abs(s) / cells.ratio[rc])), 1e-9)]))[0])
        few = slice(None, None, 4 if s.size > 4096 else 1)
        bits = {c: float(dn_cells.table_bits()[dn_cells.table_index(cells, c)[rc[few]] + pb[few], column[few]].sum())
                for c in range(max(guess - 1, 0), min(guess + 2, dct_entropy.N_SCALES))}
        scale = min(bits, key=bits.__getitem__)
    writer = dct_entropy._Writer()
    if s.size:
        writer.add_signed(s, dn_cells.table_index(cells, scale)[rc] + pb, dn_cells.table_models())
    data = bytes([CELL_FORMAT, scale]) + writer.finish().astype("<u4", copy=False).tobytes()
    return data, _cell_values(base, ref, sym, carry, cells, rep_db), exceptions


def _cell_values(base: np.ndarray, ref: np.ndarray, sym: np.ndarray, carry: np.ndarray, cells: dn_cells.DnCells,
                 rep_db: np.ndarray) -> np.ndarray:
    cell = ref[carry] + sym[carry]
    if cell.size and (cell.min() < 0 or cell.max() >= len(cells)):
        raise ContainerError("the residual of an error-bounded chunk points outside the value range")
    out = base.copy()
    out[carry] = rep_db[cell]
    return out


def _decode_cells(data: bytes, base: np.ndarray, coded: np.ndarray, e: float, factor: float,
                  offset_db: float) -> np.ndarray:
    if len(data) < 2 or data[1] >= dct_entropy.N_SCALES or (len(data) - 2) % 4:
        raise ContainerError(f"{RESIDUAL_WHAT} is damaged")
    cells = cells_of(e, factor, offset_db)
    ref, tie, pbin, mirrored = dn_cells.reference_of(base, cells, factor)
    carry = coded & ~tie
    sym = np.zeros(base.shape, np.int64)
    with dct_entropy.ans_reader(data[2:], RESIDUAL_WHAT) as reader:
        if carry.any():
            q = reader.signed(dn_cells.table_index(cells, data[1])[ref[carry]] + pbin[carry], dn_cells.table_models())
            sym[carry] = np.where(mirrored[carry], -q, q)
    return _cell_values(base, ref, sym, carry, cells, dn_cells.rep_db(cells, factor))


__all__: list[str] = ["BASE_STEP_DB", "BASE_STEP_POWER", "CELL_BASE_STEP_DB", "CELL_BASE_STEP_POWER",
                      "CELL_FORMAT", "MAX_ERROR_DB", "MIN_ERROR_DB", "OutputModel", "ResidualGrid", "base_step",
                      "bias_offset", "cells_of", "check_bound", "choose_residual", "code_residual",
                      "decode_residual", "decode_residual_chunk", "encode_residual", "pack", "reconstruct",
                      "residual_grid", "residual_step", "unpack"]
