"""Streaming GeoTIFF in and out: geo metadata kept, reflect padding exact, nothing half-written."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
import torch

from sarcodec.device import DevicePolicy
from sarcodec.errors import InputFileError
from sarcodec.raster_io import GeoTiffSink, RasterSource, atomic_output, reflect_indices
from sarcodec.runner import TileModel, run_tiled

from .conftest import speckled_scene


def test_reflect_indices_match_numpy_reflect_padding():
    for length in (1, 2, 5, 17):
        for start, size in ((0, 40), (-7, 30), (length - 3, 50)):
            got = reflect_indices(start, size, length)
            if length == 1:
                assert (got == 0).all()
                continue
            ref = np.pad(np.arange(length), 200, mode="reflect")[200 + start : 200 + start + size]
            np.testing.assert_array_equal(got, ref)


def test_geotiff_streaming_round_trip_keeps_georeferencing(write_geotiff, tmp_path):
    scene = speckled_scene(600, 500, seed=5)
    scene[:50, :60] = 0  # nodata corner
    src_path = write_geotiff(scene, nodata=0)
    out = tmp_path / "out.tif"
    weights = tmp_path / "weights.tif"
    identity = torch.nn.Identity()
    with rasterio.open(src_path) as ds:
        profile = dict(ds.profile)
        sink = GeoTiffSink(out, profile)
        wsink = GeoTiffSink(weights, {**profile, "dtype": "float32", "nodata": None})
        run_tiled(TileModel(identity), RasterSource(ds, fill=100.0), sink, weight_sink=wsink,
                  policy=DevicePolicy("cpu", 4))
    with rasterio.open(out) as a, rasterio.open(src_path) as b, rasterio.open(weights) as w:
        assert a.crs == b.crs and a.transform == b.transform and a.nodata == 0
        assert a.profile["tiled"]
        np.testing.assert_array_equal(a.read(), b.read())  # identity + nodata restored exactly
        np.testing.assert_allclose(w.read(), 1.0, atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["out.tif", "scene.tif", "weights.tif"]


def test_failing_model_leaves_existing_output_untouched(write_geotiff, tmp_path):
    src_path = write_geotiff(speckled_scene(300, 300))
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous result")

    def broken(x):
        raise RuntimeError("boom")

    with rasterio.open(src_path) as ds:
        with pytest.raises(RuntimeError):
            run_tiled(TileModel(broken), RasterSource(ds), GeoTiffSink(out, dict(ds.profile)),
                      policy=DevicePolicy("cpu", 2))
    assert out.read_bytes() == b"previous result"
    assert sorted(os.listdir(tmp_path)) == ["out.tif", "scene.tif"]


def test_atomic_output_into_a_missing_folder_is_a_file_error(tmp_path):
    with pytest.raises(InputFileError, match="cannot write"):
        with atomic_output(tmp_path / "nope" / "x.npz"):
            pass
