"""Evaluation sets for ``make eval`` and the metrics every codec is scored with.

Three groups of real Sentinel-1 images, each image one band as uint16 DN (0 = nodata) with its valid
mask, so every codec (ours and the anchors) sees exactly the same reference:

- ``val``: the v1 validation split (``load_split``: the ``s1_grd_dn_chips`` of date 20150823 and the
  bottom-right quadrant of the Sen1Floods11 dB scene in ``s1_grd_db``).
- ``heldout_grd_dn``: radar-geometry GRDH DN of one acquisition (``s1_grd_dn_chips`` of 20160518),
  meant to be held out of training entirely. NOTE: v1 was trained on these chips (its split held out
  only 20150823); a model trained after issue 12 must leave them out.
- ``heldout_geocoded``: the geocoded sigma0 dB patches of ``s1_grd_db_patches`` (never used in training),
  converted to DN with ``DN = round(10^(dB/20) * A)``, A putting each band's median at DN 200 like real
  GRD (the same conversion ``bench/rd.py`` applies to the Sen1Floods11 dB scene).

Multi-band files contribute each band (VV, VH) as its own image; metrics are pooled over the images of
a group (sum of squared errors over all valid pixels, bits over all pixels).

Metric definitions (one place, so every codec is scored the same way): dB error is on 20*log10(DN)
over valid pixels; bias is mean DN^2 after / before - 1 over valid pixels; rate is file bytes * 8 over
ALL pixels (nodata included, as a user's file holds them).

The data root is ``../shared/data/sar-train`` (``$SARCODEC_DATA`` overrides); a missing root raises
``DataMissing`` with a message the eval prints as a skip.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))

from sarcodec.training.data import load_split  # noqa: E402

GROUPS = ("val", "heldout_grd_dn", "heldout_geocoded")
VAL_DATES = ["20150823"]  # v1's split (configs/train_default.toml, checkpoint metadata)
VAL_QUADRANT = "br"
HELDOUT_GRD_DATE = "20160518"
GEOCODED_MEDIAN_DN = 200.0


class DataMissing(RuntimeError):
    """The SAR data folder is not there; the eval reports the group as skipped."""


@dataclass(eq=False)
class Image:
    """One band to code: uint16 DN (0 = nodata) and its valid mask (True = data)."""

    name: str
    group: str
    dn: np.ndarray
    valid: np.ndarray

    @functools.cached_property
    def enl_windows(self) -> list[tuple[int, int]]:
        """Homogeneous windows of the reference, computed once per image for the ENL ratio."""
        return homogeneous_windows(self.dn.astype(np.float64) ** 2, self.valid)


def data_root() -> Path:
    """``$SARCODEC_DATA`` or ``../shared/data/sar-train`` relative to the repository."""
    env = os.environ.get("SARCODEC_DATA")
    root = Path(env) if env else (REPO / "../shared/data/sar-train")
    return root.resolve()


def _require(folder: Path) -> Path:
    if not folder.is_dir():
        raise DataMissing(f"data folder {folder} is missing (set SARCODEC_DATA)")
    return folder


def _read(path: Path) -> tuple[np.ndarray, float | None]:
    import rasterio  # lazily: the codec never needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            return ds.read(), ds.nodata


def _db_to_dn(dbv: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """sigma0 dB -> uint16 DN with the band's median at DN 200 (0 where invalid)."""
    med = float(np.median(dbv[valid]))
    scale = GEOCODED_MEDIAN_DN / 10.0 ** (med / 20.0)
    amp = 10.0 ** (np.where(valid, dbv, med).astype(np.float64) / 20.0) * scale
    return np.where(valid, np.clip(np.rint(amp), 1, 65535), 0).astype(np.uint16)


def _load_val(root: Path) -> list[Image]:
    _, val = load_split(root, VAL_DATES, VAL_QUADRANT, ["s1_grd_dn_chips", "s1_grd_db"])
    out = []
    for b in val:
        if b.source == "s1_grd_dn_chips":  # integer DN round-trips exactly through float32 dB
            dn = np.where(b.valid, np.clip(np.rint(10.0 ** (b.db.astype(np.float64) / 20.0)), 1, 65535), 0)
            dn = dn.astype(np.uint16)
        else:
            dn = _db_to_dn(b.db, b.valid)
        out.append(Image(b.name, "val", dn, dn > 0))
    return out


def _load_grd_dn(root: Path) -> list[Image]:
    folder = _require(root / "s1_grd_dn_chips")
    out = []
    for path in sorted(folder.glob(f"{HELDOUT_GRD_DATE}*.tif")):
        arr, nodata = _read(path)
        for bi, band in enumerate(arr):
            dn = np.clip(band.astype(np.float64), 0, 65535)
            if nodata is not None and not np.isnan(nodata):
                dn = np.where(band == nodata, 0, dn)
            dn = dn.astype(np.uint16)
            if (dn > 0).sum() >= 64:
                out.append(Image(f"s1_grd_dn_chips/{path.name}#b{bi + 1}", "heldout_grd_dn", dn, dn > 0))
    return out


