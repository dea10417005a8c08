"""Codec v2 (``sarcodec-dct-v2``) over whole bands: a band's chunk rows into records, and back.

``dct_v2`` codes one chunk; this module runs it over a band the way both front ends and torchrun
ranks need it: every chunk row read once, its chunks coded on the shared pool (``workers``), the
nodata mask and the pixels v2 cannot code (or, error-bounded, cannot keep within the bound) stored
losslessly beside each chunk, and every chunk's reconstruction measured for the quality estimate
(``quality``). Decoding reads only the chunk rows and columns the plan's window covers and hands
them to ``BandWriter``. Nothing here imports torch.

``codec/encode.py`` and ``codec/decode.py`` call ``encode_band`` / ``decode_band`` for files of this
codec; v1's counterparts are in ``codec/hyperprior_v1.py``.
"""

from __future__ import annotations

from concurrent.futures import wait
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import interrupts
from ..progress import Progress, check_cancelled
from . import bounded
from .band_writer import BandWriter
from .container import encode_fallback, encode_mask
from .dct_v2 import (
    CHUNK_PX,
    BandCoding,
    ChunkRowDecoder,
    chunk_grid,
    encode_bounded_chunk,
    encode_chunk,
    normalised,
    read_chunk_row,
)
from .domains import estimate_band_stats
from .geotiff_output import weight_map_sink
from .options import BandDecodeReport, BandEncoding
from .quality import QualitySample, quality_sample
from .workers import chunk_row_pool, coding_pool

if TYPE_CHECKING:
    from .container import ContainerReader
    from .decode import DecodePlan
    from .encode import CompressPlan


def encode_band(plan: CompressPlan, ds, index: int, writer, progress: Progress, *,
                chunk_rows: range | None = None, weight_map: str | Path | None = None) -> BandEncoding:
    """Codec v2: every chunk row read once, its chunks coded on the pool, masks and fallbacks stored.

    The encoder has each chunk's reconstruction from its own symbols, so every chunk (not a sample)
    feeds the quality estimate and the intensity gain. v2 has no tiles to blend: a weight map is 1
    everywhere, on the pixel grid.
    """
    if weight_map:
        sink = weight_map_sink(weight_map, plan.meta, ds.height, ds.width, 1)
        try:
            for r0 in range(0, ds.height, CHUNK_PX):  # in strips: memory does not grow with the scene
                sink.write_rows(r0, np.ones((1, min(CHUNK_PX, ds.height - r0), ds.width), np.float32), None)
            sink.close()
        except BaseException:
            sink.abort()
            raise

    band = index + 1
    coding, model, nodata = plan.band_coding[index], plan.model, plan.nodatas[index]
    rows, cols = chunk_grid(ds.height, ds.width)
    todo = chunk_rows if chunk_rows is not None else range(rows)
    stats = estimate_band_stats(ds, band, plan.domain)
    out_model = None
    if coding.max_error_db is not None:  # the encoder checks the bound on the values the decoder will write
        out_model = bounded.OutputModel(plan.domain, np.dtype(plan.info.dtype), stats.offset_db, nodata)
    samples: dict[tuple[int, int], QualitySample] = {}
    uncodable = 0
    progress.start(len(todo) * cols, f"compress band {band}/{plan.info.bands}: {len(todo) * cols} chunks on cpu")
    pool = coding_pool()

    def code(cc: int, raw: np.ndarray, ldb: np.ndarray, valid: np.ndarray,
             nd: np.ndarray | None) -> tuple[bytes, np.ndarray | None, np.ndarray | None]:
        sl = slice(cc * CHUNK_PX, (cc + 1) * CHUNK_PX)
        if out_model is None:
            return (*encode_chunk(ldb[:, sl], valid[:, sl], coding, model), None)
        return encode_bounded_chunk(raw[:, sl], ldb[:, sl], valid[:, sl],
                                    None if nd is None else nd[:, sl], coding, model, out_model)

    def start(cr: int) -> tuple:
        """Read chunk row ``cr`` and queue its chunks on the pool."""
        raw, ldb, nd, unc = read_chunk_row(ds, band, cr, plan.domain, nodata)
        valid = ~unc if nd is None else ~(unc | nd)
        return cr, raw, ldb, nd, unc, valid, [pool.submit(code, cc, raw, ldb, valid, nd) for cc in range(cols)]

    # The next chunk row is read and queued before this one's results are collected: the pool goes
    # from one row's last chunks straight to the next row's (no barrier per row, which cost a quarter
    # of the time when a row's empty chunks finish early), and at most two rows are in memory.
    rows_left = iter(todo)
    ahead: list[tuple] = []
    try:
        first = next(rows_left, None)
        if first is not None:
            ahead.append(start(first))
        while ahead:
            check_cancelled(progress)
            cr, raw, ldb, nd, unc, valid, futures = ahead.pop(0)
            following = next(rows_left, None)
            if following is not None:
                ahead.append(start(following))
            r0 = cr * CHUNK_PX
            uncodable += int(unc.sum())
            for cc, future in enumerate(futures):
                data, rec, exceptions = interrupts.result(future)
                c0 = cc * CHUNK_PX
                sl = slice(c0, c0 + CHUNK_PX)
                writer.add(index, cr, cc, "latent", data)
                if nd is not None and nd[:, sl].any():
                    writer.add(index, cr, cc, "mask", encode_mask(nd[:, sl]))
                lossless = unc[:, sl] if exceptions is None else unc[:, sl] | exceptions
                if exceptions is not None:
                    uncodable += int(exceptions.sum())
                if lossless.any():
                    writer.add(index, cr, cc, "fallback", encode_fallback(raw[:, sl], lossless, origin=(r0, c0)))
                if rec is not None:
                    keep = valid[:, sl]
                    samples[(cr, cc)] = quality_sample(ldb[:, sl][keep], rec[keep])
            progress.advance(cols)
    finally:
        for item in ahead:  # an error or a cancel: chunks not started are dropped
            for future in item[-1]:
                future.cancel()
    return BandEncoding(stats.to_dict(), samples, uncodable, 0, "cpu", 0)


