"""Geospatial metadata that survives compress + decompress, as a compact JSON-ready dict.

The container stores what a GIS needs to put the decompressed scene back where it was and to say
what it is: CRS (WKT), affine transform or GCPs (with their CRS), nodata, band descriptions,
dataset and band tags, colour interpretation, units, scales/offsets and other metadata domains
such as RPC. It is one dict so that the container header, ``sarcodec info`` and the decompressor
share one definition.

Compactness matters for small chips (1 KB of header is 0.8 bpp on a 100x100 chip), so defaults are
left out: a key is present only when the source had something to say (``colorinterp`` is left
out when it is GTiff's default: gray, then undefined). Non-finite numbers (a NaN
nodata) are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` to keep the JSON standard.

Format (all keys optional)::

    {"crs": WKT, "transform": [a, b, c, d, e, f],
     "gcps": {"crs": WKT | null, "points": [[row, col, x, y, z, id, info], ...]},
     "nodata": value | [value per band], "descriptions": [str | null, ...],
     "tags": {k: v}, "band_tags": [{k: v}, ...], "colorinterp": ["gray", "undefined", ...],
     "units": [str, ...], "scales": [float, ...], "offsets": [float, ...],
     "domains": {"RPC": {k: v}, ...}}
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from sarcodec.errors import UsageError
from sarcodec.raster_text import read_band_strings, read_tags

#: Metadata domains that describe the file's encoding or GDAL internals, not the scene.
_SKIPPED_DOMAINS = frozenset({"", "IMAGE_STRUCTURE", "DERIVED_SUBDATASETS", "SUBDATASETS"})

#: Tags GDAL derives from the pixels (``gdalinfo -stats``, QGIS's first display of a layer, stored in
#: the ``.aux.xml`` sidecar). They describe the original pixels, not the decoded ones: stored and
#: written back they would report a wrong min/max/mean, and their appearance would change the header.
_DERIVED_TAG_PREFIXES = ("STATISTICS_",)


def _scene_tags(tags: Mapping[str, Any]) -> dict[str, Any]:
    """``tags`` without the statistics GDAL derives from the pixels (see ``_DERIVED_TAG_PREFIXES``)."""
    return {k: v for k, v in tags.items() if not str(k).upper().startswith(_DERIVED_TAG_PREFIXES)}


def _drop_derived(meta: dict[str, Any]) -> dict[str, Any]:
    """Remove derived statistics from dataset and band tags in place (empty entries disappear)."""
    if isinstance(meta.get("tags"), Mapping):
        meta["tags"] = _scene_tags(meta["tags"])
        if not meta["tags"]:
            del meta["tags"]
    if isinstance(meta.get("band_tags"), list):
        meta["band_tags"] = [_scene_tags(t) if isinstance(t, Mapping) else t for t in meta["band_tags"]]
        if not any(meta["band_tags"]):
            del meta["band_tags"]
    return meta


def _num_out(value: float | int | None) -> float | int | str | None:
    """A number for JSON: ints stay ints, non-finite floats become strings."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    f = float(value)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def _num_in(value: Any) -> float | None:
    """Inverse of :func:`_num_out` (ints are returned as floats, as rasterio reports nodata)."""
    if value is None:
        return None
    if isinstance(value, str):
        return float(value)  # "nan", "inf", "-inf"
    return float(value)


def _crs_wkt(crs: Any) -> str | None:
    """WKT of a rasterio CRS, or None when it is missing or unusable."""
    if crs is None:
        return None
    try:
        wkt = crs.to_wkt()
    except Exception:  # noqa: BLE001 - any PROJ/GDAL failure means "no usable CRS"
        return None
    return wkt or None


