"""Compress a raster into a container and back: the codec's public API in one import.

Front ends (the QGIS plugin, scripts, tests) import from here. Front ends map their own options onto
``CompressOptions`` / ``DecompressOptions`` and their own progress display onto
``sarcodec.progress.Progress``; nothing behind this module knows about terminals or QGIS.

The code lives in one module per concern; this facade only re-exports it:

- ``options``: options and results (``CompressOptions``, ``DecompressResult``, ...);
- ``raster_info``: ``inspect_raster``, the input checked before any work;
- ``encode`` / ``decode``: planning, the per-band dispatch to the codec, the header, the container
  and GeoTIFF written atomically, ``container_info``;
- ``hyperprior_v1`` / ``dct_v2``: what each codec does with a band;
- ``band_writer``, ``quality``, ``windows``, ``geotiff_output``, ``workers``: what both share.
"""

from __future__ import annotations

from .band_writer import BandWriter
from .decode import (
    DecodePlan,
    _free_nodata,
    container_info,
    decode_band,
    decompress_container,
    plan_decompression,
    salvage_warning,
)
from .domains import Domain
from .encode import (
    CompressPlan,
    build_header,
    compress_raster,
    compress_result,
    encode_band,
    load_model,
    plan_compression,
)
from .hyperprior_v1 import (
    CHUNK,
    CODEC_NAME,
    LOG_CLIP,
    MAX_LATENT,
    SAMPLE_CHUNKS,
    STRIDE,
    LatentChunkSink,
    LatentSource,
)
from .hyperprior_v1 import latent_coder as _latent_coder
from .options import (
    BandDecodeReport,
    BandEncoding,
    CompressOptions,
    CompressResult,
    DecompressOptions,
    DecompressResult,
    RasterInfo,
)
from .quality import BandSummary, QualitySample, quality_sample, summarize_samples
from .raster_info import MAX_BANDS, MAX_DIMENSION, inspect_raster
from .windows import decode_window, window_metadata

__all__ = [
    "CHUNK",
    "CODEC_NAME",
    "LOG_CLIP",
    "MAX_BANDS",
    "MAX_DIMENSION",
    "MAX_LATENT",
    "SAMPLE_CHUNKS",
    "STRIDE",
    "BandDecodeReport",
    "BandEncoding",
    "BandSummary",
    "BandWriter",
    "CompressOptions",
    "CompressPlan",
    "CompressResult",
    "DecodePlan",
    "DecompressOptions",
    "DecompressResult",
    "Domain",
    "LatentChunkSink",
    "LatentSource",
    "QualitySample",
    "RasterInfo",
    "_free_nodata",
    "_latent_coder",
    "build_header",
    "compress_raster",
    "compress_result",
    "container_info",
    "decode_band",
    "decode_window",
    "decompress_container",
    "encode_band",
    "inspect_raster",
    "load_model",
    "plan_compression",
    "plan_decompression",
    "quality_sample",
    "salvage_warning",
    "summarize_samples",
    "window_metadata",
]
