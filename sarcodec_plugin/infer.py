"""``sarcodec:infer``: run a fully-convolutional model (ONNX, or trusted TorchScript) over a whole raster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from .bridge import (
    DEVICES,
    OUTPUT_DTYPES,
    SarcodecAlgorithm,
    load_engine,
    log_command,
    make_progress,
    push_new_warnings,
    raster_file_path,
    run_engine,
)
from .styling import SarStylePostProcessor

FROM_MODEL = "from the model"
AUTOMATIC = "automatic"
CONVENTIONS = (FROM_MODEL, "raw", "log_db", "range")

HELP = """Runs a fully-convolutional model over a whole SAR raster with sarcodec's tiled engine: a
despeckling or restoration network (scale 1) or a super-resolution one (scale 2, 4), of any size of scene,
with overlapping tiles blended without seams, nodata kept, memory that does not grow with the scene, and
the transform (or GCPs) scaled for the output. ONNX models are the safe default for files from elsewhere;
a TorchScript file runs code when loaded and is only accepted with Trust TorchScript, for models you made
yourself. Scale, channels and the value convention come from the model's metadata (sarcodec.scale,
sarcodec.convention), or from these parameters, and are checked on a probe tile before anything is written.
Value convention: raw pixel values, log_db (10*log10 of intensity; dB inputs as they are), or range (values
mapped from LOW..HIGH to 0..1 and back). Bands picks and orders the input bands fed to the model's channels
(e.g. 2,1). The log shows the equivalent sarcodec infer command line."""


class InferAlgorithm(SarcodecAlgorithm):
    """Maps Processing parameters onto ``sarcodec.infer.run.infer_raster``."""

    NAME = "infer"
    DISPLAY_NAME = "Run a model over a SAR raster"
    SHORT_DESCRIPTION = "Runs an ONNX (or trusted TorchScript) despeckling or super-resolution model over a raster."
    HELP = HELP

    def group(self) -> str:
        return self.tr("SAR processing")

    def groupId(self) -> str:  # noqa: N802 - QGIS API name
        return "sarprocessing"

    def tags(self) -> list[str]:
        return ["sar", "sentinel-1", "onnx", "despeckling", "super-resolution", "tiled", "inference"]

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterFile(
            "MODEL", self.tr("Model file (.onnx, or a trusted TorchScript .pt)"),
            fileFilter=self.tr("Models") + " (*.onnx *.pt *.pth);;" + self.tr("All files") + " (*.*)"))
        self.addParameter(QgsProcessingParameterEnum(
            "CONVENTION", self.tr("Value convention"), options=list(CONVENTIONS), defaultValue=FROM_MODEL,
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            "BANDS", self.tr("Bands for the model's channels (e.g. 2,1; empty = all)"), optional=True))
        self.addAdvanced(QgsProcessingParameterNumber(
            "SCALE", self.tr("Scale factor (0 = from the model or measured)"), QgsProcessingParameterNumber.Double,
            defaultValue=0.0, minValue=0.0, maxValue=16.0))
        self.addAdvanced(QgsProcessingParameterString(
            "RANGE", self.tr("Value range LOW,HIGH for the range convention"), optional=True))
        self.addAdvanced(QgsProcessingParameterNumber(
            "TILE_SIZE", self.tr("Tile size (pixels)"), QgsProcessingParameterNumber.Integer, defaultValue=256,
            minValue=8, maxValue=16384))
        self.addAdvanced(QgsProcessingParameterNumber(
            "OVERLAP", self.tr("Tile overlap (pixels)"), QgsProcessingParameterNumber.Integer, defaultValue=32,
            minValue=0, maxValue=4096))
        self.addAdvanced(QgsProcessingParameterEnum(
            "DEVICE", self.tr("Device (TorchScript; ONNX uses onnxruntime's own)"), options=list(DEVICES),
            defaultValue="auto", usesStaticStrings=True))
        self.addAdvanced(QgsProcessingParameterNumber(
            "BATCH_SIZE", self.tr("Batch size (0 = automatic)"), QgsProcessingParameterNumber.Integer, defaultValue=0,
            minValue=0, maxValue=4096))
        self.addAdvanced(QgsProcessingParameterBoolean(
            "TRUST_TORCHSCRIPT", self.tr("Trust TorchScript (it runs code: only for models you made)"),
            defaultValue=False))
        self.addAdvanced(QgsProcessingParameterEnum(
            "OUTPUT_DTYPE", self.tr("Output data type"), options=[AUTOMATIC, *OUTPUT_DTYPES], defaultValue=AUTOMATIC,
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Model output")))

    def checkOptionValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:  # noqa: N802
        """Bands, range and tiles, checked before the model is loaded."""
        try:
            self._bands(parameters, context)
            self._convention(parameters, context)
        except QgsProcessingException as exc:
            return False, str(exc)
        tile = self.parameterAsInt(parameters, "TILE_SIZE", context)
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        if 2 * overlap > tile:
            return False, self.tr("Tile overlap ({0}) must be at most half the tile size ({1}).").format(overlap, tile)
        return True, ""

    def _bands(self, parameters: dict, context: QgsProcessingContext) -> list[int] | None:
        text = (self.parameterAsString(parameters, "BANDS", context) or "").strip()
        if not text:
            return None
        try:
            bands = [int(b) for b in text.replace(" ", "").split(",") if b]
        except ValueError:
            raise QgsProcessingException(self.tr("Bands must be band numbers separated by commas, got {0}.").format(
                text)) from None
        if not bands or min(bands) < 1:
            raise QgsProcessingException(self.tr("Band numbers start at 1, got {0}.").format(text))
        return bands

    def _convention(self, parameters: dict, context: QgsProcessingContext) -> str | None:
        kind = self.enumText(parameters, "CONVENTION", context) or FROM_MODEL
        if kind == FROM_MODEL:
            return None
        if kind != "range":
            return kind
        text = (self.parameterAsString(parameters, "RANGE", context) or "").strip()
        parts = text.replace(" ", "").split(",")
        try:
            low, high = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            raise QgsProcessingException(self.tr("The range convention needs RANGE as LOW,HIGH, got {0}.").format(
                text or "nothing")) from None
        if not high > low:
            raise QgsProcessingException(self.tr("RANGE must have LOW < HIGH, got {0}.").format(text))
        return f"range:{low:g}:{high:g}"

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        engine = load_engine()
        from fractions import Fraction

        from sarcodec.infer.run import InferOptions, infer_raster

        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        source = raster_file_path(layer, parameters.get("INPUT"))
        model = self.parameterAsFile(parameters, "MODEL", context)
        if not model or not Path(model).is_file():
            raise QgsProcessingException(self.tr("Model file not found:") + f" {model or parameters.get('MODEL')}")
        destination = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(destination).suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(self.tr("The output is a GeoTIFF: name it .tif, not {0}").format(destination))
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        scale = self.parameterAsDouble(parameters, "SCALE", context)
        dtype = self.enumText(parameters, "OUTPUT_DTYPE", context)
        device = self.enumText(parameters, "DEVICE", context) or "auto"
        options = InferOptions(
            bands=self._bands(parameters, context),
            scale=Fraction(scale).limit_denominator(64) if scale > 0 else None,
            convention=self._convention(parameters, context),
            tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
            overlap=self.parameterAsInt(parameters, "OVERLAP", context),
            device=device,
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context) or "auto",
            trust_torchscript=self.parameterAsBoolean(parameters, "TRUST_TORCHSCRIPT", context),
            output_dtype=None if dtype in ("", AUTOMATIC) else dtype,
        )
        progress = make_progress(engine, feedback, device=device)

        def run() -> Any:
            log_command(feedback, self.command_line(model, source, destination, options))
            return infer_raster(model, source, destination, options, progress)

        result = run_engine(engine, feedback, destination, run)
        feedback.setProgress(100)
        push_new_warnings(feedback, result.warnings, progress.warnings)
        feedback.pushInfo(self.tr("{0} model, scale {1}, convention {2}: {3} x {4} px, {5} band(s) in {6:.1f} s on "
                                  "{7}").format(result.model_kind, result.scale, result.convention, result.width,
                                                result.height, result.bands_out, result.seconds, result.device))
        if context.willLoadLayerOnCompletion(destination):
            context.layerToLoadOnCompletionDetails(destination).setPostProcessor(SarStylePostProcessor.create())
        return {"OUTPUT": destination}

    @staticmethod
    def command_line(model: str, source: str, destination: str, options: Any) -> list[str]:
        """The ``sarcodec infer`` arguments that repeat this run (Processing replaces outputs: --overwrite)."""
        args = ["infer", model, source, "-o", destination, "--overwrite", "--tile-size", str(options.tile_size),
                "--overlap", str(options.overlap), "--device", options.device, "--batch-size", str(options.batch_size)]
        if options.bands:
            args += ["--bands", ",".join(str(b) for b in options.bands)]
        if options.scale is not None:
            args += ["--scale", str(options.scale)]
        if options.convention:
            kind = options.convention.split(":")[0]
            if kind == "log_db":
                args.append("--log-domain")
            elif kind == "range":
                _, low, high = options.convention.split(":")
                args += ["--in-range", low, high]
            else:
                args += ["--convention", "raw"]
        if options.trust_torchscript:
            args.append("--trust-torchscript")
        if options.output_dtype:
            args += ["--output-dtype", options.output_dtype]
        return args
