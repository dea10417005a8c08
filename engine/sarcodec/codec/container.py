"""The ``.npz`` container: a streaming, checksummed record store readable by ``numpy.load``.

Layout (see ``docs/container.md`` for the full specification). Format version 2, written by
default, is a zip archive of one stored ``.npy`` uint8 array, member ``c``::

    16-byte prefix  b"SARCODEC" + u32 version (2) + u32 crc32(what follows, up to the payload)
    varint H, then H bytes: the index (record keys, lengths and CRCs; offsets implicit) and the
                            compact header body (``compact_header``: deflated with a preset dictionary)
    payload         every record's bytes, concatenated in index order

Version 1 (still read, and written on request: ``ContainerWriter(..., format_version=1)``) has three
members: ``header.npy`` (prefix + JSON), ``index.npy`` (int64 rows) and ``payload.npy``.

Why this shape: the per-file overhead matters on 64x64 chips, whose payload is one or two KB.
Version 1 spent about 1.4 KB on them (three zip members and ``.npy`` headers, the WKT, the JSON key
names); version 2 spends 252 (``bench/results/overhead.md``): one zip member (100 bytes of zip
structure), a minimal ``.npy`` header, an index without offsets, EPSG codes for WKT and a
dictionary-primed deflate of the header.
The payload is stored, not deflated (it is entropy-coded already), so a reader can seek straight to
one chunk without reading the rest; every byte of the payload is covered by exactly one record CRC
and every structural field by the header CRC (which is itself behind the version prefix), so any
damage is found and reported as "which record" or "which part".

The header is a dict in and a dict out in both versions (``ContainerWriter.finish(header)``,
``ContainerReader.header``): the compact encoding is this module's and ``compact_header``'s affair,
and every key comes back with the same value (the container's own keys are filled in).

Writing streams: records go to a hidden ``.part`` spill file next to the destination as they are
produced, so memory does not grow with the scene; ``finish`` builds the zip into another hidden
``.part`` file, fsyncs it and renames it into place (or copies it to a binary stream such as
stdout). Nothing but the finished file is ever visible under the destination name.

Reading never unpickles (``allow_pickle`` is never set) and bounds every size it reads from the file
before allocating anything, so hostile files fail with :class:`ContainerError`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import sys
import tempfile
import threading
import weakref
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import numpy.lib.format as npformat

from sarcodec.codec.compact_header import decode_compact, encode_compact, put_varint, read_varint
from sarcodec.codec.header import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_BANDS,
    MAX_BLOCK_PIXELS,
    MAX_CHUNK_COORD,
    MAX_DIM,
    MAX_HEADER_BYTES,
    MAX_RECORDS,
    READABLE_VERSIONS,
    RESERVED_KEYS,
    SUPPORTED_DTYPES,
    ContainerHeader,
    HeaderError,
    check_block,
    check_header_budget,
    check_records,
)
from sarcodec.codec.header import header_problem as _schema_problem
from sarcodec.destinations import make_temp, publish
from sarcodec.errors import ContainerError, DamagedChunkError, InputFileError

MAGIC = b"SARCODEC"
#: magic (8 bytes) + little-endian u32 format version + little-endian u32 crc32 of the JSON bytes
PREFIX = struct.Struct("<8sII")

#: Format version 2: the one member (a short name: it is written twice, in the local header and the
#: zip directory). ``numpy.load(path)["c"]`` is the whole array.
MEMBER = "c"
#: Format version 1: three members.
HEADER_MEMBER = "header.npy"
INDEX_MEMBER = "index.npy"
PAYLOAD_MEMBER = "payload.npy"

#: Index columns, in order.
INDEX_COLUMNS = ("band", "chunk_row", "chunk_col", "kind", "offset", "length", "crc32")

#: Record kinds and their codes in the index. Codes 4-255 are reserved: a version-1 reader lists
#: records of an unknown kind (named ``kindN``) and otherwise ignores them.
KINDS: dict[str, int] = {"latent": 0, "mask": 1, "fallback": 2, "extra": 3}
KIND_NAMES: dict[int, str] = {v: k for k, v in KINDS.items()}

#: The sanity limits (applied to anything read from a file before memory is allocated for it) and
#: the format's name and version live in ``header.py`` with the header schema; re-exported here.
_MAX_CHUNK_COORD = MAX_CHUNK_COORD

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so identical input gives byte-identical files
_COPY_BLOCK = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")
_RESERVED_KEYS = RESERVED_KEYS
_SUPPORTED_DTYPES = SUPPORTED_DTYPES

#: Version-2 index: widths (bytes) a column may be stored in, coded 0-4 in 3 bits per column; the
#: columns so stored, in this order (length, kind, band, chunk_row, chunk_col: a chip's widths code is
#: below 128, one varint byte); the CRC column is always 4 bytes and offsets are implicit (records
#: lie in the payload in index order, back to back).
_INDEX_WIDTHS = (0, 1, 2, 4, 8)
_INDEX_STORED = (5, 3, 0, 1, 2)
#: The most bytes a version-2 header block (index and compact body) may claim.
MAX_HEADER_BLOCK = 2 * MAX_HEADER_BYTES + MAX_RECORDS * (len(INDEX_COLUMNS) * 8) + 64


def kind_code(kind: str | int) -> int:
    """The index code of a record kind given by name ("latent", ...) or code; unknown -> ValueError."""
    if isinstance(kind, str):
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r} (expected one of {', '.join(KINDS)})")
        return KINDS[kind]
    code = int(kind)
    if code not in KIND_NAMES:
        raise ValueError(f"unknown record kind code {code}")
    return code


def kind_name(code: int) -> str:
    """The name of a kind code; codes this version does not know are named ``kindN``."""
    return KIND_NAMES.get(int(code), f"kind{int(code)}")


@dataclass(frozen=True)
class Record:
    """One row of the index: where a record's bytes are in the payload and their CRC-32."""

    index: int
    band: int
    row: int
    col: int
    kind: str
    offset: int
    length: int
    crc32: int

    @property
    def key(self) -> tuple[int, int, int, str]:
        return (self.band, self.row, self.col, self.kind)


