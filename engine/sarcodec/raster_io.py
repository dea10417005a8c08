"""Tile sources and row sinks: where the engine reads tiles and writes finished rows.

Sources return tiles already reflect-padded past the raster edge and with nodata filled, so the
model never sees padding seams or nodata values. Sinks write to a temporary file in the
destination folder and rename it at the end, so a destination is either complete or untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .destinations import make_temp, publish
from .errors import InputFileError
from .interrupts import deferred


class TileSource(Protocol):
    height: int
    width: int
    channels: int

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """float32 (C, h, w), reflect-padded outside the raster, nodata filled."""
        ...

    def valid_mask(self, y0: int, x0: int, h: int, w: int) -> np.ndarray | None:
        """bool (h, w) inside the raster (no padding), or None when every pixel is valid."""
        ...


class RowSink(Protocol):
    width: int

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def reflect_indices(start: int, size: int, length: int) -> np.ndarray:
    """Source indices for ``start .. start+size`` with reflection (no edge repeat) past both ends."""
    idx = np.arange(start, start + size)
    if length == 1:
        return np.zeros(size, dtype=np.int64)
    period = 2 * (length - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - idx, idx)


def padded_read(read_window: Callable[[int, int, int, int], np.ndarray], height: int, width: int,
                y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """Read the bounding box of the reflected indices once, then gather: exact reflect padding.

    Reading only the box (at most one tile) keeps reads small even when the padding is larger than
    the part of the tile inside the raster.
    """
    ri = reflect_indices(y0, h, height)
    ci = reflect_indices(x0, w, width)
    r_lo, r_hi = int(ri.min()), int(ri.max()) + 1
    c_lo, c_hi = int(ci.min()), int(ci.max()) + 1
    box = read_window(r_lo, c_lo, r_hi - r_lo, c_hi - c_lo)
    if r_lo == y0 and c_lo == x0 and box.shape[-2:] == (h, w):
        return box
    return box[..., (ri - r_lo)[:, None], (ci - c_lo)[None, :]]


def nodata_valid(values: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """Valid-pixel mask for one or more bands: a pixel is nodata when every band says so."""
    if nodata is None:
        return None
    if np.isnan(nodata):
        invalid = np.isnan(values)
    else:
        invalid = values == nodata
    invalid = invalid.all(axis=0) if values.ndim == 3 else invalid
    return ~invalid


class RasterSource:
    """Windowed rasterio reads of some bands, with a per-band preprocessing and nodata fill.

    ``preprocess(block, valid)`` maps raw values to what the model expects (the codec passes its
    log-domain normalisation); ``fill`` gives per-band values put where pixels are invalid, so
    masked pixels never steer the model.
    """

    def __init__(
        self,
        dataset: Any,
        bands: Sequence[int] | None = None,
        *,
        nodata: float | None = None,
        use_nodata: bool = True,
        preprocess: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None = None,
        fill: Sequence[float] | float = 0.0,
    ) -> None:
        self.ds = dataset
        self.bands = list(bands or range(1, dataset.count + 1))
        self.height = int(dataset.height)
        self.width = int(dataset.width)
        self.channels = len(self.bands)
        self.nodata = (dataset.nodata if nodata is None else nodata) if use_nodata else None
        self.preprocess = preprocess
        self.fill = np.broadcast_to(np.asarray(fill, dtype=np.float32), (self.channels,)).copy()

    def _raw(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        from rasterio.windows import Window

        try:
            return self.ds.read(self.bands, window=Window(x0, y0, w, h))
        except Exception as exc:  # rasterio raises several classes for damaged files
            raise InputFileError(f"cannot read {self.ds.name} at rows {y0}-{y0 + h}: {exc}") from exc

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        raw = padded_read(self._raw, self.height, self.width, y0, x0, h, w)
        valid = nodata_valid(raw, self.nodata)
        block = self.preprocess(raw, valid) if self.preprocess else raw.astype(np.float32)
        if valid is not None and not valid.all():
            block = np.where(valid[None], block, self.fill[:, None, None])
        return np.ascontiguousarray(block, dtype=np.float32)

    def valid_mask(self, y0: int, x0: int, h: int, w: int) -> np.ndarray | None:
        if self.nodata is None:
            return None
        return nodata_valid(self._raw(y0, x0, h, w), self.nodata)


GDAL_CACHE_MB = 64  # a few rows of blocks even for 100k-pixel-wide scenes; GDAL's default is 5 % of RAM


def bounded_gdal_cache() -> Any:
    """A rasterio environment whose GDAL block cache does not grow with the scene.

    Rows are read and written once, in order, so GDAL's default cache (5 % of RAM) would only fill
    with blocks we never revisit and make peak memory grow with scene size.
    """
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def temp_path_for(destination: str | os.PathLike, suffix: str = ".part") -> Path:
    """A fresh hidden temporary file next to ``destination`` (same filesystem: the rename is atomic).

    Named by ``sarcodec.destinations.make_temp``: short enough that a 255-byte output name works.
    """
    fd, name = make_temp(destination, suffix)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_output(destination: str | os.PathLike, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path; on success publish it as ``destination``, on any error remove it."""
    tmp = None
    try:
        with deferred():  # created and recorded in one step: an interrupt cannot fall in between
            tmp = temp_path_for(destination, suffix)
        yield tmp
        commit(tmp, destination)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def commit(tmp: str | os.PathLike, destination: str | os.PathLike) -> None:
    """fsync and move into place through the one publish step (``sarcodec.destinations.publish``).

    After a crash the destination is the old file or the new one, never half; without
    ``--overwrite`` a destination that appeared meanwhile is not replaced (``InputFileError``).
    """
    publish(tmp, destination)


