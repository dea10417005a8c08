"""Input resolution: GeoTIFF, Sentinel-1 SAFE folder and zip, folder of GeoTIFFs."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import rasterio

from sarcodec.codec.container import ContainerReader
from sarcodec.codec.pipeline import (
    CompressOptions,
    DecompressOptions,
    compress_raster,
    decompress_container,
    inspect_raster,
)
from sarcodec.errors import InputFileError
from sarcodec.inputs import product_annotations, resolve_inputs

from ..conftest import speckled_scene
from .safe_fixture import ANNOTATION, MANIFEST, PRODUCT, START, STOP

EXPECTED_TAGS = {
    "S1_MISSION": "SENTINEL-1A", "S1_PRODUCT_TYPE": "GRD", "S1_MODE": "IW", "S1_START_TIME": START,
    "S1_STOP_TIME": STOP, "S1_POLARISATIONS": "VV,VH", "S1_ABSOLUTE_ORBIT": "46650", "S1_RELATIVE_ORBIT": "139",
    "S1_PASS": "DESCENDING", "S1_PRODUCT_NAME": PRODUCT,
}


@pytest.mark.parametrize("form", ["folder", "manifest", "zip"])
def test_safe_product_becomes_one_raster_with_a_band_per_polarisation(safe_product, form):
    path = {"folder": safe_product["folder"], "manifest": safe_product["folder"] / "manifest.safe",
            "zip": safe_product["zip"]}[form]
    items = resolve_inputs(path)
    assert len(items) == 1
    item = items[0]
    assert item.name == PRODUCT.removesuffix(".SAFE") and item.kind == ("safe-zip" if form == "zip" else "safe")
    info = inspect_raster(item.path)
    assert (info.bands, info.height, info.width, info.dtype) == (2, 1100, 80, "uint16")
    with rasterio.open(item.path) as ds:
        assert ds.descriptions == ("VV", "VH")
        assert ds.tags(1) == {"POLARISATION": "VV", "SWATH": "IW"} and ds.tags(2)["POLARISATION"] == "VH"
        assert {k: v for k, v in ds.tags().items() if k.startswith("S1_")} == EXPECTED_TAGS
        points, crs = ds.gcps
        assert len(points) == 9 and crs.to_epsg() == 4326
        assert np.array_equal(ds.read(1), safe_product["arrays"]["VV"])
        assert np.array_equal(ds.read(2), safe_product["arrays"]["VH"])
    item.release()


@pytest.mark.parametrize("form", ["folder", "zip"])
def test_safe_round_trip_keeps_gcps_polarisations_and_annotations(safe_product, dist_model, tmp_path, form):
    item = resolve_inputs(safe_product[form])[0]
    npz, tif = tmp_path / f"{item.name}.npz", tmp_path / "back.tif"
    res = compress_raster(item.path, npz, CompressOptions(model_path=dist_model, tile_size=128, overlap=32,
                                                          device="cpu"))
    assert res.bands == 2 and res.output_bytes == npz.stat().st_size
    with ContainerReader(npz) as reader:
        geo = reader.header["geo"]
        assert geo["descriptions"] == ["VV", "VH"] and geo["tags"]["S1_PASS"] == "DESCENDING"
        assert len(geo["gcps"]["points"]) == 9
    decompress_container(npz, tif, DecompressOptions(model_path=dist_model, device="cpu"))
    with rasterio.open(tif) as ds:
        assert ds.count == 2 and ds.dtypes == ("uint16", "uint16") and ds.descriptions == ("VV", "VH")
        assert {k: v for k, v in ds.tags().items() if k.startswith("S1_")} == EXPECTED_TAGS
        assert ds.tags(2)["POLARISATION"] == "VH"
        points, crs = ds.gcps
        assert crs.to_epsg() == 4326 and [(g.row, g.col, g.x, g.y) for g in points] == \
            [(g.row, g.col, g.x, g.y) for g in _gcps(safe_product)]
        vv = ds.read(1)
    orig = safe_product["arrays"]["VV"]
    assert (vv[orig == 0] == 0).all() and (vv[orig != 0] != 0).all()  # border zeros stored losslessly


def _gcps(safe_product):
    measurement = sorted((safe_product["folder"] / "measurement").iterdir())[0]
    with rasterio.open(measurement) as ds:
        return ds.gcps[0]


def test_folder_of_geotiffs_gives_one_item_per_file_in_name_order(write_geotiff, tmp_path):
    b = write_geotiff(speckled_scene(20, 30), "b.tif")
    a = write_geotiff(speckled_scene(20, 30, seed=2), "a.TIFF")
    (tmp_path / "notes.txt").write_text("not a raster")
    (tmp_path / ".hidden.tif").write_bytes(b"")
    items = resolve_inputs(tmp_path)
    assert [(i.path, i.name, i.kind) for i in items] == [(str(a), "a", "folder"), (str(b), "b", "folder")]


def test_a_geotiff_passes_through(write_geotiff):
    path = write_geotiff(speckled_scene(20, 30))
    [item] = resolve_inputs(path)
    assert item.path == str(path) and item.name == "scene" and item.kind == "geotiff"


def test_unusable_inputs_are_input_file_errors(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        resolve_inputs(tmp_path / "missing.tif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no GeoTIFF"):
        resolve_inputs(tmp_path / "empty")
    bare = tmp_path / "bare.zip"
    with zipfile.ZipFile(bare, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(InputFileError, match="no manifest.safe"):
        resolve_inputs(bare)
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(InputFileError, match="not a readable zip"):
        resolve_inputs(tmp_path / "broken.zip")
    product = tmp_path / "X.SAFE"
    product.mkdir()
    (product / "manifest.safe").write_text(MANIFEST.format(start=START, stop=STOP))
    with pytest.raises(InputFileError, match="no measurement rasters"):
        resolve_inputs(product)


def test_annotations_fall_back_to_the_annotation_xml():
    bare_manifest = b'<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1"><metadataSection/></xfdu:XFDU>'
    tags = product_annotations(bare_manifest, ANNOTATION.format(pol="VV", start=START, stop=STOP).encode())
    assert tags == {"S1_MISSION": "S1A", "S1_PRODUCT_TYPE": "GRD", "S1_MODE": "IW", "S1_START_TIME": START,
                    "S1_STOP_TIME": STOP, "S1_ABSOLUTE_ORBIT": "46650", "S1_PASS": "DESCENDING"}
    with pytest.raises(InputFileError, match="not valid XML"):
        product_annotations(b"<oops")


def test_default_output_paths_sit_beside_the_input(safe_product, write_geotiff):
    folder, zipped = safe_product["folder"], safe_product["zip"]
    stem = PRODUCT.removesuffix(".SAFE")
    assert resolve_inputs(folder)[0].output_path(".npz") == str(folder.parent / f"{stem}.npz")
    assert resolve_inputs(folder / "manifest.safe")[0].output_path(".npz") == str(folder.parent / f"{stem}.npz")
    assert resolve_inputs(zipped)[0].output_path(".npz") == str(zipped.parent / f"{stem}.npz")
    tif = write_geotiff(speckled_scene(20, 30))
    assert resolve_inputs(tif)[0].output_path(".npz") == str(tif.with_suffix(".npz"))


# -- item 9: every member of a product is read with a size bound ---------------------------------------

BOMB_BYTES = 256 << 20  # four times the bound: what a small zip can inflate to, and more than any manifest


def _allocation_peak(call) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_zip_bomb_manifest_is_refused_without_being_inflated(tmp_path):
    bomb = tmp_path / "S1A_BOMB.zip"  # a 1.2 MB zip whose manifest.safe inflates to 256 MiB of zeros
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("S1A_BOMB.SAFE/measurement/s1a-iw-grd-vv-x.tiff", b"")
        with zf.open("S1A_BOMB.SAFE/manifest.safe", "w") as member:
            zero = bytes(1 << 20)
            for _ in range(BOMB_BYTES >> 20):
                member.write(zero)
    assert bomb.stat().st_size < 2 << 20

    def resolve():
        with pytest.raises(InputFileError, match="manifest.safe: larger than 64 MiB.*zip bomb"):
            resolve_inputs(bomb)

    assert _allocation_peak(resolve) < 32 << 20  # the member was never inflated into memory


def test_an_oversized_manifest_in_a_safe_folder_is_refused_after_a_bounded_read(tmp_path):
    product = tmp_path / "S1A_HUGE.SAFE"
    (product / "measurement").mkdir(parents=True)
    (product / "measurement" / "s1a-iw-grd-vv-x.tiff").write_bytes(b"")
    with open(product / "manifest.safe", "wb") as fh:
        fh.truncate(BOMB_BYTES)  # sparse: no disk space used

    def resolve():
        with pytest.raises(InputFileError, match="manifest.safe: larger than 64 MiB"):
            resolve_inputs(product)

    assert _allocation_peak(resolve) < 100 << 20  # at most the bound itself, never the whole file
