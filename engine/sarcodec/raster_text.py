"""The text a raster holds (band descriptions, units, tags), read even when it is not UTF-8.

GDAL stores these strings as bytes and says nothing of their encoding; ``gdalinfo`` prints whatever
is there. Older tools wrote Latin-1 (a band described as ``Rétrodiffusion``), and rasterio decodes
as UTF-8 only: ``ds.descriptions`` and ``ds.units`` raise ``UnicodeDecodeError`` (the whole file was
refused as "not a raster GDAL can read"), and ``ds.tags()`` silently leaves the item out, logging
the raw bytes. Here such text is kept: bytes that are not UTF-8 are read as Latin-1, where every
byte is a character, so nothing is lost and ``é`` stays ``é``. The decompressed GeoTIFF then holds
the same text as UTF-8.

Descriptions and units are re-read per band with GDAL's own Python bindings (``osgeo.gdal``, part of
every GDAL install sarcodec supports: Debian's python3-gdal, QGIS); tags are recovered from the bytes
rasterio logs for each item it could not decode. Without ``osgeo`` the descriptions or units of such
a file are dropped with a warning instead of refusing the file.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

#: rasterio's logger for metadata items it could not decode (``log.warning(..., i, item)``), and the
#: start of that message: sarcodec keeps such items itself, so front ends need not show it.
_RASTERIO_BASE = "rasterio._base"
UNDECODED_ITEM_MESSAGE = "Failed to decode metadata item"


def decode_text(raw: bytes) -> str:
    """UTF-8 when the bytes are UTF-8, else Latin-1 (one character per byte: nothing is lost)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _UndecodedItems(logging.Handler):
    """Collects the raw ``KEY=VALUE`` bytes rasterio logs when it leaves a metadata item out."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.items: list[bytes] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not str(record.msg).startswith(UNDECODED_ITEM_MESSAGE):
            return
        args = record.args if isinstance(record.args, tuple) else ()
        self.items += [a for a in args if isinstance(a, bytes) and b"=" in a]


@contextlib.contextmanager
def _undecoded_items() -> Iterator[_UndecodedItems]:
    logger = logging.getLogger(_RASTERIO_BASE)
    handler = _UndecodedItems()
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # handled here: the user gets the item, not rasterio's complaint
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def read_tags(ds: Any, bidx: int = 0, ns: str | None = None) -> dict[str, str]:
    """``ds.tags(bidx, ns=ns)`` with the items rasterio could not decode put back (see module doc)."""
    with _undecoded_items() as undecoded:
        tags = dict(ds.tags(bidx, ns=ns)) if ns is not None else dict(ds.tags(bidx))
    for item in undecoded.items:
        key, _, value = item.partition(b"=")
        tags.setdefault(decode_text(key), decode_text(value))
    return tags


def read_band_strings(ds: Any, what: str) -> list[str | None]:
    """``ds.descriptions`` or ``ds.units`` (``what``), one per band, whatever their encoding."""
    try:
        return list(getattr(ds, what))
    except UnicodeDecodeError:
        pass
    values = _band_strings_via_gdal(str(ds.name), int(ds.count), what)
    if values is None:
        warnings.warn(f"the band {what} are not UTF-8 and GDAL's Python bindings (osgeo) are not available "
                      "to read them: they are left out", UserWarning, stacklevel=2)
        return [None] * int(ds.count)
    return values


def _band_strings_via_gdal(path: str, count: int, what: str) -> list[str | None] | None:
    """The same strings through ``osgeo.gdal``, which hands over undecodable bytes (surrogate-escaped)."""
    try:
        from osgeo import gdal
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # osgeo's FutureWarning about UseExceptions
            dataset = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY)
    except Exception:  # noqa: BLE001 - osgeo raises RuntimeError when exceptions are on
        dataset = None
    if dataset is None or dataset.RasterCount != count:
        return None
    out: list[str | None] = []
    for i in range(1, count + 1):
        band = dataset.GetRasterBand(i)
        text = band.GetDescription() if what == "descriptions" else band.GetUnitType()
        if isinstance(text, str):
            text = decode_text(text.encode("utf-8", "surrogateescape"))
        elif isinstance(text, bytes):
            text = decode_text(text)
        out.append(text or (None if what == "descriptions" else ""))
    return out


__all__ = ["UNDECODED_ITEM_MESSAGE", "decode_text", "read_band_strings", "read_tags"]
