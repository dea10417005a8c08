"""Which part of a raster to decode: ``--window`` / ``--bbox`` checked and turned into pixel rows and
columns, and the metadata of that part (its transform starts at the window; GCPs move with it).

Pure geometry on the header's metadata, no decoding: ``decompress``, ``sarcodec.open(...).window()``
and ``.read(window=...)`` all come here, so a window means the same pixels everywhere. Windows are
``(row0, col0, height, width)`` tuples; the user-facing ``--window`` is ``COL ROW WIDTH HEIGHT``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..geometa import has_valid_crs

if TYPE_CHECKING:
    from .options import DecompressOptions


def decode_window(meta: dict, height: int, width: int, options: DecompressOptions) -> tuple[int, int, int, int] | None:
    """(row0, col0, height, width) of the part to decode from ``--window`` or ``--bbox``; None: everything.

    A window must lie inside the raster and have a positive size; a bbox is taken in the file's CRS
    (or ``bbox_crs``), widened to whole pixels and clipped to the raster, and must intersect it.
    """
    if options.window is not None and options.bbox is not None:
        raise UsageError("give a window or a bounding box, not both")
    if options.window is not None:
        try:
            col, row, w, h = (int(v) for v in options.window)
        except (TypeError, ValueError):
            raise UsageError(f"a window is four integers COL ROW WIDTH HEIGHT, got {options.window!r}") from None
        if w < 1 or h < 1:
            raise UsageError(f"the window's width and height must be positive, got {w} x {h}")
        if col < 0 or row < 0 or col + w > width or row + h > height:
            raise UsageError(f"the window (col {col}, row {row}, {w} x {h}) is not inside the raster "
                             f"({width} x {height} pixels)")
        return (row, col, h, w) if (row, col, h, w) != (0, 0, height, width) else None
    if options.bbox is None:
        return None
    return bbox_window(meta, height, width, options.bbox, options.bbox_crs)


def bbox_window(meta: dict, height: int, width: int, bbox: tuple[float, ...],
                 bbox_crs: str | None) -> tuple[int, int, int, int] | None:
    """The whole pixels ``bbox`` covers (in the file's CRS, or ``bbox_crs``), clipped to the raster;
    None when that is the whole raster."""
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.warp import transform_bounds

    if meta.get("transform") is None:
        raise UsageError("the file has no geotransform (it is placed by GCPs or not at all): use a pixel window")
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not (minx < maxx and miny < maxy) or not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise UsageError(f"a bounding box is MINX MINY MAXX MAXY with MINX < MAXX and MINY < MAXY, got {bbox}")
    if bbox_crs:
        if not has_valid_crs(meta):
            raise UsageError("the file has no CRS to transform the bounding box into")
        try:
            src = CRS.from_user_input(bbox_crs)
            dst = CRS.from_wkt(meta["crs"])
            minx, miny, maxx, maxy = transform_bounds(src, dst, minx, miny, maxx, maxy, densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - rasterio/PROJ raise several kinds
            raise UsageError(f"cannot transform the bounding box from {bbox_crs} into the file's CRS "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
            raise UsageError(f"the bounding box cannot be transformed from {bbox_crs} into the file's CRS")
    inv = ~Affine(*[float(v) for v in meta["transform"][:6]])
    corners = [inv * (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    c0, c1 = max(0, math.floor(min(cols) + 1e-9)), min(width, math.ceil(max(cols) - 1e-9))
    r0, r1 = max(0, math.floor(min(rows) + 1e-9)), min(height, math.ceil(max(rows) - 1e-9))
    if c0 >= c1 or r0 >= r1:
        raise UsageError(f"the bounding box {bbox} does not intersect the raster")
    window = (r0, c0, r1 - r0, c1 - c0)
    return window if window != (0, 0, height, width) else None


def window_metadata(meta: dict, window: tuple[int, int, int, int]) -> dict:
    """``meta`` of the window's raster: its transform starts at the window; GCPs move with it."""
    from rasterio.transform import Affine

    r0, c0 = window[0], window[1]
    out = dict(meta)
    if meta.get("transform") is not None:
        t = Affine(*[float(v) for v in meta["transform"][:6]]) * Affine.translation(c0, r0)
        out["transform"] = [t.a, t.b, t.c, t.d, t.e, t.f]
    gcps = meta.get("gcps")
    if isinstance(gcps, dict) and gcps.get("points"):
        out["gcps"] = {**gcps, "points": [[p[0] - r0, p[1] - c0, *p[2:]] for p in gcps["points"]]}
    return out
