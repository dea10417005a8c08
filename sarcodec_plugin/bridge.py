"""Shared running code of the algorithms: engine loading, progress/cancel adapter, error mapping.

Like QGIS's ``GdalUtils``, this is the one place that knows how an algorithm talks to the engine, so
each algorithm file only declares parameters and maps them onto ``CompressOptions`` /
``DecompressOptions``. Nothing here imports torch at module import time: the engine is loaded in
``load_engine()`` when an algorithm runs.

Also here, because every algorithm needs them alike: enum values given as option numbers
(``qgis_process help`` tells users to pass numbers, while our enums store strings), SIGTERM turned
into a Cancel so a batch scheduler's stop leaves no temporary files, and the equivalent ``sarcodec``
command line written to the log.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
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
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .environment import add_dependency_paths, install_hint, missing_dependencies

T = TypeVar("T")


def _vocabulary() -> Any:
    """The engine's one vocabulary (``sarcodec.vocabulary``: pure Python, safe while QGIS starts).

    Without the engine the provider still loads and every algorithm says what to install (it cannot
    run), so its widgets only need placeholders then: nothing here repeats the engine's lists.
    """
    try:
        from sarcodec import vocabulary
    except ImportError:
        return SimpleNamespace(TIFF_COMPRESSIONS=("LZW",), OUTPUT_DTYPES=(), DEVICES=("auto", "cpu"),
                               CUDA_DEVICE=re.compile(r"cuda:\d+"), FALLBACK_DEFAULT_QUALITY=1,
                               FALLBACK_N_QUALITIES=1, TILE_STEP=16, MIN_TILE_SIZE=16, MAX_TILE_SIZE=16,
                               DEFAULT_TILE_SIZE=16, DEFAULT_OVERLAP=0)
    return vocabulary


VOCABULARY = _vocabulary()
TIFF_COMPRESSIONS = VOCABULARY.TIFF_COMPRESSIONS
OUTPUT_DTYPES = VOCABULARY.OUTPUT_DTYPES
DEVICES = VOCABULARY.DEVICES
CUDA_DEVICE = VOCABULARY.CUDA_DEVICE
FALLBACK_DEFAULT_QUALITY = VOCABULARY.FALLBACK_DEFAULT_QUALITY
FALLBACK_N_QUALITIES = VOCABULARY.FALLBACK_N_QUALITIES
TILE_STEP = VOCABULARY.TILE_STEP
MIN_TILE_SIZE, MAX_TILE_SIZE = VOCABULARY.MIN_TILE_SIZE, VOCABULARY.MAX_TILE_SIZE
DEFAULT_TILE_SIZE, DEFAULT_OVERLAP = VOCABULARY.DEFAULT_TILE_SIZE, VOCABULARY.DEFAULT_OVERLAP

ICON_PATH = Path(__file__).parent / "resources" / "icons" / "sarcodec.svg"
if not ICON_PATH.exists():  # running from the repository: resources/ sits beside the plugin package
    ICON_PATH = Path(__file__).resolve().parents[1] / "resources" / "icons" / "sarcodec.svg"

REPOSITORY = "https://github.com/sarcodec/sarcodec"
CPU_FALLBACK_MARK = "no CUDA GPU"  # the engine's "no CUDA GPU found: running on the CPU" notice


def tr(text: str) -> str:
    """Translate a user-visible string (QGIS loads the translations; untranslated text comes back as is)."""
    return QCoreApplication.translate("sarcodec", text)


def one_line(message: str) -> str:
    """Collapse whitespace so a message reads as one line in the log panel."""
    return " ".join(str(message).split())


def quality_levels() -> tuple[int, int]:
    """(default quality, number of qualities) of the default model, without paying for a torch import.

    The default model (codec v2) is numpy tables and reads in milliseconds; a v1 checkpoint would
    import torch (seconds, while QGIS starts), so for one the engine's values are used when it is
    already loaded and the documented v1 defaults (3 of 1..5) otherwise.
    """
    with contextlib.suppress(Exception):  # no engine, no constriction, a damaged model: fall back
        add_dependency_paths()
        from sarcodec.codec import model_store
        from sarcodec.resources import default_model_path

        path = default_model_path()
        if model_store.codec_of_file(path) == model_store.CODEC_V2:
            model, _, _ = model_store.load(path)
            return int(model.default_quality), int(model.n_qualities)
    model = sys.modules.get("sarcodec.codec.model")
    default = getattr(model, "DEFAULT_QUALITY", FALLBACK_DEFAULT_QUALITY)
    levels = getattr(model, "N_QUALITIES", FALLBACK_N_QUALITIES)
    return int(default), int(levels)


def visible_cuda_devices() -> int:
    """How many CUDA GPUs this process may use, found without importing torch (QGIS start-up is slow enough).

    torch's own count when it is already imported; otherwise the NVIDIA driver's GPU list in /proc,
    narrowed by CUDA_VISIBLE_DEVICES as CUDA itself does.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            return int(torch.cuda.device_count())
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        present = len([p for p in gpus.iterdir() if p.is_dir()]) if gpus.is_dir() else 0
    except OSError:
        present = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    entries = [e for e in visible.split(",") if e.strip()]
    valid = []
    for entry in entries:  # CUDA stops at the first entry it cannot use
        if entry.strip().startswith("-"):
            break
        valid.append(entry)
    return min(len(valid), present)


