"""Codec v2 over whole rasters: chunk rows in, container records out, and back.

Codec v2 (``sarcodec-dct-v2``) codes each band's log backscatter (L_dB) with a block DCT, a dead-zone
quantiser with rate-distortion optimised decisions and a learned context entropy model (see
``dct_entropy`` and ``dct_fit``). It has no network: nothing here needs torch or a GPU, and the
bitstream is identical on every machine.

Geometry: a band is cut into 512 x 512 px chunks (``CHUNK_PX``) coded independently, in the same
chunk grid as v1 (so masks, fallback records, salvage and torchrun shards work alike). Blocks never
straddle chunks (512 is a multiple of every block size), so chunking costs no bits beyond its two
framing bytes and leaves no seams beyond the block edges every block codec has.

Encode: the band's side info (block size, spectrum shift, context weights) is fitted once, at
planning time, on up to two sample chunks chosen deterministically (the same on every torchrun rank);
then every chunk row is read once, its nodata mask and uncodable pixels are stored losslessly as in
v1, and its chunks are coded on a thread pool. The encoder knows each chunk's reconstruction without
decoding it, so the quality estimate and the intensity gain use every chunk (not a sample).

Decode: chunk rows are decoded (chunks in parallel) into L_dB rows and handed to the same
``BandWriter`` as v1, which applies the gain, converts to the output type and restores nodata,
fallbacks and salvage marks.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sarcodec import interrupts
from sarcodec.codec import bounded, dct_entropy
from sarcodec.codec.dct_entropy import BandParams
from sarcodec.codec.dct_fit import Sample, choose_block_params, fit_band_params
from sarcodec.codec.dct_model import DctModel
from sarcodec.codec.domains import LOG_SCALE_DB, Domain, nodata_mask_of, to_log, uncodable_mask
from sarcodec.codec.salvage import ChunkDamage
from sarcodec.errors import ContainerError
from sarcodec.vocabulary import CODEC_V2

CODEC_NAME = CODEC_V2
CHUNK_PX = 512
#: Rate-distortion multiplier of the quantiser's decisions, in step^2 per bit (``rdo_quantize``).
#: Measured on the held-out groups (bench/results/v2_rdo.json): 0.12 saves 3-6 % of the bits at
#: equal dB error against plain dead-zone quantisation.
RDO_LAMBDA = 0.12
DEAD_ZONE = 0.1
SAMPLE_CHUNKS = 2


@dataclass(frozen=True)
class BandCoding:
    """What the header stores for one v2 band: side info, quantiser step (dB) and, for an
    error-bounded band (``compress --max-error-db``), the bound E in dB (``codec/bounded.py``)."""

    params: BandParams
    step_db: float
    max_error_db: float | None = None
    residual_offset_db: float = 0.0  # error-bounded: the residual bins' offset (``bounded.bias_offset``)
    lattice: float | None = None  # error-bounded integer DN / intensity: dB per decade (``bounded.lattice_mode``)

    def to_json(self) -> dict:
        out = {"params": base64.b64encode(self.params.to_bytes()).decode("ascii"), "step_db": self.step_db}
        if self.max_error_db is not None:
            out["max_error_db"] = self.max_error_db
            out["residual_offset_db"] = self.residual_offset_db
            if self.lattice is not None:
                out["lattice"] = self.lattice
        return out

    @classmethod
    def from_json(cls, band: dict, number: int) -> BandCoding:
        try:
            raw = base64.b64decode(str(band["params"]), validate=True)
            step = band["step_db"]
        except (KeyError, ValueError, TypeError):
            raise ContainerError(f"the v2 side info of band {number} is missing or damaged") from None
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not 1e-4 <= step <= 1e3:
            raise ContainerError(f"the quantiser step of band {number} is damaged")
        bound, offset, lattice = band.get("max_error_db"), band.get("residual_offset_db", 0.0), band.get("lattice")
        if bound is not None:
            try:
                bound = bounded.check_bound(bound)
            except ValueError:
                raise ContainerError(f"the error bound of band {number} is damaged") from None
            if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not abs(offset) <= bound / 4:
                raise ContainerError(f"the residual offset of band {number} is damaged")
            if lattice not in (None, 10, 20, 10.0, 20.0):
                raise ContainerError(f"the integer lattice of band {number} is damaged")
        return cls(BandParams.from_bytes(raw), float(step), bound, float(offset),
                   None if lattice is None else float(lattice))


def chunk_grid(height: int, width: int) -> tuple[int, int]:
    return -(-height // CHUNK_PX), -(-width // CHUNK_PX)


def read_chunk_row(ds, band: int, cr: int, domain: Domain, nodata: float | None):
    """(raw values, L_dB float64, nodata mask or None, uncodable mask) of chunk row ``cr``."""
    from rasterio.windows import Window

    r0 = cr * CHUNK_PX
    h = min(CHUNK_PX, ds.height - r0)
    raw = ds.read(band, window=Window(0, r0, ds.width, h))
    nd = nodata_mask_of(raw, nodata) if nodata is not None else None
    unc = uncodable_mask(raw, domain, nd)
    with np.errstate(all="ignore"):
        ldb = to_log(raw, domain).astype(np.float64)
    return raw, ldb, nd, unc


def _sample_rows(rows: int, cols: int) -> list[tuple[int, int]]:
    """Candidate chunks for the band's fit, most central first (deterministic)."""
    cands = {(rows // 2, cols // 2), (rows // 4, cols // 4), (3 * rows // 4, 3 * cols // 4),
             (rows // 4, 3 * cols // 4), (3 * rows // 4, cols // 4)}
    return sorted(cands, key=lambda rc: (abs(2 * rc[0] + 1 - rows) + abs(2 * rc[1] + 1 - cols), rc))


def plan_band(ds, band: int, domain: Domain, nodata: float | None, model: DctModel, quality: int,
              max_error_db: float | None = None, dtype: str | None = None) -> BandCoding:
    """Fit one band's side info on up to ``SAMPLE_CHUNKS`` sample chunks (the fullest ones).

    With ``max_error_db`` the band is error-bounded: the base is fitted at ``bounded.base_step`` and
    ``quality`` is not used.
    """
    from rasterio.windows import Window

    rows, cols = chunk_grid(ds.height, ds.width)
    picked: list[tuple[float, np.ndarray, np.ndarray]] = []
    for cr, cc in _sample_rows(rows, cols):
        r0, c0 = cr * CHUNK_PX, cc * CHUNK_PX
        raw = ds.read(band, window=Window(c0, r0, min(CHUNK_PX, ds.width - c0), min(CHUNK_PX, ds.height - r0)))
        nd = nodata_mask_of(raw, nodata) if nodata is not None else np.zeros(raw.shape, bool)
        valid = ~(nd | uncodable_mask(raw, domain, nd))
        with np.errstate(all="ignore"):
            ldb = to_log(raw, domain).astype(np.float64)
        picked.append((float(valid.mean()), np.where(valid, ldb, 0.0), valid))
    picked.sort(key=lambda t: -t[0])
    picked = [p for p in picked if p[0] > 0][:SAMPLE_CHUNKS]
    integer = dtype is not None and np.dtype(dtype).kind in "ui" and domain.is_linear
    lattice = domain.log_factor if integer else None
    step = model.step(quality) if max_error_db is None else bounded.base_step(max_error_db, lattice)
    sample = Sample([p[1] for p in picked], [p[2] for p in picked])
    block, trial = choose_block_params(sample, step, model.prior, dead_zone=DEAD_ZONE) if picked else (16, None)
    band_blocks = math.ceil(ds.height / block) * math.ceil(ds.width / block)
    params = fit_band_params(sample, step, model.prior, block, dead_zone=DEAD_ZONE, band_blocks=band_blocks,
                             start=trial)
    coding = BandCoding(params, step, max_error_db)
    if max_error_db is None or not picked:
        return coding
    orig, base = [], []
    for _, ldb, valid in picked:
        _, rec = encode_chunk(ldb, valid, coding, model)
        orig.append(ldb[valid])
        base.append(rec[valid])
    offset = bounded.bias_offset(np.concatenate(orig), np.concatenate(base), max_error_db, lattice)
    return BandCoding(params, step, max_error_db, offset, lattice)


def encode_chunk(ldb: np.ndarray, valid: np.ndarray, coding: BandCoding, model: DctModel):
    """Code one chunk -> (bytes, reconstructed L_dB or None when the chunk has no valid pixel)."""
    p = coding.params
    values = np.where(valid, ldb, 0.0)
    data, q, sidx = dct_entropy.encode_chunk(values, valid, coding.step_db, p, model.prior, rdo=RDO_LAMBDA,
                                             return_symbols=True)
    if q is None:
        return data, None
    return data, dct_entropy.reconstruct(q, sidx, *values.shape, coding.step_db, p)


def encode_bounded_chunk(raw: np.ndarray, ldb: np.ndarray, valid: np.ndarray, nodata: np.ndarray | None,
                         coding: BandCoding, model: DctModel, out: bounded.OutputModel):
    """Code one chunk of an error-bounded band -> (bytes, decoded L_dB or None, exceptions).

    ``valid``: pixels coded (not nodata, not uncodable); residual symbols are coded for every pixel
    outside ``nodata``, which is what the decoder knows from the mask record. ``exceptions``: valid
    pixels no residual keeps within the bound; the caller stores them losslessly.
    """
    e = float(coding.max_error_db)  # type: ignore[arg-type]
    base_bytes, base = encode_chunk(ldb, valid, coding, model)
    if base is None:
        base = np.zeros(ldb.shape)
    coded = ~nodata if nodata is not None else np.ones(ldb.shape, bool)
    residual, rec, exceptions = bounded.code_residual(raw, ldb, base, valid, coded, e, out,
                                                      coding.residual_offset_db, coding.lattice)
    return bounded.pack(base_bytes, residual), (rec if valid.any() else None), exceptions


def decode_chunk(data: bytes, height: int, width: int, coding: BandCoding, model: DctModel,
                 nodata: np.ndarray | None = None) -> np.ndarray:
    """L_dB (float64) of one chunk; nodata pixels come back as the smooth fill.

    An error-bounded band's chunk also carries the residual, coded for the pixels outside ``nodata``
    (the chunk's mask record; None: no nodata in the chunk).
    """
    if coding.max_error_db is None:
        return dct_entropy.decode_chunk(data, height, width, coding.step_db, coding.params, model.prior)
    base_bytes, residual = bounded.unpack(data)
    base = dct_entropy.decode_chunk(base_bytes, height, width, coding.step_db, coding.params, model.prior)
    coded = ~nodata if nodata is not None else np.ones((height, width), bool)
    return bounded.decode_residual_chunk(residual, base, coded, coding.max_error_db, coding.residual_offset_db,
                                         coding.lattice)


class ChunkRowDecoder:
    """Decoded L_dB rows of one band, chunk row by chunk row, for ``BandWriter``.

    Damaged chunks raise :class:`DamagedChunkError`, or with ``salvage`` are recorded (record number
    in ``damaged``, position in ``damaged_chunks``) and come back as zeros for BandWriter to mark.
    ``chunk`` and ``stride`` describe the grid the way ``BandWriter`` reads them (pixels: stride 1).
    """

    stride = 1
    chunk = CHUNK_PX

    def __init__(self, reader, index: int, coding: BandCoding, model: DctModel, height: int, width: int, *,
                 salvage: bool, damaged: list[int], pool_map: Callable = map) -> None:
        self.reader, self.index, self.coding, self.model = reader, index, coding, model
        self.height, self.width = height, width
        self.damage = ChunkDamage(reader.name, index, salvage=salvage, damaged=damaged)
        self.damaged_chunks = self.damage.chunks
        self.cols = chunk_grid(height, width)[1]
        self.pool_map = pool_map

    def _one(self, cr: int, cc: int) -> np.ndarray:
        h = min(CHUNK_PX, self.height - cr * CHUNK_PX)
        w = min(CHUNK_PX, self.width - cc * CHUNK_PX)
        record = self.reader.find(self.index, cr, cc, "latent")
        try:
            if record is None:
                raise self.damage.missing(cr, cc)
            nodata = None
            if self.coding.max_error_db is not None:
                from sarcodec.codec.container import decode_mask

                mask_record = self.reader.find(self.index, cr, cc, "mask")
                if mask_record is not None:
                    nodata = decode_mask(self.reader.read_record(mask_record), (h, w))
            return decode_chunk(self.reader.read_record(record), h, w, self.coding, self.model, nodata)
        except ContainerError as exc:
            self.damage.handle(cr, cc, record, exc)
            return np.zeros((h, w))

    def row(self, cr: int, cols: range | None = None) -> np.ndarray:
        """L_dB of chunk row ``cr`` (all columns, or the chunk columns ``cols``), float64."""
        cols = cols if cols is not None else range(self.cols)
        with interrupts.waiting():
            parts = list(self.pool_map(lambda cc: self._one(cr, cc), cols))
        return np.concatenate(parts, axis=1)


def normalised(ldb: np.ndarray, offset_db: float) -> np.ndarray:
    """L_dB rows in ``BandWriter``'s input convention (the v1 model domain: it adds the offset back)."""
    return ((ldb - offset_db) / LOG_SCALE_DB).astype(np.float32)
