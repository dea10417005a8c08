"""Codec v1 (``sarcodec-hyperprior-v1``) over whole rasters: the neural network run tile by tile.

A band is normalised to log backscatter, run through the model's analysis transform by the tiled
engine (``sarcodec.runner``: overlapping tiles, core window, GPU when present) and the latents are
entropy-coded in chunks of ``CHUNK`` x ``CHUNK`` latents (512 x 512 pixels) by ``LatentChunkSink``,
with the nodata mask and the pixels the model cannot code stored losslessly beside each chunk. A
finished chunk row is coded on a worker thread while the network computes the next one.
Decoding runs the synthesis transform over tiles of latents that ``LatentSource`` decodes lazily
(cosine-blended overlaps) and hands the rows to ``BandWriter``.

Everything here exists only for v1 files and models; this is the one codec module that needs torch.
``codec/encode.py`` and ``codec/decode.py`` dispatch to ``encode_band`` / ``decode_band`` by the
codec id; v2 has its own in ``codec/dct_v2.py``.
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from concurrent.futures import Future
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import interrupts
from ..errors import ContainerError, UsageError
from ..progress import Progress
from ..raster_io import RasterSource, padded_read
from ..runner import TileModel, run_tiled
from ..serial_reads import SerialReads
from ..tiling import Tile
from ..vocabulary import CODEC_V1, MAX_TILE_SIZE
from .band_writer import BandWriter
from .container import encode_fallback, encode_mask
from .domains import Domain, denormalise, estimate_band_stats, nodata_mask_of, normalise, to_log, uncodable_mask
from .entropy import LatentCoder
from .geotiff_output import weight_map_sink
from .model import SarCodec
from .options import BandEncoding, CompressOptions
from .quality import QualitySample, quality_sample
from .salvage import ChunkDamage
from .workers import chunk_row_pool, coding_pool

if TYPE_CHECKING:
    from ..device import DevicePolicy
    from .container import ContainerReader
    from .decode import DecodePlan
    from .encode import CompressPlan

CODEC_NAME = CODEC_V1
STRIDE = 16  # pixels per latent
CHUNK = 32  # latents per chunk side: 512x512 pixels coded independently
SAMPLE_CHUNKS = 8  # chunks per band decoded at compression time to estimate quality and bias
LOG_CLIP = 30.0  # normalised log values beyond +-300 dB are not backscatter: stored losslessly instead
MAX_LATENT = 1000.0  # latents beyond the entropy coder's symbol range mark a tile the model failed on


@functools.lru_cache(maxsize=4)
def latent_coder(model: SarCodec) -> LatentCoder:
    return LatentCoder(model)


def check_geometry(tile_size: int, overlap: int) -> None:
    """Options every front end passes; the upper bound is the header's, so decompress reads what compress wrote."""
    if not isinstance(tile_size, int) or tile_size < STRIDE or tile_size % STRIDE:
        raise UsageError(f"tile size must be a positive multiple of {STRIDE}, got {tile_size!r}")
    if tile_size > MAX_TILE_SIZE:
        raise UsageError(f"tile size must be at most {MAX_TILE_SIZE}, got {tile_size}")
    if not isinstance(overlap, int) or overlap < 0 or overlap % STRIDE or 2 * overlap > tile_size:
        raise UsageError(
            f"overlap must be a multiple of {STRIDE} between 0 and half the tile size, got {overlap!r}"
        )


