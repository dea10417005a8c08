"""Shared fixtures: synthetic speckled scenes with a fixed seed, and small GeoTIFF writers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sar-train"


def speckled_scene(height: int, width: int, *, seed: int = 0, looks: float = 4.4) -> np.ndarray:
    """A smooth reflectivity field times gamma speckle, as Sentinel-1 GRD-like uint16 DN."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = (
        1.0
        + 0.6 * np.sin(xx / 37.0 + rng.uniform(0, 6))
        + 0.4 * np.cos(yy / 23.0 + rng.uniform(0, 6))
        + 0.3 * np.sin((xx + yy) / 11.0)
    )
    intensity = np.exp(1.2 * field) * rng.gamma(looks, 1.0 / looks, size=(height, width))
    dn = np.sqrt(intensity) * 120.0
    return np.clip(np.rint(dn), 1, 65535).astype(np.uint16)


@pytest.fixture
def write_geotiff(tmp_path):
    """Write an array as a GeoTIFF with a CRS and transform (or none); returns its path."""
    import rasterio
    from rasterio.transform import from_origin

    def _write(array: np.ndarray, name: str = "scene.tif", *, nodata=None, crs="EPSG:32630", **extra) -> Path:
        arr = array[None] if array.ndim == 2 else array
        path = tmp_path / name
        profile = dict(
            driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0], dtype=arr.dtype,
            transform=from_origin(500000.0, 4500000.0, 10.0, 10.0), nodata=nodata, **extra,
        )
        if crs:
            profile["crs"] = crs
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(arr)
        return path

    return _write


def random_checkpoint(path: Path, *, latent_channels: int = 24, hyper_channels: int = 8,
                      model_id: str = "tiny-test") -> Path:
    """A structurally real, randomly initialised checkpoint: fast, and independent of training."""
    import torch

    from sarcodec.codec.model import SarCodec, save_checkpoint

    torch.manual_seed(0)
    model = SarCodec(n_channels=16, latent_channels=latent_channels, hyper_channels=hyper_channels, n_qualities=5)
    save_checkpoint(model, path, metadata={"model_id": model_id})
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("real SAR data not available: ../shared/data/sar-train is absent")
    return SHARED_DATA


_SESSION: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus) -> None:
    _SESSION["exitstatus"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """Leave before QGIS 3.22's C++ teardown double-frees at process exit (qgis/QGIS#58724).

    The crash comes after the last Python frame, once every result is reported, and turns a green
    run into exit 139. Exiting here with pytest's own status keeps failures failures.
    """
    if "qgis.core" in sys.modules and "exitstatus" in _SESSION:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION["exitstatus"])
