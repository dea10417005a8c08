"""Compress a raster into a container and back: the codec on top of the tiled engine.

This module is the API every front end calls (CLI, QGIS plugin, torchrun ranks). Front ends map
their own options onto ``CompressOptions`` / ``DecompressOptions`` and their own progress display
onto ``sarcodec.progress.Progress``; nothing here knows about terminals or QGIS.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..destinations import check_writable
from ..device import DevicePolicy
from ..errors import ContainerError, DamagedChunkError, InputFileError, ModelError, UsageError
from ..geometa import (
    apply_geo_metadata,
    has_valid_crs,
    nodata_fits,
    nodata_values,
    profile_from_metadata,
    read_geo_metadata,
    with_crs,
)
from ..progress import NullProgress, Progress, check_cancelled
from ..raster_io import GeoTiffSink, RasterSource, atomic_output, bounded_gdal_cache, padded_read
from ..resources import default_model_path
from ..runner import TileModel, run_tiled
from ..serial_reads import SerialReads
from ..tiling import Tile
from ..vocabulary import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MAX_TILE_SIZE, OUTPUT_DTYPES, TIFF_COMPRESSIONS
from . import bounded, dct_v2, model_store
from .container import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ContainerReader,
    ContainerWriter,
    decode_fallback_block,
    decode_mask,
    encode_fallback,
    encode_mask,
)
from .domains import (
    L_DB_MAX,
    L_DB_MIN,
    Domain,
    denormalise,
    detect_domain,
    estimate_band_stats,
    from_log,
    nodata_mask_of,
    normalise,
    to_log,
    uncodable_mask,
)
from .entropy import LatentCoder
from .header import CODEC_STRIDES
from .model import SarCodec

CODEC_NAME = "sarcodec-hyperprior-v1"
STRIDE = 16  # pixels per latent
CHUNK = 32  # latents per chunk side: 512x512 pixels coded independently
SAMPLE_CHUNKS = 8  # chunks per band decoded at compression time to estimate quality and bias
LOG_CLIP = 30.0  # normalised log values beyond +-300 dB are not backscatter: stored losslessly instead
MAX_LATENT = 1000.0  # latents beyond the entropy coder's symbol range mark a tile the model failed on



@dataclass
class RasterInfo:
    path: str
    width: int
    height: int
    bands: int
    dtype: str
    has_valid_crs: bool
    nodata: float | None
    file_bytes: int = 0  # all files of the dataset (a VRT's sources too): the "before" of the ratio


#: Sidecars GDAL (or QGIS, through GDAL) writes next to a raster on its own: statistics and histograms
#: (PAM ``.aux.xml``) and external overviews (``.ovr``). They are derived data, not part of the scene,
#: and appear the first time QGIS shows a layer: counting them would change the ratio of the same run.
_DERIVED_SIDECARS = (".aux.xml", ".ovr")


def _dataset_bytes(ds) -> int:
    """Bytes of the files that hold the raster (a VRT's sources too), derived sidecars left out."""
    total = 0
    for f in getattr(ds, "files", []) or []:
        if str(f).lower().endswith(_DERIVED_SIDECARS):
            continue
        try:
            total += os.path.getsize(f)
        except OSError:
            continue
    return total


MAX_DIMENSION = 2**31 - 1
MAX_BANDS = 4096


def inspect_raster(path: str | Path) -> RasterInfo:
    """Pre-validate an input before any heavy work: readable raster, supported dtype, sane size.

    Raises ``InputFileError`` with a one-line reason. Front ends use ``has_valid_crs`` to decide
    whether to prompt for a CRS (interactive) or warn (pipelines, qgis_process).
    """
    import rasterio

    from ..codec.domains import check_dtype
    from ..geometa import has_valid_crs, read_geo_metadata

    name = str(path)
    if not name.startswith("/vsi"):  # GDAL virtual paths (/vsizip/ of a SAFE zip) have no local file
        if not Path(name).exists():
            raise InputFileError(f"{name}: no such file")
        if Path(name).is_dir():
            raise InputFileError(f"{name}: is a folder, not a raster file")
    try:
        with rasterio.open(name) as ds:
            if ds.count < 1:
                raise InputFileError(f"{name}: the raster has no bands")
            if ds.count > MAX_BANDS:
                raise InputFileError(f"{name}: {ds.count} bands is more than the {MAX_BANDS} supported")
            if len(set(ds.dtypes)) != 1:
                raise InputFileError(f"{name}: bands of different data types ({', '.join(set(ds.dtypes))})")
            dtype = check_dtype(ds.dtypes[0]).name
            if not (1 <= ds.width <= MAX_DIMENSION and 1 <= ds.height <= MAX_DIMENSION):
                raise InputFileError(f"{name}: implausible raster size {ds.width}x{ds.height}")
            meta = read_geo_metadata(ds)
            return RasterInfo(name, ds.width, ds.height, ds.count, dtype, has_valid_crs(meta), ds.nodata,
                              _dataset_bytes(ds))
    except InputFileError:
        raise
    except Exception as exc:  # rasterio raises RasterioIOError and friends for non-rasters
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputFileError(f"{name}: not a raster GDAL can read ({first})") from None


@dataclass
class CompressOptions:
    quality: int | None = None  # None: the model's default quality
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    device: str = "auto"
    batch_size: int | str = "auto"
    model_path: str | Path | None = None  # None: the shipped default model
    domain: str | None = None  # None: detect from dtype, tags and values
    crs: str | None = None  # "EPSG:XXXX" or WKT; used when the input has no valid CRS
    weight_map: str | Path | None = None  # optional GeoTIFF of the blending weights (debugging)
    estimate_quality: bool = True  # decode a sample of tiles to estimate RMSE/PSNR
    max_error_db: float | None = None  # error-bounded: no valid pixel moves by more than this (dB); v2 only


@dataclass
class CompressResult:
    input: str
    output: str
    input_bytes: int
    output_bytes: int
    pixels: int  # pixels per band times bands
    bands: int
    ratio: float
    bpp: float  # bits per pixel (per band pixel)
    est_rmse_db: float | None
    est_psnr_db: float | None
    device: str
    seconds: float
    bad_tiles: int
    warnings: list[str] = field(default_factory=list)
    batch_size: int = 0
    max_error_db: float | None = None  # error-bounded files: the bound every valid pixel was checked against


@dataclass
class DecompressOptions:
    tiff_compress: str = "LZW"
    output_dtype: str | None = None  # None: the original dtype
    cog: bool = False
    device: str = "auto"
    batch_size: int | str = "auto"
    model_path: str | Path | None = None  # None: the model named in the container (shipped default)
    crs: str | None = None  # override when the container has no valid CRS
    overlap: int | None = None  # decoder overlap in input pixels; None: as recorded at compression
    weight_map: str | Path | None = None
    salvage: bool = False  # decode around damaged chunks, marking them nodata
    window: tuple[int, int, int, int] | None = None  # (col_off, row_off, width, height) in pixels: decode that part
    bbox: tuple[float, float, float, float] | None = None  # (minx, miny, maxx, maxy): decode the pixels it covers
    bbox_crs: str | None = None  # CRS of ``bbox`` (EPSG:XXXX or WKT); None: the file's


@dataclass
class DecompressResult:
    input: str
    output: str
    width: int
    height: int
    bands: int
    dtype: str
    device: str
    seconds: float
    damaged_chunks: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    batch_size: int = 0


def load_model(path: str | Path | None) -> tuple[Any, Path, str]:
    """Load a model once per process (model, path, SHA-256): a v1 ``SarCodec`` or a v2 ``DctModel``."""
    return model_store.load(path)


@functools.lru_cache(maxsize=4)
def _latent_coder(model: SarCodec) -> LatentCoder:
    return LatentCoder(model)


def _check_quality(model: Any, quality: int | None) -> int:
    q = model_store.default_quality(model) if quality is None else quality
    if not isinstance(q, int) or not 1 <= q <= model.n_qualities:
        raise UsageError(f"quality must be an integer from 1 to {model.n_qualities}, got {quality!r}")
    return q


def _check_geometry(tile_size: int, overlap: int) -> None:
    """Options every front end passes; the upper bound is the header's, so decompress reads what compress wrote."""
    if not isinstance(tile_size, int) or tile_size < STRIDE or tile_size % STRIDE:
        raise UsageError(f"tile size must be a positive multiple of {STRIDE}, got {tile_size!r}")
    if tile_size > MAX_TILE_SIZE:
        raise UsageError(f"tile size must be at most {MAX_TILE_SIZE}, got {tile_size}")
    if not isinstance(overlap, int) or overlap < 0 or overlap % STRIDE or 2 * overlap > tile_size:
        raise UsageError(
            f"overlap must be a multiple of {STRIDE} between 0 and half the tile size, got {overlap!r}"
        )


def _sample_values(ds, band: int, nodata: float | None) -> np.ndarray:
    """Valid values from a decimated read (at most 512x512): enough to tell the domain apart."""
    h, w = min(ds.height, 512), min(ds.width, 512)
    vals = ds.read(band, out_shape=(h, w)).ravel()
    if nodata is not None:
        vals = vals[~nodata_mask_of(vals, nodata)]
    return vals


# -------------------------------------------------------------------------------------- compress


@dataclass
class QualitySample:
    """Errors of one decoded chunk against its original, in dB; summed in chunk order later.

    Kept per chunk (not as running sums) so the totals do not depend on which process coded which
    chunk: a container made by 1, 2 or 3 torchrun ranks gets the same gain and estimates.
    """

    err_sum: float = 0.0
    sq_err_sum: float = 0.0
    count: int = 0
    intensity_orig: float = 0.0
    intensity_coded: float = 0.0
    l_min: float = math.inf
    l_max: float = -math.inf

    def to_list(self) -> list[float]:
        return [self.err_sum, self.sq_err_sum, self.count, self.intensity_orig, self.intensity_coded,
                self.l_min, self.l_max]

    @classmethod
    def from_list(cls, v: list[float]) -> QualitySample:
        return cls(v[0], v[1], int(v[2]), v[3], v[4], v[5], v[6])


@dataclass
class BandSummary:
    """What the header stores about a coded band and what the user is told about its quality."""

    gain_db: float
    rmse_db: float | None
    count: int
    l_range: float


def quality_sample(l_orig: np.ndarray, l_hat: np.ndarray) -> QualitySample:
    """Errors and intensity sums of decoded values ``l_hat`` against ``l_orig`` (L_dB, valid pixels only)."""
    s = QualitySample()
    if not l_orig.size:
        return s
    err = l_hat - l_orig
    ref = float(l_orig.max())  # intensities relative to a reference keep 10**x in range
    s.err_sum = float(np.sum(err))
    s.sq_err_sum = float(np.sum(err**2))
    s.count = int(l_orig.size)
    s.intensity_orig = float(np.sum(10.0 ** ((l_orig - ref) / 10.0))) * 10.0 ** (ref / 10.0)
    s.intensity_coded = float(np.sum(10.0 ** ((l_hat - ref) / 10.0))) * 10.0 ** (ref / 10.0)
    s.l_min, s.l_max = float(l_orig.min()), float(l_orig.max())
    return s


def summarize_samples(samples: dict[tuple[int, int], QualitySample]) -> BandSummary:
    """Intensity gain (dB) cancelling the log-domain bias, and RMSE (dB) once it is applied."""
    total = QualitySample()
    for key in sorted(samples):
        s = samples[key]
        total.err_sum += s.err_sum
        total.sq_err_sum += s.sq_err_sum
        total.count += s.count
        total.intensity_orig += s.intensity_orig
        total.intensity_coded += s.intensity_coded
        total.l_min, total.l_max = min(total.l_min, s.l_min), max(total.l_max, s.l_max)
    if total.count == 0 or total.intensity_coded <= 0 or total.intensity_orig <= 0:
        return BandSummary(0.0, None, 0, 0.0)
    gain = round(10.0 * math.log10(total.intensity_orig / total.intensity_coded), 6)
    # the gain shifts every decoded value by ``gain`` dB: the mean error moves, the spread does not
    mse = (total.sq_err_sum + 2 * gain * total.err_sum) / total.count + gain**2
    return BandSummary(gain, math.sqrt(max(mse, 0.0)), total.count, total.l_max - total.l_min)


class LatentChunkSink:
    """Receives latent rows from the encoder run and entropy-codes them chunk by chunk.

    Alongside each chunk it stores, losslessly, the nodata mask and the original values of pixels
    the model cannot code (and of tiles it failed on), reading those raw pixels once per chunk row.
    A few chunks spread over the band are decoded right away to estimate quality and the
    intensity gain that cancels the log-domain bias.
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
            self._code_chunk_row(band[:, :take])
            rest = band[:, take:]
            self._rows = [rest] if rest.shape[1] else []
            self._buffered = rest.shape[1]

    def _code_chunk_row(self, y: np.ndarray) -> None:
        from rasterio.windows import Window

        cr = self._next_chunk_row
        self._next_chunk_row += 1
        r0 = cr * CHUNK * STRIDE
        r1 = min(r0 + CHUNK * STRIDE, self.ds.height)
        raw = self.ds.read(self.band, window=Window(0, r0, self.ds.width, r1 - r0))
        nodata = nodata_mask_of(raw, self.nodata) if self.nodata is not None else None
        uncodable = uncodable_mask(raw, self.domain, nodata)
        for by, bx, bh, bw in self.bad_windows:
            ya, yb = max(by, r0), min(by + bh, r1)
            if ya < yb:
                sel = np.zeros_like(uncodable)
                sel[ya - r0 : yb - r0, max(bx, 0) : bx + bw] = True
                uncodable |= sel if nodata is None else sel & ~nodata
        self.uncodable_pixels += int(uncodable.sum())
        chunks = [np.ascontiguousarray(y[:, :, cc * CHUNK : (cc + 1) * CHUNK]) for cc in range(self.chunk_cols)]
        # Chunks are independent: code them on a few threads (the float64 hyperprior releases the GIL).
        coded = list(_coding_pool().map(self.coder.encode_chunk, chunks))
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
            self._code_chunk_row(band)
            self._rows, self._buffered = [], 0

    def abort(self) -> None:
        self._rows = []


@functools.lru_cache(maxsize=1)
def _coding_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="sarcodec-code")


@dataclass
class CompressPlan:
    """Everything decided before coding starts; shared by one process and by torchrun ranks."""

    source: str
    info: RasterInfo
    model: Any  # SarCodec (v1) or DctModel (v2)
    model_path: Path
    sha256: str
    quality: int
    coder: LatentCoder | None
    policy: DevicePolicy
    meta: dict
    domain: Domain
    nodatas: list
    warnings: list[str]
    codec: str = CODEC_NAME
    band_coding: list[dct_v2.BandCoding] | None = None  # v2: each band's fitted side info and step
    # --no-estimate: no RMSE/PSNR in the result. v1 then decodes no sample chunk (and has no intensity
    # gain); v2 knows every chunk's reconstruction for free and keeps its gain, only the report goes.
    report_estimate: bool = True

    @property
    def latent_shape(self) -> tuple[int, int]:
        return -(-self.info.height // STRIDE), -(-self.info.width // STRIDE)

    @property
    def chunk_rows(self) -> int:
        if self.codec == dct_v2.CODEC_NAME:
            return dct_v2.chunk_grid(self.info.height, self.info.width)[0]
        return -(-self.latent_shape[0] // CHUNK)


def plan_compression(source: str | Path, options: CompressOptions) -> CompressPlan:
    """Validate inputs and options, load the model, read metadata and decide the domain."""
    import rasterio

    _check_geometry(options.tile_size, options.overlap)
    info = inspect_raster(source)
    model, model_path, sha = load_model(options.model_path)
    quality = _check_quality(model, options.quality)
    policy = DevicePolicy(options.device, options.batch_size)
    warnings: list[str] = []
    with rasterio.open(str(source)) as ds:
        meta = read_geo_metadata(ds)
        if options.crs and not has_valid_crs(meta):
            meta = with_crs(meta, options.crs)
        elif options.crs:
            warnings.append("the input already has a valid CRS: the CRS option is ignored")
        elif not has_valid_crs(meta):
            warnings.append(f"{source} has no valid CRS: the output will have none unless a CRS is given")
        nodatas = nodata_values(meta, ds.count)
        try:
            domain = detect_domain(info.dtype, _sample_values(ds, 1, nodatas[0]), ds.tags(), options.domain)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        codec = model_store.codec_of(model)
        bound = _check_bound(options, codec)
        if codec == dct_v2.CODEC_NAME:
            # fitted once here, from a deterministic sample: every torchrun rank codes with the same side info
            coding = [dct_v2.plan_band(ds, i + 1, domain, nodatas[i], model, quality, bound, info.dtype)
                      for i in range(ds.count)]
            return CompressPlan(str(source), info, model, model_path, sha, quality, None, policy, meta, domain,
                                nodatas, warnings, codec, coding, options.estimate_quality)
    return CompressPlan(str(source), info, model, model_path, sha, quality, _latent_coder(model), policy, meta,
                        domain, nodatas, warnings, report_estimate=options.estimate_quality)


def _check_bound(options: CompressOptions, codec: str) -> float | None:
    """``max_error_db`` validated against the other options and the model (UsageError, exit 4)."""
    if options.max_error_db is None:
        return None
    if options.quality is not None:
        raise UsageError("--max-error-db sets the quality itself: give it or --quality, not both")
    if codec != dct_v2.CODEC_NAME:
        raise UsageError("error-bounded coding (--max-error-db) needs a v2 model; the model given is v1")
    try:
        return bounded.check_bound(options.max_error_db)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@dataclass
class BandEncoding:
    stats: dict
    samples: dict[tuple[int, int], QualitySample]
    uncodable_pixels: int
    bad_tiles: int
    device: str
    batch_size: int = 0


def encode_band(plan: CompressPlan, ds, index: int, writer, options: CompressOptions, progress: Progress, *,
                chunk_rows: range | None = None, weight_map: str | Path | None = None) -> BandEncoding:
    """Encode one band (or the chunk rows ``chunk_rows`` of it, for a torchrun rank) into ``writer``."""
    if plan.codec == dct_v2.CODEC_NAME:
        return _encode_band_v2(plan, ds, index, writer, progress, chunk_rows=chunk_rows, weight_map=weight_map)
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
    weight_sink = _weight_map_sink(weight_map, plan.meta, lh, lw, STRIDE) if weight_map else None
    report = run_tiled(encoder, src, sink, tile_size=options.tile_size, overlap=options.overlap, window="core",
                       policy=plan.policy, progress=progress, fallback=sink.bad_tile, weight_sink=weight_sink,
                       max_abs=MAX_LATENT, out_rows=(rows.start * CHUNK, min(rows.stop * CHUNK, lh)))
    return BandEncoding(stats.to_dict(), sink.samples, sink.uncodable_pixels, len(report.bad_tiles), report.device,
                        report.batch_size)


def _encode_band_v2(plan: CompressPlan, ds, index: int, writer, progress: Progress, *,
                    chunk_rows: range | None = None, weight_map: str | Path | None = None) -> BandEncoding:
    """Codec v2: every chunk row read once, its chunks coded on the pool, masks and fallbacks stored.

    The encoder has each chunk's reconstruction from its own symbols, so every chunk (not a sample)
    feeds the quality estimate and the intensity gain. v2 has no tiles to blend: a weight map is 1
    everywhere, on the pixel grid.
    """
    from .dct_v2 import CHUNK_PX

    if weight_map:
        sink = _weight_map_sink(weight_map, plan.meta, ds.height, ds.width, 1)
        try:
            for r0 in range(0, ds.height, CHUNK_PX):  # in strips: memory does not grow with the scene
                sink.write_rows(r0, np.ones((1, min(CHUNK_PX, ds.height - r0), ds.width), np.float32), None)
            sink.close()
        except BaseException:
            sink.abort()
            raise

    band = index + 1
    coding, model, nodata = plan.band_coding[index], plan.model, plan.nodatas[index]
    rows, cols = dct_v2.chunk_grid(ds.height, ds.width)
    todo = chunk_rows if chunk_rows is not None else range(rows)
    stats = estimate_band_stats(ds, band, plan.domain)
    out_model = None
    if coding.max_error_db is not None:  # the encoder checks the bound on the values the decoder will write
        out_model = bounded.OutputModel(plan.domain, np.dtype(plan.info.dtype), stats.offset_db, nodata)
    samples: dict[tuple[int, int], QualitySample] = {}
    uncodable = 0
    progress.start(len(todo) * cols, f"compress band {band}/{plan.info.bands}: {len(todo) * cols} chunks on cpu")
    for cr in todo:
        check_cancelled(progress)
        r0 = cr * CHUNK_PX
        raw, ldb, nd, unc = dct_v2.read_chunk_row(ds, band, cr, plan.domain, nodata)
        valid = ~unc if nd is None else ~(unc | nd)
        uncodable += int(unc.sum())

        def code(cc: int, raw: np.ndarray = raw, ldb: np.ndarray = ldb, valid: np.ndarray = valid,
                 nd: np.ndarray | None = nd) -> tuple[bytes, np.ndarray | None, np.ndarray | None]:
            sl = slice(cc * CHUNK_PX, (cc + 1) * CHUNK_PX)
            if out_model is None:
                return (*dct_v2.encode_chunk(ldb[:, sl], valid[:, sl], coding, model), None)
            return dct_v2.encode_bounded_chunk(raw[:, sl], ldb[:, sl], valid[:, sl],
                                               None if nd is None else nd[:, sl], coding, model, out_model)

        for cc, (data, rec, exceptions) in enumerate(_coding_pool().map(code, range(cols))):
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
    return BandEncoding(stats.to_dict(), samples, uncodable, 0, "cpu", 0)


def build_header(plan: CompressPlan, options: CompressOptions, bands: list[BandEncoding]) -> dict:
    """The container header: identical whether one process or several ranks coded the bands."""
    band_headers = []
    for i, b in enumerate(bands):
        summary = summarize_samples(b.samples)
        entry = {"stats": b.stats, "gain_db": summary.gain_db, "uncodable_pixels": b.uncodable_pixels}
        if plan.band_coding is not None:
            entry.update(plan.band_coding[i].to_json())
            if plan.band_coding[i].max_error_db is not None:
                entry["gain_db"] = 0.0  # a gain would move pixels the bound was checked for
        band_headers.append(entry)
    if plan.codec == dct_v2.CODEC_NAME:
        grid = {"stride": 1, "chunk": dct_v2.CHUNK_PX}
    else:
        grid = {"stride": STRIDE, "chunk": CHUNK, "tile_size": options.tile_size, "overlap": options.overlap}
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "codec": plan.codec,
        "created_by": f"sarcodec {__version__}",
        "model": {"id": str(plan.model.metadata.get("model_id", plan.model_path.stem)), "sha256": plan.sha256},
        "quality": plan.quality,
        "grid": grid,
        **({"mode": "error-bounded", "max_error_db": plan.band_coding[0].max_error_db}
           if plan.band_coding and plan.band_coding[0].max_error_db is not None else {}),
        "shape": [plan.info.bands, plan.info.height, plan.info.width],
        "dtype": plan.info.dtype,
        "domain": plan.domain.value,
        "bands": band_headers,
        "geo": plan.meta,
    }


def compress_result(plan: CompressPlan, destination: str | Path, bands: list[BandEncoding], out_bytes: int,
                    seconds: float) -> CompressResult:
    """Sizes, ratio, bits per pixel and the quality estimate from the sampled chunks."""
    summaries = [summarize_samples(b.samples) for b in bands]
    measured = [s for s in summaries if s.count and s.rmse_db is not None and plan.report_estimate]
    rmse = psnr = None
    if measured:
        n = sum(s.count for s in measured)
        rmse = math.sqrt(sum(s.rmse_db**2 * s.count for s in measured) / n)
        rng = max(s.l_range for s in measured)
        psnr = 20 * math.log10(rng / rmse) if rmse > 0 and rng > 0 else None
    info = plan.info
    pixels = info.width * info.height * info.bands
    in_bytes = info.file_bytes
    return CompressResult(
        input=plan.source, output=str(destination), input_bytes=in_bytes, output_bytes=out_bytes, pixels=pixels,
        bands=info.bands, ratio=in_bytes / max(out_bytes, 1), bpp=8.0 * out_bytes / max(pixels, 1),
        est_rmse_db=rmse, est_psnr_db=psnr, device=bands[0].device if bands else "", seconds=seconds,
        bad_tiles=sum(b.bad_tiles for b in bands), warnings=list(plan.warnings),
        batch_size=bands[0].batch_size if bands else 0,
        max_error_db=plan.band_coding[0].max_error_db if plan.band_coding else None,
    )


def compress_raster(
    source: str | Path,
    destination: str | Path,
    options: CompressOptions | None = None,
    progress: Progress | None = None,
) -> CompressResult:
    """Compress a GeoTIFF (or any GDAL raster) into a ``.npz`` container written atomically."""
    import rasterio

    t0 = time.monotonic()
    options = options or CompressOptions()
    progress = progress or NullProgress()
    _refuse_replacing_inputs(source, options, destination)
    with _raster_read_errors(source):
        plan = plan_compression(source, options)
        bands: list[BandEncoding] = []
        with rasterio.open(str(source)) as ds, ContainerWriter(destination) as writer:
            for i in range(ds.count):
                weight_map = options.weight_map if i == 0 else None
                bands.append(encode_band(plan, ds, i, writer, options, progress, weight_map=weight_map))
            out_bytes = writer.finish(build_header(plan, options, bands))
    return compress_result(plan, destination, bands, out_bytes, time.monotonic() - t0)


def _refuse_replacing_inputs(source: str | Path, options: CompressOptions | DecompressOptions,
                             destination: str | Path) -> None:
    """No output (nor weight map) may be the input, the model, a device, FIFO or socket, whoever calls.

    The CLI checks more (existing files without --overwrite); this is what every front end, the QGIS
    plugin included, gets from the engine itself (``sarcodec.destinations.check_writable``).
    """
    inputs = (os.fspath(source), os.fspath(options.model_path or default_model_path()))
    for what, path in (("output", destination), ("weight map", options.weight_map)):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) != "-":
            check_writable(path, inputs=inputs, what=what)


@contextlib.contextmanager
def _raster_read_errors(source: str | Path) -> Iterator[None]:
    """A raster that opens but fails on reading pixels (truncated, damaged tiles) is a file error.

    Its header passes ``inspect_raster``; the failure comes from rasterio deep inside sampling or
    tiling, and would otherwise surface as an "internal error" instead of exit 1 naming the file.
    """
    import rasterio.errors
    from rasterio._err import CPLE_BaseError

    try:
        yield
    except (rasterio.errors.RasterioError, rasterio.errors.RasterioIOError, CPLE_BaseError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputFileError(f"{source}: cannot read the raster's pixels, the file is truncated or damaged "
                             f"({first})") from None


def _weight_map_sink(path: str | Path, meta: dict, height: int, width: int, pixel_scale: int) -> GeoTiffSink:
    """Blending weights as a float32 GeoTIFF on the run's output grid (latents: 16x coarser pixels)."""
    from rasterio.transform import Affine

    plain = {k: v for k, v in meta.items() if k not in ("nodata", "gcps")}
    profile = profile_from_metadata(plain, width=width, height=height, count=1, dtype="float32")
    if "transform" in profile and pixel_scale != 1:
        profile["transform"] = profile["transform"] * Affine.scale(pixel_scale)
    return GeoTiffSink(path, profile)


# ------------------------------------------------------------------------------------ decompress


def _codec_header(reader: ContainerReader) -> dict:
    """The header fields the decoder relies on, checked; a file that lacks them is not ours."""
    h = reader.header
    problem = None
    if h.get("codec") not in CODEC_STRIDES:
        problem = f"codec {str(h.get('codec'))[:40]!r} is not one this version reads ({', '.join(CODEC_STRIDES)})"
    elif not isinstance(h.get("grid"), dict) or h["grid"].get("stride") != CODEC_STRIDES[h["codec"]] or \
            not isinstance(h["grid"].get("chunk"), int) or h["grid"]["chunk"] < 1:
        problem = "the tile grid description is missing or unsupported"
    elif not isinstance(h.get("bands"), list) or len(h["bands"]) != h["shape"][0]:
        problem = "the per-band statistics do not match the band count"
    elif not isinstance(h.get("model"), dict) or not isinstance(h.get("quality"), int):
        problem = "the model or quality is missing"
    elif not all(_band_entry_ok(b) for b in h["bands"]):
        problem = "the per-band statistics are damaged"
    elif not _grid_ok(h["grid"]) or not _geo_ok(h):
        problem = "the tile grid or geospatial metadata is damaged"
    if problem:
        raise ContainerError(f"{reader.name}: {problem}")
    return h


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _band_entry_ok(band: object) -> bool:
    """What BandWriter reads of a band: a finite normalisation offset and gain (hostile files lie)."""
    if not (isinstance(band, dict) and isinstance(band.get("stats"), dict)):
        return False
    offset, gain = band["stats"].get("offset_db"), band.get("gain_db", 0.0)
    return _finite(offset) and _finite(gain) and abs(offset) <= 1e4 and abs(gain) <= 1e3  # dB: physical bounds


def _grid_ok(grid: dict) -> bool:
    """The recorded decoder geometry: a damaged value is a bad file (exit 1), not a usage error (4)."""
    tile, overlap, chunk = grid.get("tile_size", 256), grid.get("overlap", 64), grid["chunk"]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (tile, overlap, chunk))
    return (ints and STRIDE <= tile <= 16384 and tile % STRIDE == 0 and 0 <= overlap and overlap % STRIDE == 0
            and 2 * overlap <= tile and chunk <= 4096)


