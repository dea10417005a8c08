"""Decompress a container into a GeoTIFF: check the header, plan once, decode each band with its codec.

``decompress_container`` is what one process runs. Every decode goes through ``plan_decompression``
(header checks, the model the file names, output type, nodata, window, profile) and ``decode_band``,
which hands a band to its codec (v1 ``hyperprior_v1``, v2 ``dct_v2``): one process, torchrun ranks
(``sarcodec.distributed``) and window reads (``sarcodec.open``) decode the same pixels.
``container_info`` is the validated header ``sarcodec info`` shows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..device import DevicePolicy
from ..errors import ContainerError, ModelError, UsageError
from ..geometa import (
    apply_geo_metadata,
    has_valid_crs,
    nodata_fits,
    nodata_values,
    profile_from_metadata,
    with_crs,
)
from ..progress import NullProgress, Progress
from ..raster_io import GeoTiffSink, bounded_gdal_cache
from ..vocabulary import OUTPUT_DTYPES
from . import dct_v2, dct_v2_bands, hyperprior_v1, model_store
from .container import ContainerReader, decode_fallback_block
from .domains import L_DB_MAX, L_DB_MIN, Domain, from_log
from .encode import load_model, refuse_replacing_inputs
from .geotiff_output import creation_options, to_cog, weight_map_sink
from .header import CODEC_STRIDES
from .hyperprior_v1 import STRIDE, check_geometry
from .options import DecompressOptions, DecompressResult
from .windows import decode_window, window_metadata


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
    check_geometry(grid.get("tile_size", 256), overlap)
    meta, nodata, damage_value = _output_nodata(reader, header, meta, out_dtype, options.salvage, warnings)
    window = decode_window(meta, height, width, options)
    if window is not None:
        meta = window_metadata(meta, window)
        height, width = window[2], window[3]
    profile = profile_from_metadata(meta, width=width, height=height, count=bands, dtype=out_dtype,
                                    **creation_options(options, out_dtype))
    if bands > 1:
        profile["interleave"] = "band"  # each band is written in full before the next
    return DecodePlan(header, model, quality, out_dtype, meta, nodata, overlap, profile, warnings, damage_value,
                      window)


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
    refuse_replacing_inputs(source, options, destination)
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
            weight_sink = weight_map_sink(options.weight_map, meta, height, width, 1) if options.weight_map else None
            if weight_sink is not None and plan.codec == dct_v2.CODEC_NAME:
                warnings.append("--weight-map: codec v2 decodes chunks without blending, so every weight is 1")
            for i in range(bands):
                report = decode_band(plan, reader, i, out, policy, progress, damaged, salvage=options.salvage,
                                     weight_sink=weight_sink if i == 0 else None)
            with bounded_gdal_cache():
                out.close()
                if options.cog:
                    to_cog(out.tmp, final, profile)
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
    rows = rows if rows is not None else plan.rows
    if plan.codec == dct_v2.CODEC_NAME:
        return dct_v2_bands.decode_band(plan, reader, index, out, progress, damaged, salvage=salvage, rows=rows,
                                        weight_sink=weight_sink)
    return hyperprior_v1.decode_band(plan, reader, index, out, policy, progress, damaged, salvage=salvage,
                                     rows=rows, weight_sink=weight_sink)


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


def container_info(source: str | Path) -> dict:
    """The container header (JSON-able dict) plus record counts; validated, for ``sarcodec info``."""
    with ContainerReader(source) as reader:
        header = _codec_header(reader)
        info = dict(header)
        info["has_valid_crs"] = has_valid_crs(header.get("geo") or {})
        info["file"] = reader.summary()
        return info
