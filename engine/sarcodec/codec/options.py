"""What a front end passes to the codec and what it gets back: options and results, nothing else.

The CLI, the QGIS plugin and torchrun ranks map their own settings onto ``CompressOptions`` /
``DecompressOptions`` and read ``CompressResult`` / ``DecompressResult``; the per-band results
(``BandEncoding``, ``BandDecodeReport``) are what one process and torchrun ranks exchange. Kept apart
from the code that acts on them so that a front end can build options without importing torch or
the codecs (only the vocabulary's defaults are needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..vocabulary import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE

if TYPE_CHECKING:
    from .quality import QualitySample


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


@dataclass
class BandEncoding:
    stats: dict
    samples: dict[tuple[int, int], QualitySample]
    uncodable_pixels: int
    bad_tiles: int
    device: str
    batch_size: int = 0


@dataclass
class BandDecodeReport:
    """Where a band was decoded (``run_tiled``'s report has the same two fields)."""

    device: str = "cpu"
    batch_size: int = 0
