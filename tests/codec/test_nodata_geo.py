"""Nodata, derived statistics and product georeference as a GIS user sees them after a round trip.

Each test reads the decompressed GeoTIFF with rasterio the way QGIS and GDAL tools do (masks derived
from the declared nodata, band tags, CRS and transform) and checks what the user would notice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from sarcodec import cli
from sarcodec.codec import pipeline
from sarcodec.codec.container import ContainerReader
from sarcodec.codec.pipeline import CompressOptions, DecompressOptions, compress_raster, decompress_container
from sarcodec.geometa import apply_geo_metadata
from sarcodec.inputs import resolve_inputs

from ..conftest import speckled_scene
from ..distributed.safe_fixture import PRODUCT, build_safe, zip_safe

pytestmark = pytest.mark.timeout(300)

H, W = 96, 112
TRANSFORM = from_origin(500000.0, 4500000.0, 10.0, 10.0)


def _band_tif(path: Path, data: np.ndarray, nodata) -> Path:
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype,
                   crs="EPSG:32630", transform=TRANSFORM, nodata=nodata)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


def _per_band_vrt(tmp_path: Path, arrays: list[np.ndarray], nodatas: list) -> Path:
    """A VRT of single-band GeoTIFFs, each band with its own nodata (or none): GTiff cannot hold that."""
    bands = []
    for i, (data, nd) in enumerate(zip(arrays, nodatas, strict=True), start=1):
        src = _band_tif(tmp_path / f"b{i}.tif", data, nd)
        bands.append(
            f'<VRTRasterBand dataType="UInt16" band="{i}">'
            + (f"<NoDataValue>{nd}</NoDataValue>" if nd is not None else "")
            + f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename><SourceBand>1</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{W}" ySize="{H}"/><DstRect xOff="0" yOff="0" xSize="{W}" '
            f'ySize="{H}"/></SimpleSource></VRTRasterBand>')
    gt = ", ".join(repr(v) for v in TRANSFORM.to_gdal())
    xml = (f'<VRTDataset rasterXSize="{W}" rasterYSize="{H}"><SRS>{CRS.from_epsg(32630).to_wkt()}</SRS>'
           f"<GeoTransform>{gt}</GeoTransform>{''.join(bands)}</VRTDataset>")
    path = tmp_path / "stack.vrt"
    path.write_text(xml)
    return path


def _three_bands(zeros_in_band3: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Band 1 holes are 0, band 2 holes are 65535, band 3 has no nodata (maybe valid 0 DN pixels)."""
    arrays = [speckled_scene(H, W, seed=s) for s in (1, 2, 3)]
    holes = [np.zeros((H, W), bool) for _ in range(3)]
    holes[0][:20, :30] = True
    holes[1][50:70, 60:100] = True
    arrays[0][holes[0]] = 0
    arrays[1][holes[1]] = 65535
    if zeros_in_band3:
        arrays[2][5:9, 70:90] = 0  # valid 0 DN (GRD border noise removal), stored losslessly
    return arrays, holes


@pytest.mark.parametrize("zeros_in_band3", [False, True], ids=["band3-plain", "band3-has-0-DN"])
def test_per_band_nodata_comes_back_as_each_bands_own_mask(tmp_path, small_model, zeros_in_band3):
    arrays, holes = _three_bands(zeros_in_band3)
    src = _per_band_vrt(tmp_path, arrays, [0, 65535, None])
    with rasterio.open(src) as ds:
        assert ds.nodatavals == (0.0, 65535.0, None)
    npz, out = tmp_path / "stack.npz", tmp_path / "back.tif"
    compress_raster(src, npz, CompressOptions(model_path=small_model, estimate_quality=False))
    with ContainerReader(npz) as reader:
        assert reader.header["geo"]["nodata"] == [0, 65535, None]  # each band's value is stored
    dec = decompress_container(npz, out, DecompressOptions(model_path=small_model))
    with rasterio.open(out) as ds:
        assert ds.nodata is not None, "the output declares no nodata: every band's holes look like data"
        for b in range(3):
            invalid = ds.read_masks(b + 1) == 0
            np.testing.assert_array_equal(invalid, holes[b], err_msg=f"band {b + 1}'s holes are not its mask")
            values = ds.read(b + 1)
            assert (values[holes[b]] == ds.nodata).all()
        band3 = ds.read(3)
    assert any("different nodata" in w for w in dec.warnings)  # the user is told the holes' value changed
    if zeros_in_band3:  # 0 is valid data in band 3: it must stay 0 and unmasked, so holes use another value
        assert ds.nodata != 0 and (band3[5:9, 70:90] == 0).all()


