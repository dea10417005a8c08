"""Geospatial metadata: read from GeoTIFFs, through JSON, written back, compared field by field."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from sarcodec.errors import UsageError
from sarcodec.geometa import (
    apply_geo_metadata,
    has_valid_crs,
    nodata_fits,
    nodata_values,
    profile_from_metadata,
    read_geo_metadata,
    with_crs,
)

RPC = {
    "LINE_OFF": "100", "SAMP_OFF": "200", "LAT_OFF": "45.5", "LONG_OFF": "7.25", "HEIGHT_OFF": "10",
    "LINE_SCALE": "100", "SAMP_SCALE": "200", "LAT_SCALE": "0.1", "LONG_SCALE": "0.1", "HEIGHT_SCALE": "50",
    "LINE_NUM_COEFF": " ".join(["0.5"] * 20), "LINE_DEN_COEFF": " ".join(["1"] * 20),
    "SAMP_NUM_COEFF": " ".join(["0.25"] * 20), "SAMP_DEN_COEFF": " ".join(["1"] * 20),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def _json_round_trip(meta: dict) -> dict:
    """What the container does: strict JSON out, JSON in."""
    return json.loads(json.dumps(meta, separators=(",", ":"), allow_nan=False))


def _rewrite(meta: dict, path, count: int, dtype: str, height=20, width=30) -> dict:
    """Write a new GeoTIFF from (JSON round-tripped) metadata and read its metadata back."""
    meta = _json_round_trip(meta)
    profile = profile_from_metadata(meta, width=width, height=height, count=count, dtype=dtype)
    with rasterio.open(path, "w", **profile) as ds:
        apply_geo_metadata(ds, meta)
        ds.write(np.ones((count, height, width), dtype=dtype))
    with rasterio.open(path) as ds:
        return read_geo_metadata(ds)


def test_crs_transform_nodata_descriptions_tags(tmp_path):
    src = tmp_path / "src.tif"
    transform = from_origin(500000.0, 4000000.0, 10.0, 10.0)
    with rasterio.open(src, "w", driver="GTiff", width=30, height=20, count=2, dtype="uint16",
                       crs="EPSG:32633", transform=transform, nodata=0) as ds:
        ds.write(np.ones((2, 20, 30), np.uint16))
        ds.set_band_description(1, "VV")
        ds.set_band_description(2, "VH")
        ds.update_tags(SAR_DOMAIN="amplitude_dn", MISSION="SENTINEL-1A")
        ds.update_tags(1, POLARISATION="VV")
        ds.update_tags(2, POLARISATION="VH", SWATH="IW")
        ds.set_band_unit(1, "DN")
        ds.scales = [2.0, 1.0]
        ds.offsets = [0.0, -3.5]
        ds.colorinterp = [ColorInterp.gray, ColorInterp.undefined]
        ds.update_tags(ns="RPC", **RPC)
    with rasterio.open(src) as ds:
        meta = read_geo_metadata(ds)
        src_crs, src_transform = ds.crs, ds.transform
    assert CRS.from_wkt(meta["crs"]) == src_crs
    assert meta["transform"] == list(src_transform)[:6]
    assert meta["nodata"] == 0
    assert meta["descriptions"] == ["VV", "VH"]
    assert meta["tags"]["SAR_DOMAIN"] == "amplitude_dn" and meta["tags"]["MISSION"] == "SENTINEL-1A"
    assert meta["band_tags"] == [{"POLARISATION": "VV"}, {"POLARISATION": "VH", "SWATH": "IW"}]
    assert meta["units"] == ["DN", ""]
    assert meta["scales"] == [2.0, 1.0] and meta["offsets"] == [0.0, -3.5]
    assert "colorinterp" not in meta  # GTiff's default (gray, undefined) is left out
    assert {k: meta["domains"]["RPC"][k] for k in RPC} == RPC
    assert "IMAGE_STRUCTURE" not in meta.get("domains", {})
    assert has_valid_crs(meta)

    back = _rewrite(meta, tmp_path / "out.tif", 2, "uint16")
    for key in meta:
        assert back[key] == meta[key], key
    assert back.keys() == meta.keys()


def test_gcps_without_transform(tmp_path):
    src = tmp_path / "gcp.tif"
    gcps = [
        GroundControlPoint(row=0, col=0, x=10.0, y=50.0, z=100.0, id="1"),
        GroundControlPoint(row=0, col=29, x=10.5, y=50.0, z=0.0, id="2"),
        GroundControlPoint(row=19, col=29, x=10.5, y=49.5, z=None, id="3"),
    ]
    with rasterio.open(src, "w", driver="GTiff", width=30, height=20, count=1, dtype="float32",
                       nodata=float("nan")) as ds:
        ds.gcps = (gcps, CRS.from_epsg(4326))
        ds.write(np.ones((1, 20, 30), np.float32))
    with rasterio.open(src) as ds:
        meta = read_geo_metadata(ds)
    assert "transform" not in meta
    assert "crs" not in meta
    assert CRS.from_wkt(meta["gcps"]["crs"]) == CRS.from_epsg(4326)
    pts = meta["gcps"]["points"]
    assert [p[:4] for p in pts] == [[0, 0, 10.0, 50.0], [0, 29, 10.5, 50.0], [19, 29, 10.5, 49.5]]
    assert pts[0][4] == 100.0 and [p[5] for p in pts] == ["1", "2", "3"]
    assert meta["nodata"] == "nan"  # strict JSON, no NaN literal
    assert math.isnan(nodata_values(meta, 1)[0])
    assert has_valid_crs(meta)

    back = _rewrite(meta, tmp_path / "out.tif", 1, "float32")
    assert back["gcps"]["points"] == pts
    assert CRS.from_wkt(back["gcps"]["crs"]) == CRS.from_epsg(4326)
    assert back["nodata"] == "nan" and "transform" not in back


def test_no_crs_no_transform(tmp_path):
    src = tmp_path / "plain.tif"
    with rasterio.open(src, "w", driver="GTiff", width=30, height=20, count=1, dtype="float32") as ds:
        ds.write(np.ones((1, 20, 30), np.float32))
    with rasterio.open(src) as ds:
        meta = read_geo_metadata(ds)
    assert "crs" not in meta and "transform" not in meta and "gcps" not in meta and "nodata" not in meta
    assert not has_valid_crs(meta)
    assert len(json.dumps(meta)) < 100  # nothing to say, (almost) nothing stored
    back = _rewrite(meta, tmp_path / "out.tif", 1, "float32")
    assert "crs" not in back and "transform" not in back


def test_transform_without_crs_is_kept(tmp_path):
    src = tmp_path / "t.tif"
    with rasterio.open(src, "w", driver="GTiff", width=30, height=20, count=1, dtype="uint8",
                       transform=from_origin(100.0, 200.0, 2.0, 2.0)) as ds:
        ds.write(np.ones((1, 20, 30), np.uint8))
    with rasterio.open(src) as ds:
        meta = read_geo_metadata(ds)
    assert meta["transform"] == [2.0, 0.0, 100.0, 0.0, -2.0, 200.0]
    assert not has_valid_crs(meta)
    fixed = with_crs(meta, "EPSG:3857")
    assert has_valid_crs(fixed) and "crs" not in meta  # a copy, the original is untouched
    back = _rewrite(fixed, tmp_path / "out.tif", 1, "uint8")
    assert CRS.from_wkt(back["crs"]) == CRS.from_epsg(3857) and back["transform"] == meta["transform"]


def test_with_crs_accepts_epsg_and_wkt_and_refuses_junk():
    wkt = CRS.from_epsg(32630).to_wkt()
    assert CRS.from_wkt(with_crs({}, "EPSG:32630")["crs"]) == CRS.from_epsg(32630)
    assert CRS.from_wkt(with_crs({}, wkt)["crs"]) == CRS.from_epsg(32630)
    gcp_meta = {"gcps": {"crs": None, "points": [[0, 0, 1, 2, 0, "1", ""]]}}
    assert not has_valid_crs(gcp_meta)
    fixed = with_crs(gcp_meta, "EPSG:4326")
    assert has_valid_crs(fixed) and "crs" not in fixed
    for junk in ["EPSG:999999999", "not a crs", "", "PROJCS[broken"]:
        with pytest.raises(UsageError, match="invalid CRS"):
            with_crs({}, junk)


def test_invalid_stored_crs_is_not_valid():
    assert not has_valid_crs({"crs": "GARBAGE"})
    assert not has_valid_crs({})


def test_nodata_fits_and_profile_refuses_unrepresentable_nodata():
    assert nodata_fits(0, "uint16") and nodata_fits(float("nan"), "float32") and nodata_fits(None, "uint8")
    assert not nodata_fits(float("nan"), "uint16") and not nodata_fits(-1, "uint8")
    assert not nodata_fits(0.5, "int16") and not nodata_fits(70000, "uint16")
    with pytest.raises(UsageError, match="nodata"):
        profile_from_metadata({"nodata": "nan"}, width=2, height=2, count=1, dtype="uint16")
    prof = profile_from_metadata({"nodata": 0, "crs": CRS.from_epsg(4326).to_wkt(),
                                  "transform": [1, 0, 0, 0, -1, 0]}, width=2, height=3, count=1,
                                 dtype="uint16", compress="LZW")
    assert prof["nodata"] == 0 and prof["compress"] == "LZW" and prof["height"] == 3
    assert prof["crs"] == CRS.from_epsg(4326)


def test_metadata_json_is_compact(tmp_path):
    """A typical georeferenced S1 chip costs a few hundred bytes once the header is deflated."""
    import zlib

    src = tmp_path / "s1.tif"
    with rasterio.open(src, "w", driver="GTiff", width=100, height=100, count=2, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000.0, 4000000.0, 10.0, 10.0),
                       nodata=0) as ds:
        ds.write(np.ones((2, 100, 100), np.uint16))
        ds.descriptions = ("VV", "VH")
    with rasterio.open(src) as ds:
        meta = read_geo_metadata(ds)
    text = json.dumps(meta, separators=(",", ":")).encode()
    assert len(zlib.compress(text, 9)) < 450