def _load_geocoded(root: Path) -> list[Image]:
    folder = _require(root / "s1_grd_db_patches")
    out = []
    for path in sorted(folder.glob("*.tif")):
        arr, nodata = _read(path)
        for bi, band in enumerate(arr):
            b = band.astype(np.float64)
            valid = np.isfinite(b)
            if nodata is not None and not np.isnan(nodata):
                valid &= b != nodata
            if valid.sum() < 64:
                continue
            dn = _db_to_dn(np.where(valid, b, 0.0), valid)
            out.append(Image(f"s1_grd_db_patches/{path.name}#b{bi + 1}", "heldout_geocoded", dn, dn > 0))
    return out


_LOADERS = {"val": _load_val, "heldout_grd_dn": _load_grd_dn, "heldout_geocoded": _load_geocoded}


def load_group(name: str) -> list[Image]:
    """The images of one evaluation group (see the module docstring); raises ``DataMissing``."""
    if name not in _LOADERS:
        raise ValueError(f"unknown group {name!r}; one of {', '.join(GROUPS)}")
    root = _require(data_root())
    try:
        images = _LOADERS[name](root)
    except FileNotFoundError as exc:  # load_split's own missing-folder error
        raise DataMissing(str(exc)) from exc
    if not images:
        raise DataMissing(f"group {name}: no images under {root}")
    return images


# ---------------------------------------------------------------------- metrics
def to_db(dn: np.ndarray) -> np.ndarray:
    """20*log10(DN) in float64 (DN < 1 counts as 1: every valid reconstruction is >= 1)."""
    return 20.0 * np.log10(np.maximum(dn.astype(np.float64), 1.0))


def db_sse(dn: np.ndarray, dn_hat: np.ndarray, valid: np.ndarray) -> tuple[float, int]:
    """Sum of squared dB errors over valid pixels and their count (for pooling over images)."""
    d = (to_db(dn_hat) - to_db(dn))[valid]
    return float((d * d).sum()), int(d.size)


def db_rmse(dn: np.ndarray, dn_hat: np.ndarray, valid: np.ndarray) -> float:
    """RMSE of 20*log10(DN) over valid pixels, in dB."""
    se, n = db_sse(dn, dn_hat, valid)
    return math.sqrt(se / max(n, 1))


def intensity_sums(dn: np.ndarray, dn_hat: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(sum DN^2, sum DN_hat^2) over valid pixels, for pooling the bias over images."""
    a = dn.astype(np.float64)[valid]
    b = dn_hat.astype(np.float64)[valid]
    return float((a * a).sum()), float((b * b).sum())


def intensity_bias(dn: np.ndarray, dn_hat: np.ndarray, valid: np.ndarray) -> float:
    """Mean-intensity bias: mean DN_hat^2 / mean DN^2 - 1 over valid pixels (0.01 = +1 %)."""
    ref, rec = intensity_sums(dn, dn_hat, valid)
    return rec / ref - 1.0 if ref > 0 else float("nan")


def _box_same(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over (2r+1)^2 windows centred on every pixel, zero outside (cumulative sums, O(N))."""
    p = np.pad(a, r + 1)
    c = np.cumsum(np.cumsum(p, 0), 1)
    k = 2 * r + 1
    s = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return s[:a.shape[0], :a.shape[1]]


def smooth_fill(code: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace nodata by a smooth, mask-weighted continuation of the valid values (float64).

    A hard 0 (or any constant) next to log codes near 28000 costs an anchor bits at the edge. This is
    the normalised-convolution fill: blur(code * valid) / blur(valid) with three box passes (close to a
    Gaussian), the radius doubling until every hole is reached; each pixel takes the value of the
    smallest radius that reaches it, then the fill is blurred once more so the scales blend. Valid
    pixels are returned unchanged.
    """
    v = valid.astype(np.float64)
    x = np.where(valid, code.astype(np.float64), 0.0)
    out = x.copy()
    if valid.all() or not valid.any():
        return out if valid.any() else np.zeros_like(x)

    def blur(a: np.ndarray, r: int) -> np.ndarray:
        for _ in range(3):
            a = _box_same(a, r)
        return a

    todo = ~valid
    r = 1
    while todo.any():
        num, den = blur(x, r), blur(v, r)
        ok = todo & (den > 1e-9 * (2 * r + 1) ** 6)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
        r *= 2
        if r > 2 * max(code.shape):  # unreachable in practice: one valid pixel reaches everything
            out[todo] = float(x[valid].mean())
            break
    # Blend the scales: one normalised pass over the filled image, kept only on the holes.
    rr = 2
    sm = blur(out, rr) / blur(np.ones_like(out), rr)
    return np.where(valid, x, sm)


# ---------------------------------------------------------------------- SSIM and ENL
def box(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k windows ('valid' positions) via cumulative sums."""
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), 0), 1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def ssim_db(ref: np.ndarray, rec: np.ndarray, valid: np.ndarray, k: int = 7) -> tuple[float, int]:
    """SSIM (k x k box windows) of the dB images over fully valid windows; returns (sum, count)."""
    if min(ref.shape) < k or not valid.any():
        return 0.0, 0
    lo, hi = np.percentile(ref[valid], [0.5, 99.5])
    rng = max(hi - lo, 1e-6)
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    mx, my = box(ref, k), box(rec, k)
    sxx = box(ref * ref, k) - mx * mx
    syy = box(rec * rec, k) - my * my
    sxy = box(ref * rec, k) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    ok = box(valid.astype(np.float64), k) > 0.999
    return float(s[ok].sum()), int(ok.sum())


