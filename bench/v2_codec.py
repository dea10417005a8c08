"""Rate-distortion of the v2 block-DCT codec core with REAL bytes, against JPEG2000/JPEG XL on log DN.

Usage: ``.venv/bin/python bench/v2_codec.py [--groups val,heldout_grd_dn,heldout_geocoded]
[--variant NAME ...] [--quick]``; writes ``bench/results/v2_<variant>.json`` and prints a table.

Why it is built like this:

- Rate is the real byte count the decoder needs for the valid pixels: every chunk's bytes (512 x 512
  px chunks, CRC and ANS word padding included) + each band's side info (``BandParams.to_bytes``) + 6
  bytes per band (step as float32, intensity-gain offset as int16). The nodata mask is not counted,
  as the anchors do not carry one either; its zlib size is reported separately (``mask_bpp``).
- Distortion is the project metric: RMSE of ``20*log10(DN)`` over valid pixels, pooled over all bands
  of a group, with decoded values rounded back to uint16 DN like the anchors'.
- Anchors: ``bench/anchors.py`` when it exists; otherwise a built-in JPEG2000-on-log (GDAL
  JP2OpenJPEG, ``round(log2(DN)*4000)`` uint16, REVERSIBLE=NO, smooth mask-weighted nodata fill,
  dense rate sweep) and JPEG XL-on-log (``cjxl -e 7`` distance sweep on a 16-bit PGM, same fill).
- Groups: ``bench/heldout.py``'s ``load_group`` when it exists; otherwise the project's validation
  split (``bench/rd.py``) and the BigEarthNet/SSL4EO GRD dB patches as a geocoded stand-in.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "bench"))

from sarcodec.codec import blockdct, dct_entropy  # noqa: E402

LOG_SCALE = 4000.0
CHUNK = 512
DB_PER_CODE = 20.0 * math.log10(2.0) / LOG_SCALE
J2K_RATES = [0.12, 0.18, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0]
JXL_DIST = [12.0, 8.0, 5.0, 3.5, 2.5, 1.8, 1.2, 0.8, 0.5, 0.3, 0.2]
STEPS = [5000.0, 3400.0, 2300.0, 1600.0, 1100.0, 760.0, 520.0, 360.0, 250.0, 170.0]

VARIANTS = {
    "b16_dz10": {"block": 16, "dead_zone": 0.10},
    "b32_dz10": {"block": 32, "dead_zone": 0.10},
    "b16_dz20": {"block": 16, "dead_zone": 0.20},
    "b16_dz00": {"block": 16, "dead_zone": 0.00},
    "b8_dz10": {"block": 8, "dead_zone": 0.10},
}


# ------------------------------------------------------------------ data
def load_images(group: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, uint16 DN, valid) bands of ``group``."""
    try:
        import heldout  # type: ignore[import-not-found]

        out = []
        for item in heldout.load_group(group):
            name, dn, valid = _unpack(item)
            out.append((name, np.asarray(dn, dtype=np.uint16), np.asarray(valid, dtype=bool)))
        return out
    except ImportError:
        pass
    if group == "val":
        import tomllib

        import rd

        with open(REPO / "configs/train_default.toml", "rb") as fh:
            cfg = tomllib.load(fh)
        return [(i.name, i.dn, i.valid) for i in rd.load_validation(cfg)]
    if group in ("heldout_geocoded", "patches"):
        import rasterio

        out = []
        for p in sorted((REPO.parent / "shared/data/sar-train/s1_grd_db_patches").glob("*.tif")):
            with rasterio.open(p) as ds:
                a = ds.read().astype(np.float64)
            for b in range(a.shape[0]):
                d = a[b]
                v = np.isfinite(d)
                scale = 200.0 / 10.0 ** (np.median(d[v]) / 20.0)
                dn = np.where(v, np.clip(np.rint(10.0 ** (d / 20.0) * scale), 1, 65535), 0).astype(np.uint16)
                out.append((f"{p.stem}_b{b}", dn, dn > 0))
        return out
    raise SystemExit(f"unknown group {group} (bench/heldout.py not available)")


