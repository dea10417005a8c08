"""Shared running code of the algorithms: engine loading, progress/cancel adapter, error mapping.

Like QGIS's ``GdalUtils``, this is the one place that knows how an algorithm talks to the engine, so
each algorithm file only declares parameters and maps them onto ``CompressOptions`` /
``DecompressOptions``. Nothing here imports torch at module import time: the engine is loaded in
``load_engine()`` when an algorithm runs.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProviderRegistry,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from .environment import add_dependency_paths, install_hint, missing_dependencies

T = TypeVar("T")

ICON_PATH = Path(__file__).parent / "resources" / "icons" / "sarcodec.svg"
if not ICON_PATH.exists():  # running from the repository: resources/ sits beside the plugin package
    ICON_PATH = Path(__file__).resolve().parents[1] / "resources" / "icons" / "sarcodec.svg"

# Mirrors of the engine's option vocabularies, so widgets can be built without importing the engine
# (tests check they match sarcodec.codec.pipeline).
TIFF_COMPRESSIONS = ("LZW", "DEFLATE", "ZSTD", "LERC", "NONE")
OUTPUT_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
FALLBACK_DEFAULT_QUALITY = 3
FALLBACK_N_QUALITIES = 5
REPOSITORY = "https://github.com/sarcodec/sarcodec"


def quality_levels() -> tuple[int, int]:
    """(default quality, number of qualities) of the shipped model, without paying for a torch import.

    The model module imports torch (seconds), and this runs while QGIS starts; so the real values are
    used when the engine is already loaded and the documented defaults (3 of 1..5) otherwise.
    """
    model = sys.modules.get("sarcodec.codec.model")
    default = getattr(model, "DEFAULT_QUALITY", FALLBACK_DEFAULT_QUALITY)
    levels = getattr(model, "N_QUALITIES", FALLBACK_N_QUALITIES)
    return int(default), int(levels)


def load_engine() -> SimpleNamespace:
    """Import the engine's API, or raise a one-line QgsProcessingException saying what to install."""
    add_dependency_paths()
    missing = missing_dependencies()
    if missing:
        raise QgsProcessingException(install_hint(missing))
    try:
        from sarcodec import errors, progress
        from sarcodec.codec import pipeline
    except ImportError as exc:  # a dependency that is present but broken (ABI mismatch, missing .so)
        name = (exc.name or str(exc)).split(".")[0]
        raise QgsProcessingException(one_line(
            f"The sarcodec engine could not be imported ({type(exc).__name__}: {exc}). "
            + (install_hint([name]) if name in ("numpy", "rasterio", "torch", "constriction") else "")
        )) from None
    return SimpleNamespace(pipeline=pipeline, errors=errors, progress=progress)


def make_progress(engine: SimpleNamespace, feedback: QgsProcessingFeedback, phases: int = 1) -> Any:
    """An engine ``Progress`` that drives the Processing progress bar, log and Cancel button.

    The engine starts one tiled run per band; with ``phases`` bands the bar spans all of them instead of
    restarting at 0 % for each.
    """

    class FeedbackProgress(engine.progress.BaseProgress):
        """Forwards tile counts to ``setProgress`` and reads Cancel from ``isCanceled``."""

        def __init__(self) -> None:
            super().__init__()
            self.feedback = feedback
            self.phases = max(int(phases), 1)
            self.phase = -1

        def start(self, total: int, label: str) -> None:
            self.phase = min(self.phase + 1, self.phases - 1)
            super().start(total, label)
            text = label if "tile" in label or not total else f"{label}: {total} tiles"
            self.feedback.setProgressText(text)
            self.feedback.pushInfo(text)

        def on_update(self) -> None:
            if self.total:
                self.feedback.setProgress(100.0 * (max(self.phase, 0) + self.done / self.total) / self.phases)

        def info(self, message: str) -> None:
            super().info(message)
            self.feedback.pushInfo(message)

        def warn(self, message: str) -> None:
            super().warn(message)
            self.feedback.pushWarning(message)

        def cancelled(self) -> bool:
            return self.feedback.isCanceled() or super().cancelled()

    return FeedbackProgress()


def push_new_warnings(feedback: QgsProcessingFeedback, warnings: list[str], already: list[str]) -> None:
    """Log the result's warnings that progress did not already show (the engine reports some twice)."""
    for warning in warnings:
        if warning not in already:
            feedback.pushWarning(warning)


