"""Bad input gives a one-line QgsProcessingException and leaves no output file."""

from __future__ import annotations

import zipfile

import numpy as np
import processing
import pytest
from qgis.core import QgsProcessingException, QgsVectorLayer

from tests.plugin.conftest import RecordingFeedback, files_in

pytestmark = [pytest.mark.usefixtures("sarcodec_provider"), pytest.mark.timeout(60)]


def assert_one_line_failure(algorithm: str, params: dict, folder, match: str) -> None:
    before = files_in(folder)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(algorithm, params, feedback=RecordingFeedback())
    # processing.run puts "Unable to execute algorithm" before a checkParameterValues message
    message = str(err.value).strip().removeprefix("Unable to execute algorithm").strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert match.lower() in message.lower(), message
    assert files_in(folder) == before


def test_vector_layer_is_refused(tmp_path):
    geojson = tmp_path / "points.geojson"
    geojson.write_text('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
                       '"geometry":{"type":"Point","coordinates":[1,2]}}]}')
    layer = QgsVectorLayer(str(geojson), "points", "ogr")
    assert layer.isValid()
    for value in (layer, str(geojson)):
        assert_one_line_failure("sarcodec:compress", {"INPUT": value, "OUTPUT": str(tmp_path / "v.npz")},
                                tmp_path, "raster")


def test_text_file_named_tif_is_refused(tmp_path):
    fake = tmp_path / "notes.tif"
    fake.write_text("this is not a GeoTIFF\n")
    assert_one_line_failure("sarcodec:compress", {"INPUT": str(fake), "OUTPUT": str(tmp_path / "n.npz")},
                            tmp_path, "raster")


def test_missing_input_is_refused(tmp_path):
    assert_one_line_failure("sarcodec:compress", {"INPUT": str(tmp_path / "absent.tif"),
                                                  "OUTPUT": str(tmp_path / "a.npz")}, tmp_path, "not")


@pytest.mark.parametrize("kind", ["numpy", "text", "zip"])
def test_foreign_npz_is_refused(tmp_path, kind):
    foreign = tmp_path / "foreign.npz"
    if kind == "numpy":
        np.savez(foreign, a=np.arange(10))
    elif kind == "text":
        foreign.write_text("hello")
    else:
        with zipfile.ZipFile(foreign, "w") as z:
            z.writestr("readme.txt", "not ours")
    for algorithm, params in (
        ("sarcodec:decompress", {"INPUT": str(foreign), "OUTPUT": str(tmp_path / "f.tif")}),
        ("sarcodec:info", {"INPUT": str(foreign)}),
    ):
        assert_one_line_failure(algorithm, params, tmp_path, "")


def test_invalid_option_value_is_one_line(scene_tif, tmp_path):
    assert_one_line_failure(
        "sarcodec:compress", {"INPUT": str(scene_tif), "OUTPUT": str(tmp_path / "q.npz"), "TILE_SIZE": 33},
        tmp_path, "multiple of 16",
    )