def test_uniform_nodata_container_still_decodes_with_one_value(tmp_path, small_model, write_geotiff):
    """Containers holding one nodata value for all bands (every file so far) decode as before."""
    arrays, _ = _three_bands(False)
    stack = np.stack(arrays)
    stack[1][stack[0] == 0] = 0
    stack[2][stack[0] == 0] = 0
    src = write_geotiff(stack, nodata=0)
    npz, out = tmp_path / "s.npz", tmp_path / "back.tif"
    compress_raster(src, npz, CompressOptions(model_path=small_model, estimate_quality=False))
    with ContainerReader(npz) as reader:
        assert reader.header["geo"]["nodata"] == 0
    decompress_container(npz, out, DecompressOptions(model_path=small_model))
    with rasterio.open(out) as ds:
        assert ds.nodatavals == (0.0, 0.0, 0.0)
        assert ((ds.read_masks(2) == 0) == (stack[0] == 0)).all()


def _damage_latent(npz: Path, row: int, col: int) -> None:
    with ContainerReader(npz) as reader:
        rec = reader.find(0, row, col, "latent")
        start = reader._payload_start + rec.offset  # noqa: SLF001 - locate the bytes to damage
    data = bytearray(npz.read_bytes())
    data[start + rec.length // 2] ^= 0x10
    npz.write_bytes(bytes(data))


def test_salvage_without_nodata_keeps_valid_zero_dn_pixels(tmp_path, small_model, write_geotiff):
    scene = speckled_scene(600, 600, seed=9)
    scene[10:20, 10:40] = 0  # valid 0 DN far from the damaged chunk: no nodata in this file
    src = write_geotiff(scene)
    npz, out = tmp_path / "s.npz", tmp_path / "s.tif"
    compress_raster(src, npz, CompressOptions(model_path=small_model, estimate_quality=False))
    _damage_latent(npz, 1, 1)
    dec = decompress_container(npz, out, DecompressOptions(model_path=small_model, salvage=True))
    assert dec.damaged_chunks
    with rasterio.open(out) as ds:
        nodata, band, invalid = ds.nodata, ds.read(1), ds.read_masks(1) == 0
    assert nodata is not None and nodata != 0
    assert (band[512:, 512:] == nodata).all() and invalid[512:, 512:].all()
    assert (band[10:20, 10:40] == 0).all(), "valid 0 DN pixels changed"
    assert not invalid[:400, :400].any(), "valid pixels away from the damaged chunk became nodata"


def test_no_estimate_decodes_no_sample_and_reports_no_rmse(tmp_path, small_model, write_geotiff, monkeypatch,
                                                           capsys):
    src = write_geotiff(speckled_scene(200, 200, seed=4))
    calls = []
    original = pipeline.LatentChunkSink._measure

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.LatentChunkSink, "_measure", counting)
    res = compress_raster(src, tmp_path / "a.npz", CompressOptions(model_path=small_model, estimate_quality=False))
    assert calls == [] and res.est_rmse_db is None and res.est_psnr_db is None
    monkeypatch.setenv("SARCODEC_MODEL", str(small_model))
    assert cli.main(["compress", str(src), "-o", str(tmp_path / "b.npz"), "--no-estimate"]) == 0
    out = capsys.readouterr()
    assert calls == [] and "RMSE" not in out.out + out.err and "PSNR" not in out.out + out.err
    res = compress_raster(src, tmp_path / "c.npz", CompressOptions(model_path=small_model))
    assert calls and res.est_rmse_db is not None  # the estimate still runs by default