def run_engine(engine: SimpleNamespace, feedback: QgsProcessingFeedback, destination: str, call: Callable[[], T]) -> T:
    """Run one engine call; map its errors to one-line exceptions and leave no output behind on failure."""
    existed = Path(destination).exists()
    try:
        if feedback.isCanceled():
            raise engine.errors.Cancelled("cancelled by the user")
        result = call()
        if feedback.isCanceled():  # cancelled after the last batch: the user still asked for nothing
            raise engine.errors.Cancelled("cancelled by the user")
        return result
    except BaseException as exc:
        if not existed:  # a read-only folder refuses even this (EROFS): the engine's error is what matters
            with contextlib.suppress(OSError):
                Path(destination).unlink(missing_ok=True)
        if isinstance(exc, engine.errors.Cancelled):
            raise QgsProcessingException("Cancelled by the user: no output was written.") from None
        if isinstance(exc, engine.errors.SarcodecError):
            raise QgsProcessingException(str(exc)) from None
        if isinstance(exc, MemoryError):
            raise QgsProcessingException("Out of memory: try a smaller tile size or batch size.") from None
        if isinstance(exc, Exception):
            feedback.pushDebugInfo(traceback.format_exc())
            message = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise QgsProcessingException(f"Unexpected engine error: {message}") from None
        raise


def one_line(message: str) -> str:
    """Collapse whitespace so a message reads as one line in the log panel."""
    return " ".join(str(message).split())


def crs_text(crs: QgsCoordinateReferenceSystem) -> str | None:
    """The engine's CRS vocabulary: "EPSG:XXXX" when QGIS knows an authority id, WKT otherwise."""
    if not crs.isValid():
        return None
    authid = crs.authid()
    if authid and ":" in authid and not authid.upper().startswith("USER:"):
        return authid
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


def raster_file_path(layer: QgsRasterLayer | None, raw: Any) -> str:
    """The file behind a raster layer parameter, or a one-line reason why there is none."""
    if layer is None or not layer.isValid():
        shown = raw.source() if hasattr(raw, "source") else raw
        if hasattr(raw, "type") and callable(raw.type) and not isinstance(raw, QgsRasterLayer):
            raise QgsProcessingException(f"Input is not a raster layer: {shown}")
        if isinstance(shown, str) and Path(shown).is_file():
            raise QgsProcessingException(f"Input is not a raster GDAL can read: {shown}")
        raise QgsProcessingException(f"Input raster not found or not readable: {shown}")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"Input must be a file-based GDAL raster, not a '{layer.providerType()}' layer: {layer.name()}"
        )
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or layer.source()
    if not Path(path).is_file():
        raise QgsProcessingException(f"Input raster is not a local file: {path}")
    return path


class SarcodecAlgorithm(QgsProcessingAlgorithm):
    """What every sarcodec algorithm shares: icon, help, dependency check, advanced parameters."""

    NAME = ""
    DISPLAY_NAME = ""
    HELP = ""

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802 - QGIS API name
        return self.DISPLAY_NAME

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        """The HTML help, unwrapped: the help panel turns source line breaks into visible ones."""
        return " ".join(self.HELP.split())

    def helpUrl(self) -> str:  # noqa: N802 - QGIS API name
        return f"{REPOSITORY}#readme"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def tags(self) -> list[str]:
        return ["sar", "sentinel-1", "compression", "neural", "codec", "npz"]

    def createInstance(self) -> QgsProcessingAlgorithm:  # noqa: N802 - QGIS API name
        return type(self)()

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 - QGIS API name
        """Checked by the toolbox before the dialog opens: say what to install instead of failing later."""
        add_dependency_paths()
        missing = missing_dependencies()
        return (not missing, install_hint(missing) if missing else "")

    def addAdvanced(self, parameter: QgsProcessingParameterDefinition) -> None:  # noqa: N802 - Qt naming
        """Add a parameter under the dialog's "Advanced parameters" group."""
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(parameter)

    def addEngineParameters(self, model_label: str) -> None:  # noqa: N802 - Qt naming
        """DEVICE, BATCH_SIZE and MODEL: the engine options compress and decompress share, declared once."""
        self.addAdvanced(
            QgsProcessingParameterEnum(
                "DEVICE", "Device", options=list(DEVICES), defaultValue="auto", usesStaticStrings=True,
            )
        )
        self.addAdvanced(
            QgsProcessingParameterNumber(
                "BATCH_SIZE", "Batch size (0 = automatic)", QgsProcessingParameterNumber.Integer,
                defaultValue=0, minValue=0, maxValue=4096,
            )
        )
        self.addAdvanced(
            QgsProcessingParameterFile(
                "MODEL", model_label, optional=True,
                fileFilter="sarcodec checkpoints (*.pt *.pth *.ckpt);;All files (*.*)",
            )
        )

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:  # noqa: N802
        """Let processAlgorithm explain a bad INPUT in one line instead of Processing's generic message."""
        ok, message = super().checkParameterValues(parameters, context)
        if ok:
            return ok, message
        bad = [
            p.name()
            for p in self.parameterDefinitions()
            if not p.checkValueIsAcceptable(parameters.get(p.name(), p.defaultValue()), context)
        ]
        if bad == ["INPUT"] and parameters.get("INPUT") not in (None, ""):
            return True, ""
        return ok, one_line(message)