def _unpack(item):
    if isinstance(item, tuple):
        return item[0], item[1], item[2]
    return getattr(item, "name", "?"), item.dn, item.valid


def to_code(dn: np.ndarray) -> np.ndarray:
    return np.log2(np.maximum(dn, 1).astype(np.float64)) * LOG_SCALE


def from_code(code: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(2.0 ** (code / LOG_SCALE)), 1, 65535)


def db(dn: np.ndarray) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(dn, 1).astype(np.float64))


# ------------------------------------------------------------------ our codec
def v2_code(dn: np.ndarray, valid: np.ndarray, step: float, block: int, dead_zone: float,
            gain: bool = True) -> dict:
    """Code one band; returns decoded DN and the byte accounting."""
    x = to_code(dn)
    params = dct_entropy.fit_band_params(x, valid, step, block=block, dead_zone=dead_zone)
    pb = params.to_bytes()
    h, w = x.shape
    rec = np.zeros_like(x)
    nbytes = len(pb) + 6
    ideal = 0.0
    t_enc = t_dec = 0.0
    for r in range(0, h, CHUNK):
        for c in range(0, w, CHUNK):
            xs, vs = x[r : r + CHUNK, c : c + CHUNK], valid[r : r + CHUNK, c : c + CHUNK]
            t = time.perf_counter()
            data = dct_entropy.encode_chunk(xs, vs, step, params)
            t_enc += time.perf_counter() - t
            t = time.perf_counter()
            rec[r : r + CHUNK, c : c + CHUNK] = dct_entropy.decode_chunk(data, *xs.shape, step, params)
            t_dec += time.perf_counter() - t
            nbytes += len(data)
            ideal += dct_entropy.ideal_bits(xs, vs, step, params) / 8.0
    off = 0.0
    if gain:
        off = blockdct.intensity_offset(x, rec, valid, LOG_SCALE)
        off = float(np.clip(np.rint(off * 8.0), -32768, 32767) / 8.0)  # int16 in 1/8 code units
    out = np.where(valid, from_code(rec + off), 0)
    return {"dn": out, "bytes": nbytes, "ideal_bytes": ideal + len(pb) + 6, "side_bytes": len(pb) + 6,
            "t_enc": t_enc, "t_dec": t_dec}


# ------------------------------------------------------------------ built-in anchors
def filled_code(dn: np.ndarray, valid: np.ndarray) -> np.ndarray:
    code = np.rint(blockdct.smooth_fill(to_code(dn), valid))
    return np.clip(code, 0, 65535).astype(np.uint16)


def j2k_log(dn: np.ndarray, valid: np.ndarray, bpp: float) -> tuple[np.ndarray, int]:
    from osgeo import gdal

    gdal.UseExceptions()
    arr = filled_code(dn, valid)
    h, w = arr.shape
    src = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_UInt16)
    src.GetRasterBand(1).WriteArray(arr)
    res = max(1, min(6, int(math.log2(max(min(h, w), 1))) - 2))
    path = f"/vsimem/v2_{os.getpid()}.j2k"
    opts = ["CODEC=J2K", f"QUALITY={min(100.0, 100.0 * bpp / 16.0):.4f}", "REVERSIBLE=NO",
            f"RESOLUTIONS={res}", "YCC=NO"]
    gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(path, src, options=opts)
    n = gdal.VSIStatL(path).size
    out = gdal.Open(path).GetRasterBand(1).ReadAsArray().astype(np.float64)
    gdal.Unlink(path)
    return np.where(valid, from_code(out), 0), n


def jxl_log(dn: np.ndarray, valid: np.ndarray, dist: float) -> tuple[np.ndarray, int]:
    arr = filled_code(dn, valid)
    h, w = arr.shape
    with tempfile.TemporaryDirectory() as td:
        src, enc, dec = (os.path.join(td, n) for n in ("a.pgm", "a.jxl", "b.pgm"))
        with open(src, "wb") as fh:
            fh.write(f"P5\n{w} {h}\n65535\n".encode() + arr.astype(">u2").tobytes())
        subprocess.run(["cjxl", src, enc, "-d", str(dist), "-e", "7", "--quiet"], check=True,
                       capture_output=True)
        subprocess.run(["djxl", enc, dec, "--quiet"], check=True, capture_output=True)
        n = os.path.getsize(enc)
        raw = open(dec, "rb").read()
    out = np.frombuffer(raw[-h * w * 2 :], dtype=">u2").reshape(h, w).astype(np.float64)
    return np.where(valid, from_code(out), 0), n


