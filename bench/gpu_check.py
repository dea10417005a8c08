"""Every GPU path of the product, measured in one run of a few minutes (``make gpu-check``, issue 15).

A lent GPU machine comes for minutes: this script is prepared so those minutes go to measuring. On a
machine without CUDA it says so in one line and exits 0. ``--dry-run-cpu`` runs the same steps on the
CPU with a small scene (the CUDA-only steps are reported as skipped): that is how the script itself is
tested here.

Steps (each timed, each row of the table; JSON in ``bench/results/gpu_check.json``):

1. **Codec round trips** of a generated 8192 x 8192 scene and of a real scene from ``../shared`` with
   the network codec (v1, ``--device cuda --batch-size auto``): MP/s each way, the batch size NVML
   chose, AMP on or off, peak GPU memory; v2 (the default, CPU-only by design) beside it for scale.
2. **Engine against the raw model** on the same tiles on the GPU (goal >= 0.85), once with batches kept
   on the device through blending (the default on CUDA) and once with the host path (every tile's
   output copied back and blended in numpy), and where a v1 compression's time goes (model incl.
   host-device copies, blending, entropy coding, GeoTIFF reads): timers around each stage, summed over
   threads (the entropy coder runs on a pool beside the network). On the device path blending is only
   queued; the wait for the device shows in "rows back to the host".
3. **Cross-device decoding**: a container written on the GPU decoded on the CPU and on the GPU, and
   one written on the CPU decoded on the GPU: latents (entropy-decoded on the CPU in float64) must be
   byte-identical, and the pixels are compared (the synthesis runs in fp16/fp32 on the GPU, fp32 on the
   CPU: the number of differing pixels and the largest difference are reported).
4. **Out of memory**: a batch size far too large halves until it fits and the run finishes; with the
   GPU's memory held by this script, even batch 1 fails and the CLI exits 3.
5. **torchrun** with NCCL on every GPU of the machine: the container must be byte-identical to one
   process's.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "engine"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

V1 = ROOT / "resources" / "models" / "sarcodec_v1.pt"
SHARED = ROOT.parent / "shared" / "data" / "sar-train"
SARCODEC = [sys.executable, "-m", "sarcodec"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _gpu_peak_reset(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak_mb(cuda: bool) -> float | None:
    if not cuda:
        return None
    import torch

    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def round_trip(name: str, src: Path, tmp: Path, device: str, model: Path | None, cuda: bool) -> dict:
    """Compress and decompress through the pipeline API (one process: torch's peak memory is ours)."""
    import rasterio

    from sarcodec.codec.pipeline import CompressOptions, DecompressOptions, compress_raster, decompress_container
    from sarcodec.device import DevicePolicy

    with rasterio.open(src) as ds:
        mp = ds.width * ds.height * ds.count / 1e6
    npz, back = tmp / f"{name}.npz", tmp / f"{name}.tif"
    _gpu_peak_reset(cuda)
    t = time.perf_counter()
    res = compress_raster(src, npz, CompressOptions(model_path=model, device=device, batch_size="auto"))
    tc = time.perf_counter() - t
    peak_c = _gpu_peak_mb(cuda)
    _gpu_peak_reset(cuda)
    t = time.perf_counter()
    dec = decompress_container(npz, back, DecompressOptions(model_path=model, device=device, batch_size="auto"))
    td = time.perf_counter() - t
    choice = DevicePolicy(device).resolve() if model is not None else None
    return {"case": name, "mpx": mp, "compress_mpx_s": mp / tc, "decompress_mpx_s": mp / td, "bpp": res.bpp,
            "device": res.device, "batch_size": res.batch_size or dec.batch_size,
            "amp": bool(choice.amp) if choice else False, "peak_gpu_mb_compress": peak_c,
            "peak_gpu_mb_decompress": _gpu_peak_mb(cuda), "container": str(npz), "output": str(back)}


def engine_vs_raw(src: Path, tmp: Path, device: str) -> dict:
    """bench/engine.py's identity-like model through run_tiled and alone, on the same tiles and device."""
    import rasterio
    import torch

    from engine import build_model
    from sarcodec.device import DevicePolicy
    from sarcodec.raster_io import GeoTiffSink, RasterSource
    from sarcodec.runner import TileModel, run_tiled
    from sarcodec.tiling import TileGrid

    model = build_model().to(device)
    with rasterio.open(src) as ds:
        size = ds.width
        n = len(TileGrid(size, ds.height, tile_size=256, overlap=64))
    policy = DevicePolicy(device, "auto")
    choice = policy.resolve()
    batch = choice.batch_size or 16
    x = torch.rand(batch, 1, 256, 256, device=device)

    def raw() -> float:
        with torch.inference_mode():
            model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            for i in range(0, n, batch):
                y = model(x[: min(batch, n - i)])
                if choice.amp:
                    y = y.half()
                y.float().cpu()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t

    def engine(device_blending: bool | None) -> tuple[float, float]:
        from sarcodec import runner

        runner.DEVICE_BLENDING = device_blending
        out = tmp / "engine_out.tif"
        try:
            with rasterio.open(src) as ds:
                prof = {**ds.profile, "dtype": "float32", "nodata": None}
                t = time.perf_counter()
                rep = run_tiled(TileModel(model), RasterSource(ds, use_nodata=False), GeoTiffSink(out, prof),
                                tile_size=256, overlap=64, policy=DevicePolicy(device, batch))
                return time.perf_counter() - t, rep.model_seconds
        finally:
            runner.DEVICE_BLENDING = None
            out.unlink(missing_ok=True)

    before = raw()
    engine_s, model_s = engine(None)
    # The other path: the host path on CUDA, the device path forced on the CPU (a dry run exercises it).
    other = "host blending" if device.startswith("cuda") else "device blending (forced on the CPU)"
    other_s, _ = engine(not device.startswith("cuda"))
    raw_s = (before + raw()) / 2
    return {"tiles": n, "batch": batch, "engine_s": engine_s, "raw_s": raw_s, "ratio": raw_s / engine_s,
            "model_s": model_s, "other_path": other, "other_path_engine_s": other_s,
            "other_path_ratio": raw_s / other_s}


def where_time_goes(src: Path, tmp: Path, device: str) -> dict:
    """A v1 compression with timers around each stage (summed over threads: entropy coding runs on a pool)."""
    import threading

    from sarcodec.blending import RowBandAccumulator
    from sarcodec.codec.entropy import LatentCoder
    from sarcodec.codec.pipeline import CompressOptions, compress_raster
    from sarcodec.device_blending import DeviceRowBandAccumulator
    from sarcodec.raster_io import RasterSource
    from sarcodec.runner import BatchExecutor

    stages = {"model + host-device copies": (BatchExecutor, "_forward"),
              "blending": (RowBandAccumulator, "add"), "blending (rows out)": (RowBandAccumulator, "pop_rows"),
              "blending on the device (queued)": (DeviceRowBandAccumulator, "add"),
              "rows back to the host": (DeviceRowBandAccumulator, "pop_rows"),
              "entropy coding": (LatentCoder, "encode_chunk"), "GeoTIFF reads": (RasterSource, "read")}
    spent = dict.fromkeys(stages, 0.0)
    lock = threading.Lock()
    originals = {}

    def timed(label: str, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                with lock:
                    spent[label] += time.perf_counter() - t
        return wrapper

    for label, (cls, name) in stages.items():
        originals[label] = getattr(cls, name)
        setattr(cls, name, timed(label, originals[label]))
    try:
        t = time.perf_counter()
        compress_raster(src, tmp / "profiled.npz", CompressOptions(model_path=V1, device=device))
        total = time.perf_counter() - t
    finally:
        for label, (cls, name) in stages.items():
            setattr(cls, name, originals[label])
    return {"total_wall_s": total, **{f"{k} s": v for k, v in spent.items()}}


def cross_device(src: Path, tmp: Path, cuda: bool) -> dict:
    """Containers from both devices decoded on both: latent records and pixels compared."""
    import rasterio

    from sarcodec.codec.container import ContainerReader
    from sarcodec.codec.pipeline import CompressOptions, DecompressOptions, compress_raster, decompress_container

    gpu = "cuda" if cuda else "cpu"
    made = {}
    for dev in ("cpu", gpu):
        npz = tmp / f"x_{dev}.npz"
        compress_raster(src, npz, CompressOptions(model_path=V1, device=dev))
        made[dev] = npz
    out: dict = {"containers_identical": made["cpu"].read_bytes() == made[gpu].read_bytes()}
    for writer, npz in made.items():
        pixels = {}
        for dev in ("cpu", gpu):
            back = tmp / f"x_{writer}_on_{dev}.tif"
            decompress_container(npz, back, DecompressOptions(model_path=V1, device=dev))
            with rasterio.open(back) as ds:
                pixels[dev] = ds.read().astype(np.float64)
        with ContainerReader(npz) as r:
            latents = [r.read_record(rec) for rec in r.records(kind="latent")]
        diff = np.abs(pixels["cpu"] - pixels[gpu])
        out[f"written_on_{writer}"] = {"latent_records": len(latents),
                                       "latents_sha": hashlib.sha256(b"".join(latents)).hexdigest()[:16],
                                       "pixels_differing": int((diff > 0).sum()), "max_pixel_diff": float(diff.max())}
    return out


def oom_checks(src: Path, tmp: Path, cuda: bool) -> dict:
    """A far too large batch halves and finishes; with the GPU's memory held, the CLI exits 3."""
    if not cuda:
        return {"skipped": "needs CUDA"}
    import torch

    from sarcodec.codec.pipeline import CompressOptions, compress_raster

    res = compress_raster(src, tmp / "oom.npz", CompressOptions(model_path=V1, device="cuda", batch_size=4096,
                                                                 tile_size=1024, overlap=64))
    out: dict = {"huge_batch_finished_with_batch": res.batch_size, "warnings": res.warnings[:3]}
    free, _ = torch.cuda.mem_get_info()
    hold = torch.empty(int(free * 0.97) // 4, dtype=torch.float32, device="cuda")  # leave almost nothing
    try:
        proc = subprocess.run([*SARCODEC, "compress", str(src), "-o", str(tmp / "oom2.npz"), "--model", str(V1),
                               "--device", "cuda", "--batch-size", "1", "--tile-size", "1024", "-q"],
                              capture_output=True, text=True, timeout=300)
        out["held_memory_exit_code"] = proc.returncode
        out["held_memory_message"] = (proc.stderr.strip().splitlines() or [""])[-1][:200]
    finally:
        del hold
        torch.cuda.empty_cache()
    return out


def torchrun_check(src: Path, tmp: Path, cuda: bool, single: Path) -> dict:
    """``torchrun`` on every GPU (NCCL): the container must equal one process's, byte for byte."""
    if not cuda:
        return {"skipped": "needs CUDA"}
    import torch

    n = torch.cuda.device_count()
    out_npz = tmp / "torchrun.npz"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
                           "-m", "sarcodec", "compress", str(src), "-o", str(out_npz), "--model", str(V1),
                           "--device", "cuda", "-q"], capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t
    same = out_npz.is_file() and out_npz.read_bytes() == single.read_bytes()
    return {"gpus": n, "exit_code": proc.returncode, "seconds": seconds, "identical_to_one_process": same,
            "stderr_tail": proc.stderr.strip().splitlines()[-3:] if proc.returncode else []}


def real_scene() -> Path | None:
    for p in (SHARED / "s1_grd_db" / "sen1floods11_spain_vv_vh_db.tif",
              SHARED / "airsar_intensity" / "sanfrancisco_T11_T22_T33.tif"):
        if p.is_file():
            return p
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="generated scene edge (default 8192)")
    ap.add_argument("--dry-run-cpu", action="store_true", help="run every step on the CPU (small scene): tests "
                                                                "the script without a GPU")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run_cpu:
        print("gpu_check: no CUDA GPU on this machine (torch sees none): nothing to measure")
        return 0
    device = "cuda" if cuda and not args.dry_run_cpu else "cpu"
    cuda = device == "cuda"
    size = args.size if not args.dry_run_cpu else min(args.size, 1024)
    from demo import make_scene

    t_all = time.perf_counter()
    res: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)", "scene": size}
    with tempfile.TemporaryDirectory(dir=args.out if args.out.is_dir() else None) as td:
        tmp = Path(td)
        scene = tmp / "scene.tif"
        make_scene(scene, size)
        res["roundtrips"] = [round_trip(f"v1 {size}", scene, tmp, device, V1, cuda),
                             round_trip(f"v2 {size} (CPU codec)", scene, tmp, "cpu", None, cuda)]
        real = real_scene()
        if real is not None:
            res["roundtrips"].append(round_trip(f"v1 {real.name}", real, tmp, device, V1, cuda))
        res["engine_vs_raw"] = engine_vs_raw(scene, tmp, device)
        small = tmp / "small.tif"
        make_scene(small, 2048 if cuda else 512)
        res["profile"] = where_time_goes(small, tmp, device)
        res["cross_device"] = cross_device(small, tmp, cuda)
        res["oom"] = oom_checks(small, tmp, cuda)
        res["torchrun"] = torchrun_check(small, tmp, cuda, tmp / "x_cuda.npz")
    res["seconds"] = time.perf_counter() - t_all
    for r in res["roundtrips"]:
        r.pop("container"), r.pop("output")
    print_table(res)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gpu_check.json" if cuda else "gpu_check_dry_run_cpu.json"
    (args.out / name).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


