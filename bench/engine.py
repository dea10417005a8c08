"""Engine benchmark: throughput and peak memory of the tiled streaming engine vs the raw model.

For synthetic speckled scenes of 2k, 4k and 8k pixels square, runs an identity-like residual conv
model through ``run_tiled`` (GeoTIFF in, GeoTIFF out) and the same model on the same batches of
in-memory tiles. The ratio shows the engine's own overhead (reading, padding, blending, writing);
peak RSS per scene size shows that memory does not grow with the scene. Each measurement runs in
its own process so peak RSS belongs to that run alone.

Targets: engine throughput >= 85 % of the raw model's; peak RSS at 8k within 1.5x of 2k.
Usage: python bench/engine.py [--sizes 2048 4096 8192] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "engine"))


def build_model():
    import torch
    from torch import nn

    class IdentityLike(nn.Module):
        """x + small residual: costs like a real restoration net, outputs about its input."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 1, 3, padding=1),
            )
            torch.manual_seed(0)
            for m in self.body:
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=1e-3)

        def forward(self, x):
            return x + self.body(x)

    return IdentityLike().eval()


def make_scene(path: Path, size: int) -> None:
    """Write a uint16 speckled scene row band by row band (the generator itself stays small)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(size)
    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="uint16", nodata=0,
                   crs="EPSG:32630", transform=from_origin(5e5, 4.5e6, 10, 10), tiled=True,
                   blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as ds:
        for r in range(0, size, 512):
            n = min(512, size - r)
            yy, xx = np.mgrid[r : r + n, 0:size].astype(np.float32)
            field = np.exp(1.0 + 0.5 * np.sin(xx / 50) + 0.5 * np.cos(yy / 70))
            dn = np.sqrt(field * rng.gamma(4.4, 1 / 4.4, (n, size))) * 150
            ds.write(np.clip(dn, 1, 65535).astype(np.uint16)[None], window=Window(0, r, size, n))


def raw_seconds(model, n_tiles: int, tile: int, batch: int) -> float:
    """The model alone on the same number of tiles in the same batches (tensors already in memory)."""
    import torch

    x = torch.rand(batch, 1, tile, tile)
    with torch.inference_mode():
        model(x)  # warm-up
        t0 = time.perf_counter()
        done = 0
        while done < n_tiles:
            b = min(batch, n_tiles - done)
            model(x[:b]).numpy()
            done += b
        return time.perf_counter() - t0


def measure(scene: Path, tile: int, overlap: int, batch: int) -> dict:
    """Runs in a child process: the engine run (its peak RSS is what counts), bracketed by raw runs.

    The raw model is timed before and after the engine and averaged, so a change in machine load
    during the run (a shared host) does not pass for engine overhead.
    """
    import rasterio

    from sarcodec.device import DevicePolicy
    from sarcodec.raster_io import GeoTiffSink, RasterSource
    from sarcodec.runner import TileModel, run_tiled
    from sarcodec.tiling import TileGrid

    model = build_model()
    with rasterio.open(scene) as ds:
        size = ds.width
    n_tiles = len(TileGrid(size, size, tile_size=tile, overlap=overlap))
    raw_before = raw_seconds(model, n_tiles, tile, batch)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = scene.with_name(scene.stem + "_out.tif")
    with rasterio.open(scene) as ds:
        profile = {**ds.profile, "dtype": "float32", "nodata": None}
        t0 = time.perf_counter()
        report = run_tiled(TileModel(model), RasterSource(ds, use_nodata=False), GeoTiffSink(out, profile),
                           tile_size=tile, overlap=overlap, policy=DevicePolicy("cpu", batch))
        engine_s = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.unlink()
    raw_s = (raw_before + raw_seconds(model, n_tiles, tile, batch)) / 2
    mp = size * size / 1e6
    return dict(size=size, tiles=n_tiles, engine_s=engine_s, raw_s=raw_s, engine_mps=mp / engine_s,
                raw_mps=mp / raw_s, ratio=raw_s / engine_s, peak_rss_mb=peak_rss / 1024,
                base_rss_mb=rss_before / 1024, model_s=report.model_seconds)


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot written")
        return
    sizes = [r["size"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(sizes, [r["engine_mps"] for r in rows], "o-", label="engine (GeoTIFF to GeoTIFF)")
    a.plot(sizes, [r["raw_mps"] for r in rows], "s--", label="raw model, same batches")
    a.set(xlabel="scene size (px square)", ylabel="MP/s", title="Throughput")
    a.legend()
    b.plot(sizes, [r["peak_rss_mb"] for r in rows], "o-")
    b.set(xlabel="scene size (px square)", ylabel="peak RSS (MB)", title="Memory", ylim=(0, None))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--child", nargs=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.tile, args.overlap, args.batch)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for size in args.sizes:
            scene = Path(tmp) / f"scene_{size}.tif"
            make_scene(scene, size)
            cmd = [sys.executable, __file__, "--child", str(scene), "--tile", str(args.tile),
                   "--overlap", str(args.overlap), "--batch", str(args.batch)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            scene.unlink()
    print(f"{'size':>6} {'tiles':>6} {'engine MP/s':>12} {'raw MP/s':>9} {'ratio':>6} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['size']:>6} {r['tiles']:>6} {r['engine_mps']:>12.2f} {r['raw_mps']:>9.2f} "
              f"{r['ratio']:>6.2f} {r['peak_rss_mb']:>12.0f}")
    worst = min(r["ratio"] for r in rows)
    growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"target engine/raw >= 0.85: worst {worst:.2f} -> {'MET' if worst >= 0.85 else 'NOT MET'}")
    print(f"target peak RSS {rows[-1]['size']} <= 1.5x {rows[0]['size']}: {growth:.2f}x -> "
          f"{'MET' if growth <= 1.5 else 'NOT MET'}")
    (args.out / "engine.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "engine.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
