"""Plugin test fixtures: the provider registered once per session, sample scenes and a recording feedback.

Follows north-road/qgis-processing-r's tests: register the provider once, then run algorithms through
``processing.run("sarcodec:...")`` exactly as users and models do.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsApplication, QgsProcessingFeedback

from tests.conftest import speckled_scene

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "engine") not in sys.path:  # the engine without `pip install -e .`
    sys.path.append(str(REPO / "engine"))

QGIS_PLUGINS = "/usr/share/qgis/python/plugins"
if QGIS_PLUGINS not in sys.path:  # `processing` lives among QGIS's bundled plugins
    sys.path.append(QGIS_PLUGINS)

SIZE = 300


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps every progress value and log line; can cancel itself after N progress reports."""

    def __init__(self, cancel_after: int | None = None) -> None:
        super().__init__()
        self.progress_values: list[float] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.commands: list[str] = []
        self.cancel_after = cancel_after
        self.progressChanged.connect(self._on_progress)

    def _on_progress(self, value: float) -> None:
        self.progress_values.append(value)
        if self.cancel_after is not None and len(self.progress_values) >= self.cancel_after:
            self.cancel()

    def pushInfo(self, info: str) -> None:  # noqa: N802 - QGIS API name
        self.infos.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802 - QGIS API name
        self.warnings.append(warning)
        super().pushWarning(warning)

    def pushCommandInfo(self, info: str) -> None:  # noqa: N802 - QGIS API name
        self.commands.append(info)
        super().pushCommandInfo(info)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803 - QGIS API names
        self.warnings.append(error)
        super().reportError(error, fatalError)


@pytest.fixture(scope="session")
def sarcodec_provider(qgis_processing):
    """Register the sarcodec provider once per test session (as QGIS does when it loads the plugin)."""
    from sarcodec_plugin.provider import SarcodecProvider

    registry = QgsApplication.processingRegistry()
    provider = registry.providerById("sarcodec")
    if provider is None:
        provider = SarcodecProvider()
        assert registry.addProvider(provider)
    yield provider


@pytest.fixture
def feedback() -> RecordingFeedback:
    return RecordingFeedback()


@pytest.fixture
def scene_tif(write_geotiff) -> Path:
    """300x300 uint16 speckle with a UTM CRS."""
    return write_geotiff(speckled_scene(SIZE, SIZE, seed=1), "scene.tif")


@pytest.fixture
def nodata_tif(write_geotiff) -> Path:
    """300x300 uint16 speckle with nodata=0 on a border strip and a block."""
    data = speckled_scene(SIZE, SIZE, seed=2)
    data[:, :40] = 0
    data[120:160, 200:260] = 0
    return write_geotiff(data, "nodata.tif", nodata=0)


@pytest.fixture
def nocrs_tif(write_geotiff) -> Path:
    """300x300 uint16 speckle without any CRS."""
    return write_geotiff(speckled_scene(SIZE, SIZE, seed=3), "nocrs.tif", crs=None)


def files_in(folder: Path) -> set[str]:
    """Every file below ``folder`` (relative names), to prove nothing was left behind."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def read_band(path: Path) -> tuple[np.ndarray, dict]:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1), dict(crs=ds.crs, nodata=ds.nodata, shape=(ds.height, ds.width), dtype=ds.dtypes[0])