def _geo_ok(header: dict) -> bool:
    """Dry-run the geospatial metadata on a 1x1 in-memory GeoTIFF, exactly as the decoder will apply it.

    The ``geo`` object is free-form JSON; a hostile or damaged value (a transform that is not a list,
    a tag dict that is a number) must be a damaged-file error at open, not a crash after decoding.
    """
    import warnings

    from rasterio.io import MemoryFile

    meta = header.get("geo", {})
    if not isinstance(meta, dict):
        return False
    bands = header["shape"][0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning for a file without a transform
            has_valid_crs(meta)
            nodata_values(meta, bands)
            profile = profile_from_metadata(meta, width=1, height=1, count=bands,
                                            dtype=header.get("dtype", "float32"))
            with MemoryFile() as mem, mem.open(**profile) as ds:
                apply_geo_metadata(ds, meta)
    except Exception:  # noqa: BLE001 - whatever the metadata trips over, the file is damaged
        return False
    return True


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
        self.salvage = salvage
        self.damaged = damaged
        self.damaged_chunks: set[tuple[int, int]] = set()
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
                raise ContainerError(f"{self.reader.name}: latent chunk ({self.index}, {cr}, {cc}) is missing")
            y = self.coder.decode_chunk(self.reader.read_record(record), h, w)
        except ContainerError as exc:
            number = record.index if record is not None else -1
            if not self.salvage:
                raise DamagedChunkError(
                    f"{self.reader.name}: chunk {number} (band {self.index + 1}, row {cr}, col {cc}) is damaged: "
                    f"{exc}; --salvage decodes the rest and marks it nodata", number) from None
            self.damaged.append(number)
            self.damaged_chunks.add(key)
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


class BandWriter:
    """Turns decoded rows of one band back into pixel values and writes them into the output.

    Applies the inverse log normalisation and the stored intensity gain, then re-applies exactly
    what was stored losslessly: the nodata mask, the original values of uncodable pixels, and
    nodata over chunks that were damaged (salvage mode).
    """

    def __init__(self, out: GeoTiffSink, reader: ContainerReader, index: int, header: dict, source: LatentSource,
                 out_dtype: np.dtype, nodata: float | None | list[float | None], *,
                 damage_value: float | None = None, window: tuple[int, int, int, int] | None = None) -> None:
        self.out, self.reader, self.index = out, reader, index
        if isinstance(nodata, (list, tuple)):  # per band (DecodePlan.nodata); a scalar applies to every band
            nodata = nodata[index]
        # what damaged chunks become when the file has no nodata value of its own (salvage); decoded
        # pixels are moved off this value too, so that a damaged-chunk mark never hits valid data
        self.damage_value = nodata if nodata is not None else damage_value
        band = header["bands"][index]
        self.offset = float(band["stats"]["offset_db"])
        self.gain = float(band.get("gain_db", 0.0))
        self.domain = Domain(header["domain"])
        self.width = header["shape"][2]
        self.height = header["shape"][1]
        self.px_chunk = header["grid"]["chunk"] * header["grid"]["stride"]
        self.source = source
        self.out_dtype = out_dtype
        self.nodata = nodata
        # (row0, col0, height, width) of the raster written; output row 0 is the window's first row
        self.window = window if window is not None else (0, 0, self.height, self.width)
        wc0, ww = self.window[1], self.window[3]
        self._cols = range(wc0 // self.px_chunk, (wc0 + ww - 1) // self.px_chunk + 1)  # chunk columns needed
        self._side: dict[int, tuple[np.ndarray | None, list]] = {}

    def _chunk_row_side(self, cr: int) -> tuple[np.ndarray | None, list]:
        """Nodata mask (rows of this chunk row) and fallback blocks, decoded once per chunk row."""
        if cr in self._side:
            return self._side[cr]
        self._side = {k: v for k, v in self._side.items() if k >= cr - 1}
        r0 = cr * self.px_chunk
        h = min(self.px_chunk, self.height - r0)
        mask = None
        fallbacks = []
        for cc in self._cols:
            c0 = cc * self.px_chunk
            w = min(self.px_chunk, self.width - c0)
            for kind in ("mask", "fallback"):
                record = self.reader.find(self.index, cr, cc, kind)
                if record is None:
                    continue
                try:
                    data = self.reader.read_record(record)
                    if kind == "mask":
                        m = decode_mask(data, (h, w))
                        if mask is None:
                            mask = np.zeros((h, self.width), bool)
                        mask[:, c0 : c0 + w] = m
                    else:
                        fallbacks.append(decode_fallback_block(data))
                except ContainerError as exc:
                    if not self.source.salvage:
                        raise DamagedChunkError(
                            f"{self.reader.name}: record {record.index} ({kind} of band {self.index + 1}, "
                            f"row {cr}, col {cc}) is damaged: {exc}", record.index) from None
                    self.source.damaged.append(record.index)
                    self.source.damaged_chunks.add((cr * self.px_chunk // (self.source.chunk * self.source.stride), cc))
        self._side[cr] = (mask, fallbacks)
        return self._side[cr]

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None, *, col0: int = 0) -> None:
        """Decoded rows ``(1, n, w)`` starting at raster row ``row0`` and column ``col0``; the part inside the
        window is converted, patched and written (rows past the raster or outside the window are dropped)."""
        wr0, wc0, wh, ww = self.window
        a, b = max(row0, wr0), min(row0 + block.shape[1], wr0 + wh, self.height)
        if a >= b:
            return
        ca, cb = wc0, wc0 + ww
        if col0 > ca or col0 + block.shape[2] < cb:
            raise ValueError(f"decoded columns {col0}..{col0 + block.shape[2]} do not cover the window {ca}..{cb}")
        n = b - a
        l_db = denormalise(block[0, a - row0 : b - row0, ca - col0 : cb - col0], self.offset) + np.float32(self.gain)
        values = from_log(l_db, self.domain, self.out_dtype, self.damage_value)
        invalid = np.zeros((n, ww), bool)
        pc = self.px_chunk
        for cr in range(a // pc, (b - 1) // pc + 1):
            mask, fallbacks = self._chunk_row_side(cr)
            ya, yb = max(a, cr * pc), min(b, (cr + 1) * pc)
            if mask is not None:
                invalid[ya - a : yb - a] |= mask[ya - cr * pc : yb - cr * pc, ca:cb]
            for fb in fallbacks:
                fa, fb_end = max(ya, fb.row0), min(yb, fb.row0 + fb.mask.shape[0])
                xa, xb = max(ca, fb.col0), min(cb, fb.col0 + fb.mask.shape[1])
                if fa >= fb_end or xa >= xb:
                    continue
                sub_mask = fb.mask[fa - fb.row0 : fb_end - fb.row0, xa - fb.col0 : xb - fb.col0]
                sub_vals = fb.values[fa - fb.row0 : fb_end - fb.row0, xa - fb.col0 : xb - fb.col0]
                target = values[fa - a : fb_end - a, xa - ca : xb - ca]
                with np.errstate(all="ignore"):
                    target[sub_mask] = sub_vals[sub_mask].astype(self.out_dtype)
        c = self.source.chunk * self.source.stride
        for cr, cc in self.source.damaged_chunks:
            ya, yb = max(a, cr * c), min(b, (cr + 1) * c)
            xa, xb = max(ca, cc * c), min(cb, (cc + 1) * c)
            if ya < yb and xa < xb:
                invalid[ya - a : yb - a, xa - ca : xb - ca] = True
        if self.damage_value is not None and invalid.any():
            values[invalid] = np.asarray(self.damage_value).astype(self.out_dtype)
        self.out.write_rows(a - wr0, values[None], None, indexes=[self.index + 1])

    def close(self) -> None:
        """The output file is shared by all bands: the pipeline closes it after the last band."""

    def abort(self) -> None:
        self.out.abort()


def _creation_options(options: DecompressOptions, dtype: np.dtype) -> dict:
    comp = str(options.tiff_compress).upper()
    if comp not in TIFF_COMPRESSIONS:
        choices = ", ".join(TIFF_COMPRESSIONS)
        raise UsageError(f"TIFF compression must be one of {choices}, got {options.tiff_compress!r}")
    if comp == "NONE":
        return {}
    opts = {"compress": comp.lower()}
    if comp in ("LZW", "DEFLATE", "ZSTD"):
        opts["predictor"] = 3 if dtype.kind == "f" else 2
    return opts


@dataclass
class DecodePlan:
    """What decompression decides before decoding: shared by one process and by torchrun ranks."""

    header: dict
    model: Any  # SarCodec (v1) or DctModel (v2)
    quality: int
    out_dtype: np.dtype
    meta: dict
    nodata: list[float | None]  # per band: the value written into that band's holes (see _output_nodata)
    overlap: int
    profile: dict
    warnings: list[str]
    damage_value: float | None = None  # marks damaged chunks (--salvage) in a file without nodata
    window: tuple[int, int, int, int] | None = None  # (row0, col0, height, width) decoded; None: the whole raster

    @property
    def rows(self) -> tuple[int, int]:
        """Pixel rows ``[r0, r1)`` of the raster that are decoded."""
        if self.window is None:
            return 0, int(self.header["shape"][1])
        return self.window[0], self.window[0] + self.window[2]

    @property
    def codec(self) -> str:
        return str(self.header["codec"])


def _decode_model(reader: ContainerReader, header: dict, options: DecompressOptions) -> Any:
    """The model the file was written with: ``--model`` if given (it must be that one), else the store's."""
    ref = header["model"]
    sha, model_id = str(ref.get("sha256")), str(ref.get("id"))
    if options.model_path:
        model, model_path, got = load_model(options.model_path)
        if got != sha:
            raise ModelError(
                f"{reader.name} was compressed with model {model_id!r} (sha256 {sha[:12]}...), but {model_path} "
                f"has sha256 {got[:12]}...; pass the matching --model, or none to use the installed one")
    else:
        path = model_store.find(sha)
        if path is None:
            raise ModelError(model_store.missing_model_message(reader.name, model_id, sha))
        model, _, _ = load_model(path)
    if model_store.codec_of(model) != header["codec"]:
        raise ModelError(f"{reader.name}: model {model_id!r} is not a {header['codec']} model")
    return model


def plan_decompression(reader: ContainerReader, options: DecompressOptions) -> DecodePlan:
    """Validate the header, options and model, and build the output profile (metadata included)."""
    if options.output_dtype is not None and str(options.output_dtype) not in OUTPUT_DTYPES:
        raise UsageError(f"output dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {options.output_dtype!r}")
    header = _codec_header(reader)
    model = _decode_model(reader, header, options)
    quality = header["quality"]
    if not 1 <= quality <= model.n_qualities:
        raise ContainerError(f"{reader.name}: quality {quality} is outside the model's 1..{model.n_qualities}")
    bands, height, width = header["shape"]
    out_dtype = np.dtype(options.output_dtype or header["dtype"])
    meta = dict(header.get("geo") or {})
    warnings: list[str] = []
    if options.crs and not has_valid_crs(meta):
        meta = with_crs(meta, options.crs)
    elif options.crs:
        warnings.append("the container already has a valid CRS: the CRS option is ignored")
    grid = header["grid"]
    overlap = grid.get("overlap", 64) if options.overlap is None else options.overlap
    _check_geometry(grid.get("tile_size", 256), overlap)
    meta, nodata, damage_value = _output_nodata(reader, header, meta, out_dtype, options.salvage, warnings)
    window = decode_window(meta, height, width, options)
    if window is not None:
        meta = window_metadata(meta, window)
        height, width = window[2], window[3]
    profile = profile_from_metadata(meta, width=width, height=height, count=bands, dtype=out_dtype,
                                    **_creation_options(options, out_dtype))
    if bands > 1:
        profile["interleave"] = "band"  # each band is written in full before the next
    return DecodePlan(header, model, quality, out_dtype, meta, nodata, overlap, profile, warnings, damage_value,
                      window)


def decode_window(meta: dict, height: int, width: int, options: DecompressOptions) -> tuple[int, int, int, int] | None:
    """(row0, col0, height, width) of the part to decode from ``--window`` or ``--bbox``; None: everything.

    A window must lie inside the raster and have a positive size; a bbox is taken in the file's CRS
    (or ``bbox_crs``), widened to whole pixels and clipped to the raster, and must intersect it.
    """
    if options.window is not None and options.bbox is not None:
        raise UsageError("give a window or a bounding box, not both")
    if options.window is not None:
        try:
            col, row, w, h = (int(v) for v in options.window)
        except (TypeError, ValueError):
            raise UsageError(f"a window is four integers COL ROW WIDTH HEIGHT, got {options.window!r}") from None
        if w < 1 or h < 1:
            raise UsageError(f"the window's width and height must be positive, got {w} x {h}")
        if col < 0 or row < 0 or col + w > width or row + h > height:
            raise UsageError(f"the window (col {col}, row {row}, {w} x {h}) is not inside the raster "
                             f"({width} x {height} pixels)")
        return (row, col, h, w) if (row, col, h, w) != (0, 0, height, width) else None
    if options.bbox is None:
        return None
    return _bbox_window(meta, height, width, options.bbox, options.bbox_crs)


def _bbox_window(meta: dict, height: int, width: int, bbox: tuple[float, ...],
                 bbox_crs: str | None) -> tuple[int, int, int, int] | None:
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import transform_bounds

    if meta.get("transform") is None:
        raise UsageError("the file has no geotransform (it is placed by GCPs or not at all): use a pixel window")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not (minx < maxx and miny < maxy) or not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise UsageError(f"a bounding box is MINX MINY MAXX MAXY with MINX < MAXX and MINY < MAXY, got {bbox}")
    if bbox_crs:
        if not has_valid_crs(meta):
            raise UsageError("the file has no CRS to transform the bounding box into")
        try:
            src = CRS.from_user_input(bbox_crs)
            dst = CRS.from_wkt(meta["crs"])
            minx, miny, maxx, maxy = transform_bounds(src, dst, minx, miny, maxx, maxy, densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - rasterio/PROJ raise several kinds
            raise UsageError(f"cannot transform the bounding box from {bbox_crs} into the file's CRS "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
            raise UsageError(f"the bounding box cannot be transformed from {bbox_crs} into the file's CRS")
    inv = ~Affine(*[float(v) for v in meta["transform"][:6]])
    corners = [inv * (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    c0, c1 = max(0, math.floor(min(cols) + 1e-9)), min(width, math.ceil(max(cols) - 1e-9))
    r0, r1 = max(0, math.floor(min(rows) + 1e-9)), min(height, math.ceil(max(rows) - 1e-9))
    if c0 >= c1 or r0 >= r1:
        raise UsageError(f"the bounding box {bbox} does not intersect the raster")
    window = (r0, c0, r1 - r0, c1 - c0)
    return window if window != (0, 0, height, width) else None


def window_metadata(meta: dict, window: tuple[int, int, int, int]) -> dict:
    """``meta`` of the window's raster: its transform starts at the window; GCPs move with it."""
    from rasterio.transform import Affine

    r0, c0 = window[0], window[1]
    out = dict(meta)
    if meta.get("transform") is not None:
        t = Affine(*[float(v) for v in meta["transform"][:6]]) * Affine.translation(c0, r0)
        out["transform"] = [t.a, t.b, t.c, t.d, t.e, t.f]
    gcps = meta.get("gcps")
    if isinstance(gcps, dict) and gcps.get("points"):
        out["gcps"] = {**gcps, "points": [[p[0] - r0, p[1] - c0, *p[2:]] for p in gcps["points"]]}
    return out


def _output_nodata(reader: ContainerReader, header: dict, meta: dict, out_dtype: np.dtype, salvage: bool,
                   warnings: list[str]) -> tuple[dict, list[float | None], float | None]:
    """The output's nodata: (metadata to write, value written into each band's holes, salvage mark).

    A GeoTIFF holds one nodata value for all bands (TIFFTAG_GDAL_NODATA). When the source's bands
    differ (nodata 0 / 65535 / none), every band's holes are written with one value that occurs in no
    band's data, declared as the dataset's nodata: each band's mask (what GDAL, rasterio and QGIS
    derive from nodata) is exactly that band's, and a band that had none gets no masked pixel.
    ``--salvage`` on a file without nodata marks damaged chunks with such a value too, never with a
    value valid pixels may have (0 DN of a GRD border stored losslessly).
    """
    bands = header["shape"][0]
    nodatas = nodata_values(meta, bands)
    uniform = len({repr(v) for v in nodatas}) == 1
    if uniform and not (salvage and nodatas[0] is None):
        return meta, nodatas, None
    value = _free_nodata(reader, bands, Domain(header["domain"]), out_dtype, [v for v in nodatas if v is not None])
    if uniform:  # --salvage, no nodata: the mark is declared only if a chunk turns out damaged
        if value is None:
            value = _salvage_nodata(out_dtype)
            warnings.append(f"every value of {out_dtype.name} occurs in the data: damaged chunks (--salvage) are "
                            f"marked with {value}, which valid pixels also have")
        return meta, nodatas, value
    shown = ", ".join("none" if v is None else f"{v:g}" for v in nodatas)
    if value is None:
        declared = next(v for v in nodatas if v is not None)
        warnings.append(f"the bands have different nodata values ({shown}) and every value of {out_dtype.name} "
                        f"occurs in the data: {declared:g} is declared for all bands")
        return {**meta, "nodata": declared}, nodatas, None
    warnings.append(f"the bands have different nodata values ({shown}); a GeoTIFF holds one, so every band's "
                    f"holes are written as {value:g}, a value no band's data has")
    return {**meta, "nodata": value}, [value] * bands, value


def _free_nodata(reader: ContainerReader, bands: int, domain: Domain, dtype: np.dtype,
                 preferred: list[float]) -> float | None:
    """A nodata value that no pixel of the decoded output can have, or None when every value is taken.

    Decoded pixels lie in ``from_log``'s range and are moved off the chosen value (BandWriter passes
    it to ``from_log``); the only other values are the ones stored losslessly in fallback records,
    which are scanned here. Values the decoder cannot produce are preferred (0 for amplitude DN),
    then the source's own nodata values and the type's extremes, and last the two ends of the decoded
    range (where clipping piles up saturated pixels, which would then move by one step).
    """
    dt = np.dtype(dtype)
    ends = from_log(np.array([L_DB_MIN, L_DB_MAX]), domain, dt)
    lo_d, hi_d = float(ends.min()), float(ends.max())
    if dt.kind == "f":
        info = np.finfo(dt)
        generic = [math.nan, -math.inf, math.inf, float(info.min), float(info.max), -9999.0, 0.0]
    else:
        info = np.iinfo(dt)
        generic = [0.0 if dt.kind == "u" else float(info.min), float(info.max), float(info.min),
                   lo_d - 1, hi_d + 1, hi_d - 1]
    cands: list[float] = []
    for v in [*preferred, *generic]:
        if nodata_fits(v, dt) and not any(repr(v) == repr(c) for c in cands):
            cands.append(float(v))

    def rank(v: float) -> int:  # 0: never decoded, 1: rarely (inside the range), 2: a clipping end
        if math.isnan(v) or not lo_d <= v <= hi_d:
            return 0
        return 2 if v in (lo_d, hi_d) else 1

    cands.sort(key=rank)  # stable: the order above holds within each rank
    hit = np.zeros(len(cands), bool)
    small_int = dt.kind in "ui" and dt.itemsize <= 2
    used = np.zeros(1 << (8 * dt.itemsize), bool) if small_int else None
    for record in reader.records(kind="fallback"):
        if not 0 <= record.band < bands:
            continue
        try:
            fb = decode_fallback_block(reader.read_record(record))
        except ContainerError:
            continue  # a damaged record fails the decode (or becomes a damaged chunk under --salvage)
        with np.errstate(all="ignore"):
            vals = fb.values[fb.mask].astype(dt)  # exactly as BandWriter writes them
        if not vals.size:
            continue
        for k, c in enumerate(cands):
            if not hit[k]:
                hit[k] = bool(np.isnan(vals).any()) if math.isnan(c) else bool((vals == dt.type(c)).any())
        if used is not None:
            used[vals.astype(np.int64) - int(np.iinfo(dt).min)] = True
    for k, c in enumerate(cands):
        if not hit[k]:
            return c
    if used is not None:
        free = np.flatnonzero(~used) + int(np.iinfo(dt).min)
        if free.size:
            outside = free[(free < lo_d) | (free > hi_d)]
            return float((outside if outside.size else free)[0])
    return None


def decompress_container(
    source: str | Path,
    destination: str | Path,
    options: DecompressOptions | None = None,
    progress: Progress | None = None,
) -> DecompressResult:
    """Decompress a container into a GeoTIFF (or COG) written atomically, metadata restored."""
    t0 = time.monotonic()
    options = options or DecompressOptions()
    progress = progress or NullProgress()
    _refuse_replacing_inputs(source, options, destination)
    policy = DevicePolicy(options.device, options.batch_size)
    with ContainerReader(source) as reader:
        plan = plan_decompression(reader, options)
        header, out_dtype = plan.header, plan.out_dtype
        meta, profile, warnings = plan.meta, plan.profile, plan.warnings
        bands, height, width = header["shape"]
        damage_value = plan.damage_value
        damaged: list[int] = []
        final = Path(destination)

        def finalize(ds) -> None:
            apply_geo_metadata(ds, meta)
            if damaged and damage_value is not None:
                ds.nodata = damage_value

        out = GeoTiffSink(final, profile, finalize=finalize, commit_on_close=not options.cog)
        try:  # from here on every failure must remove out's temporary file (an unwritable weight map too)
            if options.weight_map and plan.window is not None:
                raise UsageError("--weight-map shows the whole raster's blending: it cannot be combined with a window")
            weight_sink = _weight_map_sink(options.weight_map, meta, height, width, 1) if options.weight_map else None
            if weight_sink is not None and plan.codec == dct_v2.CODEC_NAME:
                warnings.append("--weight-map: codec v2 decodes chunks without blending, so every weight is 1")
            for i in range(bands):
                report = decode_band(plan, reader, i, out, policy, progress, damaged, salvage=options.salvage,
                                     weight_sink=weight_sink if i == 0 else None)
            with bounded_gdal_cache():
                out.close()
                if options.cog:
                    _to_cog(out.tmp, final, profile)
        except BaseException:
            out.abort()
            raise
        finally:
            if options.cog:
                out.tmp.unlink(missing_ok=True)
    if damaged:
        warnings.append(salvage_warning(damaged, damage_value))
    return DecompressResult(
        input=str(source), output=str(destination), width=profile["width"], height=profile["height"], bands=bands,
        dtype=out_dtype.name,
        device=report.device, seconds=time.monotonic() - t0, damaged_chunks=sorted(set(damaged)), warnings=warnings,
        batch_size=report.batch_size,
    )


@dataclass
class BandDecodeReport:
    """Where a band was decoded (``run_tiled``'s report has the same two fields)."""

    device: str = "cpu"
    batch_size: int = 0


def decode_band(plan: DecodePlan, reader: ContainerReader, index: int, out, policy: DevicePolicy,
                progress: Progress, damaged: list[int], *, salvage: bool, rows: tuple[int, int] | None = None,
                weight_sink=None):
    """Decode band ``index`` into ``out``: one process, torchrun ranks and window reads all come here.

    ``rows`` (raster pixel rows ``[r0, r1)``, default all the plan's) narrows it further for a torchrun
    rank; only the plan's window (``DecodePlan.window``) is written, its first row as ``out``'s row 0.
    ``out`` takes ``write_rows(row0, (1, n, W) values, None, indexes=[band])`` (a ``GeoTiffSink``, a
    torchrun shard or an array). Damaged records are appended to ``damaged`` (salvage) or raise.
    Codec v2 reads only the chunks the window covers; v1 runs the decoder over the window's rows (its
    tiles need their neighbours' latents) and keeps the window's columns.
    """
    bands, height, width = plan.header["shape"]
    r0, r1 = rows if rows is not None else plan.rows
    window = plan.window
    if plan.codec == dct_v2.CODEC_NAME:
        coding = dct_v2.BandCoding.from_json(plan.header["bands"][index], index + 1)
        src = dct_v2.ChunkRowDecoder(reader, index, coding, plan.model, height, width, salvage=salvage,
                                     damaged=damaged, pool_map=_coding_pool().map)
        writer = BandWriter(out, reader, index, plan.header, src, plan.out_dtype, plan.nodata,
                            damage_value=plan.damage_value, window=window)
        c = dct_v2.CHUNK_PX
        wc0, ww = (window[1], window[3]) if window is not None else (0, width)
        cols = range(wc0 // c, (wc0 + ww - 1) // c + 1)
        chunk_rows = range(r0 // c, -(-r1 // c))
        progress.start(len(chunk_rows), f"decompress band {index + 1}/{bands}: "
                                        f"{len(chunk_rows) * len(cols)} chunks on cpu")
        for cr in chunk_rows:
            check_cancelled(progress)
            ldb = src.row(cr, cols)
            a, b = max(r0, cr * c), min(r1, cr * c + ldb.shape[0])
            writer.write_rows(a, dct_v2.normalised(ldb[a - cr * c : b - cr * c], writer.offset)[None],
                              col0=cols.start * c)
            if weight_sink is not None:
                weight_sink.write_rows(a - plan.rows[0], np.ones((1, b - a, ww), np.float32), None)
            progress.advance(1)
        return BandDecodeReport()
    model, quality, grid = plan.model, plan.quality, plan.header["grid"]
    lh, lw = -(-height // STRIDE), -(-width // STRIDE)
    src = LatentSource(reader, index, _latent_coder(model), lh, lw, grid["chunk"], salvage=salvage, damaged=damaged)
    writer = BandWriter(out, reader, index, plan.header, src, plan.out_dtype, plan.nodata,
                        damage_value=plan.damage_value, window=window)
    decoder = TileModel(lambda t, q=quality: model.synthesis(t, q), scale=STRIDE, multiple_of=1,
                        in_channels=model.latent_channels, out_channels=1, module=model,
                        name=f"decompress band {index + 1}/{bands}")
    return run_tiled(decoder, src, writer, tile_size=grid.get("tile_size", 256) // STRIDE,
                     overlap=plan.overlap // STRIDE, window="cosine", policy=policy, progress=progress,
                     weight_sink=weight_sink, out_rows=None if (r0, r1) == (0, height) else (r0, r1))


def salvage_warning(damaged: list[int], damage_value: float | None) -> str:
    """What ``--salvage`` tells the user about damaged chunks: one text for one process and torchrun."""
    return (f"damaged chunks {sorted(set(damaged))} were decoded as nodata (--salvage)"
            + (f"; the file had no nodata value, so {damage_value} became the output's nodata"
               if damage_value is not None else ""))


def _salvage_nodata(dtype: np.dtype) -> float:
    """The conventional nodata of a type (NaN, 0 unsigned, minimum signed): when no free value exists."""
    if dtype.kind == "f":
        return float("nan")
    return 0.0 if dtype.kind == "u" else float(np.iinfo(dtype).min)


def _to_cog(tmp: Path, final: Path, profile: dict) -> None:
    """Convert the finished tiled GeoTIFF to a Cloud Optimized GeoTIFF (with overviews), atomically."""
    from rasterio.shutil import copy as rio_copy

    with atomic_output(final, ".cog.part.tif") as cog_tmp:
        opts = {"compress": profile.get("compress", "none").upper(), "overviews": "auto", "blocksize": 512,
                "bigtiff": "if_safer"}
        if "predictor" in profile:
            opts["predictor"] = "yes"
        try:
            rio_copy(str(tmp), str(cog_tmp), driver="COG", **opts)
        except Exception as exc:
            raise InputFileError(f"cannot write the Cloud Optimized GeoTIFF {final}: {exc}") from exc


def container_info(source: str | Path) -> dict:
    """The container header (JSON-able dict) plus record counts; validated, for ``sarcodec info``."""
    with ContainerReader(source) as reader:
        header = _codec_header(reader)
        info = dict(header)
        info["has_valid_crs"] = has_valid_crs(header.get("geo") or {})
        info["file"] = reader.summary()
        return info
