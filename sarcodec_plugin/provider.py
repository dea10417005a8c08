"""The Processing provider ``sarcodec`` ("SAR codec")."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

ICON = Path(__file__).resolve().parent / "resources" / "icons" / "sarcodec.svg"
if not ICON.exists():  # running from the repository: resources/ sits beside the plugin folder
    ICON = Path(__file__).resolve().parents[1] / "resources" / "icons" / "sarcodec.svg"


class SarcodecProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "sarcodec"

    def name(self) -> str:
        return "SAR codec"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API name
        """Algorithms are added by the plugin issue (compress, decompress)."""