def cast_block(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer dtype's range; plain cast for floats."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(block), info.min, info.max).astype(dtype)
    return block.astype(dtype, copy=False)


class GeoTiffSink:
    """Streams finished rows into a tiled GeoTIFF written under a temporary name.

    ``profile`` is a rasterio creation profile (driver, dtype, count, crs, transform, nodata,
    compression...). ``finalize(ds)`` runs before closing, to set tags and descriptions. Rows
    flagged invalid are written as ``nodata``.
    """

    def __init__(
        self,
        destination: str | os.PathLike,
        profile: dict[str, Any],
        *,
        finalize: Callable[[Any], None] | None = None,
        commit_on_close: bool = True,
    ) -> None:
        self.destination = Path(destination)
        with deferred():  # an interrupt lands before the file exists or after self.tmp names it
            self.tmp = temp_path_for(self.destination, ".part.tif")
        try:
            self._open(profile, finalize, commit_on_close)
        except BaseException:  # also Ctrl-C/SIGTERM while GDAL creates the file: no .part is left
            self.tmp.unlink(missing_ok=True)
            raise

    def _open(self, profile: dict[str, Any], finalize: Callable[[Any], None] | None, commit_on_close: bool) -> None:
        import rasterio

        # Always tiled, whatever the source was: finished row bands land in whole blocks and
        # readers (QGIS, COG conversion) get efficient windowed access.
        prof = {**profile, "driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256}
        prof.setdefault("BIGTIFF", "IF_SAFER")
        if prof.get("width", 0) < 16 or prof.get("height", 0) < 16:
            prof.pop("blockxsize", None)
            prof.pop("blockysize", None)
            prof["tiled"] = False
        self.width = int(prof["width"])
        self.height = int(prof["height"])
        self.count = int(prof.get("count", 1))
        self.dtype = np.dtype(prof["dtype"])
        self.nodata = prof.get("nodata")
        self.finalize = finalize
        self.commit_on_close = commit_on_close
        try:
            self.ds = rasterio.open(self.tmp, "w", **prof)
        except Exception as exc:
            raise InputFileError(f"cannot create {self.destination}: {exc}") from exc

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None,
                   indexes: list[int] | None = None) -> None:
        """Write (C, n, W) rows at ``row0``; ``indexes`` (1-based) picks bands when C < count."""
        from rasterio.windows import Window

        # A scale-16 decoder produces whole latents' worth of pixels: drop what lies past the raster.
        n = max(0, min(block.shape[1], self.height - row0))
        if n == 0:
            return
        block = block[:, :n, : self.width]
        valid = valid[:n, : self.width] if valid is not None else None
        out = cast_block(block, self.dtype)
        if valid is not None and self.nodata is not None and not valid.all():
            out = np.where(valid[None], out, np.asarray(self.nodata, dtype=self.dtype))
        try:
            self.ds.write(out, indexes=indexes or list(range(1, out.shape[0] + 1)),
                          window=Window(0, row0, out.shape[2], out.shape[1]))
        except Exception as exc:
            raise InputFileError(f"cannot write {self.destination}: {exc}") from exc

    def close(self) -> None:
        try:
            if self.finalize is not None:
                self.finalize(self.ds)
            self.ds.close()
            self._verify()
        except Exception as exc:
            self.abort()
            raise InputFileError(f"cannot write {self.destination}: {exc}") from exc
        if self.commit_on_close:
            try:
                commit(self.tmp, self.destination)
            except BaseException:
                with contextlib.suppress(OSError):
                    self.tmp.unlink()  # refused (the destination appeared) or interrupted: no file is left
                raise

    def _verify(self) -> None:
        """Read the closed file's directory and last block back before it may replace anything.

        GDAL reports failed writes (a full disk, a quota) only as log lines, and closing never raises,
        so without this a truncated GeoTIFF would be renamed into place as a success.
        """
        import rasterio
        from rasterio.windows import Window

        try:
            with rasterio.open(self.tmp) as ds:
                if (ds.width, ds.height, ds.count) != (self.width, self.height, self.count):
                    raise OSError("the written file is incomplete")
                bh, bw = ds.block_shapes[-1]
                r0, c0 = (self.height - 1) // bh * bh, (self.width - 1) // bw * bw
                ds.read(self.count, window=Window(c0, r0, self.width - c0, self.height - r0))
        except Exception as exc:  # rasterio's read errors are not all OSErrors
            raise OSError(f"the file did not reach the disk completely (disk full?): {exc}") from None

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.ds.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()
