"""Run a user's fully-convolutional model over whole rasters (``sarcodec infer``, ``sarcodec:infer``).

Everything the codec's engine gives, for any despeckling, restoration or super-resolution network:
tiles with overlap and cosine blending (no seams), reflect padding at the edges, nodata filled before
the model and restored after, memory that grows with the tile and the scene's width but never its
height, progress and cancel, an output written to a temporary file and renamed at the end, and every
geospatial field kept: the transform is scaled by the model's factor, GCPs move with it, and per-band
metadata is kept when the model keeps the bands.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sarcodec.errors import ModelError, UsageError
from sarcodec.infer.model_file import Convention, ProbeResult, UserModel, load_user_model, probe
from sarcodec.progress import NullProgress, Progress
from sarcodec.vocabulary import DEFAULT_TIFF_COMPRESSION, OUTPUT_DTYPES, TIFF_COMPRESSIONS

DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32


@dataclass
class InferOptions:
    """What a front end maps its options onto (CLI flags, Processing parameters)."""

    bands: list[int] | None = None  # 1-based input bands, in the order the model's channels take them
    scale: Fraction | float | int | None = None  # None: the model's metadata or the probe's measurement
    convention: str | None = None  # raw | log_db | range:LO:HI; None: the model's metadata, else raw
    domain: str | None = None  # SAR domain of the input for log_db (None: detected like compress does)
    tile_size: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    device: str = "auto"
    batch_size: int | str = "auto"
    trust_torchscript: bool = False
    output_dtype: str | None = None  # None: float32, or the input's type for log_db models with the same bands
    tiff_compress: str = DEFAULT_TIFF_COMPRESSION
    crs: str | None = None


@dataclass
class InferResult:
    input: str
    output: str
    width: int
    height: int
    bands_in: int
    bands_out: int
    scale: Fraction
    convention: str
    model_kind: str
    device: str
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass
class InferPlan:
    """Decided before any pixel is computed: shared by one process and torchrun ranks."""

    source: str
    model: UserModel
    probe: ProbeResult
    bands: list[int]
    convention: Convention
    domain: Any  # sarcodec.codec.domains.Domain for log_db, else None
    out_dtype: np.dtype
    profile: dict
    meta: dict
    nodata: float | None
    warnings: list[str]
    fill: list[float] = field(default_factory=list)  # per band, in the model's domain: what nodata becomes


def plan_inference(model_path: str | Path, source: str | Path, options: InferOptions) -> InferPlan:
    """Check the input, the model (a probe run) and the options together; nothing is written."""
    import rasterio

    from sarcodec.codec.domains import detect_domain, nodata_mask_of
    from sarcodec.codec.raster_info import inspect_raster
    from sarcodec.geometa import has_valid_crs, nodata_fits, profile_from_metadata, read_geo_metadata, with_crs

    info = inspect_raster(source)
    bands = list(options.bands) if options.bands else list(range(1, info.bands + 1))
    if not bands or any(not 1 <= b <= info.bands for b in bands):
        raise UsageError(f"--bands must name bands 1..{info.bands} of {source}, got {options.bands}")
    _check_tiles(options)
    cuda = str(options.device).startswith("cuda") or options.device == "auto"
    model = load_user_model(model_path, trust_torchscript=options.trust_torchscript, cuda=cuda)
    convention = Convention.parse(options.convention) if options.convention else (
        model.declared_convention or Convention("raw"))
    scale = Fraction(options.scale).limit_denominator(64) if options.scale is not None else None
    fixed = options.tile_size if model.fixed_size is not None else None
    result = probe(model, len(bands), size=fixed, scale=scale or model.declared_scale)
    if model.fixed_size is not None and options.overlap:
        raise UsageError(f"{model.path.name} takes {options.tile_size}-pixel tiles only: use --overlap 0")
    warnings: list[str] = []
    with rasterio.open(str(source)) as ds:
        meta = read_geo_metadata(ds)
        nodata = ds.nodatavals[bands[0] - 1]
        domain = None
        samples = []
        for b in bands:
            sample = ds.read(b, out_shape=(min(ds.height, 512), min(ds.width, 512))).ravel()
            samples.append(sample[~nodata_mask_of(sample, nodata)] if nodata is not None else sample)
        if convention.kind == "log_db":
            try:
                domain = detect_domain(info.dtype, samples[0], ds.tags(), options.domain)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
    if options.crs and not has_valid_crs(meta):
        meta = with_crs(meta, options.crs)
    out_dtype = _output_dtype(options, convention, info.dtype, len(bands), result.out_channels)
    if nodata is not None and not nodata_fits(nodata, out_dtype):
        warnings.append(f"the input's nodata {nodata:g} does not fit {out_dtype.name}: the output has no nodata")
        nodata = None
    meta = _scaled_metadata(meta, result.scale, keep_bands=bands if result.out_channels == len(bands) else None,
                            nodata=nodata)
    width = math.ceil(info.width * result.scale)
    height = math.ceil(info.height * result.scale)
    creation = {} if options.tiff_compress.upper() == "NONE" else {"compress": options.tiff_compress.lower()}
    profile = profile_from_metadata(meta, width=width, height=height, count=result.out_channels, dtype=out_dtype,
                                    **creation)
    if result.out_channels > 1:
        profile["interleave"] = "pixel"
    plan = InferPlan(str(source), model, result, bands, convention, domain, out_dtype, profile, meta, nodata,
                     warnings)
    pre = preprocess(plan)
    plan.fill = []
    for sample in samples:  # nodata becomes the band's typical value: no artificial edge for the model
        x = pre(sample.reshape(1, -1), None) if sample.size else np.zeros(1, np.float32)
        plan.fill.append(float(np.median(x)) if x.size else 0.0)
    return plan


def _check_tiles(options: InferOptions) -> None:
    if str(options.tiff_compress).upper() not in TIFF_COMPRESSIONS:
        raise UsageError(f"TIFF compression must be one of {', '.join(TIFF_COMPRESSIONS)}, "
                         f"got {options.tiff_compress!r}")
    if options.output_dtype is not None and options.output_dtype not in OUTPUT_DTYPES:
        raise UsageError(f"output dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {options.output_dtype!r}")
    if not isinstance(options.tile_size, int) or options.tile_size < 8:
        raise UsageError(f"tile size must be an integer of at least 8, got {options.tile_size!r}")
    if not isinstance(options.overlap, int) or options.overlap < 0 or 2 * options.overlap > options.tile_size:
        raise UsageError(f"overlap must be between 0 and half the tile size, got {options.overlap!r}")


def _output_dtype(options: InferOptions, convention: Convention, in_dtype: str, n_in: int, n_out: int) -> np.dtype:
    if options.output_dtype:
        return np.dtype(options.output_dtype)
    if convention.kind == "log_db" and n_in == n_out:
        return np.dtype(in_dtype)  # a despeckled DN scene stays DN
    return np.dtype("float32")


def _scaled_metadata(meta: dict, scale: Fraction, *, keep_bands: list[int] | None, nodata: float | None) -> dict:
    """``meta`` for the output grid: transform and GCPs scaled; per-band fields only if the bands stay."""
    from rasterio.transform import Affine

    out = {k: v for k, v in meta.items() if k not in ("nodata", "descriptions", "band_tags", "scales", "offsets",
                                                       "units", "colorinterp")}
    if meta.get("transform") is not None and scale != 1:
        t = Affine(*[float(v) for v in meta["transform"][:6]]) * Affine.scale(1 / float(scale))
        out["transform"] = [t.a, t.b, t.c, t.d, t.e, t.f]
    gcps = meta.get("gcps")
    if isinstance(gcps, dict) and gcps.get("points") and scale != 1:
        s = float(scale)
        out["gcps"] = {**gcps, "points": [[p[0] * s, p[1] * s, *p[2:]] for p in gcps["points"]]}
    if keep_bands is not None:
        for key in ("descriptions", "band_tags", "scales", "offsets", "units", "colorinterp"):
            if isinstance(meta.get(key), list) and len(meta[key]) >= max(keep_bands):
                out[key] = [meta[key][b - 1] for b in keep_bands]
    if nodata is not None:
        out["nodata"] = nodata
    return out


class _ValueSink:
    """Model outputs -> pixel values of the output type; a non-finite output stops the run."""

    def __init__(self, out: Any, plan: InferPlan) -> None:
        self.out, self.plan = out, plan

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None) -> None:
        if not np.isfinite(block).all():
            raise ModelError(f"{self.plan.model.path.name} produced NaN or Inf (output rows {row0}-"
                             f"{row0 + block.shape[1]}): nothing was written")
        self.out.write_rows(row0, to_values(block, self.plan), valid)

    def close(self) -> None:
        self.out.close()

    def abort(self) -> None:
        self.out.abort()


def to_values(block: np.ndarray, plan: InferPlan) -> np.ndarray:
    """Model outputs (C, n, W) in the plan's convention -> values of the output type."""
    from sarcodec.codec.domains import from_log
    from sarcodec.raster_io import cast_block

    c = plan.convention
    if c.kind == "log_db":
        return from_log(block, plan.domain, plan.out_dtype, plan.nodata)
    if c.kind == "range":
        block = block * np.float32(c.high - c.low) + np.float32(c.low)
    return cast_block(block, plan.out_dtype)


