"""The codecs a user would pick instead of sarcodec, swept densely, and how to compare against them.

Every anchor is a function ``image -> list[Point]`` (one point per setting, see ``heldout.measure``);
the rate counts the real bytes of what a user would store, over ALL pixels:

- ``jpeg2000_log``: JPEG2000 (GDAL JP2OpenJPEG, raw J2K codestream in /vsimem/, REVERSIBLE=NO,
  RESOLUTIONS=6, fewer for chips under 256 px: ``floor(log2(min side)) - 2``, because OpenJPEG with
  more levels than a chip supports silently drops the data) on the log code
  ``round(log2(DN) * 4000)`` as uint16, QUALITY sweep.
- ``jpegxl_log``: JPEG XL (``cjxl``/``djxl`` 0.7, Debian ``libjxl-tools``) on the same log code as a 16-bit
  grey PGM, effort 7, a distance sweep reaching ~3 bpp and more.
- ``lerc_db``: GeoTIFF COMPRESS=LERC_ZSTD of float32 dB, MAX_Z_ERROR sweep (the error-bounded anchor).
- ``zstd_lossless``: GeoTIFF COMPRESS=ZSTD PREDICTOR=2 of the uint16 DN (the lossless rate).

Nodata is filled smoothly (``heldout.smooth_fill``) before coding, so no anchor pays for hard 0 edges;
decoding maps the code back with ``round(2^(code/4000))`` clipped to [1, 65535] on valid pixels and 0
elsewhere, exactly like our decoder.

``compare(curve, anchor)``: BD-rate (Bjontegaard, log-rate integrated over the common distortion range;
distortion axis ``-20*log10(RMSE_dB)``, the PSNR analogue, with PCHIP instead of the original cubic
polynomial so dense sweeps do not oscillate) and the RMSE ratio at equal bpp (the anchor's log-RMSE
interpolated by PCHIP over log-bpp). Both use each curve's Pareto front (settings that are not better
than a cheaper one are dropped).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

try:
    from heldout import Image, Point, measure, smooth_fill
except ImportError:  # imported as bench.anchors
    from bench.heldout import Image, Point, measure, smooth_fill

LOG_SCALE = 4000.0
J2K_BPP = [float(b) for b in np.geomspace(0.1, 5.0, 15)]  # QUALITY = 100 * bpp / 16
JXL_DIST = [float(d) for d in np.geomspace(0.06, 12.0, 15)]
LERC_ERR = [float(e) for e in np.geomspace(0.03, 4.0, 14)]  # MAX_Z_ERROR in dB

Codec = Callable[[Image], list[Point]]


class AnchorUnavailable(RuntimeError):
    """A tool an anchor needs is missing (e.g. ``cjxl``); the eval prints it as a skip."""


# ---------------------------------------------------------------------- log code
def log_code(img: Image) -> np.ndarray:
    """``round(log2(DN) * 4000)`` as uint16 with nodata smoothly filled."""
    code = np.log2(np.maximum(img.dn, 1).astype(np.float64)) * LOG_SCALE
    code = smooth_fill(code, img.valid)
    return np.clip(np.rint(code), 0, 65535).astype(np.uint16)


def from_log_code(code: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Decoded log code -> uint16 DN (>= 1 on valid pixels, 0 elsewhere)."""
    dn = np.clip(np.rint(2.0 ** (code.astype(np.float64) / LOG_SCALE)), 1, 65535)
    return np.where(valid, dn, 0).astype(np.uint16)


def _gdal():
    from osgeo import gdal

    gdal.UseExceptions()
    return gdal


def _mem(arr: np.ndarray, gdt: int):
    gdal = _gdal()
    h, w = arr.shape
    src = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdt)
    src.GetRasterBand(1).WriteArray(arr)
    return src


def _vsimem_roundtrip(src, driver: str, options: list[str], suffix: str) -> tuple[np.ndarray, int]:
    gdal = _gdal()
    path = f"/vsimem/anchor_{os.getpid()}_{id(src)}{suffix}"
    gdal.GetDriverByName(driver).CreateCopy(path, src, options=options)
    try:
        nbytes = gdal.VSIStatL(path).size
        ds = gdal.Open(path)
        out = ds.GetRasterBand(1).ReadAsArray()
        ds = None
    finally:
        gdal.Unlink(path)
    return out, int(nbytes)


# ---------------------------------------------------------------------- JPEG2000
def j2k_resolutions(shape: tuple[int, int]) -> int:
    """6 levels, fewer for small chips (OpenJPEG breaks silently past floor(log2(side)))."""
    return max(1, min(6, int(math.log2(max(min(shape), 1))) - 2))


