"""``sarcodec:compress``: a SAR raster layer to a ``.npz`` container, with ratio, bpp and RMSE as outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .bridge import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
    MAX_TILE_SIZE,
    MIN_TILE_SIZE,
    TILE_STEP,
    UNPLACED_CRS_NOTE,
    SarcodecAlgorithm,
    crs_text,
    is_georeferenced,
    load_engine,
    log_command,
    make_progress,
    push_new_warnings,
    quality_levels,
    raster_file_path,
    run_engine,
)

COMPRESSED_SUFFIX = ".npz"

HELP = """Compresses a SAR raster (Sentinel-1 GRD amplitude DN, amplitude, intensity or dB) into a .npz
container with the sarcodec codec (v2: a block transform with a learned context entropy model, by
default). The CRS, the transform or GCPs, nodata, band descriptions and tags are kept for decompression.
The output must be named .npz. Quality runs from 1 (smallest file) to the model's best; the default
matches the sarcodec compress command line. Maximum error per pixel (dB) makes the file error-bounded
instead: no valid pixel moves by more than that (checked for every pixel), and the quality is not used.
The CRS is assigned only when the input has none: the dialog asks for one, headless runs warn. Tile
size, overlap, device and batch size apply to v1 models (v2 codes 512 px chunks on the CPU): tile size
and overlap are multiples of 16 pixels; memory grows with the tile size, never with the scene. Device
auto uses a GPU when there is one. A batch size of 0 sizes batches from free memory. An empty model file
uses the shipped model. Turning Estimate quality off leaves out the RMSE and PSNR outputs (with v1 it
also skips decoding sample tiles: faster). The log shows the equivalent sarcodec command line."""


class CompressAlgorithm(SarcodecAlgorithm):
    """Maps Processing parameters onto ``compress_raster`` and its result onto numeric outputs."""

    NAME = "compress"
    DISPLAY_NAME = "Compress SAR raster"
    SHORT_DESCRIPTION = "Compresses a SAR raster into a .npz container with the learned sarcodec codec."
    HELP = HELP

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        default_quality, levels = quality_levels()
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", self.tr("Input SAR raster")))
        self.addParameter(
            QgsProcessingParameterNumber(
                "QUALITY", self.tr("Quality (1 = smallest file, {0} = best fidelity)").format(levels),
                QgsProcessingParameterNumber.Integer, defaultValue=default_quality, minValue=1, maxValue=levels,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                "MAX_ERROR_DB", self.tr("Maximum error per pixel (dB, empty = use the quality level)"),
                QgsProcessingParameterNumber.Double, defaultValue=None, optional=True, minValue=0.0, maxValue=20.0,
            )
        )
        self.addParameter(QgsProcessingParameterCrs("CRS", self.tr("CRS to assign when the input has none"),
                                                    optional=True))
        self.addAdvanced(
            QgsProcessingParameterNumber(
                "TILE_SIZE", self.tr("Tile size (pixels, a multiple of 16)"), QgsProcessingParameterNumber.Integer,
                defaultValue=DEFAULT_TILE_SIZE, minValue=MIN_TILE_SIZE, maxValue=MAX_TILE_SIZE,
            )
        )
        self.addAdvanced(
            QgsProcessingParameterNumber(
                "OVERLAP", self.tr("Tile overlap (pixels, a multiple of 16)"), QgsProcessingParameterNumber.Integer,
                defaultValue=DEFAULT_OVERLAP, minValue=0, maxValue=4096,
            )
        )
        self.addEngineParameters(self.tr("Model file (empty = shipped default model)"))
        self.addAdvanced(
            QgsProcessingParameterBoolean(
                "ESTIMATE_QUALITY", self.tr("Estimate quality (decode a sample of tiles for RMSE/PSNR)"),
                defaultValue=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination("OUTPUT", self.tr("Compressed container"),
                                                  self.tr("sarcodec containers") + " (*.npz)")
        )
        self.addOutput(QgsProcessingOutputNumber("RATIO", self.tr("Compression ratio (input bytes / container bytes)")))
        self.addOutput(QgsProcessingOutputNumber("BPP", self.tr("Bits per pixel")))
        self.addOutput(QgsProcessingOutputNumber("RMSE_DB", self.tr("Estimated RMSE (dB)")))
        self.addOutput(QgsProcessingOutputNumber("PSNR_DB", self.tr("Estimated PSNR (dB)")))

    def createCustomParametersWidget(self, parent: Any = None) -> Any:  # noqa: N802 - QGIS API name
        """The standard dialog, plus QGIS's projection selector when the input has no CRS (GUI only)."""
        from .dialog import CrsPromptingDialog  # imports processing.gui: only ever reached from the desktop

        return CrsPromptingDialog(self, parent=parent)

    def checkOptionValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:  # noqa: N802
        """Tile geometry and the output name, checked before the model is loaded (seconds)."""
        tile = self.parameterAsInt(parameters, "TILE_SIZE", context)
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        if tile % TILE_STEP:
            return False, self.tr("Tile size must be a multiple of 16 pixels, got {0}.").format(tile)
        if overlap % TILE_STEP:
            return False, self.tr("Tile overlap must be a multiple of 16 pixels, got {0}.").format(overlap)
        if 2 * overlap > tile:
            return False, self.tr("Tile overlap ({0}) must be at most half the tile size ({1}).").format(
                overlap, tile)
        bound = self.max_error(parameters, context)
        if bound is not None:
            from sarcodec.codec.bounded import check_bound  # torch-free

            try:
                check_bound(bound)
            except ValueError as exc:
                return False, str(exc)
        problem = self.output_name_problem(self.parameterAsFileOutput(parameters, "OUTPUT", context))
        return (not problem, problem)

    def max_error(self, parameters: dict, context: QgsProcessingContext) -> float | None:
        """The error bound in dB, or None (empty or 0: the quality level decides)."""
        if parameters.get("MAX_ERROR_DB") in (None, ""):
            return None
        value = self.parameterAsDouble(parameters, "MAX_ERROR_DB", context)
        return value if value > 0 else None

    def output_name_problem(self, destination: str) -> str:
        """Why ``destination`` cannot be the container's name ("" when it can): like the CLI, only ``*.npz``."""
        if destination and Path(destination).suffix.lower() != COMPRESSED_SUFFIX:
            return self.tr("A compressed output must be named *.npz, not {0}.").format(Path(destination).name)
        return ""

    def input_without_crs(self, parameters: dict, context: QgsProcessingContext) -> str | None:
        """The input layer's name when QGIS knows no CRS for it (the dialog then asks for one)."""
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is None or not layer.isValid() or layer.crs().isValid():
            return None
        return layer.name()

    def input_is_georeferenced(self, parameters: dict, context: QgsProcessingContext) -> bool:
        """Whether the input has a geotransform or GCPs, so that a CRS alone would place it correctly."""
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        try:
            return self._georeferenced(raster_file_path(layer, parameters.get("INPUT")))
        except QgsProcessingException:
            return True  # nothing to warn about: the run itself reports the bad input

    @staticmethod
    def _georeferenced(source: str) -> bool:
        load_engine()
        import rasterio

        from sarcodec.geometa import read_geo_metadata

        try:
            with rasterio.open(source) as ds:
                return is_georeferenced(read_geo_metadata(ds))
        except Exception:  # noqa: BLE001 - unreadable inputs are reported by the engine itself
            return True

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        engine = load_engine()
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        source = raster_file_path(layer, parameters.get("INPUT"))
        destination = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        problem = self.output_name_problem(destination)
        if problem:
            raise QgsProcessingException(problem)
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        device = self.enumText(parameters, "DEVICE", context)

        used: dict[str, Any] = {}

        def compress() -> Any:
            info = engine.pipeline.inspect_raster(source)
            feedback.pushInfo(self.tr("Input: {0} ({1} x {2} px, {3} band(s), {4})").format(
                source, info.width, info.height, info.bands, info.dtype))
            bound = self.max_error(parameters, context)
            options = engine.pipeline.CompressOptions(
                quality=None if bound is not None else self.parameterAsInt(parameters, "QUALITY", context),
                max_error_db=bound,
                tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
                overlap=self.parameterAsInt(parameters, "OVERLAP", context),
                device=device,
                batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context) or "auto",
                model_path=self.parameterAsFile(parameters, "MODEL", context) or None,
                estimate_quality=self.parameterAsBoolean(parameters, "ESTIMATE_QUALITY", context),
                crs=self._crs_option(info.has_valid_crs, layer, parameters, context, feedback),
            )
            if options.crs and not info.has_valid_crs and not self._georeferenced(source):
                feedback.pushWarning(self.tr(UNPLACED_CRS_NOTE))
            from sarcodec.codec.container import check_raster_metadata_fits

            check_raster_metadata_fits(source, crs=options.crs)  # too large for the header: fail before coding
            log_command(feedback, self.command_line(source, destination, options))
            used["crs_warned"] = options.crs is None and not info.has_valid_crs
            used["batch"] = options.batch_size
            used["progress"] = make_progress(engine, feedback, phases=info.bands, device=device)
            return engine.pipeline.compress_raster(source, destination, options, used["progress"])

        result = run_engine(engine, feedback, destination, compress)
        feedback.setProgress(100)
        feedback.pushInfo(self.tr("Device: {0}, batch size: {1}, bad tiles: {2}").format(
            result.device, used["batch"], result.bad_tiles))
        shown = used["progress"].warnings + [w for w in result.warnings if "no valid CRS" in w and used["crs_warned"]]
        push_new_warnings(feedback, result.warnings, shown)
        quality = (
            self.tr(", estimated RMSE {0:.2f} dB (PSNR {1:.1f} dB)").format(result.est_rmse_db, result.est_psnr_db)
            if result.est_rmse_db is not None and result.est_psnr_db is not None else ""
        )
        # inside an archive (/vsizip/) the input's own size is unknown: no ratio rather than a ratio of 0
        ratio = result.ratio if result.input_bytes > 0 else None
        sizes = (self.tr("Compressed {0:,} bytes to {1:,} bytes: ratio {2:.2f}:1").format(
            result.input_bytes, result.output_bytes, result.ratio) if ratio is not None else
            self.tr("Compressed to {0:,} bytes").format(result.output_bytes))
        feedback.pushInfo(
            sizes + self.tr(", {0:.3f} bits per pixel{1}, in {2:.1f} s").format(result.bpp, quality, result.seconds)
        )
        return {
            "OUTPUT": destination,
            "RATIO": ratio,
            "BPP": result.bpp,
            "RMSE_DB": result.est_rmse_db,
            "PSNR_DB": result.est_psnr_db,
        }

    @staticmethod
    def command_line(source: str, destination: str, options: Any) -> list[str]:
        """The ``sarcodec compress`` arguments that repeat this run (Processing replaces outputs: --overwrite)."""
        level = ["--max-error-db", f"{options.max_error_db:g}"] if options.max_error_db is not None else \
            ["--quality", str(options.quality)]
        args = ["compress", source, "-o", destination, "--overwrite", *level,
                "--tile-size", str(options.tile_size), "--overlap", str(options.overlap),
                "--device", options.device, "--batch-size", str(options.batch_size)]
        if options.model_path:
            args += ["--model", str(options.model_path)]
        if options.crs:
            args += ["--crs", options.crs]
        if not options.estimate_quality:
            args.append("--no-estimate")
        return args

    def _crs_option(
        self, file_has_crs: bool, layer: Any, parameters: dict, context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> str | None:
        """The CRS to assign: the parameter, else one the user set on the layer in QGIS, else none (warned)."""
        chosen = crs_text(self.parameterAsCrs(parameters, "CRS", context))
        if chosen or file_has_crs:
            return chosen
        from_layer = crs_text(layer.crs())
        if from_layer:
            feedback.pushInfo(self.tr("The input file has no CRS; using the layer's CRS set in QGIS: {0}").format(
                layer.crs().authid()))
            return from_layer
        feedback.pushWarning(self.tr(
            "The input has no valid CRS and no CRS parameter was given: the container will carry none "
            "(set CRS, e.g. CRS=EPSG:32630, to assign one)."
        ))
        return None
