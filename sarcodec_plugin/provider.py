"""The Processing provider ``sarcodec`` ("SAR codec"): lists the algorithms, nothing more."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .bridge import ICON_PATH, tr
from .compress import CompressAlgorithm
from .decompress import DecompressAlgorithm
from .infer import InferAlgorithm
from .info import InfoAlgorithm


class SarcodecProvider(QgsProcessingProvider):
    """Loads even without torch: algorithms check their dependencies only when they run."""

    def id(self) -> str:
        return "sarcodec"

    def name(self) -> str:
        return tr("SAR codec")

    def longName(self) -> str:  # noqa: N802 - QGIS API name
        from . import __version__

        return f"{tr('SAR codec')} {__version__}"

    def icon(self) -> QIcon:
        return QIcon(str(ICON_PATH))

    def svgIconPath(self) -> str:  # noqa: N802 - QGIS API name
        return str(ICON_PATH)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 - QGIS API name
        """The engine writes GeoTIFF (or COG) only."""
        return ["tif"]

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API name
        for algorithm in (CompressAlgorithm(), DecompressAlgorithm(), InfoAlgorithm(), InferAlgorithm()):
            self.addAlgorithm(algorithm)