# --------------------------------------------------------------------------------------------------
# lossless helpers: nodata masks and fallback values


def encode_mask(mask: np.ndarray) -> bytes:
    """A 2-D boolean mask -> ``zlib(packbits(mask))``; exact, about 1 bit per pixel before zlib.

    The shape is not stored: the record's chunk window gives it (see :func:`decode_mask`).
    """
    m = np.asarray(mask, dtype=bool)
    return zlib.compress(np.packbits(m.ravel(), bitorder="big").tobytes(), 9)


def _inflate_exact(data: bytes, expected: int, what: str) -> bytes:
    """Inflate ``data`` to exactly ``expected`` bytes without ever producing more (no zlib bombs)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(bytes(data), expected + 1)
    except zlib.error as exc:
        raise ContainerError(f"{what} does not decode ({exc})") from None
    # Below the output limit zlib consumes all input, so a complete stream has reached its end.
    if len(out) != expected or not d.eof or d.unused_data:
        raise ContainerError(f"{what} does not decode to the expected {expected} bytes")
    return out


def _check_block_shape(shape: tuple[int, int], what: str) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ContainerError(f"{what}: bad block shape {shape!r}") from None
    if h < 0 or w < 0 or h * w > MAX_BLOCK_PIXELS:
        raise ContainerError(f"{what}: block shape {h}x{w} is out of range")
    return h, w


def decode_mask(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`encode_mask` for a block of ``shape``; damage -> ContainerError."""
    h, w = _check_block_shape(shape, "mask record")
    n = h * w
    raw = _inflate_exact(data, (n + 7) // 8, "mask record")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n, bitorder="big")
    return bits.astype(bool).reshape(h, w)


_FB_MAGIC = b"SCFB"
_FB_HEAD = struct.Struct("<4sBBBBIIII")  # magic, version, mode, dtype code, flags, h, w, row0, col0
_FB_SPARSE, _FB_DENSE = 0, 1
_FB_SHUFFLE = 1
_FB_DTYPES = {1: "|u1", 2: "|i1", 3: "<u2", 4: "<i2", 5: "<u4", 6: "<i4", 7: "<u8", 8: "<i8",
              9: "<f2", 10: "<f4", 11: "<f8", 12: "<c8", 13: "<c16", 14: "|b1"}
_FB_CODES = {np.dtype(v).str: k for k, v in _FB_DTYPES.items()}


@dataclass(frozen=True)
class FallbackBlock:
    """A decoded fallback record: pixel origin of the block, which pixels it holds, their values."""

    row0: int
    col0: int
    mask: np.ndarray
    values: np.ndarray


def _shuffle(raw: bytes, itemsize: int) -> bytes:
    """Byte planes (all first bytes, then all second bytes...): zlib packs float data far better."""
    if itemsize <= 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def _unshuffle(raw: bytes, itemsize: int) -> bytes:
    if itemsize <= 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()


def encode_fallback(values: np.ndarray, mask: np.ndarray | None = None,
                    origin: tuple[int, int] = (0, 0)) -> bytes:
    """Store the pixels of a 2-D block selected by ``mask`` (all when None) bit-exactly.

    Used for pixels the model cannot code (NaN, Inf, <= 0 in linear domains) and for whole tiles it
    failed on. NaN payloads and signed zeros survive because raw bytes are stored, byte-plane
    shuffled and deflated. A full mask is stored densely (no mask bits). ``origin`` is the block's
    top-left pixel in the band, so a fallback can cover any window, not only a chunk.
    """
    v = np.asarray(values)
    if v.ndim != 2:
        raise ValueError(f"fallback values must be 2-D, got shape {v.shape}")
    le = v.dtype.newbyteorder("<") if v.dtype.byteorder == ">" else v.dtype
    if le.str not in _FB_CODES:
        raise ValueError(f"fallback values of dtype {v.dtype} are not supported")
    h, w = v.shape
    if h * w > MAX_BLOCK_PIXELS:
        raise ValueError(f"fallback block {h}x{w} is too large")
    row0, col0 = (int(o) for o in origin)
    if not (0 <= row0 <= MAX_DIM and 0 <= col0 <= MAX_DIM):
        raise ValueError(f"fallback origin {origin} is out of range")
    m = np.ones(v.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != v.shape:
        raise ValueError(f"fallback mask shape {m.shape} differs from values shape {v.shape}")
    vals = np.ascontiguousarray(v.astype(le, copy=False))
    if m.all():
        mode, body = _FB_DENSE, _shuffle(vals.tobytes(), le.itemsize)
    else:
        mode = _FB_SPARSE
        body = np.packbits(m.ravel(), bitorder="big").tobytes() + _shuffle(vals[m].tobytes(), le.itemsize)
    head = _FB_HEAD.pack(_FB_MAGIC, 1, mode, _FB_CODES[le.str], _FB_SHUFFLE, h, w, row0, col0)
    return head + zlib.compress(body, 6)


def decode_fallback_block(data: bytes) -> FallbackBlock:
    """Inverse of :func:`encode_fallback`, with the block origin; damage -> ContainerError."""
    what = "fallback record"
    data = bytes(data)
    if len(data) < _FB_HEAD.size:
        raise ContainerError(f"{what} is too short")
    magic, version, mode, code, flags, h, w, row0, col0 = _FB_HEAD.unpack_from(data)
    if magic != _FB_MAGIC or version != 1 or mode not in (_FB_SPARSE, _FB_DENSE) or code not in _FB_DTYPES:
        raise ContainerError(f"{what} has an unknown layout")
    if flags & ~_FB_SHUFFLE or row0 > MAX_DIM or col0 > MAX_DIM:
        raise ContainerError(f"{what} has an unknown layout")
    h, w = _check_block_shape((h, w), what)
    dt = np.dtype(_FB_DTYPES[code])
    n = h * w
    mask_bytes = 0 if mode == _FB_DENSE else (n + 7) // 8
    if mode == _FB_SPARSE:
        # the count of selected pixels is only known after the mask: inflate the mask part first
        try:
            d = zlib.decompressobj()
            mraw = d.decompress(data[_FB_HEAD.size:], mask_bytes) if mask_bytes else b""
        except zlib.error as exc:
            raise ContainerError(f"{what} does not decode ({exc})") from None
        if len(mraw) != mask_bytes:
            raise ContainerError(f"{what} does not decode (mask cut short)")
        mask = np.unpackbits(np.frombuffer(mraw, dtype=np.uint8), count=n, bitorder="big").astype(bool)
        mask = mask.reshape(h, w)
        k = int(np.count_nonzero(mask))
    else:
        mask = np.ones((h, w), dtype=bool)
        k = n
    raw = _inflate_exact(data[_FB_HEAD.size:], mask_bytes + k * dt.itemsize, what)[mask_bytes:]
    if flags & _FB_SHUFFLE:
        raw = _unshuffle(raw, dt.itemsize)
    picked = np.frombuffer(raw, dtype=dt)
    values = np.zeros((h, w), dtype=dt.newbyteorder("=") if dt.byteorder == "<" else dt)
    values[mask] = picked
    return FallbackBlock(int(row0), int(col0), mask, values)


def decode_fallback(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_fallback`: ``(mask, values)``, values zero where mask is False."""
    block = decode_fallback_block(data)
    return block.mask, block.values


# --------------------------------------------------------------------------------------------------
# header validation shared by writer and reader


def header_problem(header: Mapping[str, Any]) -> str | None:
    """Why a header is unacceptable (one short phrase), or None when it is fine.

    Checks the container's own fields and the type and range of every other field present: the
    one schema, :class:`sarcodec.codec.header.ContainerHeader`, shared by writer and reader. What
    decoding additionally needs (all codec fields present) is ``ContainerHeader.validate``.
    """
    return _schema_problem(header)


#: What every codec's decoder reads first: a header that names a codec must have them (a torchrun
#: shard, which names none, need not). Missing, they used to end a decode in ``internal error: KeyError``.
RASTER_FIELDS = ("shape", "dtype", "domain")


def check_raster_metadata_fits(source: str | os.PathLike[str], *, crs: str | None = None,
                               name: str | None = None) -> None:
    """Refuse, before any coding, a raster whose metadata cannot fit a container header (``InputFileError``).

    For front ends to call right after inspecting the input (the CLI and the QGIS plugin do): the
    header is assembled only after every chunk is coded, so a 17 MB tag value used to cost the whole
    run and then fail as an internal error. ``crs`` is the CRS the run will add (``--crs``).
    """
    import warnings

    import rasterio

    from sarcodec.geometa import read_geo_metadata, with_crs

    shown = name or os.fspath(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning: inspecting the input said it already
        with rasterio.open(os.fspath(source)) as ds:
            meta, bands = read_geo_metadata(ds), int(ds.count)
    if crs:
        meta = with_crs(meta, crs)
    check_header_budget(meta, bands, shown)


# --------------------------------------------------------------------------------------------------
# version-2 layout: the index and the .npy header


def pack_index(index: np.ndarray) -> bytes:
    """Version-2 index bytes: record count, column widths, then the columns (offsets left out).

    Each of band, chunk_row, chunk_col, kind and length is stored in the fewest bytes (0, 1, 2, 4
    or 8; 0 when the column is all zero) that hold its largest value; the CRC column in 4. A chip's
    one record costs 8 bytes, where version 1 spent 56 and a zip member of its own.
    """
    n = int(index.shape[0])
    codes = 0
    parts = []
    for i, col in enumerate(_INDEX_STORED):
        top = int(index[:, col].max()) if n else 0
        code = next(c for c, w in enumerate(_INDEX_WIDTHS) if top < 1 << (8 * w))
        codes |= code << (3 * i)
        if _INDEX_WIDTHS[code]:
            parts.append(index[:, col].astype(f"<u{_INDEX_WIDTHS[code]}").tobytes())
    parts.append(index[:, 6].astype("<u4").tobytes())
    return put_varint(n) + put_varint(codes) + b"".join(parts)


def unpack_index(block: bytes, payload_bytes: int) -> tuple[np.ndarray, int]:
    """Inverse of :func:`pack_index` for a payload of ``payload_bytes``: the (R, 7) index and the
    position after it. Sizes are checked before anything is allocated; offsets are rebuilt, so the
    records tile the payload by construction once their lengths add up to it."""
    n, pos = read_varint(block, 0, "index")
    if n > MAX_RECORDS:
        raise ContainerError(f"index claims {n} records, more than the {MAX_RECORDS} allowed")
    codes, pos = read_varint(block, pos, "index")
    widths = [(codes >> (3 * i)) & 7 for i in range(len(_INDEX_STORED))]
    if codes >> (3 * len(_INDEX_STORED)) or any(c >= len(_INDEX_WIDTHS) for c in widths):
        raise ContainerError("index has an unknown column layout")
    need = n * (sum(_INDEX_WIDTHS[c] for c in widths) + 4)
    if need > len(block) - pos:
        raise ContainerError("index is truncated")
    arr = np.zeros((n, len(INDEX_COLUMNS)), dtype="<i8")
    for col, code in zip((*_INDEX_STORED, 6), (*widths, 3), strict=True):
        w = _INDEX_WIDTHS[code]
        if not w:
            continue
        values = np.frombuffer(block, dtype=f"<u{w}", count=n, offset=pos)
        pos += n * w
        if w == 8 and n and int(values.max()) > 2**62:
            raise ContainerError(f"index column {INDEX_COLUMNS[col]} has out-of-range fields")
        arr[:, col] = values
    lengths = arr[:, 5]
    if n:
        ends = np.cumsum(lengths.astype(np.uint64))  # each <= 2**62: a wrap shows as a decrease
        if np.any(ends[1:] < ends[:-1]) or int(ends[-1]) != payload_bytes:
            raise ContainerError("index records do not tile the payload (overlap, gap or past the end)")
        arr[:, 4] = ends.astype(np.int64) - lengths
    elif payload_bytes != 0:
        raise ContainerError("payload has bytes but the index no records")
    return arr, pos


def npy_header(length: int) -> bytes:
    """The shortest ``.npy`` (1.0) header numpy reads for a 1-D uint8 array (``numpy.save`` pads to 128)."""
    text = f"{{'descr':'|u1','fortran_order':False,'shape':({int(length)},)}}\n".encode("latin1")
    return npformat.MAGIC_PREFIX + b"\x01\x00" + struct.pack("<H", len(text)) + text


# --------------------------------------------------------------------------------------------------
# writer


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in a header become plain JSON numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    npformat.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _cleanup(paths: list[str], files: tuple[IO[bytes], ...] = ()) -> None:
    """Close and remove temporary files (also run by a finalizer if a writer is dropped unfinished)."""
    for f in files:
        try:
            f.close()
        except OSError:
            pass
    for p in list(paths):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError:
            continue
        paths.remove(p)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class ContainerWriter:
    """Write a container record by record; the file appears under its name only when finished.

    ``destination`` is a path, ``"-"`` (standard output) or a binary stream. Records are spilled to
    a hidden ``.<name>.*.part`` file in the destination folder (``tmp_dir`` if given, the system
    temp folder for streams). ``finish(header)`` assembles the zip in another hidden ``.part`` file
    next to the destination and renames it into place (or copies it to the stream); ``abort()``, or
    leaving a ``with`` block by an exception or without ``finish``, removes every temporary file.
    ``add`` is thread-safe, so chunks may be entropy-coded in parallel. ``format_version`` picks
    the layout (``docs/container.md``); the header dict given to ``finish`` is the same for both.
    """

    def __init__(self, destination: str | os.PathLike[str] | BinaryIO, *,
                 tmp_dir: str | os.PathLike[str] | None = None, format_version: int = FORMAT_VERSION) -> None:
        if format_version not in READABLE_VERSIONS:
            raise ValueError(f"format_version must be one of {READABLE_VERSIONS}, not {format_version!r}")
        #: 2 (the default, compact) or 1 (the layout of sarcodec 0.1.0, for readers that predate 2)
        self.format_version = int(format_version)
        self._stream: IO[bytes] | None = None
        self.path: Path | None = None
        if isinstance(destination, (str, os.PathLike)) and os.fspath(destination) != "-":
            self.path = Path(os.fspath(destination))
            self.name = str(self.path)
            folder = os.fspath(tmp_dir) if tmp_dir is not None else str(self.path.parent.resolve())
            stem = self.path.name
        else:
            if isinstance(destination, (str, os.PathLike)):
                self._stream, self.name = sys.stdout.buffer, "<stdout>"
            else:
                self._stream = destination
                self.name = str(getattr(destination, "name", None) or "<stream>")
            folder = os.fspath(tmp_dir) if tmp_dir is not None else tempfile.gettempdir()
            stem = "sarcodec"
        self._folder = folder
        # the assembled zip must be renamed into place, so it lives next to the destination
        self._zip_folder = str(self.path.parent.resolve()) if self.path is not None else folder
        self._stem = stem
        self._temps: list[str] = []
        self._lock = threading.Lock()
        self._rows: list[tuple[int, int, int, int, int, int, int]] = []
        self._keys: set[tuple[int, int, int, int]] = set()
        self._size = 0
        self._state = "open"
        try:  # short names (sarcodec.destinations): a 255-byte destination name still gets its temporaries
            fd, spill = make_temp(stem, ".spill.part", folder=folder)
        except InputFileError as exc:
            raise InputFileError(f"{self.name}: cannot create a temporary file: {exc}") from None
        self._temps.append(spill)
        self._spill_path = spill
        self._spill = os.fdopen(fd, "w+b")
        self._finalizer = weakref.finalize(self, _cleanup, self._temps, (self._spill,))

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> ContainerWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._state != "finished":
            self.abort()

    @property
    def record_count(self) -> int:
        return len(self._rows)

    @property
    def payload_bytes(self) -> int:
        return self._size

    def _fail(self, action: str, exc: OSError) -> InputFileError:
        self.abort()
        return InputFileError(f"{self.name}: {action} failed: {exc.strerror or exc}")

    def add(self, band: int, row: int, col: int, kind: str | int, data: bytes) -> int:
        """Append one record (``data`` is stored as-is, CRC-32 checked on read); returns its index.

        ``(band, row, col, kind)`` must be unique: it is the key readers look records up by.
        """
        code = kind_code(kind)
        band, row, col = int(band), int(row), int(col)
        if not (0 <= band < MAX_BANDS and 0 <= row <= _MAX_CHUNK_COORD and 0 <= col <= _MAX_CHUNK_COORD):
            raise ValueError(f"record position band={band} row={row} col={col} is out of range")
        blob = bytes(data)
        crc = zlib.crc32(blob)
        with self._lock:
            if self._state != "open":
                raise ValueError(f"container writer for {self.name} is {self._state}")
            key = (band, row, col, code)
            if key in self._keys:
                raise ValueError(f"duplicate {kind_name(code)} record for band {band} chunk ({row}, {col})")
            if len(self._rows) >= MAX_RECORDS:
                raise ValueError(f"more than {MAX_RECORDS} records")
            try:
                self._spill.write(blob)
            except OSError as exc:
                raise self._fail("writing the temporary file", exc) from None
            self._keys.add(key)
            self._rows.append((band, row, col, code, self._size, len(blob), crc))
            self._size += len(blob)
            return len(self._rows) - 1

    def _header_bytes(self, header: Mapping[str, Any], index: np.ndarray) -> bytes:
        """What precedes the payload: version 1's ``header.npy`` content or version 2's prefix and block."""
        if not isinstance(header, Mapping):
            raise ValueError("container header must be a dict")
        full = {k: v for k, v in header.items() if k not in _RESERVED_KEYS}
        full = {"format": FORMAT_NAME, "format_version": self.format_version, "records": int(index.shape[0]),
                "payload_bytes": int(self._size), "index_crc32": zlib.crc32(index.tobytes()), **full}
        try:
            text = json.dumps(full, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                              default=_json_default)
            body = text.encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"container header is not plain JSON: {exc}") from None
        plain = json.loads(text)  # what readers will see (tuples -> lists, numpy scalars -> numbers)
        problem = header_problem(plain)
        if problem:
            raise ValueError(f"invalid container header: {problem}")
        if len(body) + PREFIX.size > MAX_HEADER_BYTES:  # a caller that skipped check_raster_metadata_fits
            raise InputFileError(f"{self.name}: the container header would be {len(body) + PREFIX.size} bytes, "
                                 f"more than the {MAX_HEADER_BYTES >> 20} MiB a container holds (large tags? "
                                 "remove them first, e.g. with gdal_edit.py -unsetmd)")
        if self.format_version == 1:
            return PREFIX.pack(MAGIC, 1, zlib.crc32(body)) + body
        compact = encode_compact(plain)
        # Read it back before publishing: a header that would not come back identical is a bug here,
        # and must never become a file that decodes with different metadata.
        if json.dumps(decode_compact(compact)) != json.dumps({k: plain[k] for k in plain if k not in _RESERVED_KEYS}):
            raise RuntimeError("the compact header does not read back identically (please report this)")
        block = pack_index(index) + compact
        sized = put_varint(len(block)) + block
        return PREFIX.pack(MAGIC, 2, zlib.crc32(sized)) + sized

    def _copy_payload(self, out: IO[bytes]) -> None:
        self._spill.flush()
        self._spill.seek(0)
        remaining = self._size
        while remaining:
            block = self._spill.read(min(_COPY_BLOCK, remaining))
            if not block:
                raise OSError(f"temporary file {self._spill_path} is shorter than expected")
            out.write(block)
            remaining -= len(block)

    def _write_zip(self, fp: IO[bytes], header_blob: bytes, index: np.ndarray) -> None:
        with zipfile.ZipFile(fp, "w", allowZip64=True) as zf:
            if self.format_version == 2:
                head = npy_header(len(header_blob) + self._size) + header_blob
                info = zipfile.ZipInfo(MEMBER, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_STORED
                info.file_size = len(head) + self._size  # lets zipfile decide on zip64 (only when needed)
                with zf.open(info, "w") as out:
                    out.write(head)
                    self._copy_payload(out)
                return
            for name, array in ((HEADER_MEMBER, np.frombuffer(header_blob, dtype=np.uint8)),
                                (INDEX_MEMBER, index)):
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, _npy_bytes(array), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            npy_head = io.BytesIO()
            npformat.write_array_header_1_0(npy_head, {"descr": "|u1", "fortran_order": False,
                                                       "shape": (int(self._size),)})
            info = zipfile.ZipInfo(PAYLOAD_MEMBER, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = len(npy_head.getvalue()) + self._size  # lets zipfile decide on zip64
            with zf.open(info, "w") as out:
                out.write(npy_head.getvalue())
                self._copy_payload(out)

    def finish(self, header: Mapping[str, Any]) -> int:
        """Assemble the container with ``header`` (a JSON-able dict) and put it in place.

        The container's own keys (format, format_version, records, payload_bytes, index_crc32)
        are filled in here. Returns the size of the written file in bytes. On any failure every
        temporary file is removed, the destination is left untouched and InputFileError (for
        I/O, e.g. a full disk) or ValueError (for a bad header) is raised.
        """
        with self._lock:
            if self._state != "open":
                raise ValueError(f"container writer for {self.name} is {self._state}")
            self._state = "finishing"
        try:
            index = np.asarray(self._rows, dtype="<i8").reshape(-1, len(INDEX_COLUMNS))
            header_blob = self._header_bytes(header, index)
            fd, tmp = make_temp(self._stem, ".part", folder=self._zip_folder)
            self._temps.append(tmp)
            with os.fdopen(fd, "w+b") as fp:
                self._write_zip(fp, header_blob, index)
                fp.flush()
                os.fsync(fp.fileno())
                size = fp.tell()
                if self._stream is not None:
                    fp.seek(0)
                    shutil.copyfileobj(fp, self._stream, _COPY_BLOCK)
                    self._stream.flush()
            if self.path is not None:
                os.chmod(tmp, _default_mode())
                # the one publish step: no --overwrite means a destination that appeared meanwhile stays
                publish(tmp, self.path)
                self._temps.remove(tmp)
        except ValueError:
            self.abort()
            raise
        except OSError as exc:
            raise self._fail("writing the container", exc) from None
        except BaseException:
            self.abort()
            raise
        self._spill.close()
        _cleanup(self._temps)
        self._state = "finished"
        return size

    def abort(self) -> None:
        """Drop everything written so far; no temporary file is left. Safe to call twice."""
        if self._state == "finished":
            return
        self._state = "aborted"
        try:
            self._spill.close()
        except OSError:
            pass
        _cleanup(self._temps)


# --------------------------------------------------------------------------------------------------
# reader


class ContainerReader:
    """Open and validate a container; read records lazily with CRC checks.

    ``source`` is a path, ``"-"`` (standard input) or a binary stream; a stream that cannot seek is
    spooled to an anonymous temporary file first. At open the zip structure, the member layout,
    the format version, the header CRC and the index (CRC, bounds, no overlaps or gaps, unique
    keys) are checked, so later failures can only be damaged records, reported by index.
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO, *, name: str | None = None) -> None:
        self._lock = threading.Lock()
        self._owned: IO[bytes] | None = None
        self._zip: zipfile.ZipFile | None = None
        self._lookup: dict[tuple[int, int, int, int], int] | None = None
        if isinstance(source, (str, os.PathLike)) and os.fspath(source) == "-":
            source = sys.stdin.buffer
            name = name or "<stdin>"
        if isinstance(source, (str, os.PathLike)):
            self.name = name or os.fspath(source)
            try:
                fp: IO[bytes] = open(source, "rb")  # kept open: records are read lazily
            except FileNotFoundError:
                raise InputFileError(f"{self.name}: no such file") from None
            except IsADirectoryError:
                raise InputFileError(f"{self.name}: is a folder, not a container file") from None
            except OSError as exc:
                raise InputFileError(f"{self.name}: cannot open: {exc.strerror or exc}") from None
            self._owned = fp
        else:
            self.name = name or str(getattr(source, "name", None) or "<stream>")
            fp = source
            seekable = False
            try:
                seekable = bool(fp.seekable())
            except (AttributeError, OSError, ValueError):
                seekable = False
            if not seekable:
                spool = tempfile.TemporaryFile()
                try:
                    shutil.copyfileobj(fp, spool, _COPY_BLOCK)
                    spool.seek(0)
                except OSError as exc:
                    spool.close()
                    raise InputFileError(f"{self.name}: cannot read: {exc.strerror or exc}") from None
                self._owned = fp = spool
        self._fp = fp
        try:
            self._open()
        except ContainerError:
            self.close()
            raise
        except Exception as exc:  # hostile input: whatever zipfile/numpy trip over is a damaged file
            self.close()
            raise ContainerError(f"{self.name}: not a readable sarcodec container "
                                 f"({type(exc).__name__}: {str(exc)[:80]})") from None

    # -- open-time validation -------------------------------------------------------------------
    def _err(self, reason: str) -> ContainerError:
        return ContainerError(f"{self.name}: {reason}")

    def _open(self) -> None:
        fp = self._fp
        start = fp.tell()
        self._file_end = fp.seek(0, os.SEEK_END)
        self.file_size = self._file_end - start
        fp.seek(start)
        if self.file_size == 0:
            raise self._err("empty file, not a sarcodec container")
        try:
            self._zip = zipfile.ZipFile(fp, "r")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
            raise self._err("not a sarcodec container (not a zip archive, or truncated)") from None
        infos = {i.filename: i for i in self._zip.infolist()}
        if MEMBER in infos:
            self._open_v2(infos[MEMBER])
            return
        if HEADER_MEMBER not in infos:
            raise self._err(f"not a sarcodec container (no {MEMBER} or {HEADER_MEMBER} member)")
        missing = [m for m in (INDEX_MEMBER, PAYLOAD_MEMBER) if m not in infos]
        if missing:
            raise self._err(f"not a sarcodec container (no {missing[0]} member)")
        self.header = self._read_header_v1(infos[HEADER_MEMBER])
        self._index = self._check_index(self._read_index_v1(infos[INDEX_MEMBER]))
        self._payload_start, _ = self._locate_array(infos[PAYLOAD_MEMBER], (self.payload_bytes,), "payload member")

    # -- version 2 ------------------------------------------------------------------------------
    def _open_v2(self, info: zipfile.ZipInfo) -> None:
        """One stored array: prefix, header block (index + compact header), payload. Nothing past the
        header block is read here, and every length is held against the bytes really there first."""
        start, length = self._locate_array(info, None, "container member")
        fp = self._fp
        fp.seek(start)
        head = fp.read(min(length, PREFIX.size + 9))
        if len(head) < PREFIX.size:
            raise self._err("header is truncated")
        magic, version, crc = PREFIX.unpack_from(head)
        if magic != MAGIC:
            raise self._err("not a sarcodec container (bad magic in header)")
        if version != 2:
            raise self._err(f"unsupported container format version {version} "
                            f"(this sarcodec reads versions {', '.join(map(str, READABLE_VERSIONS))})")
        try:
            size, pos = read_varint(head, PREFIX.size)
        except HeaderError:
            raise self._err("header is truncated or its length damaged") from None
        if size > MAX_HEADER_BLOCK:
            raise self._err(f"header claims {size} bytes, more than the {MAX_HEADER_BLOCK} allowed")
        if size > length - pos:
            raise self._err(f"header claims {size} bytes, more than the file holds (truncated or damaged)")
        fp.seek(start + pos)
        block = fp.read(size)
        if len(block) != size:
            raise self._err("header is truncated")
        if zlib.crc32(block, zlib.crc32(head[PREFIX.size:pos])) != crc:
            raise self._err("header checksum mismatch (the file is damaged)")
        payload = length - pos - size
        try:
            index, used = unpack_index(block, payload)
            body = decode_compact(block[used:])
        except ContainerError as exc:
            raise self._err(str(exc)) from None
        header = {"format": FORMAT_NAME, "format_version": 2, "records": int(index.shape[0]),
                  "payload_bytes": payload, "index_crc32": zlib.crc32(index.tobytes()), **body}
        self.header = self._check_header(header, 2)
        self._index = self._check_index(index)
        self._payload_start = start + pos + size

    # -- version 1 ------------------------------------------------------------------------------
    def _member_bytes(self, info: zipfile.ZipInfo, limit: int, what: str) -> bytes:
        if info.file_size > limit:
            raise self._err(f"{what} claims {info.file_size} bytes, more than the {limit} allowed")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._err(f"{what} uses an unsupported zip compression method")
        assert self._zip is not None
        try:
            with self._zip.open(info) as f:
                data = f.read(limit + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
            raise self._err(f"{what} is damaged (zip checksum or compression error)") from None
        if len(data) != info.file_size:
            raise self._err(f"{what} is truncated")
        return data

    def _load_npy(self, data: bytes, what: str) -> np.ndarray:
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception:  # noqa: BLE001 - any parse failure is damage
            raise self._err(f"{what} is not a valid .npy array") from None
        if not isinstance(arr, np.ndarray):
            raise self._err(f"{what} is not a valid .npy array")
        return arr

    def _read_header_v1(self, info: zipfile.ZipInfo) -> dict[str, Any]:
        arr = self._load_npy(self._member_bytes(info, MAX_HEADER_BYTES + 4096, "header"), "header")
        if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size < PREFIX.size:
            raise self._err("header member has the wrong type or size")
        raw = arr.tobytes()
        magic, version, crc = PREFIX.unpack_from(raw)
        if magic != MAGIC:
            raise self._err("not a sarcodec container (bad magic in header)")
        if version != 1:
            raise self._err(f"unsupported container format version {version} in a version-1 layout "
                            f"(this sarcodec reads versions {', '.join(map(str, READABLE_VERSIONS))})")
        body = raw[PREFIX.size:]
        if zlib.crc32(body) != crc:
            raise self._err("header checksum mismatch (the file is damaged)")

        def no_constants(token: str) -> Any:
            raise ValueError(f"non-standard JSON constant {token}")

        try:
            header = json.loads(body.decode("utf-8"), parse_constant=no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self._err("header is not valid JSON") from None
        if not isinstance(header, dict):
            raise self._err("header is not a JSON object")
        return self._check_header(header, 1)

    def _read_index_v1(self, info: zipfile.ZipInfo) -> np.ndarray:
        n = int(self.header["records"])
        ncol = len(INDEX_COLUMNS)
        arr = self._load_npy(self._member_bytes(info, 4096 + n * ncol * 8, "index"), "index")
        if arr.dtype != np.dtype("<i8") or arr.shape != (n, ncol):
            raise self._err(f"index has shape {arr.shape} and type {arr.dtype}, expected ({n}, {ncol}) int64")
        arr = np.ascontiguousarray(arr)
        if zlib.crc32(arr.tobytes()) != self.header["index_crc32"]:
            raise self._err("index checksum mismatch (the file is damaged)")
        return arr

    # -- both versions --------------------------------------------------------------------------
    def _check_header(self, header: dict[str, Any], version: int) -> dict[str, Any]:
        """The one schema (``ContainerHeader``) over the header dict, whichever layout it came from."""
        if header.get("format_version") != version:
            raise self._err(f"header format_version {str(header.get('format_version'))[:20]!r} differs from "
                            f"the file's version {version} (the file is damaged)")
        problem = header_problem(header)
        if problem:
            raise self._err(problem)
        #: the same header, parsed: every field present has been type- and range-checked
        self.typed_header = ContainerHeader.from_json(header)
        if self.typed_header.codec is not None:
            missing = [k for k in RASTER_FIELDS if getattr(self.typed_header, k) is None]
            if missing:
                raise self._err(f"header field {missing[0]!r} is missing (the file is damaged or not ours)")
        return header

    def _check_index(self, arr: np.ndarray) -> np.ndarray:
        """Every index row in range, the records tiling the payload, keys unique, chunks on the raster."""
        n, ncol = arr.shape
        band, row, col, kind, offset, length, crc = (arr[:, i] for i in range(ncol))
        bad = ((band < 0) | (band >= MAX_BANDS) | (row < 0) | (row > _MAX_CHUNK_COORD) | (col < 0)
               | (col > _MAX_CHUNK_COORD) | (kind < 0) | (kind > 255) | (offset < 0) | (length < 0)
               | (crc < 0) | (crc > 0xFFFFFFFF))
        if np.any(bad):
            raise self._err(f"index record {int(np.argmax(bad))} has out-of-range fields")
        shape = self.header.get("shape")
        if shape is not None and n and int(band.max()) >= shape[0]:
            raise self._err(f"index names band {int(band.max())} but the header has {shape[0]} bands")
        payload = int(self.header["payload_bytes"])
        if n:
            order = np.lexsort((length, offset))
            ends = offset[order] + length[order]
            if offset[order[0]] != 0 or np.any(offset[order[1:]] != ends[:-1]) or ends[-1] != payload:
                raise self._err("index records do not tile the payload (overlap, gap or past the end)")
            keys = arr[:, :4]
            if np.unique(keys, axis=0).shape[0] != n:
                raise self._err("index has duplicate records")
        elif payload != 0:
            raise self._err("payload has bytes but the index no records")
        if self.typed_header.shape is not None and self.typed_header.grid is not None:
            try:
                check_records(self.typed_header, arr)  # every chunk record names a chunk of the raster
            except ContainerError as exc:
                raise self._err(str(exc)) from None
        return arr

    def _locate_array(self, info: zipfile.ZipInfo, shape: tuple[int] | None, what: str) -> tuple[int, int]:
        """File offset and length of a stored 1-D uint8 ``.npy`` member's data, after checking that the
        zip's local header, its directory and the ``.npy`` header agree (``shape``: the expected one)."""
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            raise self._err(f"{what} is compressed or encrypted")
        fp = self._fp
        fp.seek(info.header_offset)
        local = fp.read(_LOCAL_HEADER.size)
        if len(local) != _LOCAL_HEADER.size:
            raise self._err(f"{what} is truncated")
        sig, _ver, flags, method, _t, _d, crc, csize, usize, nlen, xlen = _LOCAL_HEADER.unpack(local)
        name = fp.read(nlen)
        if sig != b"PK\x03\x04" or method != zipfile.ZIP_STORED or name != info.filename.encode():
            raise self._err(f"{what}'s zip header is damaged")
        if not flags & 0x8:  # no data descriptor: sizes and CRC must agree with the central directory
            if crc != info.CRC or (csize != 0xFFFFFFFF and (csize != info.compress_size
                                                            or usize != info.file_size)):
                raise self._err(f"{what}'s zip header disagrees with the zip directory")
        start = info.header_offset + _LOCAL_HEADER.size + nlen + xlen
        fp.seek(start)
        try:
            major, minor = npformat.read_magic(fp)
            if minor != 0:  # numpy.load refuses it too
                raise ValueError("npy version")
            if major == 1:
                got, fortran, dtype = npformat.read_array_header_1_0(fp)
            elif major in (2, 3):
                got, fortran, dtype = npformat.read_array_header_2_0(fp)
            else:
                raise ValueError("npy version")
        except Exception:  # noqa: BLE001
            raise self._err(f"{what} is not a valid .npy array") from None
        data_start = fp.tell()
        if dtype != np.uint8 or fortran or len(got) != 1 or (shape is not None and got != shape):
            expected = f"{shape} uint8" if shape is not None else "a 1-D uint8 array"
            raise self._err(f"{what} holds {got} {dtype}, expected {expected}")
        length = int(got[0])
        if info.file_size != info.compress_size or info.file_size != data_start - start + length:
            raise self._err(f"{what} size disagrees with the header" if shape is not None else
                            f"{what} size disagrees with its .npy header")
        if data_start + length > self._file_end:
            raise self._err("payload is truncated" if shape is not None else f"{what} is truncated")
        return data_start, length

    # -- public API -----------------------------------------------------------------------------
    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the file (and the spool of a stream); the reader is unusable afterwards."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    @property
    def version(self) -> int:
        return int(self.header["format_version"])

    @property
    def payload_bytes(self) -> int:
        return int(self.header["payload_bytes"])

    @property
    def index(self) -> np.ndarray:
        """The index as a read-only (R, 7) int64 array (columns: ``INDEX_COLUMNS``)."""
        view = self._index.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return int(self._index.shape[0])

    def record(self, index: int) -> Record:
        """The index row ``index`` as a :class:`Record`."""
        b, r, c, k, off, n, crc = (int(v) for v in self._index[int(index)])
        return Record(int(index), b, r, c, kind_name(k), off, n, crc)

    def records(self, kind: str | int | None = None, band: int | None = None) -> list[Record]:
        """Records in file order, optionally only those of one kind and/or band."""
        sel = np.ones(len(self), dtype=bool)
        if kind is not None:
            sel &= self._index[:, 3] == (KINDS.get(kind, -1) if isinstance(kind, str) else int(kind))
        if band is not None:
            sel &= self._index[:, 0] == int(band)
        return [self.record(i) for i in np.flatnonzero(sel)]

    def __iter__(self) -> Iterator[Record]:
        return (self.record(i) for i in range(len(self)))

    def find(self, band: int, row: int, col: int, kind: str | int) -> Record | None:
        """The record with this key, or None (e.g. no mask record: the chunk is all valid)."""
        if self._lookup is None:
            self._lookup = {tuple(int(v) for v in r[:4]): i for i, r in enumerate(self._index)}
        code = KINDS.get(kind, -1) if isinstance(kind, str) else int(kind)
        i = self._lookup.get((int(band), int(row), int(col), code))
        return None if i is None else self.record(i)

    def read_record(self, record: Record | int) -> bytes:
        """The bytes of one record, CRC-checked; damage -> DamagedChunkError with its index."""
        rec = record if isinstance(record, Record) else self.record(record)
        with self._lock:
            if self._zip is None:
                raise ValueError(f"container reader for {self.name} is closed")
            self._fp.seek(self._payload_start + rec.offset)
            data = self._fp.read(rec.length)
        where = f"{rec.kind} record {rec.index} (band {rec.band}, chunk {rec.row},{rec.col})"
        if len(data) != rec.length:
            raise DamagedChunkError(f"{self.name}: {where} is truncated", rec.index)
        if zlib.crc32(data) != rec.crc32:
            raise DamagedChunkError(f"{self.name}: {where} failed its checksum (the file is damaged)",
                                    rec.index)
        if rec.kind == "fallback":
            self._check_fallback_geometry(rec, data, where)
        return data

    def _check_fallback_geometry(self, rec: Record, data: bytes, where: str) -> None:
        """A fallback block must lie inside the chunk its record names: the decoder writes its pixels there.

        A block whose origin lies past the raster used to end the decode in ``internal error:
        IndexError``, and one past its chunk's rows was silently dropped (its lossless pixels lost).
        Checked here, on the CRC-checked bytes, it is one damaged record: exit 1, or a damaged chunk
        under ``--salvage``. Headers without a raster (torchrun shards) have nothing to check against.
        """
        header = self.typed_header
        if header.shape is None or header.grid is None or len(data) < _FB_HEAD.size:
            return  # too short: decode_fallback_block says so
        magic, _version, _mode, _code, _flags, h, w, row0, col0 = _FB_HEAD.unpack_from(data)
        if magic != _FB_MAGIC:
            return
        px = header.grid.chunk * header.grid.stride
        r0, c0 = rec.row * px, rec.col * px
        window = (r0, c0, max(0, min(px, header.shape[1] - r0)), max(0, min(px, header.shape[2] - c0)))
        try:
            check_block(row0, col0, (h, w), window, where)
        except ContainerError as exc:
            raise DamagedChunkError(f"{self.name}: {exc}", rec.index) from None

    def get(self, band: int, row: int, col: int, kind: str | int) -> bytes | None:
        """Like :meth:`read` but None when there is no such record."""
        rec = self.find(band, row, col, kind)
        return None if rec is None else self.read_record(rec)

    def read(self, band: int, row: int, col: int, kind: str | int) -> bytes:
        """The bytes of the record with this key; a missing record is a damaged container."""
        rec = self.find(band, row, col, kind)
        if rec is None:
            name = kind if isinstance(kind, str) else kind_name(int(kind))
            raise ContainerError(f"{self.name}: no {name} record for band {band} chunk {row},{col}")
        return self.read_record(rec)

    def verify(self) -> list[int]:
        """Check every record's CRC; returns the indices of damaged records (empty when intact)."""
        damaged = []
        for i in range(len(self)):
            try:
                self.read_record(i)
            except DamagedChunkError:
                damaged.append(i)
        return damaged

    def summary(self) -> dict[str, Any]:
        """Sizes and record counts, for ``sarcodec info`` and overhead measurements."""
        counts: dict[str, int] = {}
        for k in self._index[:, 3]:
            counts[kind_name(int(k))] = counts.get(kind_name(int(k)), 0) + 1
        return {"file_bytes": int(self.file_size), "payload_bytes": self.payload_bytes,
                "overhead_bytes": int(self.file_size) - self.payload_bytes, "records": len(self),
                "records_by_kind": counts, "format_version": self.version}


# --------------------------------------------------------------------------------------------------
# conversion between format versions


def convert(source: str | os.PathLike[str] | BinaryIO, destination: str | os.PathLike[str] | BinaryIO, *,
            format_version: int = FORMAT_VERSION) -> int:
    """Rewrite a container in another format version; returns the new file's size in bytes.

    Records (CRC-checked as they are read) and the header dict are carried over unchanged, so the
    result decodes to the same pixels: ``format_version=1`` gives a file that a sarcodec older
    than format version 2 reads, the default upgrades a version-1 file to the compact layout.
    """
    with ContainerReader(source) as reader, ContainerWriter(destination, format_version=format_version) as writer:
        for i in range(len(reader)):
            band, row, col, kind = (int(v) for v in reader.index[i, :4])
            writer.add(band, row, col, kind, reader.read_record(i))
        return writer.finish({k: v for k, v in reader.header.items() if k not in _RESERVED_KEYS})
