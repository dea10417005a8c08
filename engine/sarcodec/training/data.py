"""Training and validation data: every SAR source converted to dB, normalised and augmented.

The training set is small (~4 Mpx of 16/32-bit SAR), so it is held in memory as float32 dB arrays
with validity masks and sampled as random crops. Each source is converted to ``L_dB`` through its
``SAR_DOMAIN`` tag; the network input is ``x = (L_dB - median_dB) / 10`` exactly as the codec sees it.

The validation split is fixed by name (``val_dates`` of ``s1_grd_dn_chips`` and one quadrant of
``s1_grd_db``) so ``bench/rd.py`` evaluates on exactly the pixels training never saw.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DB_FLOOR = -60.0  # dB floor for zero/negative intensities that are not flagged as nodata


@dataclass
class SarBand:
    """One band of one image in dB with its valid-pixel mask and provenance."""

    name: str
    source: str
    db: np.ndarray  # float32 (H, W); invalid pixels hold the median
    valid: np.ndarray  # bool (H, W)
    median_db: float


def to_db(values: np.ndarray, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert raw pixel values to dB of intensity and a validity mask.

    Amplitude (DN or linear) is squared, so 20*log10; zero amplitude DN is Sentinel-1 nodata.
    """
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    if domain in ("amplitude_dn", "amplitude"):
        valid = finite & (v > 0)
        db = 20.0 * np.log10(np.where(valid, v, 1.0))
    elif domain == "intensity":
        valid = finite & (v > 0)
        db = 10.0 * np.log10(np.where(valid, v, 1.0))
    elif domain == "db":
        valid = finite
        db = np.where(valid, v, 0.0)
    else:
        raise ValueError(f"unsupported SAR_DOMAIN {domain!r}")
    return db.astype(np.float32), valid


def data_root(configured: str | os.PathLike[str]) -> Path:
    """The data directory: ``$SARCODEC_DATA`` if set, else the configured path."""
    return Path(os.environ.get("SARCODEC_DATA") or configured)


def _read_bands(path: Path) -> tuple[list[np.ndarray], str]:
    import rasterio  # imported lazily: the codec itself never needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as ds:
            domain = (ds.tags().get("SAR_DOMAIN") or "").strip().lower()
            arr = ds.read()
            nodata = ds.nodata
    bands = []
    for b in arr:
        b = b.astype(np.float64)
        if nodata is not None and not np.isnan(nodata):
            b = np.where(b == nodata, np.nan, b)
        bands.append(b)
    return bands, domain


def _make_band(name: str, source: str, db: np.ndarray, valid: np.ndarray) -> SarBand | None:
    if valid.sum() < 64:
        return None
    med = float(np.median(db[valid]))
    db = np.where(valid, db, med).astype(np.float32)
    return SarBand(name, source, db, valid, med)


def load_split(root: str | os.PathLike[str], val_dates: list[str], val_quadrant: str,
               sources: list[str]) -> tuple[list[SarBand], list[SarBand]]:
    """Load every band of the selected sources; return (train, validation) bands.

    ``val_dates``: acquisition-date prefixes of ``s1_grd_dn_chips`` file names held out.
    ``val_quadrant``: one of ``tl tr bl br`` of ``s1_grd_db`` held out; the rest is split into the
    other two non-overlapping rectangles for training.
    """
    root = data_root(root)
    train: list[SarBand] = []
    val: list[SarBand] = []
    for source in sources:
        folder = root / source
        if not folder.is_dir():
            raise FileNotFoundError(f"training data folder {folder} is missing (set SARCODEC_DATA)")
        for path in sorted(folder.glob("*.tif")):
            bands, domain = _read_bands(path)
            if domain not in ("amplitude_dn", "amplitude", "intensity", "db"):
                continue  # 8-bit display data and unknown domains are not radiometric SAR
            for bi, raw in enumerate(bands):
                db, valid = to_db(raw, domain)
                name = f"{source}/{path.name}#b{bi + 1}"
                if source == "s1_grd_db":
                    h, w = db.shape
                    hh, hw = h // 2, w // 2
                    quads = {"tl": (slice(0, hh), slice(0, hw)), "tr": (slice(0, hh), slice(hw, w)),
                             "bl": (slice(hh, h), slice(0, hw)), "br": (slice(hh, h), slice(hw, w))}
                    vs = quads[val_quadrant]
                    band = _make_band(name + f"@{val_quadrant}", source, db[vs], valid[vs])
                    if band:
                        val.append(band)
                    # Training rectangles: the half not containing the quadrant, and the other quadrant.
                    top = val_quadrant in ("tl", "tr")
                    half = (slice(hh, h), slice(0, w)) if top else (slice(0, hh), slice(0, w))
                    other = {"tl": "tr", "tr": "tl", "bl": "br", "br": "bl"}[val_quadrant]
                    for tag, sl in (("half", half), (other, quads[other])):
                        band = _make_band(name + f"@{tag}", source, db[sl], valid[sl])
                        if band:
                            train.append(band)
                    continue
                band = _make_band(name, source, db, valid)
                if band is None:
                    continue
                if source == "s1_grd_dn_chips" and any(path.name.startswith(d) for d in val_dates):
                    val.append(band)
                else:
                    train.append(band)
    return train, val