def print_table(res: dict) -> None:
    print(f"gpu_check on {res['device']} ({res['seconds']:.0f} s)")
    print("| case | compress MP/s | decompress MP/s | bpp | batch | AMP | peak GPU MB (c/d) | device |")
    print("|---|---|---|---|---|---|---|---|")
    for r in res["roundtrips"]:
        peak = "-" if r["peak_gpu_mb_compress"] is None else \
            f"{r['peak_gpu_mb_compress']:.0f}/{r['peak_gpu_mb_decompress']:.0f}"
        print(f"| {r['case']} | {r['compress_mpx_s']:.2f} | {r['decompress_mpx_s']:.2f} | {r['bpp']:.3f} | "
              f"{r['batch_size']} | {r['amp']} | {peak} | {r['device']} |")
    e = res["engine_vs_raw"]
    print(f"engine vs raw model: {e['ratio']:.2f} ({e['tiles']} tiles, batch {e['batch']}; goal >= 0.85); "
          f"{e['other_path']}: {e['other_path_ratio']:.2f}")
    print("where a v1 compression's time goes: " + ", ".join(f"{k} {v:.2f}" for k, v in res["profile"].items()))
    print("cross-device: " + json.dumps(res["cross_device"]))
    print("out of memory: " + json.dumps(res["oom"], default=str))
    print("torchrun: " + json.dumps(res["torchrun"]))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
