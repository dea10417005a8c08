"""The container header as one typed schema: what a valid header is, said in one place.

A header that passed its CRC can still be hostile: a tool may write valid checksums around a JSON
object that lacks ``shape``, names band 7 of a 2-band raster, or puts a string where a number
belongs. Before this module each reader checked the fields it happened to use, and every field it
forgot became an ``internal error: KeyError`` after minutes of decoding. Now every reader goes
through :class:`ContainerHeader`: ``from_json`` checks the type and range of every field that is
present (enough for the generic container layer, which also stores shard headers), ``validate``
adds what decoding needs (all codec fields present and consistent with each other, the geospatial
metadata applicable), and :func:`check_records` holds the index rows against the raster's chunk
grid. Every failure is a :class:`~sarcodec.errors.ContainerError` (exit 1) with a one-line reason.

The schema is the same for both format versions: the reader hands it the same dict whether the
file stores it as JSON (version 1) or compactly (version 2, ``compact_header``). ``to_json`` gives
back the same keys, in the order the writer uses; keys this version does not know are kept
(``extra``), so a newer writer's additions survive.

This module is the bottom of the codec's import graph (``container``, ``encode`` and ``decode`` import it),
so the format's constants and limits live here and are re-exported by ``container``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sarcodec.errors import ContainerError, InputFileError
from sarcodec.vocabulary import CODEC_STRIDES, CODEC_V1, MAX_TILE_SIZE, OUTPUT_DTYPES

FORMAT_NAME = "sarcodec"
#: The format version the writer produces by default (``docs/container.md``: versioning policy).
FORMAT_VERSION = 2
#: Every format version this sarcodec reads: all it ever wrote, forever.
READABLE_VERSIONS = (1, 2)
CODEC_NAME = CODEC_V1
#: Every codec a file may name, with the pixels per grid unit of its chunk grid (``grid.stride``):
#: v1 counts chunks in latents (16 px), v2 (block DCT) in pixels (``sarcodec.vocabulary``).
STRIDE = CODEC_STRIDES[CODEC_V1]

#: Sanity limits applied to anything read from a file before memory is allocated for it.
MAX_HEADER_BYTES = 16 << 20
MAX_RECORDS = 4_000_000
MAX_BANDS = 65535
MAX_DIM = 2**31 - 1
MAX_PIXELS_PER_BAND = 2**36
MAX_BLOCK_PIXELS = 2**28
MAX_CHUNK_COORD = 2**31 - 1
#: Decoder geometry a header may record (the tile size in pixels, ``MAX_TILE_SIZE`` from the
#: vocabulary; the chunk in grid units).
MAX_CHUNK = 4096
#: Physical bounds of the dB values a band entry holds (a log-domain offset beyond 1e4 dB is damage).
MAX_OFFSET_DB = 1e4
MAX_GAIN_DB = 1e3

SUPPORTED_DTYPES = OUTPUT_DTYPES
#: The container's own keys, filled in by the writer, always first on disk.
RESERVED_KEYS = ("format", "format_version", "records", "payload_bytes", "index_crc32")
_CODEC_KEYS = ("codec", "created_by", "model", "quality", "grid", "shape", "dtype", "domain", "bands", "geo")
#: Record kinds whose (row, col) is a chunk of the raster (index codes, see ``container.KINDS``).
_GRID_KINDS = {0: "latent", 1: "mask", 2: "fallback"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NONFINITE = ("nan", "inf", "-inf")

# Budget for everything but ``geo`` in a header (model, grid, shape ... ~400 bytes) and per band entry
# (ten statistics, gain, count: ~350 bytes): generous, so the plan-time check never passes a header
# the writer then refuses.
_FIXED_BUDGET = 4096
_BAND_BUDGET = 1024


class HeaderError(ContainerError):
    """A header field is missing, of the wrong type or out of range (the file is damaged or not ours)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(data: Mapping[str, Any], key: str, lo: int, hi: int, what: str | None = None) -> int:
    v = data.get(key)
    if not _is_int(v) or not lo <= v <= hi:
        raise HeaderError(f"header field {what or key!r} is missing or out of range")
    return v