class LatentChunkSink:
    """Receives latent rows from the encoder run and entropy-codes them chunk by chunk.

    Alongside each chunk it stores, losslessly, the nodata mask and the original values of pixels
    the model cannot code (and of tiles it failed on), reading those raw pixels once per chunk row.
    A few chunks spread over the band are decoded right away to estimate quality and the
    intensity gain that cancels the log-domain bias.

    All of that for a chunk row runs on a worker (``chunk_row_pool``), so the engine's thread goes
    back to the network at once instead of waiting for the entropy coder (on a GPU the coder, not
    the network, sets the pace). One chunk row at most is in flight: the next waits for it, which
    keeps the records in chunk order, the container byte-identical to coding inline, and memory
    bounded.
    """

    def __init__(self, *, ds, band: int, index: int, domain: Domain, nodata: float | None, model: SarCodec,
                 quality: int, coder: LatentCoder, writer, offset_db: float, latent_height: int,
                 latent_width: int, first_chunk_row: int = 0, estimate: bool = True) -> None:
        self.ds, self.band, self.index = ds, band, index
        self.domain, self.nodata = domain, nodata
        self.model, self.quality, self.coder, self.writer = model, quality, coder, writer
        self.offset_db = offset_db
        self.width = latent_width
        self.latent_height = latent_height
        self.chunk_rows = -(-latent_height // CHUNK)
        self.chunk_cols = -(-latent_width // CHUNK)
        self._rows: list[np.ndarray] = []
        self._buffered = 0
        self._next_chunk_row = first_chunk_row
        self._coding: Future | None = None  # the chunk row on the worker
        self.bad_windows: list[tuple[int, int, int, int]] = []
        n_chunks = self.chunk_rows * self.chunk_cols
        # Enough chunks to average out scene content, few enough to cost little on big scenes.
        n_samples = min(n_chunks, max(2, min(SAMPLE_CHUNKS, -(-n_chunks // 8))))
        step = max(1, n_chunks // n_samples)
        # --no-estimate: no chunk is decoded here at all (no RMSE/PSNR, no intensity gain: gain_db 0)
        self._sampled = (set(range(step // 2, n_chunks, step)) or {0}) if estimate else set()
        self.samples: dict[tuple[int, int], QualitySample] = {}
        self.uncodable_pixels = 0
        self.core_margin = 0  # latents at each inner tile edge that belong to the neighbour (overlap / 2)

    def bad_tile(self, tile: Tile, tile_input: np.ndarray, reason: str) -> np.ndarray:
        """Engine fallback: remember the pixels of the tile's core for lossless storage, code zeros meanwhile.

        Only the core (the latents this tile alone provides) is registered: its rows are final before
        the chunk rows holding them are coded, so what is stored never depends on batch timing or on
        torchrun shard edges.
        """
        m = self.core_margin
        y0 = tile.row.out_start + (0 if tile.row.lead_border else m)
        y1 = tile.row.out_start + tile.row.out_size - (0 if tile.row.trail_border else m)
        x0 = tile.col.out_start + (0 if tile.col.lead_border else m)
        x1 = tile.col.out_start + tile.col.out_size - (0 if tile.col.trail_border else m)
        self.bad_windows.append((y0 * STRIDE, x0 * STRIDE, (y1 - y0) * STRIDE, (x1 - x0) * STRIDE))
        return np.zeros((self.coder.latent_channels, tile.row.out_size, tile.col.out_size), np.float32)

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None) -> None:
        self._rows.append(block)
        self._buffered += block.shape[1]
        while self._buffered >= CHUNK or (self._buffered and row0 + block.shape[1] >= self.latent_height):
            band = np.concatenate(self._rows, axis=1) if len(self._rows) > 1 else self._rows[0]
            take = min(CHUNK, band.shape[1])
            self._submit(band[:, :take])
            rest = band[:, take:]
            self._rows = [rest] if rest.shape[1] else []
            self._buffered = rest.shape[1]

    def _submit(self, y: np.ndarray) -> None:
        """Hand a chunk row to the worker once the previous one is done (its error surfaces here)."""
        self._wait()
        cr = self._next_chunk_row
        self._next_chunk_row += 1
        # The bad windows known now are those coding inline would have seen: later tiles add only
        # windows below this chunk row (see ``bad_tile``), so the copy changes nothing but is stable.
        self._coding = chunk_row_pool().submit(self._code_chunk_row, cr, y, tuple(self.bad_windows))

    def _wait(self) -> None:
        coding, self._coding = self._coding, None
        if coding is not None:
            interrupts.result(coding)

    def _code_chunk_row(self, cr: int, y: np.ndarray, bad_windows: tuple[tuple[int, int, int, int], ...]) -> None:
        from rasterio.windows import Window

        r0 = cr * CHUNK * STRIDE
        r1 = min(r0 + CHUNK * STRIDE, self.ds.height)
        raw = self.ds.read(self.band, window=Window(0, r0, self.ds.width, r1 - r0))
        nodata = nodata_mask_of(raw, self.nodata) if self.nodata is not None else None
        uncodable = uncodable_mask(raw, self.domain, nodata)
        for by, bx, bh, bw in bad_windows:
            ya, yb = max(by, r0), min(by + bh, r1)
            if ya < yb:
                sel = np.zeros_like(uncodable)
                sel[ya - r0 : yb - r0, max(bx, 0) : bx + bw] = True
                uncodable |= sel if nodata is None else sel & ~nodata
        self.uncodable_pixels += int(uncodable.sum())
        chunks = [np.ascontiguousarray(y[:, :, cc * CHUNK : (cc + 1) * CHUNK]) for cc in range(self.chunk_cols)]
        # Chunks are independent: code them on a few threads (the float64 hyperprior releases the GIL).
        with interrupts.waiting():
            coded = list(coding_pool().map(self.coder.encode_chunk, chunks))
        for cc, (data, y_hat) in enumerate(coded):
            c0 = cc * CHUNK * STRIDE
            c1 = min(c0 + CHUNK * STRIDE, self.ds.width)
            self.writer.add(self.index, cr, cc, "latent", data)
            region_nodata = nodata[:, c0:c1] if nodata is not None else None
            if region_nodata is not None and region_nodata.any():
                self.writer.add(self.index, cr, cc, "mask", encode_mask(region_nodata))
            region_unc = uncodable[:, c0:c1]
            if region_unc.any():
                self.writer.add(self.index, cr, cc, "fallback",
                                encode_fallback(raw[:, c0:c1], region_unc, origin=(r0, c0)))
            if cr * self.chunk_cols + cc in self._sampled:
                keep = ~region_unc if region_nodata is None else ~(region_unc | region_nodata)
                self.samples[(cr, cc)] = self._measure(y_hat, raw[:, c0:c1], keep)

    @torch.no_grad()
    def _measure(self, y_hat: np.ndarray, raw: np.ndarray, keep: np.ndarray) -> QualitySample:
        s = QualitySample()
        if not keep.any():
            return s
        device = next(self.model.parameters()).device  # wherever the run put the model
        x_hat = self.model.synthesis(torch.from_numpy(y_hat)[None].to(device), self.quality)
        x_hat = x_hat.float().cpu().numpy()[0, 0, : raw.shape[0], : raw.shape[1]]
        l_orig = to_log(raw, self.domain)[keep].astype(np.float64)
        l_hat = denormalise(x_hat, self.offset_db)[keep].astype(np.float64)
        return quality_sample(l_orig, l_hat)

    def close(self) -> None:
        if self._buffered:
            band = np.concatenate(self._rows, axis=1)
            self._submit(band)
            self._rows, self._buffered = [], 0
        self._wait()

    def abort(self) -> None:
        """Drop buffered rows; a chunk row still on the worker finishes first (it writes into the writer)."""
        self._rows = []
        with contextlib.suppress(Exception):  # the run's own error is the one that matters
            self._wait()


def encode_band(plan: CompressPlan, ds, index: int, writer, options: CompressOptions, progress: Progress, *,
                chunk_rows: range | None = None, weight_map: str | Path | None = None) -> BandEncoding:
    """Encode one band (or the chunk rows ``chunk_rows`` of it, for a torchrun rank) into ``writer``.

    The tiled engine runs the analysis transform (tiles that fail are kept lossless) and
    ``LatentChunkSink`` entropy-codes the latent rows chunk row by chunk row.
    """
    ds = SerialReads(ds)  # the read-ahead thread reads tiles while this one reads chunk rows: see serial_reads
    band = index + 1
    lh, lw = plan.latent_shape
    stats = estimate_band_stats(ds, band, plan.domain)
    offset = float(stats.offset_db)
    domain = plan.domain

    def preprocess(raw: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        with np.errstate(all="ignore"):
            x = normalise(to_log(raw, domain), offset)
        return np.where(np.isfinite(x), np.clip(x, -LOG_CLIP, LOG_CLIP), 0.0).astype(np.float32)

    rows = chunk_rows if chunk_rows is not None else range(plan.chunk_rows)
    src = RasterSource(ds, [band], nodata=plan.nodatas[index], preprocess=preprocess, fill=0.0)
    sink = LatentChunkSink(ds=ds, band=band, index=index, domain=domain, nodata=plan.nodatas[index],
                           model=plan.model, quality=plan.quality, coder=plan.coder, writer=writer,
                           offset_db=offset, latent_height=lh, latent_width=lw, first_chunk_row=rows.start,
                           estimate=options.estimate_quality)
    sink.core_margin = options.overlap // STRIDE // 2
    model, q = plan.model, plan.quality
    encoder = TileModel(lambda t: model.analysis(t, q), scale=Fraction(1, STRIDE), multiple_of=STRIDE,
                        in_channels=1, out_channels=model.latent_channels, module=model,
                        name=f"compress band {band}/{plan.info.bands}")
    weight_sink = weight_map_sink(weight_map, plan.meta, lh, lw, STRIDE) if weight_map else None
    report = run_tiled(encoder, src, sink, tile_size=options.tile_size, overlap=options.overlap, window="core",
                       policy=plan.policy, progress=progress, fallback=sink.bad_tile, weight_sink=weight_sink,
                       max_abs=MAX_LATENT, out_rows=(rows.start * CHUNK, min(rows.stop * CHUNK, lh)))
    return BandEncoding(stats.to_dict(), sink.samples, sink.uncodable_pixels, len(report.bad_tiles), report.device,
                        report.batch_size)


class LatentSource:
    """Tiles of decoded latents for one band, decoding chunks lazily with a small cache.

    The engine's read-ahead thread calls ``read``, so entropy decoding of the next batch overlaps
    with synthesis of the current one. Only about two chunk rows are cached: memory stays flat.
    """

    stride = STRIDE  # pixels per grid unit (``chunk`` is in latents), as BandWriter reads it

    def __init__(self, reader: ContainerReader, index: int, coder: LatentCoder, height: int, width: int,
                 chunk: int, *, salvage: bool, damaged: list[int]) -> None:
        self.reader, self.index, self.coder = reader, index, coder
        self.height, self.width, self.chunk = height, width, chunk
        self.channels = coder.latent_channels
        self.damage = ChunkDamage(reader.name, index, salvage=salvage, damaged=damaged)
        self.damaged_chunks = self.damage.chunks
        self.chunk_cols = -(-width // chunk)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._capacity = 3 * self.chunk_cols + 2

    def _chunk(self, cr: int, cc: int) -> np.ndarray:
        key = (cr, cc)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        h = min(self.chunk, self.height - cr * self.chunk)
        w = min(self.chunk, self.width - cc * self.chunk)
        record = self.reader.find(self.index, cr, cc, "latent")
        try:
            if record is None:
                raise self.damage.missing(cr, cc)
            y = self.coder.decode_chunk(self.reader.read_record(record), h, w)
        except ContainerError as exc:
            self.damage.handle(cr, cc, record, exc)
            y = np.zeros((self.channels, h, w), np.float32)
        self._cache[key] = y
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return y

    def _raw(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        out = np.empty((self.channels, h, w), np.float32)
        c = self.chunk
        for cr in range(y0 // c, (y0 + h - 1) // c + 1):
            for cc in range(x0 // c, (x0 + w - 1) // c + 1):
                block = self._chunk(cr, cc)
                ya, yb = max(y0, cr * c), min(y0 + h, cr * c + block.shape[1])
                xa, xb = max(x0, cc * c), min(x0 + w, cc * c + block.shape[2])
                out[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = block[:, ya - cr * c : yb - cr * c,
                                                                     xa - cc * c : xb - cc * c]
        return out

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        return padded_read(self._raw, self.height, self.width, y0, x0, h, w)

    def valid_mask(self, y0: int, x0: int, h: int, w: int) -> None:
        return None  # nodata comes from the stored masks, at full resolution, in BandWriter

def decode_band(plan: DecodePlan, reader: ContainerReader, index: int, out, policy: DevicePolicy,
                progress: Progress, damaged: list[int], *, salvage: bool, rows: tuple[int, int], weight_sink=None):
    """Decode raster rows ``rows`` of band ``index`` into ``out`` (see ``codec.decode.decode_band``).

    The decoder runs over the tiles of those rows (its tiles need their neighbours' latents) and
    ``BandWriter`` keeps the window's columns; returns ``run_tiled``'s report (device, batch size).
    """
    bands, height, width = plan.header["shape"]
    r0, r1 = rows
    model, quality, grid = plan.model, plan.quality, plan.header["grid"]
    lh, lw = -(-height // STRIDE), -(-width // STRIDE)
    src = LatentSource(reader, index, latent_coder(model), lh, lw, grid["chunk"], salvage=salvage, damaged=damaged)
    writer = BandWriter(out, reader, index, plan.header, src, plan.out_dtype, plan.nodata,
                        damage_value=plan.damage_value, window=plan.window)
    decoder = TileModel(lambda t, q=quality: model.synthesis(t, q), scale=STRIDE, multiple_of=1,
                        in_channels=model.latent_channels, out_channels=1, module=model,
                        name=f"decompress band {index + 1}/{bands}")
    return run_tiled(decoder, src, writer, tile_size=grid.get("tile_size", 256) // STRIDE,
                     overlap=plan.overlap // STRIDE, window="cosine", policy=policy, progress=progress,
                     weight_sink=weight_sink, out_rows=None if (r0, r1) == (0, height) else (r0, r1))
