"""What tiling costs codec v1: file size and error of the tiled pipeline against coding the whole image.

Codec v1 only: its network runs tile by tile through the engine. Codec v2 (the default) codes fixed,
independent 512 x 512 chunks whose edges are block edges, so it has no tile size and no tiling cost.

The encoder sees each tile with its overlap as context and keeps only the core, so the latent grid
is the whole image's; the only differences are the context each latent saw and the decoder's
blending. This codes real SAR scenes larger than a tile (the Sen1Floods11 scene, VV and VH, and
the AIRSAR scene) at the default quality three ways: whole image (one analysis and one synthesis
over the full raster), and through ``compress_raster``/``decompress_container`` with 256 and 512
pixel tiles. It reports latent payload bytes (the container header is left out: it does not depend
on tiling), RMSE in dB against the original, and RMSE between the tiled and whole reconstructions.

Targets: tiled payload within 2 % of whole-image coding; tiled RMSE within 0.05 dB of whole-image RMSE.
Usage: python bench/tiling_cost.py [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "sar-train"
V1_MODEL = ROOT / "resources" / "models" / "sarcodec_v1.pt"


def scenes() -> list[tuple[str, np.ndarray]]:
    """Real scenes as uint16 DN (median near 200, like GRD), every one larger than a 256 px tile."""
    out = []
    with rasterio.open(SHARED / "s1_grd_db" / "sen1floods11_spain_vv_vh_db.tif") as ds:
        for b, pol in ((1, "VV"), (2, "VH")):
            db = ds.read(b).astype(np.float64)
            amp = 10 ** (np.nan_to_num(db, nan=-30.0) / 20)
            out.append((f"sen1floods11 {pol}", amp))
    with rasterio.open(SHARED / "airsar_intensity" / "sanfrancisco_T11_T22_T33.tif") as ds:
        out.append(("airsar T11", np.sqrt(np.maximum(ds.read(1).astype(np.float64), 1e-12))))
    scaled = []
    for name, amp in out:
        dn = np.clip(np.rint(amp / np.median(amp) * 200.0), 1, 65535).astype(np.uint16)
        scaled.append((name, dn))
    return scaled


def db(dn: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(dn.astype(np.float64), 0.5))


@torch.no_grad()
def whole_image(dn: np.ndarray, offset: float, quality: int) -> tuple[np.ndarray, int]:
    """One analysis over the whole (reflect-padded) image, the same chunked entropy coding, one synthesis."""
    from sarcodec.codec.domains import denormalise, from_log, normalise, to_log
    from sarcodec.codec.pipeline import CHUNK, STRIDE, _latent_coder, load_model

    model, _, _ = load_model(V1_MODEL)
    coder = _latent_coder(model)
    h, w = dn.shape
    x = normalise(to_log(dn, "amplitude_dn"), offset)
    xp = np.pad(x, ((0, -h % STRIDE), (0, -w % STRIDE)), mode="reflect")
    y = model.analysis(torch.from_numpy(xp)[None, None], quality)[0].numpy()
    y_hat = np.empty_like(y)
    nbytes = 0
    for r in range(0, y.shape[1], CHUNK):
        for c in range(0, y.shape[2], CHUNK):
            data, yh = coder.encode_chunk(np.ascontiguousarray(y[:, r : r + CHUNK, c : c + CHUNK]))
            nbytes += len(data)
            y_hat[:, r : r + CHUNK, c : c + CHUNK] = yh
    x_hat = model.synthesis(torch.from_numpy(y_hat)[None], quality)[0, 0].numpy()[:h, :w]
    return from_log(denormalise(x_hat, offset), "amplitude_dn", np.uint16, 0), nbytes


def tiled(dn: np.ndarray, folder: Path, tile: int) -> tuple[np.ndarray, int, float, float]:
    from rasterio.transform import from_origin

    from sarcodec.codec.container import ContainerReader
    from sarcodec.codec.pipeline import CompressOptions, DecompressOptions, compress_raster, decompress_container

    src, npz, back = folder / "s.tif", folder / f"s{tile}.npz", folder / f"b{tile}.tif"
    with rasterio.open(src, "w", driver="GTiff", width=dn.shape[1], height=dn.shape[0], count=1, dtype="uint16",
                       nodata=0, crs="EPSG:32630", transform=from_origin(0, 0, 10, 10)) as ds:
        ds.write(dn[None])
    compress_raster(src, npz, CompressOptions(tile_size=tile, device="cpu", model_path=str(V1_MODEL)))
    decompress_container(npz, back, DecompressOptions(device="cpu"))
    with ContainerReader(npz) as r:
        payload = sum(rec.length for rec in r.records("latent"))
        band = r.header["bands"][0]
    with rasterio.open(back) as ds:
        return ds.read(1), payload, float(band["stats"]["offset_db"]), float(band["gain_db"])


def main() -> int:
    from sarcodec.codec.model import DEFAULT_QUALITY

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print("../shared/data/sar-train is absent: nothing to measure")
        return 0
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, dn in scenes():
            ref = db(dn)
            t256 = tiled(dn, Path(tmp), 256)
            t512 = tiled(dn, Path(tmp), 512)
            offset, gain = t256[2], t256[3]
            whole, wbytes = whole_image(dn, offset, DEFAULT_QUALITY)
            whole = np.clip(np.rint(whole.astype(np.float64) * 10 ** (gain / 20)), 1, 65535)  # same gain
            w_rmse = float(np.sqrt(np.mean((db(whole) - ref) ** 2)))
            for tile, (rec, payload, _, _) in ((256, t256), (512, t512)):
                rows.append({
                    "scene": name, "size": f"{dn.shape[1]}x{dn.shape[0]}", "tile": tile,
                    "whole_bytes": wbytes, "tiled_bytes": payload, "size_diff_pct": 100 * (payload / wbytes - 1),
                    "whole_rmse_db": w_rmse, "tiled_rmse_db": float(np.sqrt(np.mean((db(rec) - ref) ** 2))),
                    "tiled_vs_whole_rmse_db": float(np.sqrt(np.mean((db(rec) - db(whole)) ** 2))),
                })
    print(f"{'scene':<18} {'size':>9} {'tile':>5} {'whole B':>8} {'tiled B':>8} {'size %':>7} "
          f"{'whole dB':>8} {'tiled dB':>8} {'diff dB':>8} {'tiled-whole dB':>14}")
    for r in rows:
        print(f"{r['scene']:<18} {r['size']:>9} {r['tile']:>5} {r['whole_bytes']:>8} {r['tiled_bytes']:>8} "
              f"{r['size_diff_pct']:>+7.2f} {r['whole_rmse_db']:>8.3f} {r['tiled_rmse_db']:>8.3f} "
              f"{r['tiled_rmse_db'] - r['whole_rmse_db']:>+8.3f} {r['tiled_vs_whole_rmse_db']:>14.3f}")
    size_ok = all(abs(r["size_diff_pct"]) <= 2 for r in rows)
    rmse_ok = all(abs(r["tiled_rmse_db"] - r["whole_rmse_db"]) <= 0.05 for r in rows)
    print(f"target tiled size within 2 % of whole: {'MET' if size_ok else 'NOT MET'}")
    print(f"target tiled RMSE within 0.05 dB of whole: {'MET' if rmse_ok else 'NOT MET'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tiling_cost.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
