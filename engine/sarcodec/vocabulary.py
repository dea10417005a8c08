"""The words every front end shares: output types, compressions, devices, codec ids, tile geometry.

One place, imported by the engine, the CLI and the QGIS plugin alike, so that a choice offered in
one front end is a choice the engine accepts: pure Python, no numpy or torch (the plugin imports it
while QGIS starts). Limits that are also the container format's (the tile size a header may record)
live here too; ``codec/header.py`` reads them from this module.
"""

from __future__ import annotations

import re

#: GeoTIFF compressions ``decompress`` writes (``--tiff-compress``, the plugin's TIFF_COMPRESS).
TIFF_COMPRESSIONS = ("LZW", "DEFLATE", "ZSTD", "LERC", "NONE")
DEFAULT_TIFF_COMPRESSION = "LZW"
#: Data types a raster may have and ``decompress`` may write (``--output-dtype``).
OUTPUT_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
#: Where a network runs (v1 models); ``cuda:N`` picks a GPU.
DEVICES = ("auto", "cpu", "cuda")
CUDA_DEVICE = re.compile(r"cuda:\d+")

#: Codec ids a container may name, and the pixels per unit of their chunk grid.
CODEC_V1 = "sarcodec-hyperprior-v1"
CODEC_V2 = "sarcodec-dct-v2"
CODEC_STRIDES = {CODEC_V1: 16, CODEC_V2: 1}

#: Tile geometry of v1 models (pixels): multiples of the stride; the largest tile a header may record.
TILE_STEP = 16
DEFAULT_TILE_SIZE = 256
DEFAULT_OVERLAP = 64
MIN_TILE_SIZE = 32
MAX_TILE_SIZE = 16384

#: Quality levels when no model can be read (the default v2 model: 1..10, default 6).
FALLBACK_N_QUALITIES = 10
FALLBACK_DEFAULT_QUALITY = 6

#: Error-bounded coding (``--max-error-db``), in dB.
MIN_ERROR_DB = 0.01
MAX_ERROR_DB = 20.0
