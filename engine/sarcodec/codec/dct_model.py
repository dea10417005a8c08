"""The codec v2 model file: learned spectrum priors, context weights and the quality ladder.

A v2 model is small numeric tables, not a network, so it is stored as an ``.npz`` that
``numpy.load(allow_pickle=False)`` reads (no code runs on load, whoever made the file):

``meta``      uint8: UTF-8 JSON (``arch`` = ``sarcodec-dct``, ``arch_version``, ``model_id``,
              ``default_quality``, how it was trained)
``prior_b8``, ``prior_b16``, ``prior_b32``
              int16: ``BASE_GRID`` indices of the typical log spectrum, zigzag order
``weights``   float64 (5): context weights every band's fit starts from
``steps_db``  float64 (N): quantiser step in dB of each quality level 1..N (N >= 5)

No torch here: the QGIS plugin and ``sarcodec info`` read it without loading torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sarcodec.codec.dct_entropy import BLOCK_SIZES, N_BASE, N_WEIGHTS, DctPrior
from sarcodec.errors import ModelError

ARCH = "sarcodec-dct"
ARCH_VERSION = 2
#: The quality ladder: steps halve every two levels (about 0.25 bpp to 3 bpp on GRD).
MAX_STEP_DB = 12.0
MIN_STEP_DB = 0.05


@dataclass
class DctModel:
    """What codec v2 needs besides the data: priors, start weights, steps per quality, metadata."""

    prior: DctPrior
    steps_db: tuple[float, ...]
    default_quality: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_qualities(self) -> int:
        return len(self.steps_db)

    @property
    def model_id(self) -> str:
        return str(self.metadata.get("model_id", "sarcodec_v2"))

    def step(self, quality: int) -> float:
        """Quantiser step (dB) of quality ``1..n_qualities``."""
        if not 1 <= quality <= self.n_qualities:
            raise ValueError(f"quality must be in 1..{self.n_qualities}, got {quality}")
        return float(self.steps_db[quality - 1])


def quality_ladder(n: int = 10, top_step_db: float = MAX_STEP_DB) -> tuple[float, ...]:
    """Steps (dB) of qualities 1..n: each level 2**-0.5 times the previous, rounded to 4 digits."""
    return tuple(float(f"{top_step_db * 2.0 ** (-i / 2.0):.4g}") for i in range(n))


def save_model(model: DctModel, path: str | Path) -> None:
    """Write ``model`` as an ``.npz`` with fixed zip timestamps (same tables -> same bytes -> same SHA-256)."""
    meta = dict(model.metadata)
    meta.update({"arch": ARCH, "arch_version": ARCH_VERSION, "default_quality": model.default_quality})
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
        "weights": np.asarray(model.prior.weights, dtype=np.float64),
        "steps_db": np.asarray(model.steps_db, dtype=np.float64),
    }
    for block, table in sorted(model.prior.tables.items()):
        arrays[f"prior_b{block}"] = np.asarray(table, dtype=np.int16)
    path = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[name], allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def is_dct_model(path: str | Path) -> bool:
    """True for a v2 model file (a zip holding ``meta.npy`` and ``steps_db.npy``), without loading it."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return {"meta.npy", "steps_db.npy"} <= names


def load_model(path: str | Path) -> DctModel:
    """Read and check a v2 model file; anything wrong is a :class:`ModelError` (exit 2)."""
    name = str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - numpy raises many kinds for foreign files
        raise ModelError(f"{name} is not a sarcodec v2 model ({type(exc).__name__})") from None
    try:
        meta = json.loads(bytes(arrays["meta"].astype(np.uint8)).decode())
        steps = tuple(float(v) for v in np.asarray(arrays["steps_db"], dtype=np.float64).ravel())
        weights = tuple(float(v) for v in np.asarray(arrays["weights"], dtype=np.float64).ravel())
        tables = {b: np.asarray(arrays[f"prior_b{b}"]).astype(np.int16).ravel()
                  for b in BLOCK_SIZES if f"prior_b{b}" in arrays}
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{name} is not a complete sarcodec v2 model ({type(exc).__name__}: {exc})") from None
    problem = None
    if not isinstance(meta, dict) or meta.get("arch") != ARCH:
        problem = f"architecture {meta.get('arch') if isinstance(meta, dict) else None!r} is not {ARCH!r}"
    elif meta.get("arch_version") != ARCH_VERSION:
        problem = f"architecture version {meta.get('arch_version')!r} is not {ARCH_VERSION}"
    elif not 5 <= len(steps) <= 255 or not all(MIN_STEP_DB <= s <= 100.0 for s in steps):
        problem = "the quality steps are missing or out of range"
    elif len(weights) != N_WEIGHTS or not all(0.0 <= w <= 4.0 for w in weights) or sum(weights) <= 0:
        problem = "the context weights are damaged"
    elif not tables or any(t.size != b * b or t.min() < -N_BASE or t.max() > 2 * N_BASE
                           for b, t in tables.items()):
        problem = "the spectrum priors are missing or damaged"
    elif not isinstance(meta.get("default_quality"), int) or not 1 <= meta["default_quality"] <= len(steps):
        problem = "the default quality is missing or out of range"
    if problem:
        raise ModelError(f"{name}: {problem}")
    return DctModel(DctPrior(tables, weights, meta), steps, int(meta["default_quality"]), meta)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
