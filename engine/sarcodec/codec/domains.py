"""SAR value domains: detection, forward/inverse log normalisation, uncodable pixels, band statistics.

The model codes one band in a normalised log domain, ``x = (L_dB - offset_dB) / LOG_SCALE_DB`` with
``L_dB = 10 * log10(intensity)``. In the log domain speckle is additive and the 16-bit dynamic range
of Sentinel-1 DN survives without clipping (see ``docs/architecture.md`` and the codec notes).

Every input domain maps onto intensity in the same way, so one model serves all of them:

=============== ================================ =====================================
domain           pixel value v                    L_dB
=============== ================================ =====================================
``amplitude_dn`` integer DN (S1 GRD uint16)        ``20 * log10(v)``  (intensity = DN^2)
``amplitude``    float amplitude (``|SLC|``)       ``20 * log10(v)``
``intensity``    float power                       ``10 * log10(v)``
``db``           float dB                          ``v``
=============== ================================ =====================================

Pixels the log domain cannot represent (non-finite, ``<= 0`` in a linear domain, absurdly far from
any physical backscatter) are reported by :func:`uncodable_mask` and stored losslessly by the
container's fallback records, so they come back bit-exact instead of silently wrong.

No torch here: the pipeline, the CLI pre-validation and the QGIS plugin all use this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

import numpy as np

from sarcodec.errors import InputFileError

#: dB per unit of the normalised domain: x = (L_dB - offset_dB) / LOG_SCALE_DB.
LOG_SCALE_DB = 10.0

#: Log values outside this range are not physical backscatter (1e-20 .. 1e20 in intensity); the
#: model never sees them and they are stored losslessly instead. Wide on purpose: float32 intensity
#: spans -450 .. +385 dB and a too tight range would push real but dark pixels into the fallback.
L_DB_MIN = -200.0
L_DB_MAX = 200.0

#: A float raster is taken to be in dB when more than this fraction of its valid values is negative
#: (linear values are never negative; thermal-noise removal leaves only a few stray ones).
DB_NEGATIVE_FRACTION = 0.01

#: dB values a calibrated SAR product can plausibly hold (sigma0/gamma0/beta0, any sensor).
DB_PLAUSIBLE_RANGE = (-150.0, 100.0)

#: Spread (standard deviation of 10*log10(v), in dB) separating intensity from amplitude rasters.
#: Speckle alone gives 5.6 dB in single-look intensity and half of that in amplitude, and scene
#: texture scales the same way, so a power image spreads twice as wide as the same scene in
#: amplitude. Measured on sar-train: AIRSAR multilook intensity 4.6 dB, MERLIN SLC amplitude 3.0 dB,
#: S1 GRD DN converted to intensity 3.7-4.2 dB. Ambiguous rasters should carry a SAR_DOMAIN tag.
INTENSITY_SPREAD_DB = 3.5

#: Tag names that state the domain explicitly; ours first (it is what we write), then the dataset's.
DOMAIN_TAGS = ("SARCODEC_DOMAIN", "SAR_DOMAIN")

_DETECT_MAX_SAMPLE = 1 << 20
_INTEGER_DTYPES = ("uint8", "uint16", "int16", "uint32", "int32")
_FLOAT_DTYPES = ("float32", "float64")


class Domain(str, Enum):  # noqa: UP042 - StrEnum needs Python 3.11; QGIS may ship an older one
    """What the pixel values of a band are; the string value is what files and the CLI use."""

    def __str__(self) -> str:
        return self.value

    AMPLITUDE_DN = "amplitude_dn"
    AMPLITUDE = "amplitude"
    INTENSITY = "intensity"
    DB = "db"

    @property
    def is_linear(self) -> bool:
        """True for domains whose values must be > 0 to have a logarithm."""
        return self is not Domain.DB

    @property
    def log_factor(self) -> float:
        """dB per decade of the pixel value: 20 for amplitudes (intensity = v^2), 10 for power."""
        return 20.0 if self in (Domain.AMPLITUDE_DN, Domain.AMPLITUDE) else 10.0


def parse_domain(value: str | Domain) -> Domain:
    """Parse a domain name ("amplitude_dn", "DB", "Intensity", ...); unknown -> ValueError."""
    if isinstance(value, Domain):
        return value
    key = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    aliases = {"dn": "amplitude_dn", "amplitude_digital_number": "amplitude_dn", "power": "intensity",
               "decibel": "db", "decibels": "db"}
    key = aliases.get(key, key)
    try:
        return Domain(key)
    except ValueError:
        names = ", ".join(d.value for d in Domain)
        raise ValueError(f"unknown SAR domain {value!r} (expected one of {names})") from None


def check_dtype(dtype: Any) -> np.dtype:
    """Return the dtype if the codec supports it, else raise InputFileError naming it.

    Supported: unsigned/signed 16 and 32 bit and uint8 integers (amplitude DN) and float32/64.
    Complex (SLC), int8, bool and 64-bit integers are refused up front, before any heavy work.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputFileError(f"unsupported data type {dtype!r}") from None
    if dt.name not in _INTEGER_DTYPES + _FLOAT_DTYPES:
        hint = " (complex SLC: convert to amplitude or intensity first)" if dt.kind == "c" else ""
        raise InputFileError(
            f"unsupported data type {dt.name}{hint}; supported: {', '.join(_INTEGER_DTYPES + _FLOAT_DTYPES)}"
        )
    return dt


