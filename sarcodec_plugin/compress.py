"""``sarcodec:compress``: a SAR raster layer to a ``.npz`` container, with ratio, bpp and RMSE as outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .bridge import (
    SarcodecAlgorithm,
    crs_text,
    load_engine,
    make_progress,
    push_new_warnings,
    quality_levels,
    raster_file_path,
    run_engine,
)

HELP = """<p>Compresses a SAR raster (Sentinel-1 GRD amplitude DN, amplitude, intensity or dB) into a
<code>.npz</code> container with the learned sarcodec codec, tile by tile with seamless blending. CRS,
transform or GCPs, nodata, band descriptions and tags are kept for decompression.</p>
<p>Outputs the compression ratio, bits per pixel and the estimated RMSE (dB) so models can chain them.
Defaults match the <code>sarcodec compress</code> command line.</p>
<h3>Parameters</h3>
<ul>
<li><b>Input SAR raster</b>: a file-based GDAL raster (GeoTIFF, JP2, SAFE measurement...).</li>
<li><b>Quality</b>: operating point of the model, 1 (smallest) to 5 (best); default 3.</li>
<li><b>CRS</b>: assigned when the input has no valid CRS; otherwise ignored. In the dialog you are asked
for one when it is missing; headless runs warn and continue.</li>
<li><b>Tile size / overlap</b> (advanced): input pixels per tile and tile overlap; memory grows with the
tile size, never with the scene.</li>
<li><b>Device</b> (advanced): auto (GPU when available), cpu or cuda.</li>
<li><b>Batch size</b> (advanced): tiles per batch; 0 sizes it from free memory.</li>
<li><b>Model file</b> (advanced): a sarcodec checkpoint; empty uses the shipped default model.</li>
<li><b>Estimate quality</b> (advanced): decode a sample of tiles to report RMSE/PSNR (off: faster, no
RMSE output).</li>
</ul>"""


class CompressAlgorithm(SarcodecAlgorithm):
    """Maps Processing parameters onto ``compress_raster`` and its result onto numeric outputs."""

    NAME = "compress"
    DISPLAY_NAME = "Compress SAR raster"
    HELP = HELP

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802 - QGIS API name
        default_quality, levels = quality_levels()
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Input SAR raster"))
        self.addParameter(
            QgsProcessingParameterNumber(
                "QUALITY", f"Quality (1 = smallest file, {levels} = best fidelity)",
                QgsProcessingParameterNumber.Integer, defaultValue=default_quality, minValue=1, maxValue=levels,
            )
        )
        self.addParameter(QgsProcessingParameterCrs("CRS", "CRS to assign when the input has none", optional=True))
        self.addAdvanced(
            QgsProcessingParameterNumber(
                "TILE_SIZE", "Tile size (pixels)", QgsProcessingParameterNumber.Integer,
                defaultValue=256, minValue=32, maxValue=8192,
            )
        )
        self.addAdvanced(
            QgsProcessingParameterNumber(
                "OVERLAP", "Tile overlap (pixels)", QgsProcessingParameterNumber.Integer,
                defaultValue=64, minValue=0, maxValue=4096,
            )
        )
        self.addEngineParameters("Model file (empty = shipped default model)")
        self.addAdvanced(
            QgsProcessingParameterBoolean(
                "ESTIMATE_QUALITY", "Estimate quality (decode a sample of tiles for RMSE/PSNR)", defaultValue=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination("OUTPUT", "Compressed container", "sarcodec containers (*.npz)")
        )
        self.addOutput(QgsProcessingOutputNumber("RATIO", "Compression ratio (input bytes / container bytes)"))
        self.addOutput(QgsProcessingOutputNumber("BPP", "Bits per pixel"))
        self.addOutput(QgsProcessingOutputNumber("RMSE_DB", "Estimated RMSE (dB)"))
        self.addOutput(QgsProcessingOutputNumber("PSNR_DB", "Estimated PSNR (dB)"))

    def createCustomParametersWidget(self, parent: Any = None) -> Any:  # noqa: N802 - QGIS API name
        """The standard dialog, plus QGIS's projection selector when the input has no CRS (GUI only)."""
        from .dialog import CrsPromptingDialog  # imports processing.gui: only ever reached from the desktop

        return CrsPromptingDialog(self, parent=parent)

    def input_without_crs(self, parameters: dict, context: QgsProcessingContext) -> str | None:
        """The input layer's name when QGIS knows no CRS for it (the dialog then asks for one)."""
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        if layer is None or not layer.isValid() or layer.crs().isValid():
            return None
        return layer.name()

    def processAlgorithm(  # noqa: N802 - QGIS API name
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        engine = load_engine()
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        source = raster_file_path(layer, parameters.get("INPUT"))
        destination = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        Path(destination).parent.mkdir(parents=True, exist_ok=True)

        used: dict[str, Any] = {}

        def compress() -> Any:
            info = engine.pipeline.inspect_raster(source)
            feedback.pushInfo(f"Input: {source} ({info.width} x {info.height} px, {info.bands} band(s), {info.dtype})")
            options = engine.pipeline.CompressOptions(
                quality=self.parameterAsInt(parameters, "QUALITY", context),
                tile_size=self.parameterAsInt(parameters, "TILE_SIZE", context),
                overlap=self.parameterAsInt(parameters, "OVERLAP", context),
                device=self.parameterAsEnumString(parameters, "DEVICE", context) or "auto",
                batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context) or "auto",
                model_path=self.parameterAsFile(parameters, "MODEL", context) or None,
                estimate_quality=self.parameterAsBoolean(parameters, "ESTIMATE_QUALITY", context),
                crs=self._crs_option(info.has_valid_crs, layer, parameters, context, feedback),
            )
            used["crs_warned"] = options.crs is None and not info.has_valid_crs
            used["batch"] = options.batch_size
            used["progress"] = make_progress(engine, feedback, phases=info.bands)
            return engine.pipeline.compress_raster(source, destination, options, used["progress"])

        result = run_engine(engine, feedback, destination, compress)
        feedback.setProgress(100)
        feedback.pushInfo(f"Device: {result.device}, batch size: {used['batch']}, bad tiles: {result.bad_tiles}")
        shown = used["progress"].warnings + [w for w in result.warnings if "no valid CRS" in w and used["crs_warned"]]
        push_new_warnings(feedback, result.warnings, shown)
        quality = (
            f", estimated RMSE {result.est_rmse_db:.2f} dB (PSNR {result.est_psnr_db:.1f} dB)"
            if result.est_rmse_db is not None and result.est_psnr_db is not None else ""
        )
        feedback.pushInfo(
            f"Compressed {result.input_bytes:,} bytes to {result.output_bytes:,} bytes: ratio {result.ratio:.2f}:1, "
            f"{result.bpp:.3f} bits per pixel{quality}, in {result.seconds:.1f} s"
        )
        return {
            "OUTPUT": destination,
            "RATIO": result.ratio,
            "BPP": result.bpp,
            "RMSE_DB": result.est_rmse_db,
            "PSNR_DB": result.est_psnr_db,
        }

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
            feedback.pushInfo(f"The input file has no CRS; using the layer's CRS set in QGIS: {layer.crs().authid()}")
            return from_layer
        feedback.pushWarning(
            "The input has no valid CRS and no CRS parameter was given: the container will carry none "
            "(set CRS, e.g. CRS=EPSG:32630, to assign one)."
        )
        return None