def _str_list(v: Any, what: str, *, none_ok: bool = False) -> None:
    if not isinstance(v, list) or not all(isinstance(s, str) or (none_ok and s is None) for s in v):
        raise HeaderError(f"header geo.{what} is not a list of strings")


def _str_dict(v: Any, what: str) -> None:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(s, str) for k, s in v.items()):
        raise HeaderError(f"header geo.{what} is not a string-to-string mapping")


def _nodata_ok(v: Any) -> bool:
    return v is None or _is_num(v) or v in _NONFINITE


@dataclass(frozen=True)
class GridSpec:
    """The tile grid the encoder used; the decoder repeats it (tile size and overlap in pixels)."""

    stride: int
    chunk: int
    tile_size: int = 256
    overlap: int = 64
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> GridSpec:
        if not isinstance(data, dict):
            raise HeaderError("the tile grid description is missing or unsupported")
        stride = data.get("stride")
        chunk = data.get("chunk")
        if stride not in CODEC_STRIDES.values() or not _is_int(stride) or not _is_int(chunk) or \
                not 1 <= chunk * stride <= MAX_CHUNK * STRIDE:
            raise HeaderError("the tile grid description is missing or unsupported")
        tile, overlap = data.get("tile_size", 256), data.get("overlap", 64)
        if not (_is_int(tile) and _is_int(overlap) and stride <= tile <= MAX_TILE_SIZE and tile % stride == 0
                and 0 <= overlap and overlap % stride == 0 and 2 * overlap <= tile):
            raise HeaderError(f"the tile grid (tile size {tile!r}, overlap {overlap!r}) is damaged")
        extra = {k: v for k, v in data.items() if k not in ("stride", "chunk", "tile_size", "overlap")}
        return cls(stride, chunk, tile, overlap, extra)

    def to_json(self) -> dict:
        return {"stride": self.stride, "chunk": self.chunk, "tile_size": self.tile_size, "overlap": self.overlap,
                **self.extra}


@dataclass(frozen=True)
class ModelRef:
    """Which checkpoint coded the file: the decoder refuses any other (SHA-256 of the file)."""

    id: str
    sha256: str
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> ModelRef:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or \
                not isinstance(data.get("sha256"), str) or not _SHA256.match(data["sha256"]):
            raise HeaderError("the model (id and sha256) is missing or damaged")
        return cls(data["id"], data["sha256"], {k: v for k, v in data.items() if k not in ("id", "sha256")})

    def to_json(self) -> dict:
        return {"id": self.id, "sha256": self.sha256, **self.extra}


@dataclass(frozen=True)
class BandHeader:
    """What the decoder reads of a band: the normalisation offset and the intensity gain, in dB."""

    stats: dict
    gain_db: float = 0.0
    uncodable_pixels: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def offset_db(self) -> float:
        return float(self.stats["offset_db"])

    @classmethod
    def from_json(cls, data: Any, number: int) -> BandHeader:
        bad = HeaderError(f"the per-band statistics of band {number} are damaged")
        if not isinstance(data, dict) or not isinstance(data.get("stats"), dict):
            raise bad
        stats = data["stats"]
        offset, gain = stats.get("offset_db"), data.get("gain_db", 0.0)
        if not (_is_num(offset) and _is_num(gain) and abs(offset) <= MAX_OFFSET_DB and abs(gain) <= MAX_GAIN_DB):
            raise bad
        if not all(isinstance(k, str) and _is_num(v) for k, v in stats.items()):
            raise bad  # sarcodec info and the evaluation read every statistic as a number
        unc = data.get("uncodable_pixels")
        if unc is not None and (not _is_int(unc) or unc < 0):
            raise bad
        extra = {k: v for k, v in data.items() if k not in ("stats", "gain_db", "uncodable_pixels")}
        return cls(dict(stats), gain, unc, extra)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"stats": dict(self.stats), "gain_db": self.gain_db}
        if self.uncodable_pixels is not None:
            out["uncodable_pixels"] = self.uncodable_pixels
        return {**out, **self.extra}


