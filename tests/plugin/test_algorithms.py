"""Both algorithms through ``processing.run`` on real GeoTIFFs, with the real engine."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import processing
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsSingleBandGrayRenderer,
)

from tests.plugin.conftest import SIZE, RecordingFeedback, files_in, read_band

pytestmark = [pytest.mark.usefixtures("sarcodec_provider"), pytest.mark.timeout(120)]


def compress(src: Path, out: Path, feedback: RecordingFeedback, **params) -> dict:
    return processing.run("sarcodec:compress", {"INPUT": str(src), "OUTPUT": str(out), **params}, feedback=feedback)


def decompress(src: Path, out: Path, feedback: RecordingFeedback, **params) -> dict:
    return processing.run("sarcodec:decompress", {"INPUT": str(src), "OUTPUT": str(out), **params},
                          feedback=feedback)


def test_round_trip_reports_progress_outputs_and_log(scene_tif, tmp_path, feedback):
    npz = tmp_path / "scene.npz"
    results = compress(scene_tif, npz, feedback)
    assert results["OUTPUT"] == str(npz) and npz.stat().st_size > 0
    assert results["RATIO"] > 1 and results["BPP"] > 0
    assert results["RMSE_DB"] is None or math.isfinite(results["RMSE_DB"])
    assert max(feedback.progress_values) == pytest.approx(100)
    log = "\n".join(feedback.infos)
    assert "Device:" in log and "batch size" in log and "ratio" in log

    back = RecordingFeedback()
    tif = tmp_path / "back.tif"
    assert decompress(npz, tif, back)["OUTPUT"] == str(tif)
    assert max(back.progress_values) == pytest.approx(100)
    assert any("Decompressed to" in line for line in back.infos)
    original, _ = read_band(scene_tif)
    data, meta = read_band(tif)
    assert meta["shape"] == (SIZE, SIZE) and meta["dtype"] == "uint16" and meta["crs"].to_epsg() == 32630
    db = 20 * np.log10(np.maximum(data, 1) / np.maximum(original, 1))
    assert np.sqrt(np.mean(db**2)) < 6.0  # a lossy codec, but the same scene


def test_nodata_pixels_come_back(nodata_tif, tmp_path, feedback):
    npz, tif = tmp_path / "nd.npz", tmp_path / "nd.tif"
    compress(nodata_tif, npz, feedback)
    decompress(npz, tif, RecordingFeedback(), TIFF_COMPRESS="DEFLATE", OUTPUT_DTYPE="float32")
    original, _ = read_band(nodata_tif)
    data, meta = read_band(tif)
    assert meta["nodata"] == 0 and meta["dtype"] == "float32"
    np.testing.assert_array_equal(data == 0, original == 0)


def test_missing_crs_warns_headless_and_crs_parameter_assigns(nocrs_tif, tmp_path, feedback):
    compress(nocrs_tif, tmp_path / "none.npz", feedback)
    assert any("no valid CRS" in w for w in feedback.warnings)
    decompress(tmp_path / "none.npz", tmp_path / "none.tif", RecordingFeedback())
    assert not read_band(tmp_path / "none.tif")[1]["crs"]

    with_crs = RecordingFeedback()
    compress(nocrs_tif, tmp_path / "crs.npz", with_crs, CRS="EPSG:32631")
    assert not any("no valid CRS" in w for w in with_crs.warnings)
    decompress(tmp_path / "crs.npz", tmp_path / "crs.tif", RecordingFeedback())
    assert read_band(tmp_path / "crs.tif")[1]["crs"].to_epsg() == 32631


def test_cancel_leaves_no_output(scene_tif, tmp_path):
    before = files_in(tmp_path)
    cancelling = RecordingFeedback(cancel_after=1)
    with pytest.raises(QgsProcessingException, match="Cancel"):
        compress(scene_tif, tmp_path / "cancel.npz", cancelling)
    assert files_in(tmp_path) == before

    npz = tmp_path / "ok.npz"
    compress(scene_tif, npz, RecordingFeedback())
    before = files_in(tmp_path)
    with pytest.raises(QgsProcessingException, match="Cancel"):
        decompress(npz, tmp_path / "cancel.tif", RecordingFeedback(cancel_after=1))
    assert files_in(tmp_path) == before


def test_decompressed_layer_loads_with_sar_style(scene_tif, tmp_path):
    npz = tmp_path / "s.npz"
    compress(scene_tif, npz, RecordingFeedback())
    project = QgsProject.instance()
    project.removeAllMapLayers()
    context = QgsProcessingContext()
    context.setProject(project)
    results = processing.runAndLoadResults(
        "sarcodec:decompress", {"INPUT": str(npz), "OUTPUT": str(tmp_path / "styled.tif")},
        feedback=RecordingFeedback(), context=context,
    )
    layers = [lyr for lyr in project.mapLayers().values() if lyr.source() == results["OUTPUT"]]
    assert len(layers) == 1 and isinstance(layers[0], QgsRasterLayer)
    renderer = layers[0].renderer()
    assert isinstance(renderer, QgsSingleBandGrayRenderer)
    enhancement = renderer.contrastEnhancement()
    data, _ = read_band(tmp_path / "styled.tif")
    low, high = np.percentile(data, [2, 98])
    assert enhancement.minimumValue() == pytest.approx(low, rel=0.1)
    assert enhancement.maximumValue() == pytest.approx(high, rel=0.1)
    project.removeAllMapLayers()


def test_info_reads_the_header(scene_tif, tmp_path):
    npz = tmp_path / "i.npz"
    compress(scene_tif, npz, RecordingFeedback())
    results = processing.run("sarcodec:info", {"INPUT": str(npz)}, feedback=RecordingFeedback())
    assert results["HEADER"].startswith("{") and "300" in results["HEADER"]


def test_crs_parameter_value_reaches_the_engine_as_authid():
    from sarcodec_plugin.bridge import crs_text

    assert crs_text(QgsCoordinateReferenceSystem("EPSG:32630")) == "EPSG:32630"
    assert crs_text(QgsCoordinateReferenceSystem()) is None


def test_multiband_progress_spans_all_bands(write_geotiff, tmp_path):
    from tests.conftest import speckled_scene

    two = np.stack([speckled_scene(160, 160, seed=7), speckled_scene(160, 160, seed=8)])
    src = write_geotiff(two, "vv_vh.tif")
    for run, out in ((compress, tmp_path / "vv_vh.npz"), (decompress, tmp_path / "vv_vh_back.tif")):
        fb = RecordingFeedback()
        run(src if run is compress else tmp_path / "vv_vh.npz", out, fb)
        values = fb.progress_values
        assert values == sorted(values) and values[-1] == pytest.approx(100), values
        assert any(45 <= v <= 55 for v in values), values  # band 1 of 2 done: half way, not 100 %
    import rasterio

    with rasterio.open(tmp_path / "vv_vh_back.tif") as ds:
        assert ds.count == 2
