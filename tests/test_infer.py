"""A user's model over whole rasters (``sarcodec infer``): geometry, values, seams and bad models."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS

from sarcodec.errors import ModelError, UsageError
from sarcodec.infer.run import InferOptions, infer_raster

from .conftest import speckled_scene


class Bilinear2(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class Box5(torch.nn.Module):
    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 5, padding=2, bias=False, groups=channels)
        torch.nn.init.constant_(self.conv.weight, 1 / 25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NaNs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def onnx_file(module: torch.nn.Module, path: Path, channels: int = 1, *, fixed: int | None = None,
              meta: dict | None = None) -> Path:
    import onnx

    size = fixed or 32
    axes = None if fixed else {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h2", 3: "w2"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, channels, size, size), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes=axes, dynamo=False)
    if meta:
        proto = onnx.load(str(path))
        for k, v in meta.items():
            e = proto.metadata_props.add()
            e.key, e.value = k, v
        onnx.save(proto, str(path))
    return path


@pytest.fixture
def scene(write_geotiff) -> Path:
    a = speckled_scene(300, 420, seed=41)
    a[:20, :30] = 0
    src = write_geotiff(a, nodata=0)
    with rasterio.open(src, "r+") as ds:
        ds.set_band_description(1, "VV")
        ds.update_tags(SAR_DOMAIN="amplitude_dn")
    return src


def test_x2_model_doubles_the_grid_keeps_the_place_and_the_nodata(scene, tmp_path):
    model = onnx_file(Bilinear2(), tmp_path / "sr.onnx")
    out = tmp_path / "sr.tif"
    res = infer_raster(model, scene, out, InferOptions(tile_size=128, overlap=32))
    assert res.scale == 2 and (res.width, res.height) == (840, 600)
    with rasterio.open(scene) as a, rasterio.open(out) as b:
        assert b.crs == a.crs and b.nodata == 0 and b.dtypes == ("float32",)
        assert tuple(b.bounds) == tuple(a.bounds)
        assert b.res == (a.res[0] / 2, a.res[1] / 2)
        x, y = a.read(1).astype(np.float64), b.read(1).astype(np.float64)
    assert (y[:40, :60] == 0).all() and (y[40:, 60:] != 0).all()
    # bilinear x2: an output pixel is the mean-ish of its input neighbours
    assert abs(y[100:500, 100:700].mean() / x[50:250, 50:350].mean() - 1) < 0.01


def test_tiled_run_has_no_seams(scene, tmp_path):
    model = onnx_file(Box5(), tmp_path / "box.onnx")
    whole, tiled = tmp_path / "whole.tif", tmp_path / "tiled.tif"
    infer_raster(model, scene, whole, InferOptions(tile_size=512, overlap=0, convention="log_db"))
    infer_raster(model, scene, tiled, InferOptions(tile_size=64, overlap=16, convention="log_db"))
    with rasterio.open(whole) as a, rasterio.open(tiled) as b:
        assert a.dtypes == b.dtypes == ("uint16",) and b.descriptions == ("VV",)
        wa, tb = a.read(1).astype(float), b.read(1).astype(float)
    inner = (slice(40, -8), slice(40, -8))  # away from the nodata corner's fill
    assert np.abs(wa[inner] - tb[inner]).max() <= 1.0  # DN rounding only: the tiles blend seamlessly


def test_gcps_follow_the_scale(write_geotiff, tmp_path):
    src = write_geotiff(speckled_scene(100, 120, seed=2), crs=None)
    with rasterio.open(src, "r+") as ds:
        ds.gcps = ([GroundControlPoint(row=10, col=20, x=5.0, y=50.0),
                    GroundControlPoint(row=90, col=110, x=6.0, y=49.0),
                    GroundControlPoint(row=10, col=110, x=6.0, y=50.0)], CRS.from_epsg(4326))
    out = tmp_path / "g.tif"
    infer_raster(onnx_file(Bilinear2(), tmp_path / "sr.onnx"), src, out)
    with rasterio.open(out) as ds:
        pts, crs = ds.gcps
        assert crs == CRS.from_epsg(4326) and [(p.row, p.col) for p in pts] == [(20, 40), (180, 220), (20, 220)]


def test_torchscript_needs_trust(scene, tmp_path):
    path = tmp_path / "box.pt"
    torch.jit.script(Box5()).save(str(path))
    with pytest.raises(ModelError, match="--trust-torchscript") as exc:
        infer_raster(path, scene, tmp_path / "o.tif")
    assert exc.value.exit_code == 2 and not (tmp_path / "o.tif").exists()
    res = infer_raster(path, scene, tmp_path / "o.tif", InferOptions(trust_torchscript=True))
    assert res.model_kind == "torchscript" and (tmp_path / "o.tif").is_file()


@pytest.mark.parametrize("case", ["text", "nan", "declared_scale", "bands", "fixed"])
def test_bad_models_fail_with_one_line_and_write_nothing(scene, tmp_path, case):
    out = tmp_path / "o.tif"
    opts = InferOptions()
    if case == "text":
        model = tmp_path / "m.onnx"
        model.write_text("not a model")
        err, match = ModelError, "neither an ONNX model"
    elif case == "nan":
        model, err, match = onnx_file(NaNs(), tmp_path / "m.onnx"), ModelError, "NaN"
    elif case == "declared_scale":
        model = onnx_file(Bilinear2(), tmp_path / "m.onnx", meta={"sarcodec.scale": "4"})
        err, match = ModelError, "declared as 4"
    elif case == "bands":
        model, err, match = onnx_file(Box5(2), tmp_path / "m.onnx", channels=2), UsageError, "2 input channel"
    else:
        model, err, match = onnx_file(Box5(), tmp_path / "m.onnx", fixed=64), UsageError, "64 x 64 tiles"
    with pytest.raises(err, match=match) as exc:
        infer_raster(model, scene, out, opts)
    assert "\n" not in str(exc.value) and not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_fixed_size_model_runs_at_its_tile_size(scene, tmp_path):
    model = onnx_file(Box5(), tmp_path / "m.onnx", fixed=64)
    res = infer_raster(model, scene, tmp_path / "o.tif", InferOptions(tile_size=64, overlap=0))
    assert (res.width, res.height) == (420, 300)


def test_range_convention_and_band_choice(write_geotiff, tmp_path):
    arr = np.stack([speckled_scene(80, 90, seed=s) for s in (1, 2, 3)]).astype(np.float32)
    src = write_geotiff(arr)
    model = onnx_file(Box5(2), tmp_path / "m.onnx", channels=2)
    out = tmp_path / "o.tif"
    res = infer_raster(model, src, out, InferOptions(bands=[3, 1], convention="range:0:1000"))
    assert (res.bands_in, res.bands_out) == (2, 2)
    with rasterio.open(out) as ds:
        y = ds.read()
    assert abs(y[0, 20:60, 20:60].mean() / arr[2, 20:60, 20:60].mean() - 1) < 0.05
    with pytest.raises(UsageError, match="bands 1..3"):
        infer_raster(model, src, tmp_path / "x.tif", InferOptions(bands=[4, 1]))


class _FullDisk:
    """A dataset whose writes fail as GDAL's do on a full disk; everything else passes through."""

    def __init__(self, ds) -> None:
        self._ds = ds

    def write(self, *args, **kwargs):
        raise rasterio.errors.RasterioIOError("Free disk space available is 0 bytes, whereas 1048576 are needed")

    def __getattr__(self, name):
        return getattr(self._ds, name)


def test_a_write_failing_behind_the_model_is_one_line_and_leaves_nothing(scene, tmp_path, monkeypatch):
    """Rows are written on a worker thread while the model runs: its error stops the run the same way."""
    import threading

    from sarcodec.errors import InputFileError
    from sarcodec.raster_io import GeoTiffSink

    threads = []
    write_rows = GeoTiffSink.write_rows

    def failing(self, row0, block, valid=None, indexes=None):
        threads.append(threading.current_thread().name)
        if len(threads) == 3:
            self.ds = _FullDisk(self.ds)
        return write_rows(self, row0, block, valid, indexes)

    monkeypatch.setattr(GeoTiffSink, "write_rows", failing)
    model = onnx_file(Bilinear2(), tmp_path / "m.onnx")
    out = tmp_path / "o.tif"
    with pytest.raises(InputFileError, match="cannot write .*o.tif: Free disk space") as exc:
        infer_raster(model, scene, out, InferOptions(tile_size=64, overlap=16, batch_size=2))
    assert "\n" not in str(exc.value) and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "scene.tif"]
    assert len(threads) == 3 and all(t.startswith("sarcodec-write") for t in threads)