def read_geo_metadata(ds: Any) -> dict[str, Any]:
    """Collect the geospatial metadata of an open rasterio dataset as a compact JSON-ready dict.

    A missing or invalid CRS becomes no ``crs`` key (``has_valid_crs`` is then False, which is
    what the CLI's ``--crs`` prompt keys on). An identity transform without CRS is GDAL's "no
    geotransform" and is left out rather than written back as a fake georeference.
    """
    meta: dict[str, Any] = {}
    count = int(ds.count)
    try:
        crs = ds.crs
    except Exception:  # noqa: BLE001 - rasterio raises CRSError subclasses for broken SRS
        crs = None
    wkt = _crs_wkt(crs)
    gcps, gcp_crs = ([], None)
    try:
        gcps, gcp_crs = ds.gcps
    except Exception:  # noqa: BLE001
        gcps, gcp_crs = [], None
    transform = ds.transform
    georef_transform = not (transform.is_identity and wkt is None) and not (gcps and transform.is_identity)
    if wkt is not None:
        meta["crs"] = wkt
    if georef_transform:
        meta["transform"] = [float(v) for v in tuple(transform)[:6]]
    if gcps:
        meta["gcps"] = {
            "crs": _crs_wkt(gcp_crs),
            "points": [
                [float(g.row), float(g.col), float(g.x), float(g.y),
                 None if g.z is None else float(g.z), g.id or "", g.info or ""]
                for g in gcps
            ],
        }
    nodatavals = list(ds.nodatavals)
    if any(v is not None for v in nodatavals):
        outs = [_num_out(v) for v in nodatavals]
        meta["nodata"] = outs[0] if all(o == outs[0] for o in outs) else outs
    descriptions = read_band_strings(ds, "descriptions")  # not UTF-8 (Latin-1) is kept, see raster_text
    if any(descriptions):
        meta["descriptions"] = [d or None for d in descriptions]
    tags = read_tags(ds)
    if tags:
        meta["tags"] = tags
    band_tags = [read_tags(ds, i) for i in range(1, count + 1)]
    if any(band_tags):
        meta["band_tags"] = band_tags
    colorinterp = [ci.name for ci in ds.colorinterp]
    if colorinterp != _default_colorinterp(count):
        meta["colorinterp"] = colorinterp
    units = [u or "" for u in read_band_strings(ds, "units")]
    if any(units):
        meta["units"] = units
    scales = [float(s) for s in ds.scales]
    if any(s != 1.0 for s in scales):
        meta["scales"] = scales
    offsets = [float(o) for o in ds.offsets]
    if any(o != 0.0 for o in offsets):
        meta["offsets"] = offsets
    domains: dict[str, dict[str, str]] = {}
    try:
        namespaces = ds.tag_namespaces() or []
    except Exception:  # noqa: BLE001
        namespaces = []
    for ns in namespaces:
        if ns in _SKIPPED_DOMAINS or ns.startswith("xml:"):
            continue
        try:
            values = read_tags(ds, ns=ns)
        except Exception:  # noqa: BLE001
            continue
        if values:
            domains[ns] = values
    if domains:
        meta["domains"] = domains
    return _drop_derived(meta)


def _default_colorinterp(count: int) -> list[str]:
    """What GTiff gives a single-channel-per-band raster: gray, then undefined (left out of meta)."""
    return ["gray"] + ["undefined"] * (count - 1) if count else []


def nodata_values(meta: Mapping[str, Any], count: int) -> list[float | None]:
    """Per-band nodata values (floats, NaN allowed, None where a band has none)."""
    nd = meta.get("nodata")
    if isinstance(nd, list):
        vals = [_num_in(v) for v in nd]
        return (vals + [None] * count)[:count]
    return [_num_in(nd)] * count


def nodata_fits(nodata: float | None, dtype: Any) -> bool:
    """Whether ``nodata`` can be stored in ``dtype`` exactly (NaN only in floats)."""
    if nodata is None:
        return True
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return True
    if math.isnan(nodata) or math.isinf(nodata) or not float(nodata).is_integer():
        return False
    info = np.iinfo(dt)
    return info.min <= nodata <= info.max


def _parse_crs(value: str | None) -> Any:
    from rasterio.crs import CRS

    if not value:
        return None
    try:
        return CRS.from_user_input(value)
    except Exception:  # noqa: BLE001
        return None


def has_valid_crs(meta: Mapping[str, Any]) -> bool:
    """True when the transform's CRS (or, for GCP georeferencing, the GCPs' CRS) parses."""
    gcps = meta.get("gcps")
    if "transform" not in meta and isinstance(gcps, Mapping) and gcps.get("points"):
        return _parse_crs(gcps.get("crs")) is not None
    return _parse_crs(meta.get("crs")) is not None


def with_crs(meta: Mapping[str, Any], crs_string: str) -> dict[str, Any]:
    """A copy of ``meta`` with its CRS set from ``"EPSG:XXXX"``, WKT or a PROJ string.

    For GCP-georeferenced scenes the GCPs' CRS is the one set. An unparsable string is the user's
    option value, hence UsageError (exit code 4), never a file error.
    """
    crs = _parse_crs(str(crs_string).strip()) if crs_string is not None else None
    wkt = _crs_wkt(crs)
    if wkt is None:
        shown = str(crs_string).strip().splitlines()[0][:60] if crs_string else ""
        raise UsageError(f"invalid CRS {shown!r}: expected EPSG:XXXX or WKT")
    out = copy.deepcopy(dict(meta))
    gcps = out.get("gcps")
    if "transform" not in out and isinstance(gcps, dict) and gcps.get("points"):
        gcps["crs"] = wkt
    else:
        out["crs"] = wkt
    return out