def _tag_domain(tags: Mapping[str, Any] | None) -> Domain | None:
    if not tags:
        return None
    upper = {str(k).upper(): v for k, v in tags.items()}
    for name in DOMAIN_TAGS:
        value = upper.get(name)
        if value is None or str(value).strip() == "":
            continue
        try:
            return parse_domain(str(value))
        except ValueError:
            continue  # an unknown tag value is no information; fall back to detection
    return None


def detect_domain(dtype: Any, sample: np.ndarray, tags: Mapping[str, Any] | None = None,
                  override: str | Domain | None = None) -> Domain:
    """Decide what a band's values are.

    Order: ``override`` (the user's explicit choice), then a ``SARCODEC_DOMAIN`` or ``SAR_DOMAIN``
    tag, then the dtype (integers are amplitude DN), then the values of ``sample`` (valid pixels
    only) for floats: mostly negative and within a plausible dB range -> ``db``; non-negative ->
    ``intensity`` if the spread of ``10*log10(v)`` is at least ``INTENSITY_SPREAD_DB`` dB, else
    ``amplitude``. An unsupported dtype raises InputFileError even when a tag names a domain.
    """
    dt = check_dtype(dtype)
    if override is not None:
        return parse_domain(override)
    tagged = _tag_domain(tags)
    if tagged is not None:
        return tagged
    if dt.kind in "ui":
        return Domain.AMPLITUDE_DN
    v = np.asarray(sample).ravel()
    if v.size > _DETECT_MAX_SAMPLE:  # a whole band may be passed in: a strided subset decides as well
        v = v[:: v.size // _DETECT_MAX_SAMPLE + 1]
    v = v.astype(np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Domain.INTENSITY  # nothing to code; any linear domain round-trips nodata alike
    negative = float(np.count_nonzero(v < 0)) / v.size
    if negative > DB_NEGATIVE_FRACTION:
        lo, hi = np.percentile(v, [0.1, 99.9])
        if lo >= DB_PLAUSIBLE_RANGE[0] and hi <= DB_PLAUSIBLE_RANGE[1]:
            return Domain.DB
        raise InputFileError(
            f"cannot tell the SAR domain: {negative:.0%} of the values are negative but they span "
            f"{lo:.3g} .. {hi:.3g}, not a plausible dB range; set the domain explicitly"
        )
    positive = v[v > 0]
    if positive.size == 0:
        return Domain.INTENSITY
    spread = float(np.std(10.0 * np.log10(positive)))
    return Domain.INTENSITY if spread >= INTENSITY_SPREAD_DB else Domain.AMPLITUDE


def to_log(values: np.ndarray, domain: str | Domain) -> np.ndarray:
    """Pixel values -> L_dB (float32). Uncodable pixels come out non-finite (NaN or -inf).

    Computed in float64 so that float64 rasters and large DN keep their precision before the cast.
    """
    dom = parse_domain(domain)
    v = np.asarray(values)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if dom is Domain.DB:
            return v.astype(np.float32, copy=True)  # beyond float32 range -> inf -> uncodable
        out = dom.log_factor * np.log10(v.astype(np.float64, copy=False))
        return out.astype(np.float32)


def _dtype_range(dt: np.dtype) -> tuple[float, float]:
    if dt.kind in "ui":
        info = np.iinfo(dt)
        return float(info.min), float(info.max)
    info = np.finfo(dt)
    return float(-info.max), float(info.max)


def _nudge_off_nodata(out: np.ndarray, nodata: float, lo: float, hi: float) -> None:
    """Move valid pixels that landed exactly on the nodata value one step away (in place)."""
    hit = out == nodata
    if not np.any(hit):
        return
    if out.dtype.kind in "ui":
        step_up = nodata + 1 <= hi
        out[hit] = nodata + 1 if step_up else nodata - 1
    else:
        target = np.inf if nodata < hi else -np.inf
        out[hit] = np.nextafter(out.dtype.type(nodata), out.dtype.type(target))


def from_log(l_db: np.ndarray, domain: str | Domain, dtype: Any,
             nodata: float | None = None) -> np.ndarray:
    """L_dB -> pixel values of ``dtype``, the inverse of :func:`to_log`.

    Values are rounded (integers) and clipped to what ``dtype`` can hold; linear domains never
    come back <= 0 (a coded pixel was > 0, and 0 usually means nodata in Sentinel-1 GRD), and no
    pixel ever equals ``nodata``: a valid pixel decoded onto it is moved to the nearest other value,
    so the decoder never turns data into holes. L_dB is first clipped to ``[L_DB_MIN, L_DB_MAX]``
    (NaN to ``L_DB_MIN``); callers overwrite nodata and fallback pixels afterwards anyway.
    """
    dom = parse_domain(domain)
    dt = check_dtype(dtype)
    lo, hi = _dtype_range(dt)
    ldb = np.asarray(l_db, dtype=np.float64)
    # Clip to the codable range: every coded pixel was inside it, so nothing valid is lost, and a
    # decoder output drifting past it can neither overflow nor land on a far-away nodata value.
    ldb = np.clip(np.where(np.isnan(ldb), L_DB_MIN, ldb), L_DB_MIN, L_DB_MAX)
    if dom is Domain.DB:
        vals = ldb
    else:
        with np.errstate(over="ignore", under="ignore"):
            vals = np.power(10.0, ldb / dom.log_factor)
    if dt.kind in "ui":
        vals = np.rint(vals)
        if dom.is_linear:
            lo = max(lo, 1.0)
        vals = np.clip(vals, lo, hi)
        out = vals.astype(dt)
    else:
        if dom.is_linear:
            lo = float(np.finfo(dt).smallest_subnormal)
        vals = np.clip(vals, lo, hi)
        out = vals.astype(dt)
        if dom.is_linear:
            # float64 -> float32 may round a tiny value to 0; keep linear values strictly positive.
            out[out <= 0] = dt.type(lo)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        nd = float(nodata)
        if lo <= nd <= hi:
            _nudge_off_nodata(out, dt.type(nd) if dt.kind == "f" else nd, lo, hi)
    return out


def uncodable_mask(values: np.ndarray, domain: str | Domain,
                   nodata_mask: np.ndarray | None = None) -> np.ndarray:
    """Valid pixels that the log-domain model cannot represent and must be stored losslessly.

    True where a pixel is valid (not in ``nodata_mask``) and is non-finite, ``<= 0`` in a linear
    domain (e.g. DN 0 when 0 is not the nodata value), or has an L_dB outside
    ``[L_DB_MIN, L_DB_MAX]`` (no physical backscatter; the model would be driven far off its
    training range). Everything else survives :func:`from_log` to within the codec's error.
    """
    dom = parse_domain(domain)
    v = np.asarray(values)
    if v.dtype.kind in "ui":
        bad = (v <= 0) if dom.is_linear else (v < L_DB_MIN) | (v > L_DB_MAX)
    else:
        ldb = to_log(v, dom)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(ldb) | (ldb < L_DB_MIN) | (ldb > L_DB_MAX)
    if nodata_mask is not None:
        bad &= ~np.asarray(nodata_mask, dtype=bool)
    return bad


def nodata_mask_of(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels equal to ``nodata`` (NaN nodata matches NaN), as GDAL defines nodata.

    Never infers emptiness from values other than the declared nodata (an opensr-utils lesson).
    """
    v = np.asarray(values)
    if nodata is None:
        return np.zeros(v.shape, dtype=bool)
    nd = float(nodata)
    if math.isnan(nd):
        return np.isnan(v) if v.dtype.kind == "f" else np.zeros(v.shape, dtype=bool)
    if v.dtype.kind == "f":
        return v == v.dtype.type(nd)
    return v == nd


def normalise(l_db: np.ndarray, offset_db: float) -> np.ndarray:
    """L_dB -> the model's domain x = (L_dB - offset_dB) / LOG_SCALE_DB (float32)."""
    x = (np.asarray(l_db, dtype=np.float32) - np.float32(offset_db)) / np.float32(LOG_SCALE_DB)
    return x.astype(np.float32, copy=False)


def denormalise(x: np.ndarray, offset_db: float) -> np.ndarray:
    """The model's domain -> L_dB (float32), the inverse of :func:`normalise`."""
    l_db = np.asarray(x, dtype=np.float32) * np.float32(LOG_SCALE_DB) + np.float32(offset_db)
    return l_db.astype(np.float32, copy=False)


@dataclass(frozen=True)
class BandStats:
    """Per-band statistics stored in the container header.

    ``offset_db`` (the median L_dB of valid, codable pixels, rounded to 1e-3 dB so that the JSON
    value and the value the encoder used are identical) centres the model's input; the rest lets the
    decoder, ``sarcodec info`` and the evaluation describe the band without reading it again.
    All values come from a bounded sample, so they are estimates for large scenes.

    Fields (dB values are L_dB = 10*log10(intensity) of valid, codable sampled pixels):
    ``offset_db`` median; ``min_db``/``max_db`` extremes; ``p01_db``/``p99_db`` 1st/99th
    percentiles; ``valid_fraction`` non-nodata share of the sample; ``uncodable_fraction`` share of
    valid sampled pixels needing the lossless fallback; ``count`` number of valid, codable sampled
    pixels; ``dtype_min``/``dtype_max`` the range of the band's data type.
    """

    offset_db: float
    min_db: float
    max_db: float
    p01_db: float
    p99_db: float
    valid_fraction: float
    uncodable_fraction: float
    count: int
    dtype_min: float
    dtype_max: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (plain floats and ints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BandStats:
        """Rebuild from :meth:`to_dict` output; missing or non-numeric fields -> ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError("band statistics must be a JSON object")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                raise ValueError(f"band statistics lack {f.name!r}")
            value = data[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"band statistic {f.name!r} is not a number")
            if not math.isfinite(float(value)):
                raise ValueError(f"band statistic {f.name!r} is not finite")
            kwargs[f.name] = int(value) if f.name == "count" else float(value)
        return cls(**kwargs)


#: read(row0, col0, height, width) -> 2-D array (a leading axis of length 1 is accepted).
WindowReader = Callable[[int, int, int, int], np.ndarray]


def _sample_windows(height: int, width: int, max_pixels: int, window: int,
                    block: tuple[int, int] = (1, 1)) -> list[tuple[int, int, int, int]]:
    """A deterministic, evenly spread set of windows totalling about ``max_pixels`` pixels.

    Small windows on a regular grid (not full rows) so that a tiled 10k x 10k GeoTIFF decodes only
    the tiles the windows touch, and the sample still covers the whole scene (sea, land, borders).
    """
    if height * width <= max_pixels:
        step = max(1, max_pixels // max(width, 1))
        return [(r, 0, min(step, height - r), width) for r in range(0, height, step)]
    wh, ww = min(window, height), min(window, width)
    per = max(1, wh * ww)
    n = max(1, max_pixels // per)
    rows = max(1, min(height // wh, int(math.sqrt(n * height / max(width, 1)))))
    cols = max(1, min(width // ww, n // rows))
    r0s = np.linspace(0, height - wh, rows).round().astype(int) if rows > 1 else [(height - wh) // 2]
    c0s = np.linspace(0, width - ww, cols).round().astype(int) if cols > 1 else [(width - ww) // 2]
    # Move windows off the file's block boundaries so that each decodes one block, not up to four.
    r0s = [_inside_block(int(r), wh, block[0], height) for r in r0s]
    c0s = [_inside_block(int(c), ww, block[1], width) for c in c0s]
    return [(r, c, wh, ww) for r in r0s for c in c0s]


def _inside_block(start: int, size: int, block: int, length: int) -> int:
    """Shift a window start so that [start, start+size) does not straddle a block boundary."""
    if block <= 1 or size > block or start // block == (start + size - 1) // block:
        return start
    nxt = (start // block + 1) * block
    return nxt if nxt + size <= length else max(0, nxt - size)


_UNSET: Any = object()


def _sig6(value: float) -> float:
    """Six significant digits: keeps small fractions (one bad pixel in a scene) and JSON short."""
    return float(f"{value:.6g}")


def estimate_band_stats(source: Any, band: int, domain: str | Domain, *,
                        nodata: float | None = _UNSET, dtype: Any = None,
                        height: int | None = None, width: int | None = None,
                        max_pixels: int = 1 << 20, window: int = 64) -> BandStats:
    """Estimate :class:`BandStats` of one band from a bounded sample (about ``max_pixels`` pixels).

    ``source`` is a rasterio dataset (``band`` is 1-based as in rasterio; nodata and dtype default
    to the dataset's) or a callable ``read(row0, col0, h, w) -> 2-D array`` (then ``height``,
    ``width`` and ``dtype`` are required and ``band`` is only used in messages). Memory stays
    bounded by the sample size whatever the scene size.
    """
    dom = parse_domain(domain)
    block = (1, 1)
    if callable(source):
        if height is None or width is None or dtype is None:
            raise ValueError("estimate_band_stats with a read callable needs height, width and dtype")
        read: WindowReader = source
        nd = None if nodata is _UNSET else nodata
    else:
        ds = source
        height, width = int(ds.height), int(ds.width)
        dtype = dtype if dtype is not None else ds.dtypes[band - 1]
        nd = ds.nodatavals[band - 1] if nodata is _UNSET else nodata
        block = tuple(ds.block_shapes[band - 1])
        from rasterio.windows import Window  # rasterio is only needed for dataset sources

        def read(r0: int, c0: int, h: int, w: int) -> np.ndarray:
            return ds.read(band, window=Window(c0, r0, w, h))

    dt = check_dtype(dtype)
    dmin, dmax = _dtype_range(dt)
    total = 0
    valid_n = 0
    bad_n = 0
    parts: list[np.ndarray] = []
    for r0, c0, h, w in _sample_windows(int(height), int(width), max(1, int(max_pixels)),
                                         max(1, int(window)), block):
        block = np.asarray(read(r0, c0, h, w))
        if block.ndim == 3 and block.shape[0] == 1:
            block = block[0]
        total += block.size
        nd_mask = nodata_mask_of(block, nd)
        bad = uncodable_mask(block, dom, nd_mask)
        valid_n += int(block.size - np.count_nonzero(nd_mask))
        bad_n += int(np.count_nonzero(bad))
        good = ~nd_mask & ~bad
        if np.any(good):
            parts.append(to_log(block[good], dom))
    if parts:
        ldb = np.concatenate(parts).astype(np.float64)
        p01, med, p99 = np.percentile(ldb, [1.0, 50.0, 99.0])
        lmin, lmax = float(ldb.min()), float(ldb.max())
    else:
        p01 = med = p99 = lmin = lmax = 0.0
    return BandStats(
        offset_db=round(float(med), 3),
        min_db=round(lmin, 3),
        max_db=round(lmax, 3),
        p01_db=round(float(p01), 3),
        p99_db=round(float(p99), 3),
        valid_fraction=_sig6(valid_n / total) if total else 0.0,
        uncodable_fraction=_sig6(bad_n / valid_n) if valid_n else 0.0,
        count=valid_n - bad_n,
        dtype_min=dmin,
        dtype_max=dmax,
    )