def device_options() -> list[str]:
    """DEVICE choices: auto, cpu, cuda (the current GPU), then cuda:N for each visible GPU."""
    return [*DEVICES, *(f"cuda:{i}" for i in range(visible_cuda_devices()))]


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
            tr("The sarcodec engine could not be imported") + f" ({type(exc).__name__}: {exc}). "
            + (install_hint([name]) if name in ("numpy", "rasterio", "torch", "constriction") else "")
        )) from None
    return SimpleNamespace(pipeline=pipeline, errors=errors, progress=progress)


def make_progress(engine: SimpleNamespace, feedback: QgsProcessingFeedback, phases: int = 1,
                  device: str = "auto") -> Any:
    """An engine ``Progress`` that drives the Processing progress bar, log and Cancel button.

    The engine starts one tiled run per band; with ``phases`` bands the bar spans all of them instead of
    restarting at 0 % for each. ``device`` is what the user asked for: falling back to the CPU is news
    worth an info line under ``auto`` or ``cpu``, and a warning only when a GPU was asked for.
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
            # pushInfo only: qgis_process and the dialog also log setProgressText, which showed every line twice
            self.feedback.pushInfo(label if "tile" in label or not total else f"{label}: {total} tiles")

        def on_update(self) -> None:
            if self.total:
                self.feedback.setProgress(100.0 * (max(self.phase, 0) + self.done / self.total) / self.phases)

        def info(self, message: str) -> None:
            super().info(message)
            self.feedback.pushInfo(message)

        def warn(self, message: str) -> None:
            super().warn(message)
            if CPU_FALLBACK_MARK in message and not device.startswith("cuda"):
                self.feedback.pushInfo(message)
            else:
                self.feedback.pushWarning(message)

        def cancelled(self) -> bool:
            return self.feedback.isCanceled() or super().cancelled()

    return FeedbackProgress()


def push_new_warnings(feedback: QgsProcessingFeedback, warnings: list[str], already: list[str]) -> None:
    """Log the result's warnings that progress did not already show (the engine reports some twice)."""
    for warning in warnings:
        if warning not in already:
            feedback.pushWarning(warning)


@contextlib.contextmanager
def signals_cancel(feedback: QgsProcessingFeedback) -> Iterator[list[str]]:
    """SIGTERM (and SIGINT, SIGHUP) during a run press Cancel instead of killing QGIS mid-write.

    ``timeout``, batch schedulers and systemd stop ``qgis_process`` with SIGTERM; its default action
    kills the process before the engine can remove its hidden temporary file. Here the signal only
    sets the feedback's Cancel, which the engine polls between batches: it then unwinds, removing
    its temporary files, and the run fails as cancelled. Handlers can only be installed from the main
    thread (qgis_process, the Python console); the desktop runs algorithms in a task thread, where
    the desktop's own Cancel button is the way to stop. The yielded list gets the signals' names.
    """
    fired: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def handler(signum: int, frame: Any) -> None:
        fired.append(signal.Signals(signum).name)
        feedback.cancel()

    wanted = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous: dict[int, Any] = {}
    for sig in wanted:
        with contextlib.suppress(OSError, ValueError):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield fired
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)


def run_engine(engine: SimpleNamespace, feedback: QgsProcessingFeedback, destination: str, call: Callable[[], T]) -> T:
    """Run one engine call; map its errors to one-line exceptions and leave no output behind on failure.

    A Cancel (or SIGTERM) that lands after the engine has published a file that did not exist before
    removes it, so "cancelled" always means "nothing written". When it replaced an existing file, the
    previous one is already gone: the complete new file is kept and the run reported as a success.
    """
    existed = Path(destination).exists()
    with signals_cancel(feedback) as signalled:
        try:
            if feedback.isCanceled():
                raise engine.errors.Cancelled("cancelled by the user")
            result = call()
            if feedback.isCanceled():
                if existed:
                    feedback.pushInfo(tr("Cancel came after the output was complete; the new file was kept."))
                    return result
                raise engine.errors.Cancelled("cancelled by the user")
            return result
        except BaseException as exc:
            if not existed:  # a read-only folder refuses even this (EROFS): the engine's error is what matters
                with contextlib.suppress(OSError):
                    Path(destination).unlink(missing_ok=True)
            if isinstance(exc, engine.errors.Cancelled):
                reason = tr("Stopped by {0}").format(signalled[0]) if signalled else tr("Cancelled by the user")
                raise QgsProcessingException(reason + ": " + tr("no output was written.")) from None
            if isinstance(exc, engine.errors.SarcodecError):
                raise QgsProcessingException(one_line(str(exc))) from None
            if isinstance(exc, MemoryError):
                raise QgsProcessingException(tr("Out of memory: try a smaller tile size or batch size.")) from None
            if isinstance(exc, Exception):
                feedback.pushDebugInfo(traceback.format_exc())
                message = one_line(f"{type(exc).__name__}: {exc}")
                raise QgsProcessingException(tr("Unexpected engine error:") + f" {message}") from None
            raise


