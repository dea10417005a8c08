"""Rate-distortion evaluation of sarcodec against the anchors users would pick (``make eval``).

For each evaluation group of ``bench/heldout.py`` (``val``: v1's validation split; ``heldout_grd_dn``:
one radar-geometry GRDH acquisition; ``heldout_geocoded``: geocoded sigma0 dB patches) every image is
coded whole by every codec entry, and the points are pooled over the images (bands) of the group:

- anchors (``bench/anchors.py``): JPEG2000 and JPEG XL on the log-encoded DN, LERC on dB, lossless
  ZSTD GeoTIFF, each swept densely, with a smooth nodata fill;
- ``sarcodec_v2`` (the default model) at each quality: the product's own v2 functions (block-size
  choice and side-info fit on the image, ``dct_v2.encode_chunk`` on 512 px chunks, the real
  ``dct_v2.decode_chunk``, the intensity gain from ``pipeline.summarize_samples``); the rate counts
  the real chunk bytes, the band's side info and a small per-image header (quality, gain, chunk
  sizes). The container's own overhead is measured separately (``bench/overhead.py``);
- ``sarcodec_v1`` at each quality: analysis -> ``LatentCoder`` in chunks of 32x32 latents -> synthesis;
  the rate counts the real entropy-coded bytes plus a small per-image header (offset, chunk sizes);
- plug-ins: ``--codec module:attr`` (module found on ``bench/``), where attr is a callable
  ``image -> list[heldout.Point]`` or a dict of them; this is how another codec (v2) joins the table.

Reported per group: every point (bpp over all pixels from real bytes, dB-RMSE over valid pixels,
mean-intensity bias, ENL ratio on homogeneous windows (> 1 means the codec smooths speckle), SSIM on
the dB image, MP/s of the whole round trip), the RMSE ratio at equal bpp to JPEG2000, to JPEG XL and to
the better of them, and the BD-rate of every codec against JPEG2000 and JPEG XL over the common range
(``anchors.compare``). Outputs: printed tables, ``bench/results/rd.md``, ``rd.csv``, ``rd.json`` and
one plot per group ``bench/results/rd_<group>.png``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
sys.path.insert(0, str(REPO / "bench"))

import anchors  # noqa: E402
import heldout  # noqa: E402
import torch  # noqa: E402

from sarcodec.codec.entropy import LatentCoder  # noqa: E402
from sarcodec.codec.model import DEFAULT_QUALITY, SarCodec, load_checkpoint  # noqa: E402
from sarcodec.training.data import pad_to_multiple  # noqa: E402

CHUNK = 32  # latents per chunk side (512x512 pixels)
Codec = Callable[[heldout.Image], list[heldout.Point]]


# ---------------------------------------------------------------------- sarcodec v1
def sarcodec_code(model: SarCodec, coder: LatentCoder, img: heldout.Image, quality: int) -> tuple[np.ndarray, int]:
    """Code one image whole; returns (reconstructed DN uint16, bytes)."""
    L = heldout.to_db(img.dn)
    offset = float(np.float32(np.median(L[img.valid])))
    x = np.where(img.valid, (L - offset) / 10.0, 0.0).astype(np.float32)
    h, w = x.shape
    xp = pad_to_multiple(x, model.stride)
    with torch.inference_mode():
        y = model.analysis(torch.from_numpy(np.ascontiguousarray(xp))[None, None], quality)[0].numpy()
    _, hl, wl = y.shape
    y_hat = np.empty_like(y)
    nbytes = 4 + 1  # float32 offset + quality byte
    for r in range(0, hl, CHUNK):
        for c in range(0, wl, CHUNK):
            data, yh = coder.encode_chunk(y[:, r:r + CHUNK, c:c + CHUNK])
            dec = coder.decode_chunk(data, *yh.shape[1:])
            assert np.array_equal(dec, yh), "entropy round trip is not exact"
            y_hat[:, r:r + CHUNK, c:c + CHUNK] = dec
            nbytes += len(data) + 4  # chunk length field
    with torch.inference_mode():
        x_hat = model.synthesis(torch.from_numpy(y_hat)[None], quality)[0, 0].numpy()[:h, :w]
    L_hat = 10.0 * x_hat.astype(np.float64) + offset
    rec = np.clip(np.rint(10.0 ** (L_hat / 20.0)), 1, 65535).astype(np.uint16)
    return np.where(img.valid, rec, 0).astype(np.uint16), nbytes


def sarcodec_entry(model: SarCodec) -> Codec:
    """The v1 codec as a codec entry: one point per quality."""
    coder = LatentCoder(model)

    def run(img: heldout.Image) -> list[heldout.Point]:
        pts = []
        for q in range(1, model.n_qualities + 1):
            t = time.perf_counter()
            rec, n = sarcodec_code(model, coder, img, q)
            pts.append(heldout.measure(img, rec, n, f"q{q}", time.perf_counter() - t))
        return pts

    return run


# ---------------------------------------------------------------------- sarcodec v2
def sarcodec_v2_code(model, img: heldout.Image, quality: int) -> tuple[np.ndarray, int]:
    """Code one image whole with codec v2 as the product does; returns (reconstructed DN uint16, bytes)."""
    from sarcodec.codec import dct_v2
    from sarcodec.codec.dct_fit import Sample, choose_block_params, fit_band_params
    from sarcodec.codec.pipeline import quality_sample, summarize_samples

    L = heldout.to_db(img.dn)
    valid = img.valid
    c = dct_v2.CHUNK_PX
    step = model.step(quality)
    sample = Sample([np.where(valid, L, 0.0)[:c, :c]], [valid[:c, :c]])
    block, trial = choose_block_params(sample, step, model.prior, dead_zone=dct_v2.DEAD_ZONE)
    nbl = -(-L.shape[0] // block) * -(-L.shape[1] // block)
    params = fit_band_params(sample, step, model.prior, block, dead_zone=dct_v2.DEAD_ZONE, band_blocks=nbl,
                             start=trial)
    coding = dct_v2.BandCoding(params, step)
    n_chunks = -(-L.shape[0] // c) * -(-L.shape[1] // c)
    nbytes = 1 + 2 + len(params.to_bytes()) + (2 * n_chunks if n_chunks > 1 else 0)  # quality, gain, sizes
    rec = np.zeros_like(L)
    samples = {}
    for r in range(0, L.shape[0], c):
        for cc in range(0, L.shape[1], c):
            v = valid[r:r + c, cc:cc + c]
            data, _ = dct_v2.encode_chunk(L[r:r + c, cc:cc + c], v, coding, model)
            nbytes += len(data)
            dec = dct_v2.decode_chunk(data, *v.shape, coding, model)
            rec[r:r + c, cc:cc + c] = dec
            samples[(r, cc)] = quality_sample(L[r:r + c, cc:cc + c][v], dec[v])
    gain = summarize_samples(samples).gain_db
    out = np.clip(np.rint(10.0 ** ((rec + gain) / 20.0)), 1, 65535)
    return np.where(valid, out, 0).astype(np.uint16), nbytes


def sarcodec_v2_entry(model) -> Codec:
    """The v2 codec as a codec entry: one point per quality."""

    def run(img: heldout.Image) -> list[heldout.Point]:
        pts = []
        for q in range(1, model.n_qualities + 1):
            t = time.perf_counter()
            rec, n = sarcodec_v2_code(model, img, q)
            pts.append(heldout.measure(img, rec, n, f"q{q}", time.perf_counter() - t))
        return pts

    return run


def load_plugins(specs: list[str]) -> dict[str, Codec]:
    """``module:attr`` -> codec entries (attr: a callable, named attr, or a dict name -> callable)."""
    out: dict[str, Codec] = {}
    for spec in specs:
        mod_name, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(mod_name), attr or "CODECS")
        if isinstance(obj, dict):
            out.update(obj)
        elif callable(obj):
            out[attr] = obj
        else:
            raise SystemExit(f"sarcodec: --codec {spec}: not a callable or a dict of callables")
    return out


# ---------------------------------------------------------------------- PNG plot (no matplotlib)
_FONT = {  # 3x5 bitmap glyphs for labels
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", " ": "000000000000000",
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011", "D": "110101101101110",
    "E": "111100110100111", "F": "111100110100100", "G": "011100101101011", "H": "101101111101101",
    "I": "111010010010111", "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010", "P": "110101110100100",
    "Q": "010101101111011", "R": "110101110101101", "S": "011100010001110", "T": "111010010010010",
    "U": "101101101101111", "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111", "-": "000000111000000", "_": "000000000000111",
}
_COLORS = {"sarcodec_v2": (0, 0, 0), "sarcodec_v1": (200, 30, 30), "jpeg2000_log": (30, 90, 200),
           "jpegxl_log": (20, 150, 60), "lerc_db": (230, 140, 0), "zstd_lossless": (110, 110, 110)}
_EXTRA = [(150, 40, 170), (0, 160, 170), (140, 90, 40), (220, 60, 150), (0, 0, 0)]


def _text(img: np.ndarray, s: str, r: int, c: int, color: tuple[int, int, int], k: int = 2) -> None:
    for ch in s.upper():
        g = _FONT.get(ch)
        if g is not None:
            for i, bit in enumerate(g):
                if bit == "1":
                    rr, cc = r + (i // 3) * k, c + (i % 3) * k
                    img[rr:rr + k, cc:cc + k] = color
        c += 4 * k


def _line(img: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], color, width: int = 2) -> None:
    n = int(max(abs(p1[0] - p0[0]), abs(p1[1] - p0[1]))) + 1
    for t in np.linspace(0, 1, n):
        r = int(round(p0[0] + t * (p1[0] - p0[0])))
        c = int(round(p0[1] + t * (p1[1] - p0[1])))
        r0, c0 = max(r - width // 2, 0), max(c - width // 2, 0)
        img[r0:r + width - width // 2, c0:c + width - width // 2] = color


def write_plot(curves: dict[str, list[heldout.Point]], title: str, path: Path) -> None:
    """RD plot of every curve: x = bpp (log axis, 0.1-16), y = dB-RMSE; PNG through GDAL."""
    from osgeo import gdal

    H, W, m = 480, 720, 50
    img = np.full((H, W, 3), 255, np.uint8)
    x0, x1 = math.log(0.1), math.log(16.0)
    lossy = [p.rmse_db for pts in curves.values() for p in pts if 0.1 <= p.bpp <= 16]
    y0, y1 = 0.0, min(max(lossy + [1.0]) * 1.05, 4.0)

    def to_px(bpp: float, rmse: float) -> tuple[float, float]:
        c = m + (min(max(math.log(bpp), x0), x1) - x0) / (x1 - x0) * (W - 2 * m)
        r = H - m - (min(rmse, y1) - y0) / (y1 - y0) * (H - 2 * m)
        return r, c

    _line(img, (H - m, m), (H - m, W - m), (0, 0, 0), 1)
    _line(img, (m, m), (H - m, m), (0, 0, 0), 1)
    for b in (0.125, 0.25, 0.5, 1, 2, 4, 8, 16):
        r, c = to_px(b, y0)
        _line(img, (r, c), (r + 5, c), (0, 0, 0), 1)
        _text(img, f"{b:g}", int(r) + 10, int(c) - 8, (0, 0, 0))
    step = 0.5 if y1 <= 2.5 else 1.0
    for v in np.arange(0, y1 + 1e-9, step):
        r, c = to_px(math.exp(x0), v)
        _line(img, (r, c - 5), (r, c), (0, 0, 0), 1)
        _text(img, f"{v:g}", int(r) - 5, 12, (0, 0, 0))
    extra = iter(_EXTRA)
    colors = {name: _COLORS.get(name) or next(extra, (0, 0, 0)) for name in curves}
    for name, pts in curves.items():
        pts = sorted(pts, key=lambda p: p.bpp)
        px = [to_px(p.bpp, p.rmse_db) for p in pts if p.bpp > 0]
        for a, b in zip(px, px[1:], strict=False):
            _line(img, a, b, colors[name], 2)
        for r, c in px:
            img[max(int(r) - 3, 0):int(r) + 4, max(int(c) - 3, 0):int(c) + 4] = colors[name]
    for i, name in enumerate(curves):
        r = m + 16 * i
        img[r:r + 10, W - m - 150:W - m - 138] = colors[name]
        _text(img, name, r, W - m - 130, colors[name])
    _text(img, title, 8, W // 2 - 4 * len(title), (0, 0, 0))
    _text(img, "BPP", H - 16, W // 2 - 12, (0, 0, 0))
    _text(img, "RMSE DB", 28, 8, (0, 0, 0))
    mem = gdal.GetDriverByName("MEM").Create("", W, H, 3, gdal.GDT_Byte)
    for k in range(3):
        mem.GetRasterBand(k + 1).WriteArray(img[:, :, k])
    gdal.GetDriverByName("PNG").CreateCopy(str(path), mem)
    aux = Path(str(path) + ".aux.xml")
    if aux.exists():
        aux.unlink()


# ---------------------------------------------------------------------- throughput
def measure_throughput(model: SarCodec, coder: LatentCoder) -> dict[str, float]:
    """Analysis/synthesis MP/s at batch 8 x 256x256 and entropy-coder symbols/s (current threads)."""
    torch.manual_seed(0)
    x = torch.randn(8, 1, 256, 256) * 0.4
    q = DEFAULT_QUALITY
    with torch.inference_mode():
        model.analysis(x, q)
        t = time.perf_counter()
        y = model.analysis(x, q)
        ta = time.perf_counter() - t
        yr = torch.round(y)
        model.synthesis(yr, q)
        t = time.perf_counter()
        model.synthesis(yr, q)
        ts = time.perf_counter() - t
    # Entropy: real-image-like latents (from a smooth speckled field) in 32x32 chunks.
    rng = np.random.default_rng(0)
    field = np.cumsum(np.cumsum(rng.standard_normal((512, 512)), 0), 1)
    field = (field - field.mean()) / field.std() * 0.5 + rng.standard_normal((512, 512)) * 0.25
    with torch.inference_mode():
        ylat = model.analysis(torch.from_numpy(field.astype(np.float32))[None, None], q)[0].numpy()
    reps = 3
    t = time.perf_counter()
    for _ in range(reps):
        data, _ = coder.encode_chunk(ylat)
    te = (time.perf_counter() - t) / reps
    t = time.perf_counter()
    for _ in range(reps):
        coder.decode_chunk(data, *ylat.shape[1:])
    td = (time.perf_counter() - t) / reps
    px = 8 * 256 * 256 / 1e6
    return {"analysis_mpx_s": px / ta, "synthesis_mpx_s": px / ts,
            "entropy_encode_sym_s": ylat.size / te, "entropy_decode_sym_s": ylat.size / td,
            "entropy_encode_mpx_s": 512 * 512 / 1e6 / te, "entropy_decode_mpx_s": 512 * 512 / 1e6 / td}


# ---------------------------------------------------------------------- evaluation of one group
def _nan(v: float) -> float | None:
    return None if v is None or v != v else float(v)


def evaluate_group(group: str, images: list[heldout.Image], codecs: dict[str, Codec],
                   log=print) -> dict:
    """Every codec on every image of the group, pooled; returns curves, rows and BD-rates."""
    curves: dict[str, list[heldout.Point]] = {}
    skipped: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, fn in codecs.items():
        t = time.perf_counter()
        try:
            curves[name] = heldout.pool([fn(img) for img in images])
        except anchors.AnchorUnavailable as exc:
            skipped[name] = str(exc)
            log(f"  skip {name}: {exc}")
            continue
        seconds[name] = time.perf_counter() - t
        log(f"  {name}: {len(curves[name])} points in {seconds[name]:.1f} s")
    refs = [a for a in anchors.REFERENCE_ANCHORS if a in curves]
    rows, bd = [], {}
    for name, pts in curves.items():
        cmp = {a: anchors.compare(pts, curves[a]) for a in refs}
        bd[name] = {a: _nan(c["bd_rate_pct"]) for a, c in cmp.items()}
        bd[name]["rmse_range_db"] = {a: c["rmse_range_db"] for a, c in cmp.items()}
        for p in pts:
            row = {"group": group, "codec": name, "setting": p.setting, "bpp": p.bpp, "rmse_db": p.rmse_db,
                   "bias_pct": 100.0 * p.bias, "enl_ratio": p.enl_ratio, "ssim": p.ssim,
                   "mpx_per_s": p.pixels / 1e6 / p.seconds if p.seconds > 0 else float("nan")}
            base = {}
            for a in refs:  # the same interpolation compare() uses, per point
                at = anchors.rmse_at(curves[a], p.bpp)
                base[a] = p.rmse_db / at if at == at and at > 0 else float("nan")
                row[f"ratio_{a}"] = base[a]
            finite = [v for v in base.values() if v == v]
            row["ratio_best_anchor"] = max(finite) if finite else float("nan")  # smaller anchor RMSE
            rows.append(row)
    return {"group": group, "curves": curves, "rows": rows, "bd": bd, "skipped": skipped,
            "seconds": seconds, "refs": refs}


def _f(v, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def group_markdown(res: dict, images: list[heldout.Image]) -> list[str]:
    sides = sorted({s for i in images for s in i.dn.shape})
    npx = sum(i.dn.size for i in images)
    nodata = 1.0 - sum(int(i.valid.sum()) for i in images) / npx
    refs = res["refs"]
    lines = [f"## {res['group']}", "",
             f"{len(images)} images (bands), {npx / 1e6:.3f} Mpx, sides {sides[0]}-{sides[-1]} px, "
             f"{100 * nodata:.1f} % nodata. Every codec codes every image whole (no sweep cap: the "
             f"largest image is {max(i.dn.size for i in images) / 1e3:.0f} kpx); rate = real file bytes "
             "over all pixels, pooled over the images."]
    if "jpeg2000_log" in res["curves"]:
        hdr = sum(anchors.j2k_main_header_bytes(i) for i in images)
        lines.append(f"JPEG2000's main header (a fixed cost per file) is {hdr / len(images):.0f} bytes per image "
                     f"here, {8 * hdr / npx:.3f} bpp of its rate.")
    lines.append("")
    head = "| codec | setting | bpp | RMSE dB | bias % | ENL ratio | SSIM | MP/s | " + \
        " | ".join(f"RMSE / {a} @bpp" for a in refs) + " | RMSE / better anchor |"
    lines += [head, "|" + "---|" * (9 + len(refs))]
    for r in res["rows"]:
        lines.append(f"| {r['codec']} | {r['setting']} | {r['bpp']:.3f} | {r['rmse_db']:.3f} | "
                     f"{r['bias_pct']:+.2f} | {_f(r['enl_ratio'], '.2f')} | {_f(r['ssim'], '.3f')} | "
                     f"{_f(r['mpx_per_s'], '.2f')} | "
                     + " | ".join(_f(r[f"ratio_{a}"], ".3f") for a in refs)
                     + f" | {_f(r['ratio_best_anchor'], '.3f')} |")
    lines += ["", "| codec | " + " | ".join(f"BD-rate vs {a} %" for a in refs) + " | seconds |",
              "|---|" + "---|" * (len(refs) + 1)]
    for name, b in res["bd"].items():
        lines.append(f"| {name} | " + " | ".join(_f(b.get(a), "+.1f") for a in refs)
                     + f" | {res['seconds'].get(name, float('nan')):.1f} |")
    for name, why in res["skipped"].items():
        lines.append(f"| {name} | skipped: {why} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(REPO / "resources/models/sarcodec_v1.pt"))
    ap.add_argument("--out", default=str(REPO / "bench/results"))
    ap.add_argument("--groups", default=",".join(heldout.GROUPS))
    ap.add_argument("--codec", action="append", default=[], metavar="MODULE:ATTR",
                    help="extra codec entries (callable image -> points, or a dict of them)")
    ap.add_argument("--no-v1", action="store_true", help="leave sarcodec_v1 out")
    ap.add_argument("--v2-model", default=str(REPO / "resources/models/sarcodec_v2.npz"))
    ap.add_argument("--no-v2", action="store_true", help="leave sarcodec_v2 out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    codecs: dict[str, Codec] = dict(anchors.ANCHORS)
    if not args.no_v2:
        from sarcodec.codec.dct_model import load_model as load_v2

        codecs["sarcodec_v2"] = sarcodec_v2_entry(load_v2(args.v2_model))
    model = None
    if not args.no_v1:
        model = load_checkpoint(args.checkpoint)
        codecs["sarcodec_v1"] = sarcodec_entry(model)
    codecs.update(load_plugins(args.codec))

    md = ["# Rate-distortion against the anchors (`make eval`, bench/rd.py)", "",
          "dB-RMSE of 20*log10(DN) over valid pixels; bias = mean DN^2 after / before - 1; BD-rate: "
          "log-rate integrated over the common range of -20*log10(RMSE) (PCHIP on each Pareto front); "
          "RMSE / anchor @bpp: the anchor's log-RMSE interpolated over log-bpp (- outside its range); "
          "'better anchor' = the lower of JPEG2000 and JPEG XL RMSE at that bpp.", ""]
    csv_rows: list[dict] = []
    js: dict = {}
    for group in [g for g in args.groups.split(",") if g]:
        try:
            images = heldout.load_group(group)
        except heldout.DataMissing as exc:
            print(f"{group}: skipped ({exc})")
            md += [f"## {group}", "", f"skipped: {exc}", ""]
            js[group] = {"skipped": str(exc)}
            continue
        print(f"{group}: {len(images)} images, {sum(i.dn.size for i in images) / 1e6:.3f} Mpx")
        res = evaluate_group(group, images, codecs)
        lines = group_markdown(res, images)
        print("\n".join(lines))
        md += lines
        csv_rows += res["rows"]
        js[group] = {"images": [i.name for i in images], "pixels": int(sum(i.dn.size for i in images)),
                     "rows": [{k: (_nan(v) if isinstance(v, float) else v) for k, v in r.items()}
                              for r in res["rows"]],
                     "bd_rate_pct": res["bd"], "skipped": res["skipped"], "seconds": res["seconds"]}
        write_plot(res["curves"], group, out / f"rd_{group}.png")

    if model is not None and not args.no_throughput:
        tp = measure_throughput(model, LatentCoder(model))
        js["throughput_v1"] = tp
        md += [f"sarcodec_v1 throughput ({torch.get_num_threads()} threads, batch 8 x 256x256): analysis "
               f"{tp['analysis_mpx_s']:.2f} MP/s, synthesis {tp['synthesis_mpx_s']:.2f} MP/s; entropy coder "
               f"encode {tp['entropy_encode_mpx_s']:.1f} MP/s, decode {tp['entropy_decode_mpx_s']:.1f} MP/s", ""]
        print(md[-2])

    fields = ["group", "codec", "setting", "bpp", "rmse_db", "bias_pct", "enl_ratio", "ssim", "mpx_per_s",
              *[f"ratio_{a}" for a in anchors.REFERENCE_ANCHORS], "ratio_best_anchor"]
    tmp = out / "rd.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        wr.writeheader()
        for r in csv_rows:
            wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(out / "rd.csv")
    for name, text in (("rd.md", "\n".join(md) + "\n"), ("rd.json", json.dumps(js, indent=1) + "\n")):
        (out / (name + ".tmp")).write_text(text)
        (out / (name + ".tmp")).replace(out / name)
    print(f"wrote {out / 'rd.md'}, {out / 'rd.csv'}, {out / 'rd.json'}, {out}/rd_<group>.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
