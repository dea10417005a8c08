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
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from .bridge import (
    OUTPUT_DTYPES,
    TIFF_COMPRESSIONS,
    SarcodecAlgorithm,
    crs_text,
    load_engine,
    make_progress,
    push_new_warnings,
    run_engine,
)
from .styling import SarStylePostProcessor

ORIGINAL_DTYPE = "original"

HELP = """<p>Decompresses a sarcodec <code>.npz</code> container into a GeoTIFF with its CRS, transform or
GCPs, nodata, band descriptions and tags restored; nodata pixels come back unchanged. The result is
loaded with a SAR-friendly grey stretch (2nd to 98th percentile). Defaults match the
<code>sarcodec decompress</code> command line.</p>
<h3>Parameters</h3>
<ul>
<li><b>Container</b>: a <code>.npz</code> file written by <i>Compress SAR raster</i> or
<code>sarcodec compress</code>.</li>
<li><b>Output data type</b>: <i>original</i> restores the input's data type.</li>
<li><b>TIFF compression</b>: lossless compression of the GeoTIFF (LZW by default).</li>
<li><b>Cloud Optimized GeoTIFF</b>: write a COG with overviews.</li>
<li><b>CRS</b>: assigned when the container has no valid CRS.</li>
<li><b>Overlap</b> (advanced): decoder tile overlap; -1 uses the overlap recorded at compression.</li>
<li><b>Device / batch size / model file</b> (advanced): as for compression; an empty model file uses
the model named in the container.</li>
<li><b>Salvage</b> (advanced): decode around damaged chunks, marking them nodata, instead of failing.</li>
</ul>"""


class DecompressAlgorithm(SarcodecAlgorithm):
    """Maps Processing parameters onto ``decompress_container`` and styles the loaded result."""

    NAME = "decompress"
    DISPLAY_NAME = "Decompress SAR container"
    HELP = HELP

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        self.addParameter(QgsProcessingParameterFile("INPUT", "Container (.npz)", extension="npz"))
        self.addParameter(
            QgsProcessingParameterEnum(
                "OUTPUT_DTYPE", "Output data type", options=[ORIGINAL_DTYPE, *OUTPUT_DTYPES],
                defaultValue=ORIGINAL_DTYPE, usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                "TIFF_COMPRESS", "TIFF compression", options=list(TIFF_COMPRESSIONS), defaultValue="LZW",
                usesStaticStrings=True,
            )
        )
        self.addParameter(QgsProcessingParameterBoolean("COG", "Cloud Optimized GeoTIFF", defaultValue=False))
        self.addParameter(QgsProcessingParameterCrs("CRS", "CRS to assign when the container has none", optional=True))
        self.addAdvanced(
            QgsProcessingParameterNumber(
                "OVERLAP", "Tile overlap (pixels, -1 = as recorded at compression)",
                QgsProcessingParameterNumber.Integer, defaultValue=-1, minValue=-1, maxValue=4096,
            )
        )
        self.addEngineParameters("Model file (empty = the model named in the container)")
        self.addAdvanced(
            QgsProcessingParameterBoolean("SALVAGE", "Salvage damaged containers (damaged chunks become nodata)",
                                          defaultValue=False)
        )
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Decompressed raster"))

    def createCustomParametersWidget(self, parent: Any = None) -> Any:  # noqa: N802 - QGIS API name
        """The standard dialog, plus QGIS's projection selector when the container has no CRS (GUI only)."""
        from .dialog import CrsPromptingDialog  # imports processing.gui: only ever reached from the desktop

        return CrsPromptingDialog(self, parent=parent)

    def input_without_crs(self, parameters: dict, context: QgsProcessingContext) -> str | None:
        """The container's file name when its header carries no valid CRS (the dialog then asks for one)."""
        source = self.parameterAsFile(parameters, "INPUT", context)
        if not source or not Path(source).is_file():
            return None
        engine = load_engine()
        from sarcodec.geometa import has_valid_crs

        try:
            geo = engine.pipeline.container_info(source).get("geo")
        except engine.errors.SarcodecError:
            return None  # processAlgorithm reports the damaged container in one line
        return Path(source).name if isinstance(geo, dict) and not has_valid_crs(geo) else None

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        engine = load_engine()
        source = self.parameterAsFile(parameters, "INPUT", context)
        if not source or not Path(source).is_file():
            raise QgsProcessingException(f"Container not found: {source or parameters.get('INPUT')}")
        destination = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if Path(destination).suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(f"Decompression writes GeoTIFF: name the output .tif, not {destination}")
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        dtype = self.parameterAsEnumString(parameters, "OUTPUT_DTYPE", context)
        overlap = self.parameterAsInt(parameters, "OVERLAP", context)
        options = engine.pipeline.DecompressOptions(
            tiff_compress=self.parameterAsEnumString(parameters, "TIFF_COMPRESS", context) or "LZW",
            output_dtype=None if dtype in ("", ORIGINAL_DTYPE) else dtype,
            cog=self.parameterAsBoolean(parameters, "COG", context),
            device=self.parameterAsEnumString(parameters, "DEVICE", context) or "auto",
            batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context) or "auto",
            model_path=self.parameterAsFile(parameters, "MODEL", context) or None,
            crs=crs_text(self.parameterAsCrs(parameters, "CRS", context)),
            overlap=None if overlap < 0 else overlap,
            salvage=self.parameterAsBoolean(parameters, "SALVAGE", context),
        )

        progress = make_progress(engine, feedback)

        def decompress() -> Any:
            header = engine.pipeline.container_info(source)  # validates first; a foreign file fails here
            shape = header.get("shape")
            progress.phases = int(shape[0]) if isinstance(shape, list) and shape and isinstance(shape[0], int) else 1
            return engine.pipeline.decompress_container(source, destination, options, progress)

        result = run_engine(engine, feedback, destination, decompress)
        feedback.setProgress(100)
        feedback.pushInfo(f"Device: {result.device}, batch size: {options.batch_size}")
        push_new_warnings(feedback, result.warnings, progress.warnings)
        if result.damaged_chunks:
            feedback.pushWarning(f"Damaged chunks decoded as nodata: {result.damaged_chunks}")
        feedback.pushInfo(
            f"Decompressed to {result.width} x {result.height} px, {result.bands} band(s), {result.dtype} "
            f"in {result.seconds:.1f} s: {destination}"
        )
        if context.willLoadLayerOnCompletion(destination):
            details = context.layerToLoadOnCompletionDetails(destination)
            details.name = f"{Path(source).stem} (decompressed)"
            details.setPostProcessor(SarStylePostProcessor.create())
        return {"OUTPUT": destination}
