"""Reading a window without decoding the scene: the same pixels as the crop of a full decode."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.windows import Window

import sarcodec
from sarcodec.codec.pipeline import CompressOptions, DecompressOptions, compress_raster, decompress_container
from sarcodec.errors import UsageError

from ..conftest import speckled_scene


@pytest.fixture(scope="module")
def v2_scene(tmp_path_factory):
    """A 1100 x 1300 two-band scene (3 x 3 chunks) with a nodata swath and uncodable pixels, and its full decode."""
    tmp = tmp_path_factory.mktemp("win")
    a = speckled_scene(1100, 1300, seed=21)
    a[:, :190] = 0  # nodata swath edge across the first chunk column
    a[700:705, 600:610] = 0  # a nodata hole inside a chunk
    b = speckled_scene(1100, 1300, seed=22)
    arr = np.stack([a, b])
    src = tmp / "s.tif"
    from rasterio.transform import from_origin

    with rasterio.open(src, "w", driver="GTiff", width=1300, height=1100, count=2, dtype="uint16", nodata=0,
                       crs="EPSG:32630", transform=from_origin(500000, 4500000, 10, 10)) as ds:
        ds.write(arr)
    npz = tmp / "s.npz"
    compress_raster(src, npz, CompressOptions(quality=5))
    full = tmp / "full.tif"
    decompress_container(npz, full, DecompressOptions())
    with rasterio.open(full) as ds:
        return npz, ds.read(), tmp


@pytest.mark.parametrize("win", [(0, 0, 1, 1), (1299, 1099, 1, 1), (505, 505, 14, 14), (500, 0, 30, 1100),
                                 (0, 511, 1300, 2), (180, 100, 20, 900), (600, 690, 200, 40)])
def test_window_is_the_crop_of_the_full_decode(v2_scene, win):
    npz, full, tmp = v2_scene
    col, row, w, h = win
    out = tmp / f"w_{col}_{row}_{w}_{h}.tif"
    res = decompress_container(npz, out, DecompressOptions(window=win))
    assert (res.width, res.height) == (w, h)
    with rasterio.open(out) as ds, rasterio.open(tmp / "full.tif") as f:
        np.testing.assert_array_equal(ds.read(), full[:, row : row + h, col : col + w])
        assert ds.transform == f.transform * f.transform.translation(col, row)
        assert ds.crs == f.crs and ds.nodata == f.nodata
    with sarcodec.open(npz) as f:
        np.testing.assert_array_equal(f.read(2, window=Window(col, row, w, h)), full[1, row : row + h, col : col + w])


def test_python_reader_looks_like_rasterio(v2_scene):
    npz, full, tmp = v2_scene
    with sarcodec.open(npz) as f, rasterio.open(tmp / "full.tif") as ref:
        assert (f.width, f.height, f.count, f.dtypes, f.nodata) == (1300, 1100, 2, ("uint16", "uint16"), 0)
        assert f.crs == ref.crs and f.transform == ref.transform and f.bounds == ref.bounds
        assert f.profile["width"] == 1300
        np.testing.assert_array_equal(f.read(), full)
        np.testing.assert_array_equal(f.read([2, 1], window=((10, 20), (30, 45))), full[::-1, 10:20, 30:45])
        w = f.window(500000 + 100, 4500000 - 300, 500000 + 250, 4500000 - 120)
        assert (w.col_off, w.row_off, w.width, w.height) == (10, 12, 15, 18)
    assert f.closed
    with pytest.raises(UsageError):
        sarcodec.open(npz, "w")


def test_bbox_in_the_file_crs_and_in_another(v2_scene):
    npz, full, tmp = v2_scene
    out = tmp / "bbox.tif"
    decompress_container(npz, out, DecompressOptions(bbox=(501000, 4491000, 502000, 4492000)))
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (100, 100)
        np.testing.assert_array_equal(ds.read(), full[:, 800:900, 100:200])
    # the same area given in geographic coordinates covers at least those pixels
    from rasterio.warp import transform_bounds

    ll = transform_bounds(CRS.from_epsg(32630), CRS.from_epsg(4326), 501000, 4491000, 502000, 4492000)
    out2 = tmp / "bbox_ll.tif"
    decompress_container(npz, out2, DecompressOptions(bbox=ll, bbox_crs="EPSG:4326"))
    with rasterio.open(out2) as ds:
        assert ds.width >= 100 and ds.height >= 100
        assert ds.bounds.left <= 501000 and ds.bounds.top >= 4492000


@pytest.mark.parametrize("opts, message", [
    ({"window": (0, 0, 0, 5)}, "positive"),
    ({"window": (1290, 0, 20, 5)}, "not inside"),
    ({"window": (-1, 0, 5, 5)}, "not inside"),
    ({"bbox": (0, 0, 10, 10)}, "does not intersect"),
    ({"bbox": (10, 0, 0, 10)}, "MINX < MAXX"),
    ({"bbox": (0, 0, 10, 10), "bbox_crs": "EPSG:999999"}, "cannot transform"),
    ({"window": (0, 0, 5, 5), "bbox": (501000, 4491000, 502000, 4492000)}, "not both"),
])
def test_bad_windows_are_usage_errors_and_write_nothing(v2_scene, opts, message):
    npz, _, tmp = v2_scene
    out = tmp / "bad.tif"
    with pytest.raises(UsageError, match=message) as exc:
        decompress_container(npz, out, DecompressOptions(**opts))
    assert exc.value.exit_code == 4 and not out.exists()


def test_v1_window_is_the_crop_of_the_full_decode(write_geotiff, tmp_path, small_model):
    scene = speckled_scene(600, 700, seed=23)
    src = write_geotiff(scene, nodata=0)
    npz = tmp_path / "v1.npz"
    compress_raster(src, npz, CompressOptions(model_path=small_model))
    decompress_container(npz, tmp_path / "full.tif", DecompressOptions(model_path=small_model))
    decompress_container(npz, tmp_path / "win.tif",
                         DecompressOptions(model_path=small_model, window=(500, 250, 60, 300)))
    with rasterio.open(tmp_path / "full.tif") as f, rasterio.open(tmp_path / "win.tif") as w:
        np.testing.assert_array_equal(w.read(1), f.read(1)[250:550, 500:560])


def test_gcps_move_with_the_window(write_geotiff, tmp_path):
    src = write_geotiff(speckled_scene(200, 240, seed=4), crs=None)
    gcps = [GroundControlPoint(row=0, col=0, x=10.0, y=50.0), GroundControlPoint(row=199, col=239, x=11.0, y=49.0),
            GroundControlPoint(row=0, col=239, x=11.0, y=50.0)]
    with rasterio.open(src, "r+") as ds:
        ds.gcps = (gcps, CRS.from_epsg(4326))
    npz = tmp_path / "g.npz"
    compress_raster(src, npz, CompressOptions())
    decompress_container(npz, tmp_path / "g.tif", DecompressOptions(window=(40, 30, 100, 100)))
    with rasterio.open(tmp_path / "g.tif") as ds:
        pts, crs = ds.gcps
        assert crs == CRS.from_epsg(4326)
        assert [(p.row, p.col, p.x, p.y) for p in pts] == [(-30, -40, 10.0, 50.0), (169, 199, 11.0, 49.0),
                                                           (-30, 199, 11.0, 50.0)]
    with pytest.raises(UsageError, match="no geotransform"):
        decompress_container(npz, tmp_path / "b.tif", DecompressOptions(bbox=(10.1, 49.1, 10.5, 49.5)))
