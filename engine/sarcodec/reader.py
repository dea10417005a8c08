"""Read a compressed scene like a raster: ``sarcodec.open`` in the style of ``rasterio.open``.

Users with archives of whole scenes want an area out of one, at once, as numpy arrays::

    import sarcodec
    from rasterio.windows import Window

    with sarcodec.open("scene.npz") as f:
        print(f.profile, f.crs, f.transform, f.bounds, f.count, f.dtypes, f.nodata)
        vv = f.read(1, window=Window(4096, 2048, 1024, 1024))     # (1024, 1024) array
        both = f.read(window=f.window(*bounds_in_file_crs))         # (bands, h, w)

``read`` decodes only the chunks the window covers (codec v2; v1 runs its decoder over the window's
rows), and the pixels are exactly those of the same crop of a full ``decompress``: the same band
decoder and the same nodata, fallback and gain handling are used (``codec.decode.decode_band``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError


class _ArraySink:
    """A row sink that fills one array (bands, height, width) in memory."""

    def __init__(self, array: np.ndarray, bands: list[int]) -> None:
        self.array = array
        self.slot = {b: i for i, b in enumerate(bands)}

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None,
                   indexes: list[int] | None = None) -> None:
        band = (indexes or [1])[0]
        self.array[self.slot[band], row0 : row0 + block.shape[1]] = block[0]

    def close(self) -> None:
        """Nothing to finish: the array is the result."""

    def abort(self) -> None:
        """Nothing to remove."""


class CompressedRaster:
    """An open ``.npz`` container, read-only, with rasterio's dataset vocabulary."""

    def __init__(self, path: str | Path, *, model: str | Path | None = None, salvage: bool = False) -> None:
        from .codec.container import ContainerReader
        from .codec.decode import plan_decompression
        from .codec.options import DecompressOptions

        self.name = str(path)
        self._reader = ContainerReader(path)
        try:
            self._plan = plan_decompression(self._reader, DecompressOptions(model_path=model, salvage=salvage))
        except BaseException:
            self._reader.close()
            raise
        self.salvage = salvage
        self.closed = False
        self.damaged_chunks: list[int] = []

    # -- rasterio-style properties --------------------------------------------------------------
    @property
    def mode(self) -> str:
        return "r"

    @property
    def profile(self) -> dict[str, Any]:
        """What ``decompress`` would write (driver GTiff, size, count, dtype, crs, transform, nodata)."""
        return dict(self._plan.profile)

    @property
    def width(self) -> int:
        return int(self._plan.header["shape"][2])

    @property
    def height(self) -> int:
        return int(self._plan.header["shape"][1])

    @property
    def count(self) -> int:
        return int(self._plan.header["shape"][0])

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def dtypes(self) -> tuple[str, ...]:
        return (self._plan.out_dtype.name,) * self.count

    @property
    def indexes(self) -> tuple[int, ...]:
        return tuple(range(1, self.count + 1))

    @property
    def crs(self):
        return self._plan.profile.get("crs")

    @property
    def transform(self):
        from rasterio.transform import Affine

        return self._plan.profile.get("transform", Affine.identity())

    @property
    def bounds(self):
        from rasterio.coords import BoundingBox
        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return BoundingBox(west, south, east, north)

    @property
    def res(self) -> tuple[float, float]:
        t = self.transform
        return abs(t.a), abs(t.e)

    @property
    def nodata(self) -> float | None:
        return self._plan.profile.get("nodata")

    @property
    def nodatavals(self) -> tuple[float | None, ...]:
        return tuple(self._plan.nodata)

    @property
    def descriptions(self) -> tuple[str | None, ...]:
        d = self._plan.meta.get("descriptions") or [None] * self.count
        return tuple(d[: self.count])

    @property
    def gcps(self) -> tuple[list, Any]:
        """Ground control points and their CRS, as rasterio returns them (empty when there are none)."""
        from rasterio.control import GroundControlPoint
        from rasterio.crs import CRS

        g = self._plan.meta.get("gcps") or {}
        points = [GroundControlPoint(row=p[0], col=p[1], x=p[2], y=p[3], z=p[4], id=p[5] or None, info=p[6] or None)
                  for p in g.get("points", [])]
        return points, (CRS.from_wkt(g["crs"]) if g.get("crs") else None)

    def tags(self, bidx: int = 0) -> dict[str, str]:
        if bidx:
            band_tags = self._plan.meta.get("band_tags") or []
            return dict(band_tags[bidx - 1]) if bidx - 1 < len(band_tags) else {}
        return dict(self._plan.meta.get("tags") or {})

    def window(self, left: float, bottom: float, right: float, top: float):
        """The pixel window (rasterio ``Window``, whole pixels) covering these bounds in the file's CRS."""
        from rasterio.windows import Window

        from .codec.windows import bbox_window

        r0, c0, h, w = bbox_window(self._plan.meta, self.height, self.width, (left, bottom, right, top), None) \
            or (0, 0, self.height, self.width)
        return Window(c0, r0, w, h)

    # -- reading --------------------------------------------------------------------------------
    def read(self, indexes: int | list[int] | None = None, window: Any = None) -> np.ndarray:
        """Pixels of ``indexes`` (1-based; an int gives a 2-D array) inside ``window`` (a rasterio ``Window``
        or ``((row_start, row_stop), (col_start, col_stop))``; None: everything)."""
        from .codec.decode import decode_band
        from .codec.options import DecompressOptions
        from .codec.windows import decode_window
        from .device import DevicePolicy
        from .progress import NullProgress

        if self.closed:
            raise ValueError(f"{self.name} is closed")
        single = isinstance(indexes, (int, np.integer))
        bands = [int(indexes)] if single else list(indexes) if indexes is not None else list(self.indexes)
        if not bands or any(not 1 <= b <= self.count for b in bands):
            raise UsageError(f"band indexes must be in 1..{self.count}, got {indexes!r}")
        win = _as_window(window, self.height, self.width)
        opts = DecompressOptions(window=win) if win is not None else DecompressOptions()
        rect = decode_window(self._plan.meta, self.height, self.width, opts)
        plan = dataclasses.replace(self._plan, window=rect)
        h, w = (rect[2], rect[3]) if rect is not None else (self.height, self.width)
        out = np.empty((len(bands), h, w), dtype=self._plan.out_dtype)
        sink = _ArraySink(out, bands)
        damaged: list[int] = []  # with salvage, damaged chunks come back as nodata and are listed here
        for b in bands:
            decode_band(plan, self._reader, b - 1, sink, DevicePolicy("cpu"), NullProgress(), damaged,
                        salvage=self.salvage)
        self.damaged_chunks = sorted(set(damaged))
        return out[0] if single else out

    # -- context manager ------------------------------------------------------------------------
    def close(self) -> None:
        if not self.closed:
            self._reader.close()
            self.closed = True

    def __enter__(self) -> CompressedRaster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{state} CompressedRaster name='{self.name}' mode='r'>"


def _as_window(window: Any, height: int, width: int) -> tuple[int, int, int, int] | None:
    """(col_off, row_off, width, height) from a rasterio Window or rasterio's tuple form; None: all."""
    if window is None:
        return None
    if hasattr(window, "col_off"):
        vals = (window.col_off, window.row_off, window.width, window.height)
        if any(float(v) != int(v) for v in vals):
            raise UsageError(f"a window must be whole pixels, got {window}")
        return tuple(int(v) for v in vals)  # type: ignore[return-value]
    try:
        (r0, r1), (c0, c1) = window
        return int(c0), int(r0), int(c1) - int(c0), int(r1) - int(r0)
    except (TypeError, ValueError):
        raise UsageError(f"a window is a rasterio Window or ((row_start, row_stop), (col_start, col_stop)), "
                         f"got {window!r}") from None


def open_container(path: str | Path, mode: str = "r", *, model: str | Path | None = None,
                   salvage: bool = False) -> CompressedRaster:
    """Open a ``.npz`` container for reading (``mode`` must be ``"r"``)."""
    if mode != "r":
        raise UsageError(f"sarcodec containers are opened read-only (mode 'r'), got mode {mode!r}")
    return CompressedRaster(path, model=model, salvage=salvage)
