"""The plugin used as a SAR analyst uses it (issue 10, items 17-23): what they type is understood, what
they read is true, and what they reuse (the logged command line) works.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import processing
import pytest
import rasterio
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsRasterLayer,
)

from tests.conftest import speckled_scene
from tests.plugin.conftest import RecordingFeedback, files_in

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.usefixtures("sarcodec_provider"), pytest.mark.timeout(180)]


def run(algorithm: str, params: dict, feedback: QgsProcessingFeedback | None = None) -> dict:
    return processing.run(f"sarcodec:{algorithm}", {k: str(v) if isinstance(v, Path) else v for k, v in params.items()},
                          feedback=feedback or RecordingFeedback())


def refused(algorithm: str, params: dict, folder: Path) -> str:
    before = files_in(folder)
    with pytest.raises(QgsProcessingException) as err:
        run(algorithm, params)
    assert files_in(folder) == before
    message = str(err.value).strip()
    # processing.run puts its own first line before a checkParameterValues message; qgis_process and the
    # dialog show the message alone
    message = message.removeprefix("Unable to execute algorithm").strip()
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture
def small_tif(write_geotiff) -> Path:
    return write_geotiff(speckled_scene(96, 96, seed=11), "small.tif")


@pytest.fixture
def small_npz(small_tif, tmp_path) -> Path:
    out = tmp_path / "small.npz"
    run("compress", {"INPUT": small_tif, "OUTPUT": out, "ESTIMATE_QUALITY": False})
    return out


# ---------------------------------------------------------------- item 17: enums by number


def test_enum_parameters_accept_the_option_number(small_npz, small_tif, tmp_path):
    out = tmp_path / "n.tif"
    run("decompress", {"INPUT": small_npz, "OUTPUT": out, "TIFF_COMPRESS": "2", "OUTPUT_DTYPE": 3, "DEVICE": "1"})
    with rasterio.open(out) as ds:
        assert ds.dtypes[0] == "int16" and ds.profile["compress"].upper() == "ZSTD"
    feedback = RecordingFeedback()
    run("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / "n.npz", "DEVICE": 1, "ESTIMATE_QUALITY": False},
        feedback)
    assert any("--device cpu" in c for c in feedback.commands), feedback.commands
    assert "DEVICE" in refused("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / "x.npz", "DEVICE": 99}, tmp_path)


def test_device_choices_list_each_visible_gpu(monkeypatch):
    from sarcodec_plugin import bridge

    monkeypatch.setattr(bridge, "visible_cuda_devices", lambda: 2)
    alg = QgsApplication.processingRegistry().algorithmById("sarcodec:compress").create()
    assert alg.parameterDefinition("DEVICE").options() == ["auto", "cpu", "cuda", "cuda:0", "cuda:1"]
    assert alg.checkParameterValues({"INPUT": "x.tif", "OUTPUT": "/tmp/x.npz", "DEVICE": "cuda:1"},
                                    QgsProcessingContext())[0]
    assert alg.enumText({"DEVICE": 4}, "DEVICE", QgsProcessingContext()) == "cuda:1"


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    from sarcodec_plugin import bridge

    monkeypatch.setitem(sys.modules, "torch", None)  # as in QGIS before the first run: torch not imported
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert bridge.visible_cuda_devices() == 0
    assert bridge.device_options() == ["auto", "cpu", "cuda"]


# ---------------------------------------------------------------- item 18: no estimate


def test_estimate_quality_off_reports_no_rmse(small_tif, tmp_path):
    feedback = RecordingFeedback()
    results = run("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / "e.npz", "ESTIMATE_QUALITY": False}, feedback)
    assert results["RMSE_DB"] is None and results["PSNR_DB"] is None
    assert not any("RMSE" in line for line in feedback.infos if line.startswith("Compressed")), feedback.infos
    assert any(c.endswith("--no-estimate") for c in feedback.commands), feedback.commands


# ---------------------------------------------------------------- item 20: /vsizip/ layers


def test_layer_inside_a_zip_reaches_the_engine_as_its_gdal_path(small_tif, tmp_path):
    archive = tmp_path / "product.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(small_tif, "measurement/s1.tiff")
    vsi = f"/vsizip/{archive}/measurement/s1.tiff"
    layer = QgsRasterLayer(vsi, "s1", "gdal")
    assert layer.isValid()
    for n, value in enumerate((layer, vsi)):
        feedback = RecordingFeedback()
        results = run("compress", {"INPUT": value, "OUTPUT": tmp_path / f"z{n}.npz", "ESTIMATE_QUALITY": False},
                      feedback)
        assert (tmp_path / f"z{n}.npz").stat().st_size > 0
        assert any(line.startswith(f"Input: {vsi} ") for line in feedback.infos), feedback.infos
        assert results["BPP"] > 0


# ---------------------------------------------------------------- item 21: CRS


def test_unknown_crs_fails_as_an_invalid_crs(small_tif, small_npz, tmp_path):
    message = refused("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / "c.npz", "CRS": "EPSG:999999"}, tmp_path)
    assert "Invalid CRS: EPSG:999999" in message
    message = refused("decompress", {"INPUT": small_npz, "OUTPUT": tmp_path / "c.tif", "CRS": "EPSG:999999"},
                      tmp_path)
    assert "Invalid CRS: EPSG:999999" in message


@pytest.fixture
def unplaced_tif(tmp_path) -> Path:
    """No CRS, no geotransform, no GCPs: pixel coordinates only."""
    path = tmp_path / "unplaced.tif"
    data = speckled_scene(64, 64, seed=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rasterio's NotGeoreferencedWarning
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype=data.dtype) as ds:
            ds.write(data, 1)
    return path


def test_crs_for_a_raster_without_transform_says_it_lands_at_the_origin(unplaced_tif, nocrs_tif, tmp_path):
    feedback = RecordingFeedback()
    run("compress", {"INPUT": unplaced_tif, "OUTPUT": tmp_path / "u.npz", "CRS": "EPSG:32631",
                     "ESTIMATE_QUALITY": False}, feedback)
    assert any("CRS origin" in w for w in feedback.warnings), feedback.warnings
    placed = RecordingFeedback()
    run("compress", {"INPUT": nocrs_tif, "OUTPUT": tmp_path / "p.npz", "CRS": "EPSG:32631",
                     "ESTIMATE_QUALITY": False}, placed)
    assert not any("CRS origin" in w for w in placed.warnings), placed.warnings
    context = QgsProcessingContext()
    alg = QgsApplication.processingRegistry().algorithmById("sarcodec:compress")
    assert alg.input_is_georeferenced({"INPUT": str(unplaced_tif)}, context) is False
    assert alg.input_is_georeferenced({"INPUT": str(nocrs_tif)}, context) is True


# ---------------------------------------------------------------- item 23


@pytest.mark.parametrize("name", ["out.tif", "out"])
def test_compressed_output_must_be_named_npz(small_tif, tmp_path, name):
    message = refused("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / name}, tmp_path)
    assert "*.npz" in message


def test_info_gives_a_summary_and_numbers(small_npz):
    feedback = RecordingFeedback()
    from sarcodec.codec import model_store

    results = run("info", {"INPUT": small_npz}, feedback)
    default = model_store.default_quality(model_store.load(None)[0])  # small_npz: the default model's default
    assert (results["WIDTH"], results["HEIGHT"], results["BANDS"], results["QUALITY"]) == (96, 96, 1, default)
    assert results["BPP"] == pytest.approx(8 * small_npz.stat().st_size / (96 * 96))
    assert "96 x 96 px" in results["SUMMARY"] and "EPSG:32630" in results["SUMMARY"]
    assert "{" not in results["SUMMARY"]
    assert not any("{" in line for line in feedback.infos if not line.startswith("Results:"))


def test_each_progress_line_is_logged_once(small_tif, tmp_path):
    feedback = QgsProcessingFeedback()
    run("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / "p.npz", "ESTIMATE_QUALITY": False}, feedback)
    lines = [line for line in feedback.textLog().splitlines() if line.startswith("compress band")]
    assert len(lines) == 1, feedback.textLog()


@pytest.mark.parametrize("tile, overlap, match", [(40, 0, "multiple of 16"), (256, 24, "multiple of 16"),
                                                   (128, 80, "half the tile size")])
def test_tile_geometry_is_checked_before_the_model_loads(small_tif, tmp_path, tile, overlap, match):
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("a text file, not a checkpoint\n")
    message = refused("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / "g.npz", "TILE_SIZE": tile,
                                   "OVERLAP": overlap, "MODEL": not_a_model}, tmp_path)
    assert match in message and "checkpoint" not in message, message


def test_tile_size_limit_is_the_engines():
    from sarcodec.codec.header import MAX_TILE_SIZE

    alg = QgsApplication.processingRegistry().algorithmById("sarcodec:compress")
    assert alg.parameterDefinition("TILE_SIZE").maximum() == MAX_TILE_SIZE


@pytest.mark.parametrize("content", [b"abc\n", b"e", b""], ids=["text", "one-byte", "empty"])
def test_non_checkpoint_model_is_a_clear_one_line_error(small_tif, tmp_path, content):
    model = tmp_path / "readme.pt"
    model.write_bytes(content)
    message = refused("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / "m.npz", "MODEL": model}, tmp_path)
    assert "readme.pt" in message and "Error" not in message, message
    assert "not a PyTorch checkpoint" in message or "empty" in message, message


@pytest.mark.parametrize("alg_id", ["sarcodec:compress", "sarcodec:decompress", "sarcodec:info", "sarcodec:infer"])
def test_algorithms_have_group_plain_help_and_an_svg_icon(alg_id):
    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    assert (alg.group(), alg.groupId()) in (("SAR compression", "sarcompression"), ("SAR processing", "sarprocessing"))
    assert alg.shortDescription() and alg.shortDescription().endswith(".")
    assert "<" not in alg.shortHelpString() and len(alg.shortHelpString()) > 100
    assert alg.svgIconPath().endswith(".svg") and Path(alg.svgIconPath()).is_file()


def test_cpu_fallback_is_an_info_line_unless_a_gpu_was_asked_for(small_tif, tmp_path, monkeypatch):
    from sarcodec.device import DevicePolicy
    from sarcodec_plugin.bridge import visible_cuda_devices

    if visible_cuda_devices():
        pytest.skip("this machine has a CUDA GPU, so auto never falls back to the CPU")
    monkeypatch.setattr(DevicePolicy, "_cpu_fallback_warned", False)  # the engine says it once per process
    feedback = RecordingFeedback()
    v1 = REPO / "resources" / "models" / "sarcodec_v1.pt"  # a network model: v2 never runs on a GPU
    run("compress", {"INPUT": small_tif, "OUTPUT": tmp_path / "c.npz", "ESTIMATE_QUALITY": False, "MODEL": v1,
                     "QUALITY": 3}, feedback)
    assert any("no CUDA GPU" in line for line in feedback.infos), feedback.infos
    assert not any("CUDA" in w for w in feedback.warnings), feedback.warnings


def test_decompressed_layer_name(tmp_path):
    alg = QgsApplication.processingRegistry().algorithmById("sarcodec:decompress")
    assert alg.layer_name(str(tmp_path / "S1A_scene.npz"), "Decompressed raster") == "S1A_scene (decompressed)"
    in_model = Path(QgsProcessingUtils.tempFolder()) / "abc123" / "OUTPUT.npz"
    assert alg.layer_name(str(in_model), "restored") == "restored"
    assert alg.layer_name(str(in_model), "") == "Decompressed raster"


def test_logged_command_line_repeats_the_run(small_tif, tmp_path):
    feedback = RecordingFeedback()
    gui = tmp_path / "gui.npz"
    results = run("compress", {"INPUT": small_tif, "OUTPUT": gui, "QUALITY": 2, "TILE_SIZE": 128, "OVERLAP": 32,
                               "DEVICE": "cpu", "ESTIMATE_QUALITY": False}, feedback)
    assert len(feedback.commands) == 1
    argv = shlex.split(feedback.commands[0])
    assert argv[:2] == ["sarcodec", "compress"]
    cli = tmp_path / "cli.npz"
    argv[argv.index("-o") + 1] = str(cli)
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "sarcodec"), *argv[1:]], capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 0, proc.stderr
    from sarcodec.codec.pipeline import container_info

    a, b = container_info(gui), container_info(cli)
    assert a["quality"] == b["quality"] == 2 and a["grid"] == b["grid"]
    assert a["file"]["payload_bytes"] == b["file"]["payload_bytes"]  # the codec is deterministic
    assert results["BPP"] == pytest.approx(8 * cli.stat().st_size / (96 * 96), rel=0.05)


# ---------------------------------------------------------------- issue 11: an area out of a scene


def test_extent_decompresses_only_that_area_with_its_transform(small_npz, tmp_path):
    """The write_geotiff transform puts pixel (0, 0) at (500000, 4500000) with 10 m pixels (EPSG:32630)."""
    full, part = tmp_path / "full.tif", tmp_path / "part.tif"
    run("decompress", {"INPUT": small_npz, "OUTPUT": full})
    feedback = RecordingFeedback()
    run("decompress", {"INPUT": small_npz, "OUTPUT": part,
                       "EXTENT": "500200,500500,4499400,4499700 [EPSG:32630]"}, feedback)
    with rasterio.open(full) as f, rasterio.open(part) as p:
        assert (p.width, p.height) == (30, 30)
        assert p.transform == f.transform * f.transform.translation(20, 30)
        np.testing.assert_array_equal(p.read(1), f.read(1)[30:60, 20:50])
    assert any("--bbox 500200.0 4499400.0 500500.0 4499700.0 --bbox-crs EPSG:32630" in c for c in feedback.commands)
    message = refused("decompress", {"INPUT": small_npz, "OUTPUT": tmp_path / "none.tif",
                                     "EXTENT": "0,10,0,10 [EPSG:32630]"}, tmp_path)
    assert "does not intersect" in message


# ---------------------------------------------------------------- issue 14: any model over a raster


def test_infer_runs_an_onnx_model_and_loads_with_the_sar_style(small_tif, tmp_path):
    import torch

    from tests.test_infer import Bilinear2, onnx_file

    model = onnx_file(Bilinear2(), tmp_path / "sr.onnx")
    feedback = RecordingFeedback()
    out = tmp_path / "sr.tif"
    run("infer", {"INPUT": small_tif, "MODEL": model, "OUTPUT": out, "TILE_SIZE": 64, "OVERLAP": 16}, feedback)
    with rasterio.open(small_tif) as a, rasterio.open(out) as b:
        assert (b.width, b.height) == (2 * a.width, 2 * a.height) and b.crs == a.crs
    assert len(feedback.commands) == 1 and "--tile-size 64" in feedback.commands[0]
    argv = shlex.split(feedback.commands[0])  # the logged command repeats the run from a shell
    assert argv[:2] == ["sarcodec", "infer"]
    argv[argv.index("-o") + 1] = str(tmp_path / "cli.tif")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "sarcodec"), *argv[1:]], capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(out) as a, rasterio.open(tmp_path / "cli.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform
    message = refused("infer", {"INPUT": small_tif, "MODEL": model, "OUTPUT": tmp_path / "x.tif",
                                "CONVENTION": "range", "RANGE": "5,1"}, tmp_path)
    assert "LOW < HIGH" in message
    script = tmp_path / "s.pt"
    torch.jit.script(Bilinear2()).save(str(script))
    message = refused("infer", {"INPUT": small_tif, "MODEL": script, "OUTPUT": tmp_path / "y.tif"}, tmp_path)
    assert "--trust-torchscript" in message or "Trust TorchScript" in message
