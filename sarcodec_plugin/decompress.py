"""``sarcodec:decompress``: a ``.npz`` container back to a GeoTIFF that Processing loads with a SAR style."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingUtils,
)

from .bridge import (
    OUTPUT_DTYPES,
    TIFF_COMPRESSIONS,
    UNPLACED_CRS_NOTE,
    SarcodecAlgorithm,
    crs_text,
    is_georeferenced,
    load_engine,
    log_command,
    make_progress,
    push_new_warnings,
    run_engine,
)
from .styling import SarStylePostProcessor

ORIGINAL_DTYPE = "original"

HELP = """Decompresses a sarcodec .npz container into a GeoTIFF with its CRS, transform or GCPs, nodata,
band descriptions and tags restored; nodata pixels come back unchanged. The result is loaded with a
SAR-friendly grey stretch (2nd to 98th percentile). Output data type original restores the input's type.
TIFF compression is lossless (LZW by default); Cloud Optimized GeoTIFF writes a COG with overviews. The CRS
is assigned only when the container has none. An overlap of -1 uses the one recorded at compression.
Device, batch size and model file work as for compression; an empty model file uses the model named in
the container. Salvage decodes around damaged chunks, marking them nodata, instead of failing. Area to
decompress (empty = the whole scene) takes the canvas or a layer extent in any CRS and decodes only the
chunks it covers: the output is that part of the scene, with its own transform. Defaults match the
sarcodec decompress command line, which the log shows."""


class DecompressAlgorithm(SarcodecAlgorithm):
    """Maps Processing parameters onto ``decompress_container`` and styles the loaded result."""

    NAME = "decompress"
    DISPLAY_NAME = "Decompress SAR container"
    SHORT_DESCRIPTION = "Decompresses a sarcodec .npz container into a GeoTIFF."
    HELP = HELP

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterFile("INPUT", self.tr("Container (.npz)"), extension="npz"))
        self.addParameter(
            QgsProcessingParameterEnum(
                "OUTPUT_DTYPE", self.tr("Output data type"), options=[ORIGINAL_DTYPE, *OUTPUT_DTYPES],
                defaultValue=ORIGINAL_DTYPE, usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "TIFF_COMPRESS", self.tr("TIFF compression"), options=list(TIFF_COMPRESSIONS), defaultValue="LZW",
                usesStaticStrings=True,
            )
        )
        self.addParameter(QgsProcessingParameterBoolean("COG", self.tr("Cloud Optimized GeoTIFF"), defaultValue=False))
        self.addParameter(QgsProcessingParameterCrs("CRS", self.tr("CRS to assign when the container has none"),
                                                    optional=True))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr("Area to decompress (empty = whole scene)"),
                                                       optional=True))
        self.addAdvanced(
            QgsProcessingParameterNumber(
                "OVERLAP", self.tr("Tile overlap (pixels, -1 = as recorded at compression)"),
                QgsProcessingParameterNumber.Integer, defaultValue=-1, minValue=-1, maxValue=4096,
            )
        )
        self.addEngineParameters(self.tr("Model file (empty = the model named in the container)"))
        self.addAdvanced(
            QgsProcessingParameterBoolean(
                "SALVAGE", self.tr("Salvage damaged containers (damaged chunks become nodata)"), defaultValue=False)
        )
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", self.tr("Decompressed raster")))

    def createCustomParametersWidget(self, parent: Any = None) -> Any:  # noqa: N802 - QGIS API name
        """The standard dialog, plus QGIS's projection selector when the container has no CRS (GUI only)."""
        from .dialog import CrsPromptingDialog  # imports processing.gui: only ever reached from the desktop

        return CrsPromptingDialog(self, parent=parent)

    def checkOptionValues(self, parameters: dict, context: QgsProcessingContext) -> tuple[bool, str]:  # noqa: N802
        """The decoder overlap, checked before the model is loaded."""
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        if overlap >= 0 and overlap % 16:
            return False, self.tr("Tile overlap must be a multiple of 16 pixels (or -1), got {0}.").format(overlap)
        return True, ""

    def _geo(self, parameters: dict, context: QgsProcessingContext) -> dict | None:
        """The container's geo-metadata, or None when there is no readable container (the run says why)."""
        source = self.parameterAsFile(parameters, "INPUT", context)
        if not source or not Path(source).is_file():
            return None
        engine = load_engine()
        try:
            geo = engine.pipeline.container_info(source).get("geo")
        except engine.errors.SarcodecError:
            return None
        return geo if isinstance(geo, dict) else None

    def input_without_crs(self, parameters: dict, context: QgsProcessingContext) -> str | None:
        """The container's file name when its header carries no valid CRS (the dialog then asks for one)."""
        geo = self._geo(parameters, context)  # loads the engine when there is a container
        if geo is None:
            return None
        from sarcodec.geometa import has_valid_crs

        return Path(self.parameterAsFile(parameters, "INPUT", context)).name if not has_valid_crs(geo) else None

    def input_is_georeferenced(self, parameters: dict, context: QgsProcessingContext) -> bool:
        """Whether the container records a geotransform or GCPs, so that a CRS alone would place it."""
        geo = self._geo(parameters, context)
        return geo is None or is_georeferenced(geo)

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        engine = load_engine()
        source = self.parameterAsFile(parameters, "INPUT", context)
        if not source or not Path(source).is_file():
            raise QgsProcessingException(self.tr("Container not found:") + f" {source or parameters.get('INPUT')}")
        destination = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(destination).suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(
                self.tr("Decompression writes GeoTIFF: name the output .tif, not {0}").format(destination))
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        dtype = self.enumText(parameters, "OUTPUT_DTYPE", context)
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        device = self.enumText(parameters, "DEVICE", context)
        options = engine.pipeline.DecompressOptions(
            tiff_compress=self.enumText(parameters, "TIFF_COMPRESS", context) or "LZW",
            output_dtype=None if dtype in ("", ORIGINAL_DTYPE) else dtype,
            cog=self.parameterAsBoolean(parameters, "COG", context),
            device=device,
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context) or "auto",
            model_path=self.parameterAsFile(parameters, "MODEL", context) or None,
            crs=crs_text(self.parameterAsCrs(parameters, "CRS", context)),
            overlap=None if overlap < 0 else overlap,
            salvage=self.parameterAsBoolean(parameters, "SALVAGE", context),
            **self._area(parameters, context),
        )

        progress = make_progress(engine, feedback, device=device)

        def decompress() -> Any:
            header = engine.pipeline.container_info(source)  # validates first; a foreign file fails here
            shape = header.get("shape")
            progress.phases = int(shape[0]) if isinstance(shape, list) and shape and isinstance(shape[0], int) else 1
            if options.crs and not header.get("has_valid_crs") and not is_georeferenced(header.get("geo")):
                feedback.pushWarning(self.tr(UNPLACED_CRS_NOTE.replace("The input", "The container")))
            log_command(feedback, self.command_line(source, destination, options))
            return engine.pipeline.decompress_container(source, destination, options, progress)

        result = run_engine(engine, feedback, destination, decompress)
        feedback.setProgress(100)
        feedback.pushInfo(self.tr("Device: {0}, batch size: {1}").format(result.device, options.batch_size))
        push_new_warnings(feedback, result.warnings, progress.warnings)
        if result.damaged_chunks:
            feedback.pushWarning(self.tr("Damaged chunks decoded as nodata: {0}").format(result.damaged_chunks))
        feedback.pushInfo(
            self.tr("Decompressed to {0} x {1} px, {2} band(s), {3} in {4:.1f} s: {5}").format(
                result.width, result.height, result.bands, result.dtype, result.seconds, destination)
        )
        if context.willLoadLayerOnCompletion(destination):
            details = context.layerToLoadOnCompletionDetails(destination)
            details.name = self.layer_name(source, details.name)
            details.setPostProcessor(SarStylePostProcessor.create())
        return {"OUTPUT": destination}

    def _area(self, parameters: dict, context: QgsProcessingContext) -> dict:
        """``bbox`` and ``bbox_crs`` from the EXTENT parameter (nothing when it is empty)."""
        if parameters.get("EXTENT") in (None, ""):
            return {}
        rect = self.parameterAsExtent(parameters, "EXTENT", context)
        if rect.isNull() or rect.isEmpty():
            return {}
        crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
        return {"bbox": (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()),
                "bbox_crs": crs_text(crs) if crs.isValid() else None}

    def layer_name(self, source: str, given: str) -> str:
        """The loaded layer's name: "<container> (decompressed)" for a container the user chose.

        Inside a model the container is a temporary file named after the compress output ("OUTPUT.npz"):
        the name the model gave its output (or this output's own description) says more than that.
        """
        temporary = Path(QgsProcessingUtils.tempFolder()).resolve()
        is_temporary = temporary in Path(source).resolve().parents
        if not is_temporary:
            return self.tr("{0} (decompressed)").format(Path(source).stem)
        return given or self.tr("Decompressed raster")

    @staticmethod
    def command_line(source: str, destination: str, options: Any) -> list[str]:
        """The ``sarcodec decompress`` arguments that repeat this run (Processing replaces outputs: --overwrite)."""
        args = ["decompress", source, "-o", destination, "--overwrite", "--tiff-compress", options.tiff_compress]
        if options.output_dtype:
            args += ["--output-dtype", options.output_dtype]
        if options.cog:
            args.append("--cog")
        if options.crs:
            args += ["--crs", options.crs]
        if options.overlap is not None:
            args += ["--overlap", str(options.overlap)]
        args += ["--device", options.device, "--batch-size", str(options.batch_size)]
        if options.model_path:
            args += ["--model", str(options.model_path)]
        if options.salvage:
            args.append("--salvage")
        if options.bbox:
            args += ["--bbox", *(repr(float(v)) for v in options.bbox)]
            if options.bbox_crs:
                args += ["--bbox-crs", options.bbox_crs]
        return args