def test_aux_xml_sidecar_changes_neither_ratio_nor_output(tmp_path, small_model, write_geotiff):
    from osgeo import gdal

    src = write_geotiff(speckled_scene(200, 200, seed=5), nodata=0)
    opts = CompressOptions(model_path=small_model, estimate_quality=False)
    first = compress_raster(src, tmp_path / "a.npz", opts)
    info = gdal.Info(str(src), stats=True, format="json")  # what QGIS does when it first shows a layer
    assert "STATISTICS_MEAN" in json.dumps(info)
    sidecar = Path(f"{src}.aux.xml")
    assert sidecar.is_file() and "STATISTICS_MEAN" in sidecar.read_text()
    second = compress_raster(src, tmp_path / "b.npz", opts)
    assert (second.input_bytes, second.output_bytes, second.ratio) == (first.input_bytes, first.output_bytes,
                                                                       first.ratio)
    assert first.input_bytes == src.stat().st_size
    with ContainerReader(tmp_path / "b.npz") as reader:
        assert "STATISTICS" not in json.dumps(reader.header["geo"])
    out = tmp_path / "back.tif"
    decompress_container(tmp_path / "b.npz", out, DecompressOptions(model_path=small_model))
    with rasterio.open(out) as ds:
        assert not any(k.startswith("STATISTICS_") for k in ds.tags(1))


def test_statistics_stored_by_older_containers_are_not_written_back():
    from rasterio.io import MemoryFile

    meta = {"tags": {"STATISTICS_MEAN": "3", "MISSION": "S1A"},
            "band_tags": [{"STATISTICS_MAXIMUM": "999", "STATISTICS_MINIMUM": "1", "POLARISATION": "VV"}]}
    with MemoryFile() as mem, mem.open(driver="GTiff", width=4, height=4, count=1, dtype="uint16") as ds:
        apply_geo_metadata(ds, meta)
        assert ds.tags()["MISSION"] == "S1A" and "STATISTICS_MEAN" not in ds.tags()
        assert ds.tags(1) == {"POLARISATION": "VV"}


def _map_projected_product(root: Path) -> dict[str, np.ndarray]:
    """The synthetic GRD product, its measurements rewritten with a map CRS, a transform and nodata 0."""
    arrays = build_safe(root, height=300, width=200)
    for tiff in sorted((root / PRODUCT / "measurement").glob("*.tiff")):
        with rasterio.open(tiff) as ds:
            data = ds.read(1)
        tiff.unlink()
        with rasterio.open(tiff, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                           dtype=data.dtype, crs="EPSG:32632", transform=from_origin(400000.0, 5200000.0, 10, 10),
                           nodata=0) as ds:
            ds.write(data, 1)
    return arrays


@pytest.mark.parametrize("packed", ["safe", "zip"])
def test_map_projected_sentinel1_product_keeps_crs_transform_and_nodata(tmp_path, small_model, packed):
    _map_projected_product(tmp_path)
    origin = zip_safe(tmp_path) if packed == "zip" else tmp_path / PRODUCT
    [item] = resolve_inputs(origin)
    try:
        with rasterio.open(item.path) as ds:
            assert ds.crs == CRS.from_epsg(32632)
            assert ds.transform == from_origin(400000.0, 5200000.0, 10, 10)
            assert ds.nodatavals == (0.0, 0.0) and ds.descriptions == ("VV", "VH")
            assert not ds.gcps[0]
        npz, out = tmp_path / "p.npz", tmp_path / "p.tif"
        compress_raster(item.path, npz, CompressOptions(model_path=small_model, estimate_quality=False))
    finally:
        item.release()
    decompress_container(npz, out, DecompressOptions(model_path=small_model))
    with rasterio.open(out) as ds:
        assert ds.crs == CRS.from_epsg(32632) and ds.transform == from_origin(400000.0, 5200000.0, 10, 10)
        assert ds.nodata == 0
        assert ((ds.read_masks(1) == 0) == (ds.read(1) == 0)).all() and (ds.read_masks(1) == 0).sum() == 4 * 17


