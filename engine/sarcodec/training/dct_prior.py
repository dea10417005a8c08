"""Train the codec v2 model: spectrum priors and start weights, by maximum likelihood on real SAR.

``python -m sarcodec.training --config configs/train_v2.toml`` (``make model``).

What is learned, and how:

1. **Spectrum priors** (one table per block size). For every training band, the maximum-likelihood
   Laplace scale of each DCT frequency is the mean magnitude of its coefficients (``mean |c_k|``, dB);
   its log2, minus the band's own mean over the AC frequencies, is the band's spectrum *shape*. The
   prior is the average shape, on the 1/8-octave grid the bitstream uses. Each coded band then only
   says how it differs (level, slope, curvature, anisotropy: four bytes).
2. **Start weights** of the context model: the median over training bands (a seeded random subset,
   at several steps) of each band's own maximum-likelihood fit (``dct_fit.fit_band_params``).

Resuming: every band's result is appended to a state file (``output.state``) as soon as it is
computed; a rerun (after Ctrl-C, a crash, or in a later session from the committed state) skips the
bands already in it and finishes the rest. The same config and seed give the same model file.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from sarcodec.codec.dct_entropy import BLOCK_SIZES, N_BASE, DctPrior, coefficients
from sarcodec.codec.dct_model import DctModel, quality_ladder, save_model
from sarcodec.training.data import SarBand, load_split

#: Index offset of a prior table's mean (the band's level theta then stays near zero for S1 data).
PRIOR_CENTRE = 100


def _band_shape(band: SarBand, block: int) -> np.ndarray | None:
    """A band's log2 spectrum shape in 1/8 octaves (zigzag order), or None if it is too small."""
    if int(band.valid.sum()) < 4 * block * block:
        return None
    c = coefficients(band.db.astype(np.float64), band.valid, block, 0.3)
    sigma = np.abs(c).reshape(c.shape[0], -1).mean(axis=1)
    idx = 8.0 * np.log2(np.maximum(sigma, 1e-6))
    return idx - idx[1:].mean()


class _State:
    """Per-band results so far, appended as they come (JSON lines): what a rerun resumes from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, Any] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.rows[rec["key"]] = rec["value"]

    def get(self, key: str) -> Any:
        return self.rows.get(key)

    def put(self, key: str, value: Any) -> None:
        self.rows[key] = value
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"key": key, "value": value}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def train_dct(cfg: dict, root: Path, log: Any = print) -> Path:
    """Run the training described by ``cfg`` (see ``configs/train_v2.toml``); returns the model path."""
    from sarcodec.codec.dct_fit import Sample, fit_band_params

    data, train_cfg, out_cfg = cfg["data"], cfg["train"], cfg["output"]
    data_root = os.environ.get("SARCODEC_DATA") or str((root / data["root"]).resolve())
    bands, _ = load_split(data_root, list(data["val_dates"]), data["val_quadrant"], list(data["sources"]))
    bands = [b for b in bands if b.source in set(data.get("prior_sources", data["sources"]))]
    out_path = root / out_cfg["model"]
    state = _State(root / out_cfg["state"])
    t0 = time.monotonic()
    log(f"training v2 priors on {len(bands)} bands from {data_root}; state {state.path}")
    tables = {}
    for block in BLOCK_SIZES:
        shapes = []
        for b in bands:
            key = f"shape/{block}/{b.name}"
            value = state.get(key)
            if value is None:
                shape = _band_shape(b, block)
                value = None if shape is None else [round(float(v), 4) for v in shape]
                state.put(key, value)
            if value is not None:
                shapes.append(np.array(value))
        mean = np.mean(shapes, axis=0)
        table = np.clip(np.rint(mean - mean[1:].mean() + PRIOR_CENTRE), 0, N_BASE - 1).astype(np.int16)
        tables[block] = table
        log(f"  {block}x{block}: prior from {len(shapes)} bands ({time.monotonic() - t0:.0f} s)")
    rng = np.random.default_rng(int(train_cfg["seed"]))
    pick = rng.choice(len(bands), size=min(int(train_cfg["weight_bands"]), len(bands)), replace=False)
    start = DctPrior(tables)
    fitted = []
    for i in sorted(pick):
        b = bands[int(i)]
        for step in train_cfg["weight_steps_db"]:
            key = f"weights/{step}/{b.name}"
            value = state.get(key)
            if value is None:
                sample = Sample([b.db.astype(np.float64)], [b.valid])
                params = fit_band_params(sample, float(step), start, 16)
                value = list(params.weights)
                state.put(key, value)
            fitted.append(value)
    weights = tuple(float(v) for v in np.round(np.median(np.array(fitted), axis=0), 4))
    log(f"  start weights {weights} from {len(fitted)} fits ({time.monotonic() - t0:.0f} s)")
    steps = quality_ladder(int(train_cfg["qualities"]), float(train_cfg["top_step_db"]))
    meta = {"model_id": out_cfg["model_id"], "seed": int(train_cfg["seed"]), "bands": len(bands),
            "sources": list(data["sources"]), "held_out_dates": list(data["val_dates"]),
            "held_out_quadrant": data["val_quadrant"], "trained_by": "sarcodec.training.dct_prior"}
    model = DctModel(DctPrior(tables, weights, meta), steps, int(train_cfg["default_quality"]), meta)
    save_model(model, out_path)
    if out_cfg.get("log"):
        with open(root / out_cfg["log"], "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["block", "frequency", "prior_index"])
            for block, table in tables.items():
                for k, v in enumerate(table):
                    w.writerow([block, k, int(v)])
    log(f"wrote {out_path} in {time.monotonic() - t0:.0f} s")
    return out_path
