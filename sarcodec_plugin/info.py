"""``sarcodec:info``: the validated header of a container, for checks before decompressing.

The log and the SUMMARY output read like ``sarcodec info``'s first lines (size, bands, type, CRS,
quality, bits per pixel); the numbers are separate outputs so a model can branch on them, and the
full header stays available as JSON (HEADER) for scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
)

from .bridge import SarcodecAlgorithm, is_georeferenced, load_engine, one_line

HELP = """Reads and validates the header of a sarcodec .npz container without decoding it, like sarcodec
info. The log and the SUMMARY output give the size, bands, data type, CRS, model, quality and bits per
pixel; WIDTH, HEIGHT, BANDS, QUALITY and BPP are numeric outputs for models, and HEADER holds the whole
header as JSON."""


def crs_label(geo: Any) -> str:
    """EPSG:XXXX (or the CRS's name) of the container's CRS, "none" without one."""
    if not isinstance(geo, dict):
        return "none"
    gcps = geo.get("gcps")
    wkt = geo.get("crs") or (gcps.get("crs") if isinstance(gcps, dict) else None)
    if not wkt:
        return "none"
    crs = QgsCoordinateReferenceSystem.fromWkt(str(wkt))
    if not crs.isValid():
        return "invalid"
    return crs.authid() or crs.description() or "custom"


class InfoAlgorithm(SarcodecAlgorithm):
    """Exposes ``container_info`` so models and scripts can inspect containers."""

    NAME = "info"
    DISPLAY_NAME = "Container information"
    SHORT_DESCRIPTION = "Reads the header of a sarcodec .npz container: size, bands, CRS, quality, bits per pixel."
    HELP = HELP

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterFile("INPUT", self.tr("Container (.npz)"), extension="npz"))
        self.addOutput(QgsProcessingOutputString("SUMMARY", self.tr("Summary")))
        self.addOutput(QgsProcessingOutputNumber("WIDTH", self.tr("Width (pixels)")))
        self.addOutput(QgsProcessingOutputNumber("HEIGHT", self.tr("Height (pixels)")))
        self.addOutput(QgsProcessingOutputNumber("BANDS", self.tr("Bands")))
        self.addOutput(QgsProcessingOutputNumber("QUALITY", self.tr("Quality level")))
        self.addOutput(QgsProcessingOutputNumber("BPP", self.tr("Bits per pixel")))
        self.addOutput(QgsProcessingOutputString("HEADER", self.tr("Container header (JSON)")))

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        engine = load_engine()
        source = self.parameterAsFile(parameters, "INPUT", context)
        if not source or not Path(source).is_file():
            raise QgsProcessingException(self.tr("Container not found:") + f" {source or parameters.get('INPUT')}")
        try:
            header: dict[str, Any] = engine.pipeline.container_info(source)
        except engine.errors.SarcodecError as exc:
            raise QgsProcessingException(one_line(str(exc))) from None
        shape = header.get("shape")
        if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) for v in shape)):
            raise QgsProcessingException(self.tr("Damaged container: its header has no valid shape:") + f" {source}")
        bands, height, width = shape
        file_bytes = int((header.get("file") or {}).get("file_bytes") or Path(source).stat().st_size)
        bpp = 8.0 * file_bytes / max(bands * height * width, 1)
        model = header.get("model") or {}
        geo = header.get("geo")
        lines = [
            self.tr("{0}: {1} x {2} px, {3} band(s), {4}, {5} domain").format(
                Path(source).name, width, height, bands, header.get("dtype"), header.get("domain")),
            self.tr("CRS: {0}{1}").format(crs_label(geo), "" if is_georeferenced(geo) else self.tr(
                " (no geotransform or GCPs)")),
            self.tr("Model: {0}, quality {1}").format(model.get("id", "?"), header.get("quality")),
            self.tr("Size: {0:,} bytes, {1:.3f} bits per pixel").format(file_bytes, bpp),
        ]
        for line in lines:
            feedback.pushInfo(line)
        return {
            "SUMMARY": "; ".join(lines),
            "WIDTH": width,
            "HEIGHT": height,
            "BANDS": bands,
            "QUALITY": int(header["quality"]) if isinstance(header.get("quality"), int) else None,
            "BPP": bpp,
            "HEADER": json.dumps(header, default=str),
        }
