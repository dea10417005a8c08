"""GeoTIFFs the codec writes besides the decoded raster's rows: creation options, COG, weight maps.

``decompress`` (one process or torchrun's rank 0) turns ``--tiff-compress`` into creation options
and, with ``--cog``, converts the finished GeoTIFF into a Cloud Optimized GeoTIFF; both codecs write
the optional blending-weight map (``--weight-map``) through ``weight_map_sink``. The rows themselves
go through ``sarcodec.raster_io.GeoTiffSink``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputFileError, UsageError
from ..geometa import profile_from_metadata
from ..raster_io import GeoTiffSink, atomic_output
from ..vocabulary import TIFF_COMPRESSIONS

if TYPE_CHECKING:
    from .options import DecompressOptions


def weight_map_sink(path: str | Path, meta: dict, height: int, width: int, pixel_scale: int) -> GeoTiffSink:
    """Blending weights as a float32 GeoTIFF on the run's output grid (latents: 16x coarser pixels)."""
    from rasterio.transform import Affine

    plain = {k: v for k, v in meta.items() if k not in ("nodata", "gcps")}
    profile = profile_from_metadata(plain, width=width, height=height, count=1, dtype="float32")
    if "transform" in profile and pixel_scale != 1:
        profile["transform"] = profile["transform"] * Affine.scale(pixel_scale)
    return GeoTiffSink(path, profile)


def creation_options(options: DecompressOptions, dtype: np.dtype) -> dict:
    """GDAL creation options of the decoded GeoTIFF: the compression and, where it helps, a predictor."""
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


def to_cog(tmp: Path, final: Path, profile: dict) -> None:
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
