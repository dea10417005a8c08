"""Fixtures for the command-line tests: a tiny real checkpoint, GeoTIFF scenes and a CLI runner.

The tests run the real codec end to end. A randomly initialised but structurally real ``SarCodec``
(small widths) keeps them fast and independent of the shipped weights, which may still be training;
``$SARCODEC_MODEL`` points the CLI's default model at it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import speckled_scene

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "engine"
NODATA = 0


@pytest.fixture(autouse=True)
def default_model(tiny_model, monkeypatch) -> Path:
    """Every test's default model is the tiny one (in-process and in subprocesses)."""
    monkeypatch.setenv("SARCODEC_MODEL", str(tiny_model))
    return tiny_model


def write_scene(path: Path, array: np.ndarray, *, crs: str | None = "EPSG:32630", nodata: float | None = NODATA,
                descriptions: list[str] | None = None, tags: dict | None = None, band_tags: list[dict] | None = None,
                gcps: list | None = None, gcp_crs: str | None = None) -> Path:
    """A GeoTIFF with exactly the metadata a test wants to see come back."""
    import rasterio
    from rasterio.transform import from_origin

    arr = array[None] if array.ndim == 2 else array
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0], dtype=arr.dtype,
                   nodata=nodata, tiled=True, blockxsize=256, blockysize=256)
    if gcps is None:
        profile["transform"] = from_origin(500000.0, 4500000.0, 10.0, 10.0)
        if crs:
            profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(arr)
        for i, d in enumerate(descriptions or [], start=1):
            ds.set_band_description(i, d)
        if tags:
            ds.update_tags(**tags)
        for i, t in enumerate(band_tags or [], start=1):
            ds.update_tags(i, **t)
        if gcps is not None:
            from rasterio.crs import CRS

            ds.gcps = (gcps, CRS.from_user_input(gcp_crs) if gcp_crs else None)
    return path


def with_nodata_holes(array: np.ndarray) -> np.ndarray:
    """Nodata in a corner, a stripe and scattered pixels: masks must come back pixel for pixel."""
    out = array.copy()
    out[..., :40, :70] = NODATA
    out[..., 150:153, :] = NODATA
    rng = np.random.default_rng(3)
    ys, xs = rng.integers(0, out.shape[-2], 200), rng.integers(0, out.shape[-1], 200)
    out[..., ys, xs] = NODATA
    return out


@pytest.fixture
def rich_scene(tmp_path) -> Path:
    """Two bands, CRS, transform, nodata holes, band descriptions, dataset and band tags."""
    data = np.stack([speckled_scene(300, 300, seed=1), speckled_scene(300, 300, seed=2)])
    return write_scene(tmp_path / "scene.tif", with_nodata_holes(data), descriptions=["VV", "VH"],
                       tags={"MISSION": "S1A", "PRODUCT_TYPE": "GRD"},
                       band_tags=[{"POLARISATION": "VV"}, {"POLARISATION": "VH"}])


@pytest.fixture
def small_scene(tmp_path) -> Path:
    return write_scene(tmp_path / "small.tif", speckled_scene(160, 200, seed=4))


@pytest.fixture
def nocrs_scene(tmp_path) -> Path:
    return write_scene(tmp_path / "nocrs.tif", speckled_scene(200, 200, seed=5), crs=None)


@pytest.fixture
def gcp_scene(tmp_path) -> Path:
    from rasterio.control import GroundControlPoint

    gcps = [GroundControlPoint(row=r, col=c, x=-3.0 + c * 1e-4, y=40.0 - r * 1e-4, z=12.5, id=f"g{r}_{c}")
            for r in (0, 100, 199) for c in (0, 150, 299)]
    return write_scene(tmp_path / "gcps.tif", speckled_scene(200, 300, seed=6), gcps=gcps, gcp_crs="EPSG:4326",
                       descriptions=["VV"])


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ENGINE), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_cli(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m sarcodec ARGS`` in a real process: the exit code a shell script would see."""
    return subprocess.run([sys.executable, "-m", "sarcodec", *args], cwd=cwd, env=env or cli_env(), input=input,
                          capture_output=True, timeout=timeout)


def error_lines(stderr: str | bytes) -> list[str]:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    return [line for line in text.splitlines() if line.strip()]


def leftovers(folder: Path, allowed: set[str]) -> list[str]:
    """Files in ``folder`` beyond ``allowed`` (temporary files, partial outputs)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in allowed)