def log_command(feedback: QgsProcessingFeedback, arguments: Sequence[str]) -> None:
    """Show the equivalent command line, as GDAL's algorithms do, so a GUI run can be reused in a script."""
    feedback.pushCommandInfo("sarcodec " + shlex.join(str(a) for a in arguments))


def crs_text(crs: QgsCoordinateReferenceSystem) -> str | None:
    """The engine's CRS vocabulary: "EPSG:XXXX" when QGIS knows an authority id, WKT otherwise."""
    if not crs.isValid():
        return None
    authid = crs.authid()
    if authid and ":" in authid and not authid.upper().startswith("USER:"):
        return authid
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)


def is_georeferenced(geo: Any) -> bool:
    """True when engine geo-metadata places the image (a geotransform or GCPs), not only names a CRS."""
    if not isinstance(geo, dict):
        return False
    gcps = geo.get("gcps")
    return "transform" in geo or bool(isinstance(gcps, dict) and gcps.get("points"))


UNPLACED_CRS_NOTE = (
    "The input has no geotransform and no GCPs: a CRS alone places the image at the CRS origin "
    "(pixel 0, 0 at coordinates 0, 0, one unit per pixel), not where it was acquired."
)


def raster_file_path(layer: QgsRasterLayer | None, raw: Any) -> str:
    """The GDAL path behind a raster layer parameter, or a one-line reason why there is none.

    A layer opened inside an archive (``/vsizip/scene.zip/measurement/x.tiff``, how QGIS opens a
    Sentinel-1 ``.zip``) keeps its ``/vsi`` prefix and member path: the engine reads those directly.
    """
    if (layer is None or not layer.isValid()) and isinstance(raw, str) and raw.startswith("/vsi"):
        # Processing only loads layers from strings naming an existing file; GDAL opens /vsi paths itself
        layer = QgsRasterLayer(raw, Path(raw).name, "gdal")
    if layer is None or not layer.isValid():
        shown = raw.source() if hasattr(raw, "source") else raw
        if hasattr(raw, "type") and callable(raw.type) and not isinstance(raw, QgsRasterLayer):
            raise QgsProcessingException(tr("Input is not a raster layer:") + f" {shown}")
        if isinstance(shown, str) and Path(shown).is_file():
            raise QgsProcessingException(tr("Input is not a raster GDAL can read:") + f" {shown}")
        raise QgsProcessingException(tr("Input raster not found or not readable:") + f" {shown}")
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            tr("Input must be a file-based GDAL raster, not a layer of provider") + f" '{layer.providerType()}': "
            f"{layer.name()}"
        )
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or layer.source()
    if not Path(path).is_file():
        raise QgsProcessingException(tr("Input raster is not a local file:") + f" {path}")
    prefix, suffix = parts.get("vsiPrefix") or "", parts.get("vsiSuffix") or ""
    if prefix:
        return f"{prefix}{path}{suffix}"
    return path


