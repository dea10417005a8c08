"""A SAR-friendly look for decompressed rasters: grey, stretched from the 2nd to the 98th percentile.

SAR amplitude spans decades with a few very bright targets, so a min/max stretch shows a black image.
Percentiles do not change under the monotonic dB transform, so cutting at the 2nd/98th percentile of the
stored values is the same cut as in dB.
"""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRectangle,
    QgsSingleBandGrayRenderer,
)

LOWER_CUT = 0.02
UPPER_CUT = 0.98
SAMPLE_PIXELS = 250_000


def apply_sar_style(layer: QgsRasterLayer, band: int = 1) -> tuple[float, float]:
    """Give ``layer`` a single-band grey renderer with a 2-98 % cumulative cut; returns the cut values."""
    provider = layer.dataProvider()
    low, high = provider.cumulativeCut(band, LOWER_CUT, UPPER_CUT, QgsRectangle(), SAMPLE_PIXELS)
    if not high > low:  # flat or all-nodata raster: fall back to the band's range
        stats = provider.bandStatistics(band)
        low, high = stats.minimumValue, max(stats.maximumValue, stats.minimumValue + 1e-6)
    renderer = QgsSingleBandGrayRenderer(provider, band)
    enhancement = QgsContrastEnhancement(provider.dataType(band))
    enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
    enhancement.setMinimumValue(low)
    enhancement.setMaximumValue(high)
    renderer.setContrastEnhancement(enhancement)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return low, high


class SarStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Applied by Processing, in the main thread, once the decompressed layer is in the project."""

    _instance: SarStylePostProcessor | None = None

    def postProcessLayer(  # noqa: N802 - QGIS API name
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsRasterLayer) and layer.isValid():
            low, high = apply_sar_style(layer)
            if feedback is not None:
                feedback.pushInfo(f"Styled {layer.name()}: grey stretch {low:g} .. {high:g} (2nd-98th percentile)")

    @staticmethod
    def create() -> SarStylePostProcessor:
        """Keep one Python-owned instance alive: QGIS holds only a raw pointer to it."""
        SarStylePostProcessor._instance = SarStylePostProcessor()
        return SarStylePostProcessor._instance