def _check_geo_types(geo: dict, bands: int | None) -> None:
    """The types of every ``geo`` field the decoder applies (see ``sarcodec.geometa`` for the format)."""
    if "crs" in geo and geo["crs"] is not None and not isinstance(geo["crs"], str):
        raise HeaderError("header geo.crs is not a string")
    if "transform" in geo and geo["transform"] is not None:
        t = geo["transform"]
        if not isinstance(t, list) or len(t) != 6 or not all(_is_num(v) for v in t):
            raise HeaderError("header geo.transform is not six finite numbers")
    if "gcps" in geo:
        g = geo["gcps"]
        if not isinstance(g, dict) or not isinstance(g.get("points", []), list) or \
                not (g.get("crs") is None or isinstance(g.get("crs"), str)):
            raise HeaderError("header geo.gcps is damaged")
        for p in g.get("points", []):
            if not (isinstance(p, list) and len(p) == 7 and all(_is_num(v) for v in p[:4])
                    and (p[4] is None or _is_num(p[4])) and isinstance(p[5], str) and isinstance(p[6], str)):
                raise HeaderError("header geo.gcps has a damaged point")
    if "nodata" in geo:
        nd = geo["nodata"]
        if isinstance(nd, list):
            if (bands is not None and len(nd) != bands) or not all(_nodata_ok(v) for v in nd):
                raise HeaderError("header geo.nodata is not one value per band")
        elif not _nodata_ok(nd):
            raise HeaderError("header geo.nodata is not a number")
    if "descriptions" in geo:
        _str_list(geo["descriptions"], "descriptions", none_ok=True)
    for key in ("colorinterp", "units"):
        if key in geo:
            _str_list(geo[key], key)
    for key in ("scales", "offsets"):
        if key in geo and (not isinstance(geo[key], list) or not all(_is_num(v) for v in geo[key])):
            raise HeaderError(f"header geo.{key} is not a list of finite numbers")
    if "tags" in geo:
        _str_dict(geo["tags"], "tags")
    if "band_tags" in geo:
        if not isinstance(geo["band_tags"], list):
            raise HeaderError("header geo.band_tags is not a list")
        for i, t in enumerate(geo["band_tags"]):
            _str_dict(t, f"band_tags[{i}]")
    if "domains" in geo:
        if not isinstance(geo["domains"], dict):
            raise HeaderError("header geo.domains is not a mapping")
        for ns, values in geo["domains"].items():
            _str_dict(values, f"domains[{ns!r}]")


def _dry_run_geo(geo: dict, bands: int, dtype: str) -> None:
    """Apply ``geo`` to a 1x1 in-memory GeoTIFF exactly as the decoder will: what GDAL refuses is damage.

    Types are checked before; this catches values GDAL itself refuses (a WKT it cannot parse is not
    one: it is written as no CRS) and a nodata value the stored data type cannot hold.
    """
    import warnings

    from rasterio.io import MemoryFile

    from sarcodec.geometa import apply_geo_metadata, has_valid_crs, nodata_values, profile_from_metadata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning for a file without a transform
            has_valid_crs(geo)
            nodata_values(geo, bands)
            profile = profile_from_metadata(geo, width=1, height=1, count=bands, dtype=dtype)
            with MemoryFile() as mem, mem.open(**profile) as ds:
                apply_geo_metadata(ds, geo)
    except Exception as exc:  # noqa: BLE001 - whatever the metadata trips over, the file is damaged
        raise HeaderError(f"the geospatial metadata is damaged ({type(exc).__name__})") from None


