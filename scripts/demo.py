"""`make demo`: compress and decompress a generated sample scene with the shipped default model.

Generates a Sentinel-1-GRD-like scene (uint16 amplitude DN, nodata 0 border, UTM CRS, fixed seed),
runs the real command line on it (`sarcodec compress`, `sarcodec info`, `sarcodec decompress`) and
prints what a user would check: sizes, bits per pixel, the dB error, the mean-intensity bias and
that the georeferencing and nodata survived.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo"
SIZE = 2048


def make_scene(path: Path, size: int = SIZE, seed: int = 2026) -> None:
    """Smooth reflectivity (fields, a river, a town) times 4.4-look speckle, written row band by row band."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint16", nodata=0,
                   crs="EPSG:32630", transform=from_origin(440000.0, 4480000.0, 10.0, 10.0), tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "w", **profile) as ds:
        ds.update_tags(SAR_DOMAIN="amplitude_dn", MISSION="synthetic S1A-like demo scene")
        ds.set_band_description(1, "VV")
        for r0 in range(0, size, 256):
            n = min(256, size - r0)
            yy, xx = np.mgrid[r0 : r0 + n, 0:size].astype(np.float32)
            fields = 0.6 * np.sign(np.sin(xx / 97.0) * np.sin(yy / 131.0))
            river = -2.5 * (np.abs(yy - size / 2 - 300 * np.sin(xx / 400.0)) < 40)
            town = 2.0 * ((np.hypot(xx - 0.7 * size, yy - 0.3 * size) < 180) & (rng.random((n, size)) < 0.3))
            sigma0 = np.exp(fields + river + town + 0.3 * np.sin((xx + yy) / 23.0))
            intensity = sigma0 * rng.gamma(4.4, 1 / 4.4, (n, size))
            dn = np.clip(np.rint(np.sqrt(intensity) * 150.0), 1, 65535).astype(np.uint16)
            dn[:, : size // 40] = 0  # a nodata swath edge, as in real GRD scenes
            ds.write(dn[None], window=Window(0, r0, size, n))


def run(*args: str) -> None:
    cmd = [str(ROOT / ".venv" / "bin" / "sarcodec"), *args]
    print("$ sarcodec " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    import rasterio

    OUT.mkdir(exist_ok=True)
    scene, packed, back = OUT / "sample.tif", OUT / "sample.npz", OUT / "sample_decoded.tif"
    if not scene.exists():
        print(f"generating a {SIZE}x{SIZE} synthetic speckled scene: {scene}")
        make_scene(scene)
    t0 = time.monotonic()
    run("compress", str(scene), "-o", str(packed), "--overwrite")
    t1 = time.monotonic()
    run("info", str(packed))
    run("decompress", str(packed), "-o", str(back), "--overwrite")
    t2 = time.monotonic()

    with rasterio.open(scene) as a, rasterio.open(back) as b:
        orig, dec = a.read(1).astype(np.float64), b.read(1).astype(np.float64)
        same_geo = a.crs == b.crs and a.transform == b.transform and a.nodata == b.nodata
    valid = orig > 0
    err_db = 20 * np.log10(dec[valid] / orig[valid])
    bias = (dec[valid] ** 2).mean() / (orig[valid] ** 2).mean() - 1
    raw_bytes = orig.size * 2
    size = packed.stat().st_size
    print("\nsarcodec demo summary")
    print(f"  scene            {SIZE} x {SIZE} uint16 DN ({raw_bytes / 2**20:.1f} MiB raw)")
    print(f"  compressed       {size / 2**10:.0f} KiB, {8 * size / orig.size:.3f} bpp, ratio {raw_bytes / size:.1f}:1")
    print(f"  RMSE (dB)        {np.sqrt(np.mean(err_db**2)):.3f}   mean-intensity bias {100 * bias:+.2f} %")
    print(f"  nodata kept      {bool((dec[~valid] == 0).all())}   georeferencing kept {same_geo}")
    print(f"  time             compress {t1 - t0:.1f} s, decompress {t2 - t1:.1f} s (incl. start-up)")
    print(f"  outputs          {packed}, {back}")
    return 0 if same_geo and bool((dec[~valid] == 0).all()) else 1


if __name__ == "__main__":
    if shutil.which("gdalinfo") is None:
        print("note: gdal-bin is missing; run `make setup`", file=sys.stderr)
    sys.exit(main())
