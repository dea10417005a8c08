"""The CRS prompt: asked in the dialog (main thread) only when the input has no CRS and none is given."""

from __future__ import annotations

import processing
import pytest
from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsProcessingContext, QgsProject, QgsRasterLayer

from tests.plugin.conftest import RecordingFeedback

pytestmark = [pytest.mark.usefixtures("sarcodec_provider"), pytest.mark.timeout(120)]


def alg(alg_id: str):
    return QgsApplication.processingRegistry().createAlgorithmById(alg_id)


def test_inputs_without_crs_are_detected(scene_tif, nocrs_tif, tmp_path):
    context = QgsProcessingContext()
    compress, decompress = alg("sarcodec:compress"), alg("sarcodec:decompress")
    assert compress.input_without_crs({"INPUT": str(nocrs_tif)}, context)
    assert compress.input_without_crs({"INPUT": str(scene_tif)}, context) is None
    for tif in (scene_tif, nocrs_tif):
        processing.run("sarcodec:compress", {"INPUT": str(tif), "OUTPUT": str(tmp_path / f"{tif.stem}.npz")},
                       feedback=RecordingFeedback())
    assert decompress.input_without_crs({"INPUT": str(tmp_path / "nocrs.npz")}, context) == "nocrs.npz"
    assert decompress.input_without_crs({"INPUT": str(tmp_path / "scene.npz")}, context) is None


@pytest.mark.parametrize("answer", ["EPSG:32631", None])
def test_dialog_fills_crs_from_the_projection_selector(nocrs_tif, tmp_path, monkeypatch, qgis_iface, answer):
    from sarcodec_plugin import dialog as dialog_module

    monkeypatch.setattr(qgis_iface, "browserModel", lambda: None, raising=False)  # pytest-qgis's stub lacks it

    asked: list[str] = []

    def fake_selector(parent, name, georeferenced=True):
        asked.append(name)
        assert georeferenced  # nocrs.tif has a geotransform: a CRS alone places it
        return QgsCoordinateReferenceSystem(answer) if answer else None

    monkeypatch.setattr(dialog_module, "ask_for_crs", fake_selector)
    layer = QgsRasterLayer(str(nocrs_tif), "nocrs")
    QgsProject.instance().addMapLayer(layer)  # the dialog's layer combo lists project layers
    compress = alg("sarcodec:compress")
    dlg = compress.createCustomParametersWidget(None)
    assert isinstance(dlg, dialog_module.CrsPromptingDialog)
    dlg.setParameters({"INPUT": layer, "OUTPUT": str(tmp_path / "d.npz")})
    dlg.prompt_for_missing_crs()
    assert asked == ["nocrs"]
    crs = dlg.createProcessingParameters().get("CRS")
    if answer:
        assert isinstance(crs, QgsCoordinateReferenceSystem) and crs.authid() == answer
    else:
        assert not crs
    dlg.setParameters({"INPUT": layer, "OUTPUT": str(tmp_path / "d.npz"), "CRS": "EPSG:4326"})
    dlg.prompt_for_missing_crs()
    assert len(asked) == 1  # a CRS given: no question
    dlg.deleteLater()
    QgsProject.instance().removeMapLayer(layer.id())


def test_dialog_steps_tile_widgets_by_16_and_warns_about_unplaced_rasters(tmp_path, monkeypatch, qgis_iface):
    import warnings

    import rasterio

    from sarcodec_plugin import dialog as dialog_module
    from tests.conftest import speckled_scene

    monkeypatch.setattr(qgis_iface, "browserModel", lambda: None, raising=False)
    path = tmp_path / "unplaced.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16") as ds:
            ds.write(speckled_scene(64, 64, seed=5), 1)
    flags: list[bool] = []
    monkeypatch.setattr(dialog_module, "ask_for_crs", lambda parent, name, georeferenced=True: flags.append(
        georeferenced))
    layer = QgsRasterLayer(str(path), "unplaced")
    QgsProject.instance().addMapLayer(layer)
    dlg = alg("sarcodec:compress").createCustomParametersWidget(None)
    wrappers = dlg.mainWidget().wrappers
    assert wrappers["TILE_SIZE"].wrappedWidget().singleStep() == 16
    assert wrappers["OVERLAP"].wrappedWidget().singleStep() == 16
    dlg.setParameters({"INPUT": layer, "OUTPUT": str(tmp_path / "u.npz")})
    dlg.prompt_for_missing_crs()
    assert flags == [False]
    dlg.deleteLater()
    QgsProject.instance().removeMapLayer(layer.id())
