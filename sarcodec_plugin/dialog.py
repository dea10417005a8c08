"""The algorithm dialog of compress/decompress: QGIS's standard one, asking for a CRS when the input has none.

Asking happens here, in the main thread, just before the run starts, so ``processAlgorithm`` never
touches ``iface`` or opens windows: headless runs (qgis_process, the modeler, batch) only warn.
Imported only from ``createCustomParametersWidget``, which QGIS calls from the desktop alone.
"""

from __future__ import annotations

from typing import Any

from processing.gui.AlgorithmDialog import AlgorithmDialog
from processing.tools import dataobjects
from qgis.core import QgsCoordinateReferenceSystem, QgsMessageLog, QgsProcessingContext
from qgis.gui import QgsProjectionSelectionDialog


def ask_for_crs(parent: Any, input_name: str) -> QgsCoordinateReferenceSystem | None:
    """Open QGIS's projection selector; None when the user keeps no CRS (Cancel)."""
    selector = QgsProjectionSelectionDialog(parent)
    selector.setWindowTitle(f"No CRS for {input_name}")
    selector.setMessage(
        f"<b>{input_name}</b> has no coordinate reference system. Choose the CRS to assign to the output, "
        "or Cancel to continue without one."
    )
    if selector.exec_() and selector.crs().isValid():
        return selector.crs()
    return None


class CrsPromptingDialog(AlgorithmDialog):
    """Standard parameters dialog; before a run, fills the CRS parameter from the projection selector."""

    def __init__(self, algorithm: Any, parent: Any = None) -> None:
        super().__init__(algorithm, parent=parent)
        self.chosen_crs: QgsCoordinateReferenceSystem | None = None

    def runAlgorithm(self) -> None:  # noqa: N802 - QGIS API name
        try:
            self.prompt_for_missing_crs()
        except Exception as exc:  # never block a run because the prompt failed; processAlgorithm warns
            QgsMessageLog.logMessage(f"CRS prompt skipped: {exc}", "sarcodec")
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
        crs = ask_for_crs(self, name)
        if crs is None:
            return
        self.chosen_crs = crs
        wrapper = getattr(self.mainWidget(), "wrappers", {}).get("CRS")
        if wrapper is not None:
            wrapper.setParameterValue(crs, context)