def jpeg2000_log(img: Image, rates: Sequence[float] = J2K_BPP) -> list[Point]:
    """JPEG2000 on the filled log code at each target rate (QUALITY = 100 * bpp / 16)."""
    gdal = _gdal()
    code = log_code(img)
    src = _mem(code, gdal.GDT_UInt16)
    res = j2k_resolutions(code.shape)
    pts = []
    for bpp in rates:
        t = time.perf_counter()
        opts = ["CODEC=J2K", f"QUALITY={min(100.0, 100.0 * bpp / 16.0):.4f}", "REVERSIBLE=NO",
                f"RESOLUTIONS={res}", "YCC=NO"]
        out, n = _vsimem_roundtrip(src, "JP2OpenJPEG", opts, ".j2k")
        rec = from_log_code(out, img.valid)
        pts.append(measure(img, rec, n, f"{bpp:.3g}bpp", time.perf_counter() - t))
    return pts


def j2k_main_header_bytes(img: Image) -> int:
    """Bytes of the J2K main header (SOC to the first SOT), a fixed cost per file: on chips of a few
    kpx it is a large part of JPEG2000's rate, so the eval reports it."""
    gdal = _gdal()
    code = log_code(img)
    opts = ["CODEC=J2K", "QUALITY=10", "REVERSIBLE=NO", f"RESOLUTIONS={j2k_resolutions(code.shape)}", "YCC=NO"]
    path = f"/vsimem/anchor_hdr_{os.getpid()}.j2k"
    gdal.GetDriverByName("JP2OpenJPEG").CreateCopy(path, _mem(code, gdal.GDT_UInt16), options=opts)
    try:
        f = gdal.VSIFOpenL(path, "rb")
        data = bytes(gdal.VSIFReadL(1, gdal.VSIStatL(path).size, f))
        gdal.VSIFCloseL(f)
    finally:
        gdal.Unlink(path)
    return data.index(b"\xff\x90")


# ---------------------------------------------------------------------- JPEG XL
def _write_pgm(path: Path, a: np.ndarray) -> None:
    h, w = a.shape
    path.write_bytes(b"P5\n%d %d\n65535\n" % (w, h) + a.astype(">u2").tobytes())


