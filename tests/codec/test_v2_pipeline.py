"""Codec v2 (the default model) through the real pipeline: what a user gets back, and what it costs."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
import rasterio

from sarcodec.codec.container import ContainerReader
from sarcodec.codec.pipeline import (
    CompressOptions,
    DecompressOptions,
    compress_raster,
    container_info,
    decompress_container,
)
from sarcodec.errors import DamagedChunkError, ModelError, UsageError
from sarcodec.resources import default_model_path

from ..conftest import speckled_scene


def _db_rmse(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> float:
    return float(np.sqrt(np.mean((20 * np.log10(b[valid] / a[valid].astype(float))) ** 2)))


def test_default_model_is_v2_and_round_trip_keeps_metadata_nodata_and_intensity(write_geotiff, tmp_path):
    scene = speckled_scene(300, 420, seed=3)
    scene[:37, :55] = 0
    src = write_geotiff(scene, nodata=0)
    with rasterio.open(src, "r+") as ds:
        ds.set_band_description(1, "VV")
        ds.update_tags(MISSION="S1A", SAR_DOMAIN="amplitude_dn")
    npz, out = tmp_path / "scene.npz", tmp_path / "back.tif"
    res = compress_raster(src, npz, CompressOptions())
    assert container_info(npz)["codec"] == "sarcodec-dct-v2"
    dec = decompress_container(npz, out, DecompressOptions())
    assert dec.warnings == []
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.dtypes == a.dtypes and b.shape == a.shape
        assert b.crs == a.crs and b.transform == a.transform and b.nodata == 0
        assert b.descriptions == ("VV",) and b.tags()["MISSION"] == "S1A"
        orig, back = a.read(1), b.read(1)
    assert (back[orig == 0] == 0).all() and (back[orig != 0] != 0).all()
    v = orig != 0
    rmse = _db_rmse(orig, back, v)
    assert rmse < 1.2  # the default quality on 4.4-look speckle
    assert abs(res.est_rmse_db - rmse) < 0.05 * rmse  # every chunk is measured, not a sample
    bias = np.mean(back[v].astype(float) ** 2) / np.mean(orig[v].astype(float) ** 2) - 1
    assert abs(bias) < 0.005
    assert sorted(os.listdir(tmp_path)) == ["back.tif", "scene.npz", "scene.tif"]


def test_quality_ladder_trades_size_for_error(write_geotiff, tmp_path):
    scene = speckled_scene(256, 256, seed=4)
    src = write_geotiff(scene)
    sizes, errs = [], []
    for q in (1, 4, 7, 10):
        npz = tmp_path / f"q{q}.npz"
        compress_raster(src, npz, CompressOptions(quality=q))
        decompress_container(npz, tmp_path / f"q{q}.tif", DecompressOptions())
        with rasterio.open(tmp_path / f"q{q}.tif") as b:
            errs.append(_db_rmse(scene, b.read(1), scene > 0))
        sizes.append(npz.stat().st_size)
    assert sizes == sorted(sizes) and errs == sorted(errs, reverse=True)
    assert errs[-1] < 0.25 and errs[0] > 1.5
    with pytest.raises(UsageError, match="1 to 10"):
        compress_raster(src, tmp_path / "x.npz", CompressOptions(quality=11))


def test_chunk_edges_leave_no_seams(write_geotiff, tmp_path):
    """A scene of 3 x 2 chunks: pixels next to a chunk edge are coded as well as the rest."""
    scene = speckled_scene(1100, 700, seed=6)
    src = write_geotiff(scene)
    npz = tmp_path / "s.npz"
    compress_raster(src, npz, CompressOptions(quality=6))
    decompress_container(npz, tmp_path / "s.tif", DecompressOptions())
    with rasterio.open(tmp_path / "s.tif") as b:
        back = b.read(1)
    err = (20 * np.log10(back / scene.astype(float))) ** 2
    edge = np.zeros(scene.shape, bool)
    for e in (512, 1024):
        edge[max(e - 2, 0) : e + 2, :] = True
    edge[:, 510:514] = True
    assert np.mean(err[edge]) < 1.3 * np.mean(err[~edge])


def test_compression_is_deterministic(write_geotiff, tmp_path):
    src = write_geotiff(speckled_scene(200, 300, seed=8), nodata=0)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    compress_raster(src, a, CompressOptions())
    compress_raster(src, b, CompressOptions())
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_uncodable_float_pixels_come_back_bit_exact(write_geotiff, tmp_path):
    rng = np.random.default_rng(5)
    intensity = (rng.gamma(4.4, 1 / 4.4, (200, 260)) * 0.05).astype(np.float32)
    bad = {(10, 10): np.nan, (20, 30): np.inf, (150, 200): 0.0, (199, 259): -1.5}
    for (r, c), v in bad.items():
        intensity[r, c] = v
    src = write_geotiff(intensity)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(SAR_DOMAIN="intensity")
    npz = tmp_path / "i.npz"
    compress_raster(src, npz, CompressOptions())
    decompress_container(npz, tmp_path / "i.tif", DecompressOptions())
    with rasterio.open(tmp_path / "i.tif") as b:
        back = b.read(1)
    for (r, c), v in bad.items():
        assert np.array_equal(back[r, c], np.float32(v), equal_nan=True)
    good = np.isfinite(intensity) & (intensity > 0)
    assert np.sqrt(np.mean((10 * np.log10(back[good] / intensity[good])) ** 2)) < 2.5


def test_damaged_chunk_is_reported_and_salvage_decodes_the_rest(write_geotiff, tmp_path):
    scene = speckled_scene(600, 600, seed=9)
    src = write_geotiff(scene, nodata=0)
    npz = tmp_path / "scene.npz"
    compress_raster(src, npz, CompressOptions())
    decompress_container(npz, tmp_path / "ok.tif", DecompressOptions())
    with ContainerReader(npz) as r:
        rec = r.find(0, 1, 1, "latent")
        start = r._payload_start + rec.offset  # noqa: SLF001 - locate the bytes to damage
    data = bytearray(npz.read_bytes())
    data[start + rec.length // 2] ^= 0x10
    npz.write_bytes(bytes(data))
    with pytest.raises(DamagedChunkError) as exc:
        decompress_container(npz, tmp_path / "x.tif", DecompressOptions())
    assert exc.value.chunk_index == rec.index
    assert not (tmp_path / "x.tif").exists()
    dec = decompress_container(npz, tmp_path / "s.tif", DecompressOptions(salvage=True))
    assert dec.damaged_chunks == [rec.index]
    with rasterio.open(tmp_path / "s.tif") as b, rasterio.open(tmp_path / "ok.tif") as ok:
        back, good = b.read(1), ok.read(1)
    assert (back[512:600, 512:600] == 0).all()  # the damaged chunk's area is nodata
    # chunks are independent: everything else is exactly the undamaged decode
    np.testing.assert_array_equal(back[:512, :], good[:512, :])
    np.testing.assert_array_equal(back[:, :512], good[:, :512])


def test_all_nodata_scene_is_tiny_and_comes_back_as_nodata(write_geotiff, tmp_path):
    src = write_geotiff(np.zeros((700, 300), np.uint16), nodata=0)
    npz = tmp_path / "e.npz"
    res = compress_raster(src, npz, CompressOptions())
    assert res.est_rmse_db is None
    decompress_container(npz, tmp_path / "e.tif", DecompressOptions())
    with rasterio.open(tmp_path / "e.tif") as b:
        assert (b.read(1) == 0).all() and b.nodata == 0


def test_decompress_finds_the_model_by_checksum(write_geotiff, tmp_path, monkeypatch):
    """Files name their model: a different default (or none given) does not matter."""
    src = write_geotiff(speckled_scene(120, 140, seed=2))
    npz = tmp_path / "s.npz"
    compress_raster(src, npz, CompressOptions())
    v1 = default_model_path().with_name("sarcodec_v1.pt")
    monkeypatch.setenv("SARCODEC_MODEL", str(v1))  # the default is now v1: the v2 file still decodes
    decompress_container(npz, tmp_path / "a.tif", DecompressOptions())
    with pytest.raises(ModelError, match="sarcodec_v2.*pass the matching --model"):
        decompress_container(npz, tmp_path / "b.tif", DecompressOptions(model_path=v1))
    assert not (tmp_path / "b.tif").exists()


def test_a_file_whose_model_is_not_installed_names_it_and_where_models_are_looked_for(
        write_geotiff, tmp_path, monkeypatch):
    own = tmp_path / "models" / "my_v2.npz"
    own.parent.mkdir()
    from sarcodec.codec.dct_model import load_model, save_model

    model = load_model(default_model_path())
    model.metadata["model_id"] = "my-own-v2"
    save_model(model, own)
    src = write_geotiff(speckled_scene(100, 100, seed=1))
    npz = tmp_path / "s.npz"
    compress_raster(src, npz, CompressOptions(model_path=own))
    shutil.move(own, tmp_path / "elsewhere.npz")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    with pytest.raises(ModelError) as exc:
        decompress_container(npz, tmp_path / "b.tif", DecompressOptions())
    msg = str(exc.value)
    assert "my-own-v2" in msg and "resources/models" in msg and exc.value.exit_code == 2
    assert not (tmp_path / "b.tif").exists()
    # installed in the user folder (or on $SARCODEC_MODEL_PATH), it is found
    monkeypatch.setenv("SARCODEC_MODEL_PATH", str(tmp_path))
    decompress_container(npz, tmp_path / "c.tif", DecompressOptions())