# ------------------------------------------------------------------ metrics
def pooled(images, recs: list[np.ndarray], nbytes: int) -> dict:
    se = n = 0.0
    i_ref = i_rec = 0.0
    samples = 0
    for (_, dn, valid), rec in zip(images, recs, strict=True):
        d = db(rec)[valid] - db(dn)[valid]
        se += float(np.sum(d * d))
        n += d.size
        i_ref += float(np.sum(dn[valid].astype(np.float64) ** 2))
        i_rec += float(np.sum(rec[valid].astype(np.float64) ** 2))
        samples += dn.size
    return {"bpp": nbytes * 8.0 / samples, "rmse_db": math.sqrt(se / max(n, 1)),
            "bias_pct": 100.0 * (i_rec / max(i_ref, 1e-300) - 1.0)}


def bd_rate(ref: list[dict], test: list[dict]) -> float:
    """Bjontegaard delta rate (%) of ``test`` vs ``ref`` (quality axis -20*log10(RMSE_dB)), cubic fit."""
    def pts(rows):
        r = sorted(rows, key=lambda t: t["bpp"])
        return np.log([t["bpp"] for t in r]), np.array([-20 * math.log10(t["rmse_db"]) for t in r])

    lr1, q1 = pts(ref)
    lr2, q2 = pts(test)
    lo, hi = max(q1.min(), q2.min()), min(q1.max(), q2.max())
    if hi <= lo:
        return float("nan")
    p1 = np.polyfit(q1, lr1, min(3, len(q1) - 1))
    p2 = np.polyfit(q2, lr2, min(3, len(q2) - 1))
    i1 = np.polyval(np.polyint(p1), hi) - np.polyval(np.polyint(p1), lo)
    i2 = np.polyval(np.polyint(p2), hi) - np.polyval(np.polyint(p2), lo)
    return 100.0 * (math.exp((i2 - i1) / (hi - lo)) - 1.0)


def rmse_at(rows: list[dict], bpp: float) -> float:
    r = sorted(rows, key=lambda t: t["bpp"])
    x = np.log([t["bpp"] for t in r])
    y = np.log([t["rmse_db"] for t in r])
    lb = math.log(bpp)
    if lb < x[0] or lb > x[-1]:
        return float("nan")
    return float(math.exp(np.interp(lb, x, y)))


def anchor_curves(group: str, images) -> dict[str, list[dict]]:
    """JPEG2000/JPEG XL on log DN, pooled over the group (bench/anchors.py if present), cached."""
    cache = REPO / f"bench/results/v2_anchors_{group}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    curves: dict[str, list[dict]] = {}
    try:
        import anchors
        import heldout

        imgs = heldout.load_group(group)
        for name, fn in (("j2k_log", anchors.jpeg2000_log), ("jxl_log", anchors.jpegxl_log)):
            pts = heldout.pool([fn(img) for img in imgs])
            curves[name] = [{"bpp": p.bpp, "rmse_db": p.rmse_db, "bias_pct": 100 * p.bias,
                             "setting": p.setting} for p in pts]
    except ImportError:
        curves = {"j2k_log": [], "jxl_log": []}
        for bpp in J2K_RATES:
            recs, nb = [], 0
            for _, dn, v in images:
                r, n = j2k_log(dn, v, bpp)
                recs.append(r)
                nb += n
            curves["j2k_log"].append(pooled(images, recs, nb) | {"setting": bpp})
        for d in JXL_DIST:
            recs, nb = [], 0
            for _, dn, v in images:
                r, n = jxl_log(dn, v, d)
                recs.append(r)
                nb += n
            curves["jxl_log"].append(pooled(images, recs, nb) | {"setting": d})
    cache.write_text(json.dumps(curves, indent=1))
    return curves


