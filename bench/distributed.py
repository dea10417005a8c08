"""Tiles per second against the number of torchrun ranks on this machine (CPU, gloo).

Usage::

    .venv/bin/python bench/distributed.py [--ranks 1 2] [--height 2048] [--width 1024] [--model PATH]

Writes a synthetic speckled uint16 scene, then for each rank count launches
``python -m torch.distributed.run --standalone --nproc-per-node N`` on this script's worker mode,
which compresses and decompresses the scene with ``distributed_compress``/``distributed_decompress``.
Times are rank 0's wall-clock time of each call (model load, every rank's tiles, merge/stitch and
the final write), not process start-up. Tiles/s counts the tiles of the single-process grid, so
the tiles a rank recomputes as context at its shard edges count as overhead, not as throughput.
Also checks that every run's container is byte-identical to the first. ``--repeat R`` keeps the
fastest of R runs per rank count (the machine may be shared).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def speckled_uint16(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth reflectivity times 4.4-look gamma speckle, as GRD-like amplitude DN."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = 1.0 + 0.6 * np.sin(xx / 37.0) + 0.4 * np.cos(yy / 23.0) + 0.3 * np.sin((xx + yy) / 11.0)
    intensity = np.exp(1.2 * field) * rng.gamma(4.4, 1.0 / 4.4, size=(height, width))
    return np.clip(np.rint(np.sqrt(intensity) * 120.0), 1, 65535).astype(np.uint16)


def tile_counts(height: int, width: int, bands: int, tile_size: int, overlap: int) -> tuple[int, int]:
    """Tiles of one process's encoder and decoder grids (all bands)."""
    from sarcodec.codec.pipeline import STRIDE
    from sarcodec.tiling import TileGrid

    enc = TileGrid(height, width, scale=Fraction(1, STRIDE), tile_size=tile_size, overlap=overlap,
                   multiple_of=STRIDE)
    lh, lw = -(-height // STRIDE), -(-width // STRIDE)
    dec = TileGrid(lh, lw, scale=STRIDE, tile_size=tile_size // STRIDE, overlap=overlap // STRIDE, multiple_of=1)
    return bands * len(enc), bands * len(dec)


def _prepare_model(requested: str | None, target: Path) -> str:
    """Copy the given (or shipped) model; if it does not load, a random model of the default size.

    Speed depends on the architecture, not on the weights, so a random default-size model measures
    the same thing while the shipped checkpoint is being retrained.
    """
    from sarcodec.codec.model import SarCodec, load_checkpoint, save_checkpoint
    from sarcodec.errors import ModelError
    from sarcodec.resources import default_model_path

    source = Path(requested) if requested else default_model_path()
    try:
        shutil.copyfile(source, target)
        load_checkpoint(target)
        return f"model {source.name} ({target.stat().st_size >> 20} MiB)"
    except (OSError, ModelError) as exc:
        if requested:
            raise
        import torch

        torch.manual_seed(0)
        save_checkpoint(SarCodec(), target, metadata={"model_id": "bench-random"})
        size = target.stat().st_size >> 20
        return f"random default-size model ({size} MiB; the shipped one does not load: {type(exc).__name__})"


def worker(args: argparse.Namespace) -> int:
    """One rank: compress then decompress; rank 0 prints its timings as one JSON line."""
    from sarcodec.codec.pipeline import CompressOptions, DecompressOptions
    from sarcodec.distributed import distributed_compress, distributed_decompress

    rank = int(os.environ.get("RANK", "0"))
    t0 = time.perf_counter()
    distributed_compress(args.scene, args.npz, CompressOptions(model_path=args.model, device="cpu"))
    t1 = time.perf_counter()
    distributed_decompress(args.npz, args.tif, DecompressOptions(model_path=args.model, device="cpu"))
    t2 = time.perf_counter()
    if rank == 0:
        print("BENCH " + json.dumps({"compress_s": t1 - t0, "decompress_s": t2 - t1}), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--height", type=int, default=2048)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--bands", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1, help="runs per rank count; the fastest is reported")
    p.add_argument("--model", help="checkpoint (default: a copy of the shipped model)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--scene", help=argparse.SUPPRESS)
    p.add_argument("--npz", help=argparse.SUPPRESS)
    p.add_argument("--tif", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import rasterio
    from rasterio.transform import from_origin

    work = Path(tempfile.mkdtemp(prefix="sarcodec-bench-dist-"))
    try:
        model = work / "model.pt"  # a copy: a training run may rewrite the shipped file meanwhile
        model_note = _prepare_model(args.model, model)
        scene = work / "scene.tif"
        data = np.stack([speckled_uint16(args.height, args.width, seed=b) for b in range(args.bands)])
        with rasterio.open(scene, "w", driver="GTiff", width=args.width, height=args.height, count=args.bands,
                           dtype="uint16", crs="EPSG:32630", transform=from_origin(5e5, 4.5e6, 10, 10),
                           tiled=True) as ds:
            ds.write(data)
        enc_tiles, dec_tiles = tile_counts(args.height, args.width, args.bands, 256, 64)
        rows, digests = [], []
        for n in args.ranks:
            best_c = best_d = float("inf")
            for r in range(max(1, args.repeat)):
                npz, tif = work / f"r{n}-{r}.npz", work / f"r{n}-{r}.tif"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                       __file__, "--worker", "--scene", str(scene), "--npz", str(npz), "--tif", str(tif),
                       "--model", str(model)]
                proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
                line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
                if proc.returncode or line is None:
                    sys.stderr.write(proc.stderr[-4000:])
                    return 1
                t = json.loads(line[6:])
                best_c, best_d = min(best_c, t["compress_s"]), min(best_d, t["decompress_s"])
                digests.append(hashlib.sha256(npz.read_bytes()).hexdigest())
                npz.unlink()
                tif.unlink()
            rows.append((n, best_c, best_d))
        base_c, base_d = rows[0][1], rows[0][2]
        print(f"scene {args.height}x{args.width}x{args.bands} uint16, tile 256 / overlap 64, {enc_tiles} encoder + "
              f"{dec_tiles} decoder tiles, {os.cpu_count()} CPU cores, {model_note}")
        print("| CPU ranks | compress s | compress tiles/s | decompress s | decompress tiles/s | speed-up (c / d) |"
              " container identical |")
        print("|---:|---:|---:|---:|---:|---:|:---:|")
        per = max(1, args.repeat)
        for k, (n, c, d) in enumerate(rows):
            same = all(dg == digests[0] for dg in digests[k * per : (k + 1) * per])
            print(f"| {n} | {c:.2f} | {enc_tiles / c:.1f} | {d:.2f} | {dec_tiles / d:.1f} | "
                  f"{base_c / c:.2f} / {base_d / d:.2f} | {'yes' if same else 'NO'} |")
        return 0 if len(set(digests)) == 1 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