class CropSampler:
    """Random augmented crops in the normalised log domain.

    Augmentation: random crop (reflect-padded for chips smaller than the crop, padded pixels masked
    out of the loss), flips, 90-degree rotations and a random dB offset (a gain change in the log
    domain, so the model does not learn one absolute calibration level).
    """

    def __init__(self, bands: list[SarBand], source_weights: dict[str, float], crop: int,
                 gain_db: float, seed: int) -> None:
        self.bands = bands
        self.crop = crop
        self.gain_db = gain_db
        self.rng = np.random.default_rng(seed)
        w = np.array([source_weights.get(b.source, 0.0) for b in bands], dtype=np.float64)
        area = np.array([b.valid.sum() for b in bands], dtype=np.float64)
        per_source: dict[str, float] = {}
        for b, a in zip(bands, area, strict=True):
            per_source[b.source] = per_source.get(b.source, 0.0) + a
        # Within a source, sample proportional to area; across sources, by the configured weight.
        p = w * area / np.array([per_source[b.source] for b in bands])
        if p.sum() <= 0:
            raise ValueError("no training data with a positive source weight")
        self.p = p / p.sum()

    def _crop_one(self, band: SarBand) -> tuple[np.ndarray, np.ndarray]:
        c = self.crop
        db, valid = band.db, band.valid
        h, w = db.shape
        if h < c or w < c:
            ph, pw = max(0, c - h), max(0, c - w)
            db = np.pad(db, ((0, ph), (0, pw)), mode="symmetric")
            valid = np.pad(valid, ((0, ph), (0, pw)), mode="constant", constant_values=False)
            h, w = db.shape
        r0 = int(self.rng.integers(0, h - c + 1))
        c0 = int(self.rng.integers(0, w - c + 1))
        x = (db[r0:r0 + c, c0:c0 + c] - band.median_db) / 10.0
        m = valid[r0:r0 + c, c0:c0 + c]
        k = int(self.rng.integers(0, 4))
        x, m = np.rot90(x, k), np.rot90(m, k)
        if self.rng.random() < 0.5:
            x, m = x[:, ::-1], m[:, ::-1]
        x = x + self.rng.uniform(-self.gain_db, self.gain_db) / 10.0
        return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(m)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(size,1,crop,crop) inputs and validity masks."""
        idx = self.rng.choice(len(self.bands), size=size, p=self.p)
        xs, ms = zip(*(self._crop_one(self.bands[i]) for i in idx), strict=True)
        return np.stack(xs)[:, None], np.stack(ms)[:, None]


def pad_to_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    """Symmetric-pad a (H, W) array on the bottom/right to a multiple of ``multiple``."""
    h, w = x.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    while ph > 0 or pw > 0:  # symmetric padding cannot exceed the size in one step
        sh, sw = min(ph, x.shape[0]), min(pw, x.shape[1])
        x = np.pad(x, ((0, sh), (0, sw)), mode="symmetric")
        ph, pw = ph - sh, pw - sw
    return x
