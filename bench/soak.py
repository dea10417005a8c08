"""Soak benchmark: many sequential round trips in one process must not grow memory or leak files.

Users run sarcodec over whole archives in one QGIS session or one batch process, so every round
trip must give back what it took. This runs N compress -> decompress round trips of varied rasters
(synthetic speckle of several sizes, dtypes and domains, with and without nodata, and the real
chips in ../shared/data/sar-train when present) through the in-process engine API, recording peak
RSS and open file descriptors after each. It fails (exit 1) if either grows over the second half.

Usage: python bench/soak.py [--rounds 50] [--out bench/results]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "sar-train"


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def synthetic(folder: Path, i: int) -> Path:
    """Varied synthetic rasters: sizes, dtypes, domains, nodata, band counts."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(i)
    h, w = [(300, 420), (97, 1000), (700, 650), (64, 64), (512, 300)][i % 5]
    bands = 2 if i % 4 == 3 else 1
    field = np.exp(np.sin(np.arange(w) / 30.0)[None] + np.cos(np.arange(h) / 17.0)[:, None])
    stack = [field * rng.gamma(4.4, 1 / 4.4, (h, w)) for _ in range(bands)]
    kind = i % 3
    if kind == 0:
        data, dtype, nodata, domain = [np.clip(np.sqrt(s) * 150, 1, 65535) for s in stack], "uint16", 0, "amplitude_dn"
        data[0][:5, :] = 0
    elif kind == 1:
        data, dtype, nodata, domain = [s * 0.01 for s in stack], "float32", None, "intensity"
    else:
        data, dtype, nodata, domain = [10 * np.log10(s * 0.01) for s in stack], "float32", -9999.0, "db"
        data[0][-3:, -3:] = -9999.0
    path = folder / f"syn_{i}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=bands, dtype=dtype, nodata=nodata,
                       crs="EPSG:32631", transform=from_origin(6e5, 5e6, 10, 10)) as ds:
        ds.write(np.stack(data).astype(dtype))
        ds.update_tags(SAR_DOMAIN=domain)
    return path


def inputs(folder: Path, rounds: int) -> list[Path]:
    real = sorted(SHARED.glob("s1_grd_dn_chips/*.tif"))[:10] + sorted(SHARED.glob("s1_grd_db/*.tif"))
    items = []
    for i in range(rounds):
        if real and i % 2:
            items.append(real[(i // 2) % len(real)])
        else:
            items.append(synthetic(folder, i))
    return items


def main() -> int:
    from sarcodec.codec.pipeline import CompressOptions, DecompressOptions, compress_raster, decompress_container

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        folder = Path(tmp)
        for i, src in enumerate(inputs(folder, args.rounds)):
            npz, back = folder / "x.npz", folder / "x.tif"
            res = compress_raster(src, npz, CompressOptions(device="cpu"))
            decompress_container(npz, back, DecompressOptions(device="cpu"))
            npz.unlink()
            back.unlink()
            gc.collect()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append({"round": i, "input": src.name, "bpp": res.bpp, "rss_mb": current_rss_mb(),
                         "peak_rss_mb": peak, "fds": open_fds()})
            print(f"{i:>3} {src.name[:40]:<40} bpp {res.bpp:6.3f} rss {rows[-1]['rss_mb']:7.1f} MB "
                  f"peak {peak:7.1f} MB fds {rows[-1]['fds']}", flush=True)
        leftovers = [p.name for p in folder.iterdir() if not p.name.startswith("syn_")]
    half = len(rows) // 2
    rss_growth = rows[-1]["rss_mb"] - rows[half]["rss_mb"]
    fd_growth = rows[-1]["fds"] - rows[half]["fds"]
    peak_growth = rows[-1]["peak_rss_mb"] / rows[half]["peak_rss_mb"]
    ok = rss_growth < 50 and fd_growth <= 0 and peak_growth < 1.1 and not leftovers
    print(f"second half: RSS {rss_growth:+.1f} MB, peak RSS x{peak_growth:.3f}, open fds {fd_growth:+d}, "
          f"temporary files left: {leftovers or 'none'} -> {'NO GROWTH' if ok else 'GROWTH'}")
    (args.out / "soak.json").write_text(json.dumps(rows, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([r["rss_mb"] for r in rows], label="RSS (MB)")
        ax.plot([r["peak_rss_mb"] for r in rows], label="peak RSS (MB)")
        ax2 = ax.twinx()
        ax2.plot([r["fds"] for r in rows], "k:", label="open fds")
        ax.set(xlabel="round trip", ylabel="MB", title="Soak: memory and file descriptors")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(args.out / "soak.png", dpi=100)
    except ImportError:
        pass
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
