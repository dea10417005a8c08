"""Driven inside a real QGIS desktop (``qgis --code``) by test_desktop.py; writes a JSON report and quits.

Steps: add a raster layer without CRS; open the compress algorithm dialog, screenshot it, run it and
answer the projection selector that the plugin opens; then run the decompress dialog and check the
result layer is in the project with the SAR grey style and the chosen CRS.
"""

from __future__ import annotations

import json
import os
import traceback
from pathlib import Path

import processing
from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsProject, QgsSettings
from qgis.gui import QgsProjectionSelectionDialog
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

WORK = Path(os.environ["SARCODEC_DESKTOP_WORK"])
ARTIFACTS = Path(os.environ["SARCODEC_DESKTOP_ARTIFACTS"])
CHOSEN_CRS = "EPSG:32630"
report: dict = {"steps": [], "crs_prompted": False}
keep: list = []  # dialogs and timers stay alive while the event loop runs


def done(error: str | None = None) -> None:
    report["error"] = error
    (WORK / "report.json").write_text(json.dumps(report, indent=2))
    QgsProject.instance().setDirty(False)
    QgsApplication.instance().exit(0)


def guarded(step):
    def run(*args):
        try:
            step(*args)
        except Exception:
            done(traceback.format_exc())

    return run


def shoot(widget, name: str) -> None:
    QApplication.processEvents()
    path = ARTIFACTS / name
    widget.grab().save(str(path))
    report["steps"].append(f"screenshot {name} ({path.stat().st_size} bytes)")


def answer_crs_prompt() -> None:
    """Play the user: pick a CRS in the projection selector the plugin opened."""
    widget = QApplication.activeModalWidget()
    if isinstance(widget, QgsProjectionSelectionDialog):
        report["crs_prompted"] = True
        shoot(widget, "crs_prompt.png")
        widget.setCrs(QgsCoordinateReferenceSystem(CHOSEN_CRS))
        widget.accept()
    else:
        QTimer.singleShot(200, answer_crs_prompt)


@guarded
def start() -> None:
    report["plugin_loaded"] = "sarcodec_plugin" in plugins
    report["provider"] = QgsApplication.processingRegistry().providerById("sarcodec") is not None
    QgsSettings().setValue("/projections/unknownCrsBehavior", "NoAction")
    layer = iface.addRasterLayer(str(WORK / "nocrs.tif"), "nocrs")
    report["input_layer_crs_valid"] = layer.crs().isValid()
    dialog = processing.createAlgorithmDialog(
        "sarcodec:compress", {"INPUT": layer, "OUTPUT": str(WORK / "scene.npz"), "QUALITY": 3}
    )
    keep.append(dialog)
    dialog.show()
    shoot(dialog, "compress_dialog.png")
    dialog.algorithmFinished.connect(compressed)
    QTimer.singleShot(300, answer_crs_prompt)
    dialog.runAlgorithm()


@guarded
def compressed(ok: bool, results: dict) -> None:
    report["compress_ok"] = ok
    report["compress_results"] = {k: v for k, v in results.items() if isinstance(v, (int, float, str))}
    if not ok:
        return done("compress failed in the dialog")
    dialog = processing.createAlgorithmDialog(
        "sarcodec:decompress", {"INPUT": str(WORK / "scene.npz"), "OUTPUT": str(WORK / "restored.tif")}
    )
    keep.append(dialog)
    dialog.show()
    shoot(dialog, "decompress_dialog.png")
    dialog.algorithmFinished.connect(decompressed)
    dialog.runAlgorithm()


@guarded
def decompressed(ok: bool, results: dict) -> None:
    report["decompress_ok"] = ok
    QApplication.processEvents()
    layers = [
        {"name": lyr.name(), "source": lyr.source(), "renderer": lyr.renderer().type() if lyr.renderer() else None,
         "crs": lyr.crs().authid()}
        for lyr in QgsProject.instance().mapLayers().values()
    ]
    report["project_layers"] = layers
    restored = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source() == str(WORK / "restored.tif")]
    if restored:
        iface.setActiveLayer(restored[0])
        iface.zoomToActiveLayer()
    QTimer.singleShot(1000, finish)


@guarded
def finish() -> None:
    shoot(iface.mainWindow(), "qgis_with_restored_layer.png")
    done()


timer = QTimer()
timer.setSingleShot(True)
timer.timeout.connect(start)
timer.start(1500)
keep.append(timer)