def test_gcp_sentinel1_product_keeps_gcps_and_no_transform(tmp_path):
    build_safe(tmp_path, height=120, width=80)
    [item] = resolve_inputs(tmp_path / PRODUCT)
    try:
        with rasterio.open(item.path) as ds:
            gcps, gcp_crs = ds.gcps
            assert len(gcps) == 9 and gcp_crs == CRS.from_epsg(4326)
            assert ds.transform.is_identity and ds.nodatavals == (None, None)
    finally:
        item.release()


def test_free_nodata_prefers_a_value_the_decoder_cannot_produce():
    """0 for amplitude DN (decoded pixels are >= 1); NaN for floats."""
    class _NoRecords:
        def records(self, kind=None, band=None):
            return []

    assert pipeline._free_nodata(_NoRecords(), 1, pipeline.Domain.AMPLITUDE_DN, np.dtype("uint16"), []) == 0
    assert math.isnan(pipeline._free_nodata(_NoRecords(), 1, pipeline.Domain.INTENSITY, np.dtype("float32"), []))


# -- item 12: text that is not UTF-8 -------------------------------------------------------------------


LATIN1_TEXT = ("Rétrodiffusion VV", "décibel", "Orléans", "précis")


def _latin1_scene(path: Path) -> Path:
    """A GeoTIFF whose description, unit and two tags are Latin-1 bytes (as older tools wrote them).

    Written with ``~`` for ``é``, then each such text is replaced in the file by its Latin-1 bytes:
    same length, so every TIFF offset stays right, and ``gdalinfo`` reads the file as before.
    """
    data = speckled_scene(64, 80, seed=31)
    profile = dict(driver="GTiff", width=80, height=64, count=1, dtype=data.dtype, crs="EPSG:32630",
                   transform=TRANSFORM, nodata=0)
    description, unit, station, note = (t.replace("é", "~") for t in LATIN1_TEXT)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
        ds.set_band_description(1, description)
        ds.set_band_unit(1, unit)
        ds.update_tags(STATION=station, PLAIN="ascii")
        ds.update_tags(1, POLARISATION="VV", NOTE=note)
    raw = path.read_bytes()
    for text in LATIN1_TEXT:
        placeholder = text.replace("é", "~").encode()
        assert raw.count(placeholder) == 1, placeholder
        raw = raw.replace(placeholder, text.encode("latin-1"))
    path.write_bytes(raw)
    return path


def test_latin1_description_unit_and_tags_are_kept_through_a_round_trip(tmp_path, small_model, monkeypatch,
                                                                        capsys):
    src = _latin1_scene(tmp_path / "latin1.tif")
    with rasterio.open(src) as ds:  # what used to refuse the file ("not a raster GDAL can read")
        with pytest.raises(UnicodeDecodeError):
            _ = ds.descriptions
    monkeypatch.setenv("SARCODEC_MODEL", str(small_model))
    assert cli.main(["compress", str(src), "-q", "--no-estimate"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "no CUDA GPU" not in line]
    assert warned == [], warned  # nothing is lost, so nothing to warn about (rasterio's complaint included)
    assert cli.main(["decompress", str(src.with_suffix(".npz")), "-q", "-o", str(tmp_path / "back.tif")]) == 0
    with rasterio.open(tmp_path / "back.tif") as ds:  # now UTF-8: é is é
        assert ds.descriptions == ("Rétrodiffusion VV",)
        assert ds.units == ("décibel",)
        assert ds.tags()["STATION"] == "Orléans" and ds.tags()["PLAIN"] == "ascii"
        assert ds.tags(1)["NOTE"] == "précis" and ds.tags(1)["POLARISATION"] == "VV"