def _read_pgm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval (comments are not written by djxl)
        while data[pos:pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    pos += 1
    if fields[0] != b"P5":
        raise ValueError(f"djxl wrote {fields[0]!r}, expected a P5 PGM")
    w, h, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    dtype = ">u2" if maxval > 255 else "u1"
    a = np.frombuffer(data, dtype, w * h, pos).reshape(h, w).astype(np.float64)
    return np.rint(a * (65535.0 / maxval)) if maxval != 65535 else a


def jpegxl_log(img: Image, distances: Sequence[float] = JXL_DIST) -> list[Point]:
    """JPEG XL (cjxl -e 7 -d D, one thread) on the filled log code as a 16-bit grey PGM."""
    if shutil.which("cjxl") is None or shutil.which("djxl") is None:
        raise AnchorUnavailable("cjxl/djxl not found (apt-get install libjxl-tools)")
    code = log_code(img)
    tmp_root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    pts = []
    with tempfile.TemporaryDirectory(prefix="anchor_jxl_", dir=tmp_root) as td:
        d = Path(td)
        src, enc, dec = d / "in.pgm", d / "out.jxl", d / "dec.pgm"
        _write_pgm(src, code)
        for dist in distances:
            t = time.perf_counter()
            subprocess.run(["cjxl", str(src), str(enc), "-e", "7", "-d", f"{dist:.4g}", "--num_threads=1"],
                           check=True, capture_output=True)
            subprocess.run(["djxl", str(enc), str(dec), "--num_threads=1"], check=True, capture_output=True)
            rec = from_log_code(_read_pgm(dec), img.valid)
            pts.append(measure(img, rec, enc.stat().st_size, f"d{dist:.3g}", time.perf_counter() - t))
    return pts


# ---------------------------------------------------------------------- LERC and lossless
def lerc_db(img: Image, errors: Sequence[float] = LERC_ERR) -> list[Point]:
    """GeoTIFF LERC_ZSTD of float32 dB (nodata filled smoothly), MAX_Z_ERROR sweep."""
    gdal = _gdal()
    dbv = 20.0 * np.log10(np.maximum(img.dn, 1).astype(np.float64))
    src = _mem(smooth_fill(dbv, img.valid).astype(np.float32), gdal.GDT_Float32)
    pts = []
    for e in errors:
        t = time.perf_counter()
        out, n = _vsimem_roundtrip(src, "GTiff", ["COMPRESS=LERC_ZSTD", f"MAX_Z_ERROR={e:.6g}"], ".tif")
        dn = np.clip(np.rint(10.0 ** (out.astype(np.float64) / 20.0)), 1, 65535)
        rec = np.where(img.valid, dn, 0).astype(np.uint16)
        pts.append(measure(img, rec, n, f"e{e:.3g}dB", time.perf_counter() - t))
    return pts


def zstd_lossless(img: Image) -> list[Point]:
    """GeoTIFF COMPRESS=ZSTD PREDICTOR=2 of the uint16 DN as it is (nodata 0 kept: lossless)."""
    gdal = _gdal()
    t = time.perf_counter()
    out, n = _vsimem_roundtrip(_mem(img.dn, gdal.GDT_UInt16), "GTiff", ["COMPRESS=ZSTD", "PREDICTOR=2"], ".tif")
    if not np.array_equal(out, img.dn):
        raise AssertionError(f"{img.name}: ZSTD GeoTIFF did not round-trip exactly")
    return [measure(img, out.astype(np.uint16), n, "lossless", time.perf_counter() - t)]


ANCHORS: dict[str, Codec] = {
    "jpeg2000_log": jpeg2000_log,
    "jpegxl_log": jpegxl_log,
    "lerc_db": lerc_db,
    "zstd_lossless": zstd_lossless,
}
REFERENCE_ANCHORS = ("jpeg2000_log", "jpegxl_log")  # BD-rate references and "better anchor"


# ---------------------------------------------------------------------- comparisons
def _pairs(curve) -> list[tuple[float, float]]:
    out = []
    for p in curve:
        if isinstance(p, dict):
            bpp, rmse = float(p["bpp"]), float(p["rmse_db"])
        elif hasattr(p, "rmse_db"):
            bpp, rmse = p.bpp, p.rmse_db
        else:
            bpp, rmse = float(p[0]), float(p[1])
        if bpp > 0 and rmse > 0 and math.isfinite(bpp) and math.isfinite(rmse):
            out.append((bpp, rmse))
    return out


def pareto(curve) -> list[tuple[float, float]]:
    """(bpp, rmse) points sorted by bpp, keeping only those with lower RMSE than every cheaper one."""
    front: list[tuple[float, float]] = []
    for bpp, rmse in sorted(_pairs(curve)):
        if front and bpp == front[-1][0]:
            continue
        if not front or rmse < front[-1][1]:
            front.append((bpp, rmse))
    return front


def bd_rate(curve, anchor) -> float:
    """Bjontegaard delta rate (%) of ``curve`` against ``anchor``; nan without a common range."""
    from scipy.interpolate import PchipInterpolator

    a, b = pareto(anchor), pareto(curve)
    if len(a) < 2 or len(b) < 2:
        return float("nan")

    def axes(pts):  # quality rises with bpp: q = -20 log10(rmse), increasing along the front
        q = np.array([-20.0 * math.log10(r) for _, r in pts])
        lr = np.log([bp for bp, _ in pts])
        return q, lr

    qa, la = axes(a)
    qb, lb = axes(b)
    lo, hi = max(qa[0], qb[0]), min(qa[-1], qb[-1])
    if not hi > lo:
        return float("nan")
    q = np.linspace(lo, hi, 2001)
    diff = PchipInterpolator(qb, lb)(q) - PchipInterpolator(qa, la)(q)
    mean = float(np.sum((diff[1:] + diff[:-1]) * 0.5) / (len(q) - 1))
    return 100.0 * (math.exp(mean) - 1.0)


def rmse_at(anchor, bpp: float) -> float:
    """The anchor's RMSE at ``bpp`` (PCHIP of log-RMSE over log-bpp on its front; nan outside)."""
    from scipy.interpolate import PchipInterpolator

    a = pareto(anchor)
    if not a or not bpp > 0:
        return float("nan")
    x = np.log([p[0] for p in a])
    y = np.log([p[1] for p in a])
    lx = math.log(bpp)
    if not x[0] - 1e-12 <= lx <= x[-1] + 1e-12:
        return float("nan")
    if len(a) == 1:
        return float(a[0][1])
    return float(math.exp(PchipInterpolator(x, y)(min(max(lx, x[0]), x[-1]))))


def compare(curve, anchor_curve) -> dict:
    """Compare a curve of (bpp, rmse) pairs, ``Point``s or dicts with ``bpp``/``rmse_db`` to an anchor's.

    Returns ``bd_rate_pct`` (negative = fewer bits at equal error), ``rmse_ratio`` (one per input
    point, in input order: our RMSE / the anchor's at the same bpp, nan outside the anchor's range) and
    ``rmse_range_db`` (the common RMSE range the BD-rate integrates over, or None).
    """
    pts = _pairs(curve)
    ratios = []
    for bpp, rmse in pts:
        base = rmse_at(anchor_curve, bpp)
        ratios.append(rmse / base if base == base else float("nan"))
    a, b = pareto(anchor_curve), pareto(curve)
    rng = None
    if a and b:
        lo, hi = max(a[-1][1], b[-1][1]), min(a[0][1], b[0][1])
        rng = (lo, hi) if hi > lo else None
    return {"bd_rate_pct": bd_rate(curve, anchor_curve), "rmse_ratio": ratios, "rmse_range_db": rng}
