"""The algorithm dialog of compress/decompress: QGIS's standard one, asking for a CRS when the input has none.

Asking happens here, in the main thread, just before the run starts, so ``processAlgorithm`` never
touches ``iface`` or opens windows: headless runs (qgis_process, the modeler, batch) only warn.
Imported only from ``createCustomParametersWidget``, which QGIS calls from the desktop alone.
"""

from __future__ import annotations

import html
from typing import Any

from processing.gui.AlgorithmDialog import AlgorithmDialog
from processing.tools import dataobjects
from qgis.core import QgsCoordinateReferenceSystem, QgsMessageLog, QgsProcessingContext
from qgis.gui import QgsProjectionSelectionDialog

from .bridge import TILE_STEP, UNPLACED_CRS_NOTE, tr


def ask_for_crs(parent: Any, input_name: str, georeferenced: bool = True) -> QgsCoordinateReferenceSystem | None:
    """Open QGIS's projection selector; None when the user keeps no CRS (Cancel).

    Without a geotransform or GCPs a CRS cannot say where the image lies: the selector says so, so
    nobody assigns a UTM zone expecting the scene to land in the right place.
    """
    selector = QgsProjectionSelectionDialog(parent)
    selector.setWindowTitle(tr("No CRS for {0}").format(input_name))
    message = tr(
        "<b>{0}</b> has no coordinate reference system. Choose the CRS to assign to the output, "
        "or Cancel to continue without one."
    ).format(html.escape(input_name))
    if not georeferenced:
        message += " " + tr(UNPLACED_CRS_NOTE)
    selector.setMessage(message)
    if selector.exec_() and selector.crs().isValid():
        return selector.crs()
    return None


class CrsPromptingDialog(AlgorithmDialog):
    """Standard parameters dialog; before a run, fills the CRS parameter from the projection selector."""

    def __init__(self, algorithm: Any, parent: Any = None) -> None:
        super().__init__(algorithm, parent=parent)
        self.chosen_crs: QgsCoordinateReferenceSystem | None = None
        self.step_pixel_widgets()

    def step_pixel_widgets(self) -> None:
        """Tile size and overlap spin boxes step by 16: every other value is refused anyway."""
        wrappers = getattr(self.mainWidget(), "wrappers", {})
        for name in ("TILE_SIZE", "OVERLAP"):
            wrapper = wrappers.get(name)
            widget = wrapper.wrappedWidget() if wrapper is not None and hasattr(wrapper, "wrappedWidget") else None
            if widget is not None and hasattr(widget, "setSingleStep"):
                widget.setSingleStep(TILE_STEP)

    def runAlgorithm(self) -> None:  # noqa: N802 - QGIS API name
        try:
            self.prompt_for_missing_crs()
        except Exception as exc:  # never block a run because the prompt failed; processAlgorithm warns
            QgsMessageLog.logMessage(tr("CRS prompt skipped:") + f" {exc}", "sarcodec")
        super().runAlgorithm()

    def createProcessingParameters(self, *args: Any, **kwargs: Any) -> dict:  # noqa: N802 - QGIS API name
        parameters = super().createProcessingParameters(*args, **kwargs)
        if self.chosen_crs is not None and not parameters.get("CRS"):
            parameters["CRS"] = self.chosen_crs
        return parameters

    def prompt_for_missing_crs(self) -> None:
        """Ask once per run when neither the input nor the CRS parameter gives a valid CRS."""
        self.chosen_crs = None
        context: QgsProcessingContext = dataobjects.createContext()
        parameters = super().createProcessingParameters()
        algorithm = self.algorithm()
        if algorithm.parameterAsCrs(parameters, "CRS", context).isValid():
            return
        name = algorithm.input_without_crs(parameters, context)
        if not name:
            return
        georeferenced = getattr(algorithm, "input_is_georeferenced", lambda *_: True)(parameters, context)
        crs = ask_for_crs(self, name, georeferenced)
        if crs is None:
            return
        self.chosen_crs = crs
        wrapper = getattr(self.mainWidget(), "wrappers", {}).get("CRS")
        if wrapper is not None:
            wrapper.setParameterValue(crs, context)
