"""Engine benchmark: throughput and peak memory of the tiled streaming engine vs the raw model.

For synthetic speckled scenes of 2k, 4k and 8k pixels square, runs an identity-like residual conv
model through ``run_tiled`` (GeoTIFF in, GeoTIFF out) and the same model on the same batches of
in-memory tiles. The ratio shows the engine's own overhead (reading, padding, blending, writing);
peak RSS per scene size shows that memory does not grow with the scene. Each measurement runs in
its own process so peak RSS belongs to that run alone.

Targets: engine throughput >= 85 % of the raw model's; peak RSS at 8k within 1.5x of 2k.

Before/after on the CPU (issue 15, item 2): the engine of ``BASELINE`` (taken from git, before batches
stayed on the device and v1 chunk rows were coded beside the network) against this checkout, on the
same scene, alternating runs in fresh processes and reporting minimum and median times: the identity
model through ``run_tiled``, the same with the device path forced on the CPU (never the default there:
it shows what the device path's extra copies cost), and a v1 compression (network plus entropy
coding). The GPU effect is stated, not measured: no GPU was available (``GPU_EXPECTATION``).

Usage: python bench/engine.py [--sizes 2048 4096 8192] [--compare-size 4096] [--repeats 5]
       [--baseline REV | --no-baseline] [--out bench/results]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENGINE_ENV = "SARCODEC_BENCH_ENGINE"  # a child process imports sarcodec from here (the baseline's engine/)
sys.path.insert(0, os.environ.get(ENGINE_ENV) or str(ROOT / "engine"))
V1 = ROOT / "resources" / "models" / "sarcodec_v1.pt"
# The engine before issue 15 item 2: batches copied back per batch and blended in numpy, v1 chunk rows
# entropy-coded inline on the engine's thread.
BASELINE = "1b04f0947941e3cba2c655c7bcc851501d5b5c9b"

GPU_EXPECTATION = """\
Expected on a GPU (NOT MEASURED: no GPU was available; bench/gpu_check.py measures it, device path on
and off, when one is lent):
- Device->host bytes per scene fall by the overlap factor: the host path copies every tile's full
  output back, (256/192)^2 = 1.78x the output pixels at tile 256 / overlap 64; the device path copies
  each finished row once (1.0x), and no weight rows unless a weight map is asked for.
- Those copies become one pinned DMA per row band instead of one synchronising pageable copy per
  batch (pageable copies typically reach about half the bus rate and block the host); uploads go
  through a reused pinned buffer the same way. One small synchronising copy per batch remains: the
  bad-tile flags (a flag and a peak per tile).
- The host's numpy blending leaves the engine's thread (HOST_BLENDING above is its rate on this
  CPU). On the host path that thread blends, checks and feeds the GPU in series, so a network faster
  than HOST_BLENDING is capped near it; on the device path blending is a few elementwise kernels per
  tile, small next to the network. The input check also moved off that thread (to the read-ahead).
- v1 compress: the entropy coder (float64 hyperprior and ANS on the CPU) ran on the engine's thread
  while the GPU waited; it now codes a chunk row while the network computes the next, so compress
  time tends to max(network, coding) instead of their sum. On this CPU-only machine the network and
  the coder share the same cores, so little gain is expected here, only no loss.