class SarcodecAlgorithm(QgsProcessingAlgorithm):
    """What every sarcodec algorithm shares: icon, group, help, dependency check, advanced parameters.

    ``HELP`` is plain sentences (no HTML): ``qgis_process help`` prints it verbatim, and the dialog's
    help panel shows plain text as well as HTML.
    """

    NAME = ""
    DISPLAY_NAME = ""
    SHORT_DESCRIPTION = ""
    HELP = ""

    def tr(self, text: str) -> str:
        return tr(text)

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802 - QGIS API name
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr("SAR compression")

    def groupId(self) -> str:  # noqa: N802 - QGIS API name
        return "sarcompression"

    def shortDescription(self) -> str:  # noqa: N802 - QGIS API name
        return self.tr(self.SHORT_DESCRIPTION)

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API name
        """The help, unwrapped: the help panel turns source line breaks into visible ones."""
        return one_line(self.tr(one_line(self.HELP)))

    def helpUrl(self) -> str:  # noqa: N802 - QGIS API name
        return f"{REPOSITORY}#readme"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:  # noqa: N802 - QGIS API name (the modeler draws this one)
        return str(ICON_PATH)

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
                "DEVICE", self.tr("Device"), options=device_options(), defaultValue="auto", usesStaticStrings=True,
            )
        )
        self.addAdvanced(
            QgsProcessingParameterNumber(
                "BATCH_SIZE", self.tr("Batch size (0 = automatic)"), QgsProcessingParameterNumber.Integer,
                defaultValue=0, minValue=0, maxValue=4096,
            )
        )
        self.addAdvanced(
            QgsProcessingParameterFile(
                "MODEL", model_label, optional=True,
                fileFilter=self.tr("sarcodec models") + " (*.npz *.pt);;" + self.tr("All files") + " (*.*)",
            )
        )

    # ------------------------------------------------------------------ enums given by number

    def _enum_definitions(self) -> list[QgsProcessingParameterEnum]:
        return [p for p in self.parameterDefinitions() if isinstance(p, QgsProcessingParameterEnum)]

    @staticmethod
    def _enum_text(definition: QgsProcessingParameterEnum, value: Any) -> Any:
        """An option string for ``value`` given as the string or as its number; other values unchanged.

        ``qgis_process help`` lists our options by number ("2: ZSTD") and ``gdal:*`` take numbers, so
        ``TIFF_COMPRESS=2`` must mean ZSTD although the enum stores strings (stable in saved models).
        """
        options = definition.options()
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and float(value).is_integer() and 0 <= int(value) < len(options):
            return options[int(value)]
        if isinstance(value, str):
            text = value.strip()
            if text in options:
                return text
            if text.isdigit() and int(text) < len(options):
                return options[int(text)]
            lowered = {o.lower(): o for o in options}
            if text.lower() in lowered:
                return lowered[text.lower()]
        return value

    def normalised_parameters(self, parameters: dict) -> dict:
        """``parameters`` with enum numbers replaced by their option strings."""
        fixed = dict(parameters)
        for definition in self._enum_definitions():
            if definition.name() in fixed:
                fixed[definition.name()] = self._enum_text(definition, fixed[definition.name()])
        return fixed

    def enumText(self, parameters: dict, name: str, context: QgsProcessingContext) -> str:  # noqa: N802
        """The option string of enum ``name``, whether the caller passed the string or its number.

        A ``cuda:N`` beyond the GPUs seen at start-up goes to the engine, which says whether it exists.
        """
        definition = self.parameterDefinition(name)
        value = self._enum_text(definition, parameters.get(name))
        if name == "DEVICE" and isinstance(value, str) and CUDA_DEVICE.fullmatch(value.strip().lower()):
            return value.strip().lower()
        return self.parameterAsEnumString({name: value}, name, context) or str(definition.defaultValue())

    # ------------------------------------------------------------------ checks before the run

    def checkParameterValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:  # noqa: N802
        """Accept enum numbers, refuse unknown CRSs, and let processAlgorithm explain a bad INPUT in one line."""
        fixed = self.normalised_parameters(parameters)
        device = fixed.get("DEVICE")
        if isinstance(device, str) and CUDA_DEVICE.fullmatch(device.strip().lower()):
            fixed["DEVICE"] = "cuda"  # any cuda:N is the engine's to check (the GPU list is from start-up)
        crs_problem = self.crs_parameter_problem(fixed, context)
        if crs_problem:
            return False, crs_problem
        ok, message = super().checkParameterValues(fixed, context)
        if ok:
            return self.checkOptionValues(fixed, context)
        bad = [
            p.name()
            for p in self.parameterDefinitions()
            if not p.checkValueIsAcceptable(fixed.get(p.name(), p.defaultValue()), context)
        ]
        if bad == ["INPUT"] and fixed.get("INPUT") not in (None, ""):
            return self.checkOptionValues(fixed, context)
        return ok, one_line(message)

    def checkOptionValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:  # noqa: N802
        """Algorithm-specific checks of option values, run before any model is loaded; override."""
        return True, ""

    def crs_parameter_problem(self, parameters: dict, context: QgsProcessingContext) -> str:
        """A reason when the CRS parameter is given but QGIS cannot make a valid CRS of it (EPSG:999999)."""
        if self.parameterDefinition("CRS") is None:
            return ""
        raw = parameters.get("CRS")
        if raw is None or raw == "" or (isinstance(raw, QgsCoordinateReferenceSystem) and not raw.authid()
                                        and not raw.isValid() and not raw.toWkt()):
            return ""
        if self.parameterAsCrs(parameters, "CRS", context).isValid():
            return ""
        shown = raw.authid() or raw.toWkt() if isinstance(raw, QgsCoordinateReferenceSystem) else raw
        return one_line(self.tr("Invalid CRS:") + f" {shown} " + self.tr(
            "is not a coordinate reference system QGIS knows (use e.g. EPSG:32630, or WKT)."))
