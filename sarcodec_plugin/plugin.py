"""The plugin object: registers the Processing provider for the GUI and for qgis_process."""

from __future__ import annotations

from qgis.core import QgsApplication

from .provider import SarcodecProvider


class SarcodecPlugin:
    """QGIS calls initProcessing headless (qgis_process) and initGui on the desktop; both add one provider."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: SarcodecProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API name
        if self.provider is None:
            self.provider = SarcodecProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API name
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
