"""Compress a raster into a container: plan once, encode each band with its codec, write the header.

``compress_raster`` is what one process runs; torchrun ranks (``sarcodec.distributed``) run the same
steps split differently: every rank plans (``plan_compression``, deterministic, so all agree), encodes
its chunk rows of every band (``encode_band``), and rank 0 builds the header (``build_header``) and the
result (``compress_result``) from all ranks' ``BandEncoding``. The codec the model belongs to (v1
``hyperprior_v1``, v2 ``dct_v2``) codes the bands; what is decided here is theirs alike.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..destinations import check_writable
from ..device import DevicePolicy
from ..errors import InputFileError, UsageError
from ..geometa import has_valid_crs, nodata_values, read_geo_metadata, with_crs
from ..progress import NullProgress, Progress
from ..resources import default_model_path
from . import bounded, dct_v2, dct_v2_bands, hyperprior_v1, model_store
from .container import FORMAT_NAME, FORMAT_VERSION, ContainerWriter
from .domains import Domain, detect_domain, nodata_mask_of
from .header import check_header_budget
from .hyperprior_v1 import CHUNK, CODEC_NAME, STRIDE, check_geometry, latent_coder
from .options import BandEncoding, CompressOptions, CompressResult, DecompressOptions, RasterInfo
from .quality import summarize_samples
from .raster_info import inspect_raster

if TYPE_CHECKING:
    from .entropy import LatentCoder

def load_model(path: str | Path | None) -> tuple[Any, Path, str]:
    """Load a model once per process (model, path, SHA-256): a v1 ``SarCodec`` or a v2 ``DctModel``."""
    return model_store.load(path)


def _check_quality(model: Any, quality: int | None) -> int:
    q = model_store.default_quality(model) if quality is None else quality
    if not isinstance(q, int) or not 1 <= q <= model.n_qualities:
        raise UsageError(f"quality must be an integer from 1 to {model.n_qualities}, got {quality!r}")
    return q


def _sample_values(ds, band: int, nodata: float | None) -> np.ndarray:
    """Valid values from a decimated read (at most 512x512): enough to tell the domain apart."""
    h, w = min(ds.height, 512), min(ds.width, 512)
    vals = ds.read(band, out_shape=(h, w)).ravel()
    if nodata is not None:
        vals = vals[~nodata_mask_of(vals, nodata)]
    return vals


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

    check_geometry(options.tile_size, options.overlap)
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
        # Front ends check this right after inspecting the input; library callers get it here, still
        # before any chunk is coded (the header is assembled at the end, see check_header_budget).
        check_header_budget(meta, ds.count, Path(str(source)).name)
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
    return CompressPlan(str(source), info, model, model_path, sha, quality, latent_coder(model), policy, meta,
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


def encode_band(plan: CompressPlan, ds, index: int, writer, options: CompressOptions, progress: Progress, *,
                chunk_rows: range | None = None, weight_map: str | Path | None = None) -> BandEncoding:
    """Encode one band (or the chunk rows ``chunk_rows`` of it, for a torchrun rank) into ``writer``."""
    if plan.codec == dct_v2.CODEC_NAME:
        return dct_v2_bands.encode_band(plan, ds, index, writer, progress, chunk_rows=chunk_rows, weight_map=weight_map)
    return hyperprior_v1.encode_band(plan, ds, index, writer, options, progress, chunk_rows=chunk_rows,
                                     weight_map=weight_map)


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
    refuse_replacing_inputs(source, options, destination)
    with _raster_read_errors(source):
        plan = plan_compression(source, options)
        bands: list[BandEncoding] = []
        with rasterio.open(str(source)) as ds, ContainerWriter(destination) as writer:
            for i in range(ds.count):
                weight_map = options.weight_map if i == 0 else None
                bands.append(encode_band(plan, ds, i, writer, options, progress, weight_map=weight_map))
            out_bytes = writer.finish(build_header(plan, options, bands))
    return compress_result(plan, destination, bands, out_bytes, time.monotonic() - t0)


def refuse_replacing_inputs(source: str | Path, options: CompressOptions | DecompressOptions,
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