def profile_from_metadata(meta: Mapping[str, Any], *, width: int, height: int, count: int, dtype: Any,
                          driver: str = "GTiff", **creation_options: Any) -> dict[str, Any]:
    """A rasterio creation profile carrying what must be known at creation: CRS, transform, nodata.

    Everything else is set after opening with :func:`apply_geo_metadata`. A nodata value that the
    output dtype cannot hold is a UsageError (e.g. ``--output-dtype uint8`` for a NaN nodata):
    silently dropping it would turn holes into data.
    """
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    profile: dict[str, Any] = {"driver": driver, "width": int(width), "height": int(height),
                               "count": int(count), "dtype": np.dtype(dtype).name}
    if meta.get("crs"):
        try:
            profile["crs"] = CRS.from_wkt(meta["crs"])
        except Exception:  # noqa: BLE001 - an unusable stored CRS is written as none
            pass
    if meta.get("transform") is not None:
        profile["transform"] = Affine(*[float(v) for v in meta["transform"][:6]])
    nodata = nodata_values(meta, int(count))[0] if count else None
    if nodata is not None:
        if not nodata_fits(nodata, dtype):
            dt_name = np.dtype(dtype).name
            raise UsageError(f"nodata value {nodata} does not fit the output data type {dt_name}")
        profile["nodata"] = nodata
    profile.update(creation_options)
    return profile


def apply_geo_metadata(ds: Any, meta: Mapping[str, Any]) -> None:
    """Write ``meta`` onto a rasterio dataset opened for writing (``"w"`` or ``"r+"``).

    Fields that the dataset already has from its creation profile are set again (harmless); band
    lists longer than the dataset's band count are cut, shorter ones leave the rest untouched.
    """
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS
    from rasterio.enums import ColorInterp
    from rasterio.transform import Affine

    count = int(ds.count)
    crs = None
    if meta.get("crs"):
        try:
            crs = CRS.from_wkt(meta["crs"])
        except Exception:  # noqa: BLE001
            crs = None
    gcps = meta.get("gcps")
    if meta.get("transform") is not None:
        if crs is not None:
            ds.crs = crs
        ds.transform = Affine(*[float(v) for v in meta["transform"][:6]])
    elif isinstance(gcps, Mapping) and gcps.get("points"):
        points = [GroundControlPoint(row=p[0], col=p[1], x=p[2], y=p[3], z=p[4], id=p[5] or None,
                                     info=p[6] or None) for p in gcps["points"]]
        gcrs = None
        if gcps.get("crs"):
            try:
                gcrs = CRS.from_wkt(gcps["crs"])
            except Exception:  # noqa: BLE001
                gcrs = None
        ds.gcps = (points, gcrs)
    elif crs is not None:
        ds.crs = crs
    if "nodata" in meta:
        vals = nodata_values(meta, count)
        if len({repr(v) for v in vals}) == 1:
            if vals[0] is not None:
                ds.nodata = vals[0]
        elif hasattr(ds, "_set_nodatavals"):  # rasterio has no public per-band nodata setter
            ds._set_nodatavals(vals)
    for i, desc in enumerate(meta.get("descriptions") or [], start=1):
        if i <= count and desc:
            ds.set_band_description(i, desc)
    if meta.get("tags"):  # older containers may hold derived statistics: never written back
        ds.update_tags(**{str(k): str(v) for k, v in _scene_tags(meta["tags"]).items()})
    for i, tags in enumerate(meta.get("band_tags") or [], start=1):
        if i <= count and tags:
            ds.update_tags(i, **{str(k): str(v) for k, v in _scene_tags(tags).items()})
    names = meta.get("colorinterp")
    if names and len(names) >= count:
        try:
            ds.colorinterp = [ColorInterp[n] for n in names[:count]]
        except (KeyError, ValueError):
            pass  # an unknown name or a combination the driver refuses is not worth failing for
    for i, unit in enumerate(meta.get("units") or [], start=1):
        if i <= count and unit:
            ds.set_band_unit(i, unit)
    if meta.get("scales"):
        ds.scales = (list(meta["scales"]) + [1.0] * count)[:count]
    if meta.get("offsets"):
        ds.offsets = (list(meta["offsets"]) + [0.0] * count)[:count]
    for ns, values in (meta.get("domains") or {}).items():
        if values and ns not in _SKIPPED_DOMAINS:
            ds.update_tags(ns=ns, **{str(k): str(v) for k, v in values.items()})
