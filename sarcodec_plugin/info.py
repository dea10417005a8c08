"""``sarcodec:info``: the validated header of a container, for checks before decompressing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
)

from .bridge import SarcodecAlgorithm, load_engine, one_line

HELP = """<p>Reads and validates the header of a sarcodec <code>.npz</code> container (size, bands, data type,
CRS, model, quality, chunks) without decoding it, like <code>sarcodec info</code>. The header is returned
as JSON in the HEADER output and listed in the log.</p>"""


class InfoAlgorithm(SarcodecAlgorithm):
    """Exposes ``container_info`` so models and scripts can inspect containers."""

    NAME = "info"
    DISPLAY_NAME = "Container information"
    HELP = HELP

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterFile("INPUT", "Container (.npz)", extension="npz"))
        self.addOutput(QgsProcessingOutputString("HEADER", "Container header (JSON)"))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        engine = load_engine()
        source = self.parameterAsFile(parameters, "INPUT", context)
        if not source or not Path(source).is_file():
            raise QgsProcessingException(f"Container not found: {source or parameters.get('INPUT')}")
        try:
            header: dict[str, Any] = engine.pipeline.container_info(source)
        except engine.errors.SarcodecError as exc:
            raise QgsProcessingException(str(exc)) from None
        for key, value in header.items():
            feedback.pushInfo(f"{key}: {one_line(json.dumps(value, default=str))}")
        return {"HEADER": json.dumps(header, default=str)}
