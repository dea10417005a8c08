"""What an input raster is, checked before any heavy work: size, bands, type, CRS and bytes on disk.

Front ends call ``inspect_raster`` first (the CLI to decide whether to ask for a CRS, the plugin to
validate its inputs); compression calls it again when planning. A file that is not a raster GDAL can
read, or one this codec cannot code, is a one-line ``InputFileError`` (exit 1) before a model loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputFileError
from .options import RasterInfo

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