def preprocess(plan: InferPlan):
    """Pixel values -> model inputs in the plan's convention (the engine fills nodata afterwards)."""
    from sarcodec.codec.domains import to_log

    c = plan.convention

    def pre(raw: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        # Runs on every tile: each pass over it that can be skipped is skipped (pixels unchanged).
        if c.kind == "log_db":
            with np.errstate(all="ignore"):
                x = to_log(raw, plan.domain)
            good = np.isfinite(x)
            if good.all():
                return x.astype(np.float32, copy=False)
            fill = float(np.median(x[good])) if good.any() else 0.0
            return np.where(good, x, fill).astype(np.float32, copy=False)
        x = raw.astype(np.float32)
        if c.kind == "range":
            x = (x - np.float32(c.low)) / np.float32(c.high - c.low)
        elif raw.dtype.kind in "uib":  # integers are finite as float32
            return x
        return np.where(np.isfinite(x), x, 0.0).astype(np.float32, copy=False)

    return pre


def tile_model(plan: InferPlan) -> Any:
    """The user's model as the engine's ``TileModel`` (fp32: a foreign model may not be AMP-safe)."""
    import torch

    from sarcodec.runner import TileModel

    model = plan.model

    def fn(batch: torch.Tensor) -> torch.Tensor:
        if model.module is not None:
            return model.module(batch)
        return torch.from_numpy(model.run(batch.detach().cpu().numpy())).to(batch.device)

    return TileModel(fn, scale=plan.probe.scale, multiple_of=max(1, plan.probe.scale.denominator),
                     in_channels=len(plan.bands), out_channels=plan.probe.out_channels, amp_safe=False,
                     module=model.module, name=f"infer {model.path.name}")


def engine_device(plan: InferPlan, requested: str) -> str:
    """ONNX runs in onnxruntime (its own CUDA provider when present): the engine keeps tensors on the CPU."""
    return requested if plan.model.kind == "torchscript" else "cpu"


def infer_raster(model_path: str | Path, source: str | Path, destination: str | Path,
                 options: InferOptions | None = None, progress: Progress | None = None) -> InferResult:
    """Run ``model_path`` over ``source`` into the GeoTIFF ``destination`` (written atomically)."""
    import rasterio

    from sarcodec.destinations import check_writable
    from sarcodec.device import DevicePolicy
    from sarcodec.geometa import apply_geo_metadata
    from sarcodec.raster_io import GeoTiffSink, RasterSource, bounded_gdal_cache
    from sarcodec.runner import run_tiled
    from sarcodec.serial_reads import SerialReads

    t0 = time.monotonic()
    options = options or InferOptions()
    progress = progress or NullProgress()
    check_writable(destination, inputs=(str(source), str(model_path)), what="output")
    plan = plan_inference(model_path, source, options)
    meta = plan.meta
    out = GeoTiffSink(destination, plan.profile, finalize=lambda ds: apply_geo_metadata(ds, meta))
    try:
        with rasterio.open(str(source)) as ds, bounded_gdal_cache():
            # Tiles are read ahead on one thread while this one reads finished rows' nodata masks.
            src = RasterSource(SerialReads(ds), plan.bands, nodata=plan.nodata, preprocess=preprocess(plan),
                               fill=plan.fill)
            policy = DevicePolicy(engine_device(plan, options.device), options.batch_size)
            report = run_tiled(tile_model(plan), src, _ValueSink(out, plan), tile_size=options.tile_size,
                               overlap=options.overlap, window="partition", policy=policy, progress=progress,
                               write_behind=True)
    except BaseException:
        out.abort()
        raise
    device = report.device if plan.model.kind == "torchscript" else f"onnxruntime ({', '.join(plan.model.providers)})"
    return InferResult(str(source), str(destination), plan.profile["width"], plan.profile["height"], len(plan.bands),
                       plan.probe.out_channels, plan.probe.scale, str(plan.convention), plan.model.kind, device,
                       time.monotonic() - t0, list(plan.warnings))