@dataclass(frozen=True)
class ContainerHeader:
    """A header as readers see it, every present field type- and range-checked (``docs/container.md``).

    Both format versions give the same dict: version 2 stores it compactly (``encode_compact``) and
    the reader rebuilds the container's own fields, so nothing downstream knows the difference.

    The container's own fields are required; the codec's are optional here (the generic container
    layer stores headers without them, e.g. torchrun shards) and required by :meth:`validate`.
    """

    records: int
    payload_bytes: int
    index_crc32: int
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    codec: str | None = None
    created_by: str | None = None
    model: ModelRef | None = None
    quality: int | None = None
    grid: GridSpec | None = None
    shape: tuple[int, int, int] | None = None
    dtype: str | None = None
    domain: str | None = None
    bands: tuple[BandHeader, ...] | None = None
    geo: dict | None = None
    extra: dict = field(default_factory=dict)

    # -- parsing --------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Any) -> ContainerHeader:
        """Parse a decoded JSON object; a field of the wrong type or range raises :class:`HeaderError`."""
        if not isinstance(data, Mapping):
            raise HeaderError("header is not a JSON object")
        if data.get("format") != FORMAT_NAME:
            raise HeaderError("header does not name the sarcodec format")
        version = data.get("format_version")
        if not _is_int(version) or version not in READABLE_VERSIONS:
            raise HeaderError(f"header format_version {str(version)[:20]!r} is not one this sarcodec reads")
        records = _int(data, "records", 0, MAX_RECORDS)
        payload = _int(data, "payload_bytes", 0, 2**62)
        crc = _int(data, "index_crc32", 0, 2**32 - 1)
        shape = None
        if "shape" in data:
            s = data["shape"]
            if not isinstance(s, list) or len(s) != 3 or not all(_is_int(v) for v in s):
                raise HeaderError("header shape is not [bands, height, width]")
            if not (1 <= s[0] <= MAX_BANDS and 1 <= s[1] <= MAX_DIM and 1 <= s[2] <= MAX_DIM):
                raise HeaderError(f"header shape {s} is out of range")
            if s[1] * s[2] > MAX_PIXELS_PER_BAND:
                raise HeaderError(f"header shape {s} is implausibly large")
            shape = (s[0], s[1], s[2])
        dtype = data.get("dtype")
        if "dtype" in data and dtype not in SUPPORTED_DTYPES:
            raise HeaderError(f"header dtype {str(dtype)[:40]!r} is not supported")
        domain = data.get("domain")
        if "domain" in data:
            from sarcodec.codec.domains import Domain

            if not isinstance(domain, str) or domain not in {d.value for d in Domain}:
                raise HeaderError(f"header domain {str(domain)[:40]!r} is unknown")
        codec = data.get("codec")
        if "codec" in data and not isinstance(codec, str):
            raise HeaderError("header codec is not a string")
        created_by = data.get("created_by")
        if created_by is not None and not isinstance(created_by, str):
            raise HeaderError("header created_by is not a string")
        model = ModelRef.from_json(data["model"]) if "model" in data else None
        quality = None
        if "quality" in data:
            quality = _int(data, "quality", 1, 255)
        grid = GridSpec.from_json(data["grid"]) if "grid" in data else None
        bands = None
        if "bands" in data:
            if not isinstance(data["bands"], list):
                raise HeaderError("the per-band statistics are not a list")
            bands = tuple(BandHeader.from_json(b, i + 1) for i, b in enumerate(data["bands"]))
        geo = data.get("geo")
        if "geo" in data:
            if not isinstance(geo, dict):
                raise HeaderError("the geospatial metadata is not a JSON object")
            _check_geo_types(geo, shape[0] if shape else None)
        extra = {k: v for k, v in data.items() if k not in RESERVED_KEYS and k not in _CODEC_KEYS}
        return cls(records, payload, crc, FORMAT_NAME, version, codec, created_by, model, quality, grid,
                   shape, dtype, domain, bands, geo, extra)

    def validate(self) -> ContainerHeader:
        """Check that this header describes a raster a codec of this version can decode; returns self."""
        if self.codec not in CODEC_STRIDES:
            raise HeaderError(f"codec {str(self.codec)[:40]!r} is not one this version reads "
                              f"({', '.join(CODEC_STRIDES)})")
        for key in ("shape", "dtype", "domain", "grid", "model", "quality", "bands"):
            if getattr(self, key) is None:
                raise HeaderError(f"header field {key!r} is missing")
        assert self.grid is not None
        if self.grid.stride != CODEC_STRIDES[self.codec]:
            raise HeaderError(f"the tile grid (stride {self.grid.stride}) does not belong to codec {self.codec}")
        assert self.shape is not None and self.bands is not None and self.dtype is not None
        if len(self.bands) != self.shape[0]:
            raise HeaderError(f"the per-band statistics ({len(self.bands)}) do not match the band count "
                              f"({self.shape[0]})")
        if self.records > 0 and self.payload_bytes == 0:
            raise HeaderError("the header lists records but no payload")
        _dry_run_geo(self.geo or {}, self.shape[0], self.dtype)
        return self

    # -- geometry -------------------------------------------------------------------------------
    @property
    def chunk_grid(self) -> tuple[int, int]:
        """Chunk rows and columns of every band (a chunk is ``grid.chunk`` grid units square)."""
        assert self.shape is not None and self.grid is not None
        _, height, width = self.shape
        stride = self.grid.stride
        lh, lw = -(-height // stride), -(-width // stride)
        return -(-lh // self.grid.chunk), -(-lw // self.grid.chunk)

    def to_json(self) -> dict:
        """The header as written on disk (same keys, same order as the writer's)."""
        out: dict[str, Any] = {"format": self.format, "format_version": self.format_version,
                               "records": self.records, "payload_bytes": self.payload_bytes,
                               "index_crc32": self.index_crc32}
        optional = {"codec": self.codec, "created_by": self.created_by,
                    "model": self.model.to_json() if self.model else None, "quality": self.quality,
                    "grid": self.grid.to_json() if self.grid else None,
                    "shape": list(self.shape) if self.shape else None, "dtype": self.dtype,
                    "domain": self.domain, "bands": [b.to_json() for b in self.bands] if self.bands is not None
                    else None, "geo": self.geo}
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update(self.extra)
        return out


def header_problem(data: Any) -> str | None:
    """Why a header is unacceptable to the container layer (one short phrase), or None."""
    try:
        ContainerHeader.from_json(data)
    except HeaderError as exc:
        return str(exc)
    return None


def check_records(header: ContainerHeader, index: np.ndarray) -> None:
    """Every latent, mask and fallback record must name a band and a chunk of the raster.

    The reader already bounds each column and the band against ``shape``; here the chunk row and
    column are held against the chunk grid the header describes. Records of other kinds (``extra``,
    kinds of a newer version) have no chunk geometry and are left alone.
    """
    if index.size == 0:
        return
    assert header.shape is not None
    rows, cols = header.chunk_grid
    kind = index[:, 3]
    on_grid = np.isin(kind, list(_GRID_KINDS))
    bad = on_grid & ((index[:, 0] >= header.shape[0]) | (index[:, 1] >= rows) | (index[:, 2] >= cols))
    if np.any(bad):
        i = int(np.argmax(bad))
        b, r, c, k = (int(v) for v in index[i, :4])
        raise HeaderError(f"{_GRID_KINDS[k]} record {i} (band {b + 1}, chunk {r},{c}) lies outside the raster's "
                          f"{header.shape[0]} band(s) of {rows}x{cols} chunks")


def check_block(row0: int, col0: int, shape: tuple[int, int], window: tuple[int, int, int, int], what: str) -> None:
    """A decoded block (fallback values) must lie inside its chunk's pixel window ``(r0, c0, h, w)``."""
    r0, c0, h, w = window
    bh, bw = shape
    if not (r0 <= row0 and row0 + bh <= r0 + h and c0 <= col0 and col0 + bw <= c0 + w):
        raise ContainerError(f"{what} covers rows {row0}..{row0 + bh - 1}, columns {col0}..{col0 + bw - 1}, "
                             f"outside its chunk (rows {r0}..{r0 + h - 1}, columns {c0}..{c0 + w - 1})")


def check_header_budget(geo: Mapping[str, Any], bands: int, name: str) -> None:
    """Refuse, before any coding, metadata that cannot fit the header's 16 MiB (or cannot be stored).

    The header is only assembled after every chunk is coded; without this check a 17 MB tag value
    costs the whole run and then fails inside the writer.
    """
    try:
        size = len(json.dumps(geo, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise InputFileError(f"{name}: the raster's metadata cannot be stored ({type(exc).__name__})") from None
    total = size + _FIXED_BUDGET + bands * _BAND_BUDGET
    if total > MAX_HEADER_BYTES:
        raise InputFileError(
            f"{name}: the raster's metadata (tags, GCPs, descriptions: {size} bytes) is too large for the "
            f"container header ({MAX_HEADER_BYTES >> 20} MiB at most); remove large tags first, e.g. with "
            "gdal_edit.py -unsetmd")