Results stay identical: the same float32 operations in the same order (the tests check bit equality
on the CPU; the containers are byte-identical)."""


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


def compare_child(kind: str, scene: Path, tile: int, overlap: int, batch: int) -> dict:
    """Runs in a child process with ``sarcodec`` from ``$SARCODEC_BENCH_ENGINE`` (or this checkout): one timed run."""
    import rasterio

    import sarcodec
    from sarcodec.device import DevicePolicy

    out = scene.with_name(f"{scene.stem}_{kind}_{os.getpid()}")
    if kind == "v1":
        from sarcodec.codec.pipeline import CompressOptions, compress_raster, load_model

        load_model(V1)  # loaded before the clock, as bench/codec_speed.py does
        t0 = time.perf_counter()
        compress_raster(scene, out.with_suffix(".npz"), CompressOptions(model_path=V1, device="cpu"))
        seconds = time.perf_counter() - t0
        out.with_suffix(".npz").unlink()
    else:
        from sarcodec import runner
        from sarcodec.raster_io import GeoTiffSink, RasterSource
        from sarcodec.runner import TileModel, run_tiled

        if kind == "engine-device":
            runner.DEVICE_BLENDING = True
        model = build_model()
        with rasterio.open(scene) as ds:
            profile = {**ds.profile, "dtype": "float32", "nodata": None}
            t0 = time.perf_counter()
            run_tiled(TileModel(model), RasterSource(ds, use_nodata=False), GeoTiffSink(out.with_suffix(".tif"),
                      profile), tile_size=tile, overlap=overlap, policy=DevicePolicy("cpu", batch))
            seconds = time.perf_counter() - t0
        out.with_suffix(".tif").unlink()
    return {"seconds": seconds, "engine": str(Path(sarcodec.__file__).parent)}


def baseline_engine(rev: str, into: Path) -> Path | None:
    """``engine/`` of git revision ``rev`` extracted under ``into``, or None without git or that revision."""
    try:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "engine"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(into)  # this repository's own files (3.11.2 has no extraction filters)
    return into / "engine"


def host_blending_mps(size: int, tile: int, overlap: int) -> float:
    """The numpy accumulator alone (add every tile, pop every tile row) on a size x size one-band grid: MP/s."""
    from sarcodec.blending import CosineWindow, RowBandAccumulator
    from sarcodec.tiling import TileGrid

    grid = TileGrid(size, size, tile_size=tile, overlap=overlap)
    acc = RowBandAccumulator(grid, 1, CosineWindow(grid))
    out = np.random.default_rng(0).random((1, tile, tile), dtype=np.float32)
    t0 = time.perf_counter()
    for r in range(grid.rows):
        for t in grid.row_tiles(r):
            acc.add(t, out[:, : t.row.out_size, : t.col.out_size])
        acc.pop_rows(grid.rows_final_after(r))
    return size * size / 1e6 / (time.perf_counter() - t0)


def before_after(args: argparse.Namespace, tmp: Path) -> dict | None:
    """Alternating before/after runs on one scene, each in a fresh process; min and median seconds."""
    base = baseline_engine(args.baseline, tmp / "baseline")
    if base is None:
        print(f"before/after: git revision {args.baseline} not available here: skipped")
        return None
    scene = tmp / f"compare_{args.compare_size}.tif"
    make_scene(scene, args.compare_size)
    variants = [("engine", "before", base), ("engine", "after", None), ("engine-device", "after", None),
                ("v1", "before", base), ("v1", "after", None)]
    times: dict[tuple[str, str], list[float]] = {(k, w): [] for k, w, _ in variants}
    for i in range(args.repeats):
        for kind, when, root in (variants if i % 2 == 0 else variants[::-1]):  # alternate: load drifts
            env = {**os.environ, ENGINE_ENV: str(root)} if root else {k: v for k, v in os.environ.items()
                                                                      if k != ENGINE_ENV}
            cmd = [sys.executable, __file__, "--compare-child", kind, str(scene), "--tile", str(args.tile),
                   "--overlap", str(args.overlap), "--batch", str(args.batch)]
            res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                             .stdout.strip().splitlines()[-1])
            expected = root / "sarcodec" if root else ROOT / "engine" / "sarcodec"
            if Path(res["engine"]).resolve() != expected.resolve():
                raise RuntimeError(f"the child imported {res['engine']}, not {expected}")
            times[(kind, when)].append(res["seconds"])
    mp = args.compare_size ** 2 / 1e6
    rows = [{"kind": k, "engine": w, "min_s": min(times[(k, w)]), "median_s": statistics.median(times[(k, w)]),
             "runs": times[(k, w)], "mps_best": mp / min(times[(k, w)])} for k, w, _ in variants]
    return {"baseline": args.baseline, "size": args.compare_size, "repeats": args.repeats, "rows": rows,
            "host_blending_mps": host_blending_mps(args.compare_size, args.tile, args.overlap)}


def print_before_after(cmp: dict) -> None:
    labels = {("engine", "before"): "engine, before (host path)", ("engine", "after"): "engine, after (CPU default)",
              ("engine-device", "after"): "engine, after, device path forced on the CPU",
              ("v1", "before"): "v1 compress, before (coding inline)",
              ("v1", "after"): "v1 compress, after (coding on a worker)"}
    print(f"\nbefore/after on the CPU: {cmp['size']} x {cmp['size']} scene, {cmp['repeats']} alternating runs each, "
          f"before = {cmp['baseline'][:10]}")
    print(f"{'':48} {'min s':>7} {'median s':>9} {'MP/s best':>10} {'after/before (min)':>19}")
    by = {(r["kind"], r["engine"]): r for r in cmp["rows"]}
    for key, label in labels.items():
        r = by[key]
        before = by[("v1" if key[0] == "v1" else "engine", "before")]
        ratio = "" if key[1] == "before" else f"{r['min_s'] / before['min_s']:.2f}x time"
        print(f"{label:48} {r['min_s']:>7.2f} {r['median_s']:>9.2f} {r['mps_best']:>10.2f} {ratio:>19}")
    worst = max(by[(k, "after")]["min_s"] / by[(k, "before")]["min_s"] for k in ("engine", "v1"))
    print(f"no regression on the CPU (after within 1.05x of before, best of runs): worst {worst:.2f}x -> "
          f"{'MET' if worst <= 1.05 else 'NOT MET'}")
    print(f"HOST_BLENDING: numpy row-band blending alone, one band: {cmp['host_blending_mps']:.0f} MP/s on this CPU")
    print(GPU_EXPECTATION)


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
    ap.add_argument("--compare-size", type=int, default=4096, help="scene edge of the before/after runs")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each before/after variant")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the 'before' engine")
    ap.add_argument("--no-baseline", action="store_true", help="skip the before/after comparison")
    ap.add_argument("--child", nargs=1, help=argparse.SUPPRESS)
    ap.add_argument("--compare-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.tile, args.overlap, args.batch)))
        return 0
    if args.compare_child:
        kind, scene = args.compare_child
        print(json.dumps(compare_child(kind, Path(scene), args.tile, args.overlap, args.batch)))
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
    if not args.no_baseline:
        with tempfile.TemporaryDirectory(dir=args.out) as tmp:
            cmp = before_after(args, Path(tmp))
        if cmp is not None:
            print_before_after(cmp)
            cmp["gpu_expectation"] = GPU_EXPECTATION
            (args.out / "engine_before_after.json").write_text(json.dumps(cmp, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
