"""Compress -> decompress through the real pipeline: what a user gets back, pixel by pixel."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS

from sarcodec.codec.container import ContainerReader
from sarcodec.codec.pipeline import (
    CompressOptions,
    DecompressOptions,
    compress_raster,
    container_info,
    decompress_container,
    inspect_raster,
)
from sarcodec.errors import Cancelled, ContainerError, DamagedChunkError, InputFileError, ModelError, UsageError
from sarcodec.progress import NullProgress

from ..conftest import speckled_scene


def roundtrip(src, tmp_path, model, *, copts=None, dopts=None, name="back.tif"):
    npz = tmp_path / "scene.npz"
    res = compress_raster(src, npz, CompressOptions(model_path=model, **(copts or {})))
    out = tmp_path / name
    dec = decompress_container(npz, out, DecompressOptions(model_path=model, **(dopts or {})))
    return res, dec, npz, out


def test_round_trip_keeps_metadata_nodata_and_dtype(write_geotiff, tmp_path, small_model):
    scene = speckled_scene(300, 420, seed=3)
    scene[:37, :55] = 0
    src = write_geotiff(scene, nodata=0)
    with rasterio.open(src, "r+") as ds:
        ds.set_band_description(1, "VV")
        ds.update_tags(MISSION="S1A", SAR_DOMAIN="amplitude_dn")
        ds.update_tags(1, POLARISATION="VV")
    res, dec, npz, out = roundtrip(src, tmp_path, small_model)
    assert res.output_bytes == npz.stat().st_size and res.bpp > 0 and res.est_rmse_db > 0
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.dtypes == a.dtypes and b.shape == a.shape
        assert b.crs == a.crs and b.transform == a.transform and b.nodata == 0
        assert b.descriptions == ("VV",)
        assert b.tags()["MISSION"] == "S1A" and b.tags(1)["POLARISATION"] == "VV"
        orig, back = a.read(1), b.read(1)
    assert (back[orig == 0] == 0).all()  # nodata exactly back
    assert (back[orig != 0] != 0).all()  # a valid pixel never becomes nodata
    assert sorted(os.listdir(tmp_path)) == ["back.tif", "scene.npz", "scene.tif"]
    # the estimate printed to the user is close to the truth
    v = orig != 0
    rmse = np.sqrt(np.mean((20 * np.log10(back[v] / orig[v].astype(float))) ** 2))
    assert abs(res.est_rmse_db - rmse) < 0.25 * rmse


def test_overlap_costs_no_bits_and_compression_is_deterministic(write_geotiff, tmp_path, small_model):
    src = write_geotiff(speckled_scene(520, 600, seed=4))
    sizes = []
    for overlap in (0, 64, 128):
        out = tmp_path / f"o{overlap}.npz"
        compress_raster(src, out, CompressOptions(model_path=small_model, overlap=overlap))
        sizes.append(out.stat().st_size)
    assert max(sizes) <= 1.02 * min(sizes)
    again = tmp_path / "again.npz"
    compress_raster(src, again, CompressOptions(model_path=small_model, overlap=64))
    assert again.read_bytes() == (tmp_path / "o64.npz").read_bytes()


def test_uncodable_float_pixels_come_back_bit_exact(write_geotiff, tmp_path, small_model):
    rng = np.random.default_rng(5)
    intensity = (rng.gamma(4.4, 1 / 4.4, (200, 260)) * 0.05).astype(np.float32)
    intensity[10, 10] = np.nan
    intensity[20, 30] = np.inf
    intensity[150, 200] = 0.0
    intensity[199, 259] = -1.5
    src = write_geotiff(intensity, SAR_DOMAIN="intensity")
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(SAR_DOMAIN="intensity")
    _, _, npz, out = roundtrip(src, tmp_path, small_model)
    with rasterio.open(out) as b:
        back = b.read(1)
    assert container_info(npz)["domain"] == "intensity"
    assert np.isnan(back[10, 10]) and back[20, 30] == np.inf
    assert back[150, 200] == 0.0 and back[199, 259] == -1.5
    assert np.isfinite(np.delete(back.ravel(), [10 * 260 + 10, 20 * 260 + 30])).all()


def test_multiband_and_gcps_survive(tmp_path, small_model):
    vv = speckled_scene(150, 170, seed=6)
    vh = (speckled_scene(150, 170, seed=7) // 3 + 1).astype(np.uint16)
    gcps = [GroundControlPoint(row=r, col=c, x=-3.0 + c * 1e-4, y=40.0 - r * 1e-4, z=0.0)
            for r in (0, 149) for c in (0, 169)]
    src = tmp_path / "gcp.tif"
    with rasterio.open(src, "w", driver="GTiff", width=170, height=150, count=2, dtype="uint16",
                       nodata=0) as ds:
        ds.gcps = (gcps, CRS.from_epsg(4326))
        ds.write(np.stack([vv, vh]))
        ds.descriptions = ("VV", "VH")
    _, dec, npz, out = roundtrip(src, tmp_path, small_model)
    assert dec.bands == 2
    with rasterio.open(out) as b:
        got, gcrs = b.gcps
        assert gcrs == CRS.from_epsg(4326) and len(got) == 4
        assert [(p.row, p.col, p.x, p.y) for p in got] == [(p.row, p.col, p.x, p.y) for p in gcps]
        assert b.descriptions == ("VV", "VH")
        back = b.read()
    # each band decodes to its own statistics (bands are coded independently)
    assert abs(np.median(back[1]) / np.median(back[0]) - np.median(vh) / np.median(vv)) < 0.1


def test_cog_output_has_overviews_and_other_dtype(write_geotiff, tmp_path, small_model):
    from osgeo import gdal

    src = write_geotiff(speckled_scene(600, 700, seed=8), nodata=0)
    _, dec, _, out = roundtrip(src, tmp_path, small_model,
                               dopts=dict(cog=True, tiff_compress="ZSTD", output_dtype="float32"))
    info = gdal.Info(str(out), format="json")
    assert info["bands"][0]["type"] == "Float32"
    assert info["bands"][0].get("overviews")
    assert info["metadata"]["IMAGE_STRUCTURE"].get("LAYOUT") == "COG"
    assert [p for p in os.listdir(tmp_path) if p.endswith(".part") or ".part." in p] == []


def test_damaged_chunk_is_reported_and_salvage_decodes_the_rest(write_geotiff, tmp_path, small_model):
    src = write_geotiff(speckled_scene(600, 600, seed=9), nodata=0)
    npz = tmp_path / "scene.npz"
    compress_raster(src, npz, CompressOptions(model_path=small_model))
    with ContainerReader(npz) as r:
        rec = r.find(0, 1, 1, "latent")
        start = r._payload_start + rec.offset  # noqa: SLF001 - locate the bytes to damage
    data = bytearray(npz.read_bytes())
    data[start + rec.length // 2] ^= 0x10
    npz.write_bytes(bytes(data))
    with pytest.raises(DamagedChunkError) as exc:
        decompress_container(npz, tmp_path / "x.tif", DecompressOptions(model_path=small_model))
    assert exc.value.chunk_index == rec.index and exc.value.exit_code == 1
    assert not (tmp_path / "x.tif").exists()
    dec = decompress_container(npz, tmp_path / "s.tif", DecompressOptions(model_path=small_model, salvage=True))
    assert dec.damaged_chunks == [rec.index]
    with rasterio.open(tmp_path / "s.tif") as b:
        back = b.read(1)
    assert (back[512:600, 512:600] == 0).all()  # the damaged chunk's area is nodata
    assert (back[:512, :512] != 0).all()  # the rest decoded


def test_bad_inputs_and_models_give_typed_errors_and_write_nothing(write_geotiff, tmp_path, small_model):
    src = write_geotiff(speckled_scene(100, 100))
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(InputFileError, match="not a raster"):
        compress_raster(text, tmp_path / "a.npz", CompressOptions(model_path=small_model))
    with pytest.raises(ModelError, match="does not exist"):
        compress_raster(src, tmp_path / "a.npz", CompressOptions(model_path=tmp_path / "none.pt"))
    with pytest.raises(UsageError):
        compress_raster(src, tmp_path / "a.npz", CompressOptions(model_path=small_model, quality=9))
    with pytest.raises(UsageError):
        compress_raster(src, tmp_path / "a.npz", CompressOptions(model_path=small_model, tile_size=100))
    npz = tmp_path / "ok.npz"
    compress_raster(src, npz, CompressOptions(model_path=small_model))
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(ContainerError):
        decompress_container(truncated, tmp_path / "b.tif", DecompressOptions(model_path=small_model))
    other = tmp_path / "other.pt"
    other.write_bytes(small_model.read_bytes())
    with open(other, "ab") as fh:
        fh.write(b"\0")  # same weights, different file: the container's SHA-256 no longer matches
    with pytest.raises(ModelError, match="compressed with model"):
        decompress_container(npz, tmp_path / "b.tif", DecompressOptions(model_path=other))
    left = sorted(p for p in os.listdir(tmp_path))
    assert left == ["cut.npz", "notes.tif", "ok.npz", "other.pt", "scene.tif"]


def test_inspect_raster_prevalidates(write_geotiff, tmp_path):
    info = inspect_raster(write_geotiff(speckled_scene(50, 60), crs=None))
    assert (info.width, info.height, info.bands, info.dtype, info.has_valid_crs) == (60, 50, 1, "uint16", False)
    with pytest.raises(InputFileError, match="no such file"):
        inspect_raster(tmp_path / "missing.tif")
    cplx = write_geotiff(np.zeros((10, 10), np.complex64), "complex.tif")
    with pytest.raises(InputFileError, match="complex"):
        inspect_raster(cplx)


def test_cancel_leaves_no_container(write_geotiff, tmp_path, small_model):
    src = write_geotiff(speckled_scene(800, 800, seed=10))
    progress = NullProgress()
    progress.cancel_token.cancel()
    with pytest.raises(Cancelled):
        compress_raster(src, tmp_path / "c.npz", CompressOptions(model_path=small_model), progress)
    assert sorted(os.listdir(tmp_path)) == ["scene.tif"]


def test_tiles_the_model_fails_on_come_back_exactly(write_geotiff, tmp_path, small_model, monkeypatch):
    """A tile whose latents are non-finite is stored losslessly: its pixels return bit-exact."""
    from sarcodec.codec.model import SarCodec

    scene = speckled_scene(600, 600, seed=11)
    scene[300:320, 300:320] = 60000  # a very bright target the (patched) model cannot code
    src = write_geotiff(scene)
    original = SarCodec.analysis

    def failing_analysis(self, x, quality):
        y = original(self, x, quality)
        bright = x.flatten(1).amax(dim=1) > 3.5
        y[bright] = float("nan")
        return y

    monkeypatch.setattr(SarCodec, "analysis", failing_analysis)
    npz = tmp_path / "scene.npz"
    res = compress_raster(src, npz, CompressOptions(model_path=small_model))
    monkeypatch.setattr(SarCodec, "analysis", original)
    assert res.bad_tiles >= 1
    decompress_container(npz, tmp_path / "back.tif", DecompressOptions(model_path=small_model))
    with rasterio.open(tmp_path / "back.tif") as b:
        back = b.read(1)
    np.testing.assert_array_equal(back[300:320, 300:320], scene[300:320, 300:320])
    assert container_info(npz)["bands"][0]["uncodable_pixels"] > 0