def homogeneous_windows(ref_int: np.ndarray, valid: np.ndarray, w: int = 11) -> list[tuple[int, int]]:
    """Top-left corners of the most homogeneous (highest-ENL fifth) non-overlapping w x w windows."""
    h, wd = ref_int.shape
    cand = []
    for r in range(0, h - w + 1, w):
        for c in range(0, wd - w + 1, w):
            if not valid[r:r + w, c:c + w].all():
                continue
            win = ref_int[r:r + w, c:c + w]
            cand.append((win.mean() ** 2 / max(win.var(), 1e-12), r, c))
    cand.sort(reverse=True)
    keep = max(1, len(cand) // 5) if cand else 0
    return [(r, c) for _, r, c in cand[:keep]]


def enl(inten: np.ndarray, wins: list[tuple[int, int]], w: int = 11) -> list[float]:
    """ENL (mean^2 / variance of intensity) in each window."""
    return [inten[r:r + w, c:c + w].mean() ** 2 / max(inten[r:r + w, c:c + w].var(), 1e-12)
            for r, c in wins]


# ---------------------------------------------------------------------- one operating point
@dataclass
class Point:
    """One codec setting on one image (or pooled over a group): sums, so groups pool exactly."""

    setting: str
    bits: float = 0.0
    pixels: int = 0
    se_db: float = 0.0
    n_valid: int = 0
    i_ref: float = 0.0
    i_rec: float = 0.0
    ssim_sum: float = 0.0
    ssim_n: int = 0
    enl_ref: list[float] = field(default_factory=list)
    enl_rec: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0

    @property
    def bpp(self) -> float:
        return self.bits / max(self.pixels, 1)

    @property
    def rmse_db(self) -> float:
        return math.sqrt(self.se_db / max(self.n_valid, 1))

    @property
    def bias(self) -> float:
        return self.i_rec / self.i_ref - 1.0 if self.i_ref > 0 else float("nan")

    @property
    def ssim(self) -> float:
        return self.ssim_sum / self.ssim_n if self.ssim_n else float("nan")

    @property
    def enl_ratio(self) -> float:
        if not self.enl_ref:
            return float("nan")
        return float(np.median(self.enl_rec) / np.median(self.enl_ref))

    def add(self, other: Point) -> None:
        """Pool another image's point of the same setting into this one."""
        self.bits += other.bits
        self.pixels += other.pixels
        self.se_db += other.se_db
        self.n_valid += other.n_valid
        self.i_ref += other.i_ref
        self.i_rec += other.i_rec
        self.ssim_sum += other.ssim_sum
        self.ssim_n += other.ssim_n
        self.enl_ref += other.enl_ref
        self.enl_rec += other.enl_rec
        self.seconds += other.seconds
        self.images += other.images


def measure(img: Image, dn_hat: np.ndarray, nbytes: int, setting: str, seconds: float = 0.0) -> Point:
    """Score one reconstruction (uint16 DN, >= 1 on valid pixels) that took ``nbytes`` in its file."""
    v = img.valid
    se, n = db_sse(img.dn, dn_hat, v)
    i_ref, i_rec = intensity_sums(img.dn, dn_hat, v)
    s, sn = ssim_db(to_db(img.dn), to_db(dn_hat), v)
    wins = img.enl_windows
    return Point(setting, 8.0 * nbytes, int(img.dn.size), se, n, i_ref, i_rec, s, sn,
                 enl(img.dn.astype(np.float64) ** 2, wins), enl(dn_hat.astype(np.float64) ** 2, wins),
                 seconds, 1)


def pool(per_image: list[list[Point]]) -> list[Point]:
    """Pool each setting over images (settings matched by name, order of first appearance)."""
    out: dict[str, Point] = {}
    for pts in per_image:
        for p in pts:
            if p.setting not in out:
                out[p.setting] = Point(p.setting)
            out[p.setting].add(p)
    return list(out.values())