def compare(curve: list[dict], anchor: list[dict]) -> tuple[float, list[float]]:
    """(BD-rate %, RMSE ratio per point): bench/anchors.py's definition when present."""
    try:
        import anchors

        c = anchors.compare(curve, anchor)
        return c["bd_rate_pct"], c["rmse_ratio"]
    except ImportError:
        return bd_rate(anchor, curve), [r["rmse_db"] / rmse_at(anchor, r["bpp"]) for r in curve]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", default="val,heldout_grd_dn,heldout_geocoded")
    ap.add_argument("--variant", action="append", default=None, choices=sorted(VARIANTS))
    ap.add_argument("--steps", default=None, help="comma-separated steps (code units)")
    ap.add_argument("--max-bands", type=int, default=0, help="subsample a group to this many bands")
    args = ap.parse_args(argv)
    variants = args.variant or ["b16_dz10"]
    steps = [float(s) for s in args.steps.split(",")] if args.steps else STEPS
    results = {}
    for group in args.groups.split(","):
        images = load_images(group)
        if args.max_bands and len(images) > args.max_bands:
            sel = np.linspace(0, len(images) - 1, args.max_bands).round().astype(int)
            images = [images[i] for i in sel]
        npx = sum(i[1].size for i in images)
        mask_bytes = sum(len(zlib.compress(np.packbits(v).tobytes(), 9)) for _, _, v in images
                         if not v.all())
        print(f"== {group}: {len(images)} bands, {npx / 1e6:.3f} Mpx, mask {mask_bytes * 8 / npx:.4f} bpp")
        anchors = anchor_curves(group, images)
        for var in variants:
            cfg = VARIANTS[var]
            curve = []
            for step in steps:
                recs, nb, ib, side, te, tdec = [], 0, 0.0, 0, 0.0, 0.0
                for _, dn, v in images:
                    o = v2_code(dn, v, step, cfg["block"], cfg["dead_zone"])
                    recs.append(o["dn"])
                    nb += o["bytes"]
                    ib += o["ideal_bytes"]
                    side += o["side_bytes"]
                    te += o["t_enc"]
                    tdec += o["t_dec"]
                row = pooled(images, recs, nb) | {
                    "step": step, "ideal_bpp": ib * 8 / npx, "side_bpp": side * 8 / npx,
                    "enc_mpx_s": npx / 1e6 / max(te, 1e-9), "dec_mpx_s": npx / 1e6 / max(tdec, 1e-9)}
                for a, rows in anchors.items():
                    row[f"ratio_{a}"] = compare([row], rows)[1][0]
                curve.append(row)
                print(f"  {var} step {step:6.0f}: {row['bpp']:.3f} bpp (ideal {row['ideal_bpp']:.3f}, side "
                      f"{row['side_bpp']:.3f}) rmse {row['rmse_db']:.4f} dB bias {row['bias_pct']:+.2f}% "
                      f"ratio j2k {row['ratio_j2k_log']:.3f} jxl {row['ratio_jxl_log']:.3f} "
                      f"enc {row['enc_mpx_s']:.2f} dec {row['dec_mpx_s']:.2f} MP/s", flush=True)
            bd = {a: compare(curve, rows)[0] for a, rows in anchors.items()}
            bd_hi = {a: compare([r for r in curve if r["bpp"] >= 0.8], [r for r in rows if r["bpp"] >= 0.8])[0]
                     for a, rows in anchors.items()}
            print(f"  {var} BD-rate vs j2k_log {bd['j2k_log']:+.1f}%  vs jxl_log {bd['jxl_log']:+.1f}%"
                  f"   (>=0.8 bpp: {bd_hi['j2k_log']:+.1f}% / {bd_hi['jxl_log']:+.1f}%)")
            results.setdefault(var, {})[group] = {"curve": curve, "bd_rate": bd, "bd_rate_ge_0.8bpp": bd_hi,
                                                  "anchors": anchors, "mask_bpp": mask_bytes * 8 / npx}
    out = REPO / "bench/results"
    for var, r in results.items():
        path = out / f"v2_{var}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update(r)
        path.write_text(json.dumps(old, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
