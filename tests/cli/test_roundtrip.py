"""Round trips through the real codec via ``sarcodec.cli.main``: options, metadata and nodata.

In-process calls are used here because they are several times faster than a subprocess (no
torch import per call); ``test_exit_codes.py`` and ``test_signals_pipes.py`` cover real processes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarcodec import cli
from sarcodec.cli import compress as compress_command
from sarcodec.cli import decompress as decompress_command
from sarcodec.codec.container import ContainerReader
from tests.cli.conftest import NODATA, error_lines, leftovers, write_scene
from tests.conftest import speckled_scene


def assert_same_metadata(src: Path, dst: Path) -> None:
    """Field by field: what the issue promises to preserve, and the pixel grid itself."""
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        assert (b.count, b.height, b.width) == (a.count, a.height, a.width)
        assert b.dtypes == a.dtypes
        assert b.crs == a.crs
        assert b.transform == a.transform
        a_gcps, a_gcp_crs = a.gcps
        b_gcps, b_gcp_crs = b.gcps
        assert len(b_gcps) == len(a_gcps)
        for ga, gb in zip(a_gcps, b_gcps, strict=True):
            assert (gb.row, gb.col, gb.x, gb.y, gb.z, gb.id) == pytest.approx((ga.row, ga.col, ga.x, ga.y, ga.z, ga.id))
        assert b_gcp_crs == a_gcp_crs
        assert b.nodatavals == a.nodatavals
        assert b.descriptions == a.descriptions
        assert b.tags() == a.tags()
        for i in range(1, a.count + 1):
            assert b.tags(i) == a.tags(i)


def assert_nodata_preserved(src: Path, dst: Path) -> None:
    with rasterio.open(src) as a, rasterio.open(dst) as b:
        if a.nodata is None:
            return
        orig, back = a.read(), b.read()
        assert np.array_equal(orig == a.nodata, back == b.nodata)
        assert (orig == a.nodata).any()


def test_round_trip_preserves_metadata_and_nodata(rich_scene, tmp_path, capsys):
    npz = tmp_path / "scene.npz"
    assert cli.main(["compress", str(rich_scene), "--no-estimate"]) == 0  # auto-named next to the input
    assert npz.is_file()
    assert cli.main(["decompress", str(npz), "-o", str(tmp_path / "back.tif")]) == 0
    out = tmp_path / "back.tif"
    assert_same_metadata(rich_scene, out)
    assert_nodata_preserved(rich_scene, out)
    with rasterio.open(out) as ds:
        assert ds.profile["compress"].upper() == "LZW"  # the default
    captured = capsys.readouterr()
    assert "scene.tif -> " in captured.out and "ratio" in captured.out and "bpp" in captured.out
    assert "back.tif: 300x300x2 uint16" in captured.out
    assert leftovers(tmp_path, {"scene.tif", "scene.npz", "back.tif"}) == []


def test_compress_summary_reports_estimated_quality(small_scene, capsys):
    assert cli.main(["compress", str(small_scene)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "est. RMSE" in line and "dB" in line and "PSNR" in line and "ratio" in line


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_gcps_round_trip(gcp_scene, tmp_path):
    assert cli.main(["compress", str(gcp_scene), "--no-estimate", "-q"]) == 0
    assert cli.main(["decompress", str(gcp_scene.with_suffix(".npz")), "-o", str(tmp_path / "g.tif"), "-q"]) == 0
    assert_same_metadata(gcp_scene, tmp_path / "g.tif")
    with rasterio.open(tmp_path / "g.tif") as ds:
        assert len(ds.gcps[0]) == 9 and ds.gcps[1].to_epsg() == 4326


def test_missing_crs_warns_in_a_pipeline_and_keeps_none(nocrs_scene, tmp_path, capsys):
    assert cli.main(["compress", str(nocrs_scene), "--no-estimate"]) == 0
    err = capsys.readouterr().err
    crs_warnings = [line for line in err.splitlines() if "no valid CRS" in line]
    assert len(crs_warnings) == 1 and crs_warnings[0].startswith("sarcodec: warning: ")  # once, not twice
    assert cli.main(["decompress", str(nocrs_scene.with_suffix(".npz")), "-o", str(tmp_path / "o.tif"), "-q"]) == 0
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.crs is None


def test_crs_option_sets_a_missing_crs(nocrs_scene, tmp_path):
    assert cli.main(["compress", str(nocrs_scene), "--crs", "EPSG:32631", "--no-estimate", "-q"]) == 0
    assert cli.main(["decompress", str(nocrs_scene.with_suffix(".npz")), "-o", str(tmp_path / "o.tif"), "-q"]) == 0
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.crs.to_epsg() == 32631


def test_decompress_crs_option_sets_a_crs_the_container_lacks(nocrs_scene, tmp_path):
    assert cli.main(["compress", str(nocrs_scene), "--no-estimate", "-q"]) == 0
    assert cli.main(["decompress", str(nocrs_scene.with_suffix(".npz")), "-o", str(tmp_path / "o.tif"), "-q",
                     "--crs", "EPSG:4326"]) == 0
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.crs.to_epsg() == 4326


@pytest.mark.parametrize("answer, expected", [("EPSG:32629\n", 32629), ("\n", None), ("bogus\n\n", None)])
def test_interactive_terminal_prompts_for_a_crs(nocrs_scene, tmp_path, monkeypatch, capsys, answer, expected):
    monkeypatch.setattr(compress_command, "interactive", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    assert cli.main(["compress", str(nocrs_scene), "--no-estimate", "-q"]) == 0
    err = capsys.readouterr().err
    assert "CRS for " in err and "EPSG:XXXX or WKT, Enter keeps none" in err
    monkeypatch.setattr(decompress_command, "interactive", lambda: False)
    assert cli.main(["decompress", str(nocrs_scene.with_suffix(".npz")), "-o", str(tmp_path / "o.tif"), "-q"]) == 0
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert (ds.crs.to_epsg() if ds.crs else None) == expected


def test_codec_options_reach_the_container(small_scene, tmp_path):
    npz, weights = tmp_path / "q.npz", tmp_path / "weights.tif"
    assert cli.main(["compress", str(small_scene), "-o", str(npz), "--quality", "5", "--tile-size", "128",
                     "--overlap", "32", "--device", "cpu", "--batch-size", "2", "--weight-map", str(weights),
                     "--no-estimate", "-q"]) == 0
    with ContainerReader(npz) as reader:
        header = reader.header
    assert header["quality"] == 5
    assert header["grid"]["tile_size"] == 128 and header["grid"]["overlap"] == 32
    with rasterio.open(weights) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "float32" and ds.crs is not None
        assert float(ds.read(1).max()) > 0
    low = tmp_path / "low.npz"
    assert cli.main(["compress", str(small_scene), "-o", str(low), "--quality", "1", "--no-estimate", "-q"]) == 0
    with ContainerReader(low) as reader:
        assert reader.header["quality"] == 1
        assert reader.header["grid"]["overlap"] == 64  # the documented default


@pytest.fixture
def compressed(rich_scene) -> Path:
    assert cli.main(["compress", str(rich_scene), "--no-estimate", "-q"]) == 0
    return rich_scene.with_suffix(".npz")


@pytest.mark.parametrize("codec", ["LZW", "deflate", "ZSTD", "LERC", "NONE"])
def test_tiff_compress_options(compressed, rich_scene, tmp_path, codec):
    out = tmp_path / f"out_{codec}.tif"
    assert cli.main(["decompress", str(compressed), "-o", str(out), "--tiff-compress", codec, "-q"]) == 0
    with rasterio.open(out) as ds:
        got = ds.profile.get("compress")
        assert (got or "none").upper() == codec.upper() if codec.upper() != "NONE" else got is None
    assert_same_metadata(rich_scene, out)
    assert_nodata_preserved(rich_scene, out)


def test_output_dtype_option(compressed, tmp_path):
    out = tmp_path / "f32.tif"
    weights = tmp_path / "decoder_weights.tif"
    assert cli.main(["decompress", str(compressed), "-o", str(out), "--output-dtype", "float32", "-q",
                     "--device", "cpu", "--batch-size", "1", "--overlap", "32", "--weight-map", str(weights)]) == 0
    with rasterio.open(out) as ds:
        assert ds.dtypes == ("float32", "float32")
    with rasterio.open(weights) as ds:
        assert (ds.height, ds.width) == (300, 300) and float(ds.read(1).min()) > 0


def test_cog_output_is_a_valid_cloud_optimized_geotiff(tmp_path):
    scene = write_scene(tmp_path / "big.tif", speckled_scene(1100, 1100, seed=7), descriptions=["VV"],
                        tags={"MISSION": "S1B"})
    assert cli.main(["compress", str(scene), "--no-estimate", "-q"]) == 0
    out = tmp_path / "cog.tif"
    assert cli.main(["decompress", str(scene.with_suffix(".npz")), "-o", str(out), "--cog", "-q"]) == 0
    with rasterio.open(out) as ds:
        assert ds.overviews(1), "a COG needs overviews"
        assert ds.profile.get("tiled") is True
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    from osgeo import gdal

    gdal.UseExceptions()
    info = gdal.Info(str(out), format="json")
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert info["bands"][0]["overviews"]
    try:
        from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate
    except ImportError:  # pragma: no cover - GDAL's sample scripts are optional
        validate = None
    if validate is not None:
        _warnings, errors, _details = validate(str(out), full_check=True)
        assert errors == []
    assert_same_metadata(scene, out)
    assert leftovers(tmp_path, {"big.tif", "big.npz", "cog.tif"}) == []


def test_salvage_decodes_around_a_damaged_chunk(tmp_path, capsys):
    scene = write_scene(tmp_path / "s.tif", speckled_scene(600, 600, seed=8))
    assert cli.main(["compress", str(scene), "--no-estimate", "-q"]) == 0
    npz = scene.with_suffix(".npz")
    with ContainerReader(npz) as reader:
        record = reader.find(0, 1, 1, "latent")
        payload = reader.read_record(record)
    raw = bytearray(npz.read_bytes())
    at = raw.find(payload)
    assert at > 0
    raw[at + len(payload) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    capsys.readouterr()
    assert cli.main(["decompress", str(npz), "-o", str(tmp_path / "x.tif")]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert lines[-1].startswith("sarcodec: error: ") and f"chunk {record.index}" in lines[-1]
    assert not (tmp_path / "x.tif").exists()
    assert cli.main(["decompress", str(npz), "-o", str(tmp_path / "x.tif"), "--salvage"]) == 0
    assert "damaged" in capsys.readouterr().err
    with rasterio.open(tmp_path / "x.tif") as ds:
        band = ds.read(1)
    assert (band[512:, 512:] == NODATA).all()
    assert (band[:512, :512] != NODATA).mean() > 0.99


def test_info_prints_the_header(compressed, capsys):
    assert cli.main(["info", str(compressed)]) == 0
    out = capsys.readouterr().out
    assert "quality: 3" in out and "geo.crs: EPSG:32630" in out and "shape: [2,300,300]" in out
    assert cli.main(["info", "--json", str(compressed)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["header"]["shape"] == [2, 300, 300] and doc["header"]["model"]["id"] == "tiny-test"


def test_decompress_refuses_a_model_that_did_not_write_the_file(compressed, tmp_path, capsys):
    import torch

    from sarcodec.codec.model import SarCodec, save_checkpoint

    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_checkpoint(SarCodec(n_channels=16, latent_channels=24, hyper_channels=8, n_qualities=5), other,
                    metadata={"model_id": "other"})
    assert cli.main(["decompress", str(compressed), "-o", str(tmp_path / "x.tif"), "--model", str(other)]) == 2
    assert error_lines(capsys.readouterr().err)[-1].startswith("sarcodec: error: ")
    assert not (tmp_path / "x.tif").exists()


def test_a_folder_input_compresses_each_geotiff(tmp_path, capsys):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i in range(2):
        write_scene(folder / f"s{i}.tif", speckled_scene(64, 96, seed=20 + i))
    assert cli.main(["compress", str(folder), "--no-estimate", "-q"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["s0.npz", "s0.tif", "s1.npz", "s1.tif"]
    out = tmp_path / "out"
    assert cli.main(["compress", str(folder), "-o", str(out), "--no-estimate", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s0.npz", "s1.npz"]
    assert cli.main(["compress", str(folder), "-o", str(tmp_path / "one.npz")]) == 4  # two rasters, one file


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("as_zip", [False, True], ids=["safe-folder", "safe-zip"])
def test_a_sentinel1_product_compresses_and_round_trips(tmp_path, capsys, as_zip):
    safe_fixture = pytest.importorskip("tests.distributed.safe_fixture")
    arrays = safe_fixture.build_safe(tmp_path, height=200, width=96)
    product = tmp_path / safe_fixture.PRODUCT
    source = safe_fixture.zip_safe(tmp_path) if as_zip else product
    out = tmp_path / "out"
    assert cli.main(["compress", str(source), "-o", f"{out}/", "--no-estimate"]) == 0
    captured = capsys.readouterr()
    assert "/vsimem/" not in captured.out + captured.err  # the user reads the product's name
    (npz,) = list(out.iterdir())
    assert cli.main(["decompress", str(npz), "-o", str(tmp_path / "back.tif"), "-q"]) == 0
    with rasterio.open(tmp_path / "back.tif") as ds:
        assert ds.count == len(arrays) and (ds.height, ds.width) == (200, 96)
        assert len(ds.gcps[0]) == 9 and ds.gcps[1].to_epsg() == 4326
        assert [d.upper() for d in ds.descriptions if d] == ["VV", "VH"]


V2_MODEL = Path(__file__).resolve().parents[2] / "resources" / "models" / "sarcodec_v2.npz"


def test_max_error_db_bounds_every_pixel_and_says_so(small_scene, tmp_path, capsys):
    npz, out = tmp_path / "e.npz", tmp_path / "e.tif"
    assert cli.main(["compress", str(small_scene), "-o", str(npz), "--model", str(V2_MODEL),
                     "--max-error-db", "0.3"]) == 0
    assert "every pixel within 0.3 dB (checked)" in capsys.readouterr().out
    assert cli.main(["decompress", str(npz), "-o", str(out)]) == 0  # the v2 model is found by checksum
    with rasterio.open(small_scene) as a, rasterio.open(out) as b:
        orig, back = a.read().astype(float), b.read().astype(float)
    valid = orig != NODATA
    assert np.abs(20 * np.log10(back[valid] / orig[valid])).max() <= 0.3
    assert cli.main(["info", str(npz)]) == 0
    shown = capsys.readouterr().out
    assert "mode: error-bounded" in shown and "max_error_db: 0.3" in shown


@pytest.mark.parametrize("args, message", [
    (["--max-error-db", "0.3", "--quality", "3"], "not both"),
    (["--max-error-db", "-1"], "positive"),
    (["--max-error-db", "0.001"], "gains nothing over lossless"),
])
def test_bad_max_error_db_is_a_usage_error(small_scene, tmp_path, capsys, args, message):
    out = tmp_path / "x.npz"
    assert cli.main(["compress", str(small_scene), "-o", str(out), "--model", str(V2_MODEL), *args]) == 4
    assert message in capsys.readouterr().err and not out.exists()


def test_window_and_bbox_from_the_command_line(small_scene, tmp_path):
    npz = tmp_path / "w.npz"
    assert cli.main(["compress", str(small_scene), "-o", str(npz), "--model", str(V2_MODEL), "-q"]) == 0
    assert cli.main(["decompress", str(npz), "-o", str(tmp_path / "full.tif"), "-q"]) == 0
    assert cli.main(["decompress", str(npz), "-o", str(tmp_path / "w.tif"), "--window", "5", "7", "20", "10",
                     "-q"]) == 0
    with rasterio.open(tmp_path / "full.tif") as f, rasterio.open(tmp_path / "w.tif") as w:
        np.testing.assert_array_equal(w.read(), f.read()[:, 7:17, 5:25])
        left, top = f.transform * (5, 7)
        assert (w.bounds.left, w.bounds.top) == (left, top)
    assert cli.main(["decompress", str(npz), "-o", str(tmp_path / "x.tif"), "--window", "0", "0", "0", "5"]) == 4
    assert not (tmp_path / "x.tif").exists()