def decode_band(plan: DecodePlan, reader: ContainerReader, index: int, out, progress: Progress, damaged: list[int],
                *, salvage: bool, rows: tuple[int, int], weight_sink=None) -> BandDecodeReport:
    """Decode raster rows ``rows`` of band ``index`` into ``out`` (see ``codec.decode.decode_band``).

    Only the chunks the plan's window covers are read and decoded, chunk row by chunk row (chunks in
    parallel); ``BandWriter`` converts and patches them. A weight map is 1 everywhere (no blending).
    """
    bands, height, width = plan.header["shape"]
    r0, r1 = rows
    window = plan.window
    coding = BandCoding.from_json(plan.header["bands"][index], index + 1)
    src = ChunkRowDecoder(reader, index, coding, plan.model, height, width, salvage=salvage,
                          damaged=damaged, pool_map=coding_pool().map)
    writer = BandWriter(out, reader, index, plan.header, src, plan.out_dtype, plan.nodata,
                        damage_value=plan.damage_value, window=window)
    c = CHUNK_PX
    wc0, ww = (window[1], window[3]) if window is not None else (0, width)
    cols = range(wc0 // c, (wc0 + ww - 1) // c + 1)
    chunk_rows = range(r0 // c, -(-r1 // c))
    progress.start(len(chunk_rows), f"decompress band {index + 1}/{bands}: "
                                    f"{len(chunk_rows) * len(cols)} chunks on cpu")
    # The next chunk row decodes on the pool while this one is converted and written (a thread of
    # ``chunk_row_pool`` waits on ``coding_pool``, never the reverse): no idle pool per row.
    rows_pool = chunk_row_pool()
    pending = rows_pool.submit(src.row, chunk_rows[0], cols) if len(chunk_rows) else None
    try:
        for k, cr in enumerate(chunk_rows):
            check_cancelled(progress)
            ldb = interrupts.result(pending)
            pending = rows_pool.submit(src.row, chunk_rows[k + 1], cols) if k + 1 < len(chunk_rows) else None
            a, b = max(r0, cr * c), min(r1, cr * c + ldb.shape[0])
            writer.write_rows(a, normalised(ldb[a - cr * c : b - cr * c], writer.offset)[None], col0=cols.start * c)
            if weight_sink is not None:
                weight_sink.write_rows(a - plan.rows[0], np.ones((1, b - a, ww), np.float32), None)
            progress.advance(1)
    finally:
        if pending is not None and not pending.cancel():
            with interrupts.waiting():
                wait([pending])  # the reader stays open until the row being decoded is done with it
    return BandDecodeReport()
