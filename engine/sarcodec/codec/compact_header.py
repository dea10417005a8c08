"""The compact form of a container header (format version 2): a chip's header dict in about 65 bytes.

A 64 x 64 chip's payload is about 1-2 KB; the version-1 header, compact JSON deflated by the zip,
cost about 850 bytes beside it (the CRS as 600 bytes of WKT, key names, the model checksum as hex,
the container's own fields). Version 2 stores the same dict, exactly, as:

- the JSON text without the container's own keys (``records``, ``payload_bytes``, ``index_crc32``,
  ``format``, ``format_version``: the reader derives them from the index and the prefix), and with
  each CRS that is exactly an EPSG code's WKT replaced by that code (``"crs":32630``);
- that text's *skeleton* deflated with a preset dictionary (``DICTIONARY``: the key names and
  typical values of the headers sarcodec writes, and the checksums of the models shipped with format
  version 2), so the structure costs a few bytes of back-references;
- and, pulled out of the skeleton where that is smaller, number tokens packed as 4-bit characters
  (``#`` in the skeleton), 64-hex checksums as their 32 bytes (``%``) and base64 strings as their
  bytes (``&``): deflate spends 8 bits on every literal digit, these spend 4 (or 6 of 8).

The text is rebuilt byte for byte, so every key, known or not (a newer writer's per-band keys
included), comes back with the same value, type and order. Measured (``bench/overhead.py``) on a
64 x 64 uint16 chip in EPSG:32630 coded by the default model: 63 bytes of compact header, 252 bytes
of file overhead in all, against 1,385 in version 1. A model whose checksum is not in the
dictionary costs about 35 bytes more.
The one non-textual step is the EPSG code: the reader writes the code's WKT as its PROJ database
spells it, which is the writer's text whenever both use the same PROJ (the writer substitutes a code
only when its database gives back the identical WKT), and the same CRS in any case.

Decoding is bounded before it allocates (inflate stops at ``MAX_HEADER_BYTES``, every length is
checked against what is left) and every failure is a one-line :class:`HeaderError`. The body is
covered by the container's CRC-32 before any of this runs.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sarcodec.codec.header import MAX_HEADER_BYTES, RESERVED_KEYS, HeaderError

#: The preset dictionary of format version 2. Frozen: a different byte makes every version-2 file
#: unreadable (``tests/test_container_v2.py`` pins its SHA-256). A later dictionary (one with a new
#: default model's checksum, say) comes with a new format version; readers keep this one.
DICTIONARY = (
    b'{"codec":"sarcodec-dct-v2","created_by":"sarcodec 0.1.0","model":{"id":"sarcodec_v2","sha256":"4'
    b'3d77dae6a4baa505dd1e8f1550a089e75a20b9c9c3d069f26a6d5049e328ba5"},"quality":6,"grid":{"stride":1'
    b',"chunk":512},"shape":[2,#,#],"dtype":"uint16","domain":"amplitude_dn","bands":[{"stats":{"offse'
    b't_db":#,"min_db":#,"max_db":#,"p01_db":#,"p99_db":#,"valid_fraction":#,"uncodable_fraction":0.0,'
    b'"count":#,"dtype_min":0.0,"dtype_max":65535.0},"gain_db":#,"uncodable_pixels":0,"params":"AggKAP'
    b'Ux9wA2AQAMAA==","step_db":#,"max_error_db":#,"residual_offset_db":0.0}],"geo":{"crs":"PROJCS[\\"u'
    b'nknown\\",GEOGCS[\\"WGS 84\\",DATUM[\\"WGS_1984\\",SPHEROID[\\"WGS 84\\",6378137,298.257223563,AUT'
    b'HORITY[\\"EPSG\\",\\"7030\\"]],AUTHORITY[\\"EPSG\\",\\"6326\\"]],PRIMEM[\\"Greenwich\\",0,AUTHORIT'
    b'Y[\\"EPSG\\",\\"8901\\"]],UNIT[\\"degree\\",0.0174532925199433,AUTHORITY[\\"EPSG\\",\\"9122\\"]]],'
    b'PROJECTION[\\"Transverse_Mercator\\"],PARAMETER[\\"latitude_of_origin\\",0],PARAMETER[\\"central_m'
    b'eridian\\",-3],PARAMETER[\\"scale_factor\\",0.9996],PARAMETER[\\"false_easting\\",500000],PARAMETE'
    b'R[\\"false_northing\\",0],UNIT[\\"metre\\",1,AUTHORITY[\\"EPSG\\",\\"9001\\"]],AXIS[\\"Easting\\",'
    b'EAST],AXIS[\\"Northing\\",NORTH],AXIS[\\"Latitude\\",NORTH],AXIS[\\"Longitude\\",EAST],AUTHORITY['
    b'\\"EPSG\\",\\"4326\\"]]","gcps":{"crs":4326,"points":[[0.0,0.0,#,#,0.0,"1",""],[0.0,#,#,#,0.0,"2",'
    b'""]]},"nodata":0,"descriptions":["VV","VH"],"tags":{"S1_MISSION":"S1A","S1_PRODUCT_TYPE":"GRD","'
    b'S1_MODE":"IW","S1_START_TIME":"2021-01-01T00:00:00.000000","S1_STOP_TIME":"","S1_POLARISATIONS":'
    b'"VV,VH","S1_ABSOLUTE_ORBIT":"","S1_RELATIVE_ORBIT":"","S1_PASS":"ASCENDING","S1_PRODUCT_NAME":"S'
    b'1A_IW_GRDH_1SDV_"}}}{"codec":"sarcodec-hyperprior-v1","created_by":"sarcodec 0.1.0","model":{"id'
    b'":"sarcodec_v1","sha256":"048062537307a1dc12f2cd18707411a482747fe839d5ea081099493fe042ef9c"},"qu'
    b'ality":3,"grid":{"stride":16,"chunk":32,"tile_size":256,"overlap":64},"shape":[1,#,#],"dtype":"f'
    b'loat32","domain":"db","bands":[{"stats":{"offset_db":#,"min_db":#,"max_db":#,"p01_db":#,"p99_db"'
    b':#,"valid_fraction":1.0,"uncodable_fraction":0.0,"count":#,"dtype_min":-3.4028234663852886e+38,"'
    b'dtype_max":3.4028234663852886e+38},"gain_db":#,"uncodable_pixels":#}],"geo":{"crs":4326,"transfo'
    b'rm":[#,0.0,#,0.0,#,#],"nodata":"nan","units":["dB"],"scales":[1.0],"offsets":[0.0],"colorinterp"'
    b':["gray"],"band_tags":[{}],"domains":{"RPC":{}},"tags":{"AREA_OR_POINT":"Point"}}}{"codec":"sarc'
    b'odec-dct-v2","created_by":"sarcodec 0.1.0","model":{"id":"sarcodec_v2","sha256":"43d77dae6a4baa5'
    b'05dd1e8f1550a089e75a20b9c9c3d069f26a6d5049e328ba5"},"quality":6,"grid":{"stride":1,"chunk":512},'
    b'"shape":[1,#,#],"dtype":"uint16","domain":"amplitude_dn","bands":[{"stats":{"offset_db":#,"min_d'
    b'b":#,"max_db":#,"p01_db":#,"p99_db":#,"valid_fraction":#,"uncodable_fraction":0.0,"count":#,"dty'
    b'pe_min":0.0,"dtype_max":65535.0},"gain_db":#,"uncodable_pixels":0,"params":"AhAKAA","step_db":#}'
    b',{"params":"AiAKAA"}],"geo":{"crs":#,"transform":[#,0.0,#,0.0,#,#],"nodata":0,"tags":{"AREA_OR_P'
    b'OINT":"Area"}}}{"codec":"sarcodec-dct-v2","created_by":"sarcodec 0.1.0","model":{"id":"sarcodec_'
    b'v2","sha256":"43d77dae6a4baa505dd1e8f1550a089e75a20b9c9c3d069f26a6d5049e328ba5"},"quality":6,"gr'
    b'id":{"stride":1,"chunk":512},"shape":[1,#,#],"dtype":"uint16","domain":"amplitude_dn","bands":[{'
    b'"stats":{"offset_db":#,"min_db":#,"max_db":#,"p01_db":#,"p99_db":#,"valid_fraction":1.0,"uncodab'
    b'le_fraction":0.0,"count":#,"dtype_min":0.0,"dtype_max":65535.0},"gain_db":#,"uncodable_pixels":0'
    b',"params":"AggKAPUx9wA2AQAMAA==","step_db":2.121}],"geo":{"crs":#,"transform":[10.0,0.0,#,0.0,-1'
    b'0.0,#],"tags":{"AREA_OR_POINT":"Area"}}}'
)

#: Placeholders in the skeleton, outside strings, where JSON never has these characters.
NUMBER, HEX32, BLOB = "#", "%", "&"
#: The alphabet of packed numbers (JSON number tokens as Python writes them): nibbles 0-13 are these
#: characters, 14 is ".0" and ends the number (floats such as 20.0 or 500000.0 are common), 15 ends it.
_DIGITS = "0123456789.-e+"
_POINT_ZERO_END = 14
_END = 15
#: At most this many placeholders in one skeleton (a real header has a few thousand, GCPs included).
MAX_PLACEHOLDERS = 1 << 20
_MAX_NUMBER_CHARS = 64

_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_TOKEN = re.compile(f"({_STRING})|(-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)")
_SKELETON = re.compile(f"{_STRING}|[#%&]")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_MIN_BASE64 = 16  # shorter strings ("Area", "VV,VH") gain nothing
_CONTEXT = 6  # chars of skeleton before a number that, with it, must occur in DICTIONARY to keep it inline
_DICT_TEXT = DICTIONARY.decode("utf-8")


# --------------------------------------------------------------------------------------------------
# varints (also the container's length fields)


def put_varint(value: int) -> bytes:
    """LEB128: 7 bits a byte, low first; 0..127 take one byte."""
    if value < 0:
        raise ValueError(f"varint of a negative value {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, pos: int, what: str = "header") -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it; at most 9 bytes (< 2**63)."""
    value = shift = 0
    for i in range(pos, min(pos + 9, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if i > pos and byte == 0:
                break  # not minimal: one value, one spelling
            return value, i + 1
        shift += 7
    raise HeaderError(f"the {what} has a damaged length field")


# --------------------------------------------------------------------------------------------------
# EPSG codes for CRS WKT


@lru_cache(maxsize=256)
def epsg_code(wkt: str) -> int | None:
    """The EPSG code whose WKT (as this PROJ spells it) is exactly ``wkt``, or None."""
    if len(wkt) > 1 << 16:
        return None
    from rasterio.crs import CRS

    try:
        code = CRS.from_wkt(wkt).to_epsg()
        if code is not None and CRS.from_epsg(int(code)).to_wkt() == wkt:
            return int(code)
    except Exception:  # noqa: BLE001 - a CRS PROJ cannot identify is simply kept as WKT
        return None
    return None


@lru_cache(maxsize=256)
def epsg_wkt(code: int) -> str:
    """The WKT of an EPSG code; a code this PROJ does not know is a damaged (or too new) header."""
    from rasterio.crs import CRS

    try:
        wkt = CRS.from_epsg(code).to_wkt() if 0 < code < 1 << 31 else ""
    except Exception:  # noqa: BLE001
        wkt = ""
    if not wkt:
        raise HeaderError(f"the header's CRS is EPSG:{code}, which this installation's PROJ database does not know")
    return wkt


def _map_crs(geo: Any, convert: Any) -> Any:
    """``geo`` with ``crs`` and ``gcps.crs`` passed through ``convert`` (other keys untouched, same order)."""
    if not isinstance(geo, dict):
        return geo
    out = dict(geo)
    if "crs" in out:
        out["crs"] = convert(out["crs"])
    gcps = out.get("gcps")
    if isinstance(gcps, dict) and "crs" in gcps:
        out["gcps"] = {**gcps, "crs": convert(gcps["crs"])}
    return out


def _to_code(crs: Any) -> Any:
    if isinstance(crs, str):
        code = epsg_code(crs)
        if code is not None:
            return code
    return crs


def _to_wkt(crs: Any) -> Any:
    if isinstance(crs, bool) or not isinstance(crs, int):
        return crs
    return epsg_wkt(crs)


# --------------------------------------------------------------------------------------------------
# encoding


def _deflate(data: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
    return z.compress(data) + z.flush()


def _pack_numbers(numbers: list[str]) -> bytes:
    nibbles: list[int] = []
    for token in numbers:
        if len(token) > 2 and token.endswith(".0"):
            nibbles.extend(_DIGITS.index(ch) for ch in token[:-2])
            nibbles.append(_POINT_ZERO_END)
        else:
            nibbles.extend(_DIGITS.index(ch) for ch in token)
            nibbles.append(_END)
    if len(nibbles) % 2:
        nibbles.append(_END)
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def _base64_bytes(value: str) -> bytes | None:
    """The bytes of a canonical base64 string (re-encoding gives it back exactly), else None."""
    if len(value) < _MIN_BASE64 or not _BASE64.fullmatch(value):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == value else None


def _split(text: str, numbers_out: bool, base64_out: bool) -> bytes:
    """One candidate body: the deflated skeleton, then the packed numbers, then the blobs."""
    skeleton: list[str] = []
    numbers: list[str] = []
    blobs: list[bytes] = []
    tail = ""
    pos = 0
    for m in _TOKEN.finditer(text):
        piece = text[pos:m.start()]
        string, number = m.group(1), m.group(2)
        pos = m.end()
        if string is not None:
            value = string[1:-1]
            raw = None
            if _HEX64.fullmatch(value):
                if value not in _DICT_TEXT:
                    piece += HEX32
                    blobs.append(bytes.fromhex(value))
                    raw = b""
            elif base64_out:
                raw = _base64_bytes(value)
                if raw is not None:
                    piece += BLOB
                    blobs.append(put_varint(len(raw)) + raw)
            if raw is None:
                piece += string
        else:
            context = (tail + piece)[-_CONTEXT:] + number + text[pos:pos + 1]
            if numbers_out and len(number) <= _MAX_NUMBER_CHARS and context not in _DICT_TEXT:
                piece += NUMBER
                numbers.append(number)
            else:
                piece += number
        skeleton.append(piece)
        tail = (tail + piece)[-_CONTEXT:]
    skeleton.append(text[pos:])
    if len(numbers) + len(blobs) > MAX_PLACEHOLDERS:
        return b""  # not a candidate
    packed = _deflate("".join(skeleton).encode("utf-8"))
    return put_varint(len(packed)) + packed + _pack_numbers(numbers) + b"".join(blobs)


def encode_compact(header: Mapping[str, Any]) -> bytes:
    """The compact body of a (validated, JSON-normalised) header; ``decode_compact`` gives it back.

    The container's own keys are left out (the reader derives them). Of the candidate spellings
    (numbers and base64 strings pulled out of the skeleton or not), the shortest is written:
    pulling numbers out halves a chip's digits, keeping them lets deflate find GCP grids' repeats.
    """
    body = {k: v for k, v in header.items() if k not in RESERVED_KEYS}
    if "geo" in body:
        body["geo"] = _map_crs(body["geo"], _to_code)
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    candidates = [_split(text, numbers, b64) for numbers in (True, False) for b64 in (True, False)]
    return min((c for c in candidates if c), key=len)


# --------------------------------------------------------------------------------------------------
# decoding


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj(-15, DICTIONARY)
    try:
        out = d.decompress(data, MAX_HEADER_BYTES + 1)
    except zlib.error:
        raise HeaderError("the header does not decompress (the file is damaged)") from None
    if len(out) > MAX_HEADER_BYTES:
        raise HeaderError(f"the header is larger than the {MAX_HEADER_BYTES >> 20} MiB a container holds")
    if not d.eof or d.unused_data or d.unconsumed_tail:
        raise HeaderError("the header does not decompress (the file is damaged)")
    return out


def _numbers(data: bytes, pos: int, count: int) -> tuple[list[str], int]:
    """``count`` packed numbers from ``data[pos:]`` and the position after them."""
    out: list[str] = []
    token: list[str] = []
    i = pos
    half = 0  # 0: high nibble next
    while len(out) < count:
        if i >= len(data):
            raise HeaderError("the header's numbers are cut short (the file is damaged)")
        nib = data[i] >> 4 if half == 0 else data[i] & 0x0F
        if half:
            i += 1
        half ^= 1
        if nib >= _POINT_ZERO_END:
            if not token:
                raise HeaderError("the header has an empty number (the file is damaged)")
            out.append("".join(token) + (".0" if nib == _POINT_ZERO_END else ""))
            token = []
        elif nib < len(_DIGITS) and len(token) < _MAX_NUMBER_CHARS:
            token.append(_DIGITS[nib])
        else:
            raise HeaderError("the header has a damaged number")
    if half:  # the low nibble of the last byte pads
        if data[i] & 0x0F != _END:
            raise HeaderError("the header has a damaged number")
        i += 1
    return out, i


def decode_compact(body: bytes) -> dict[str, Any]:
    """The header dict of a compact body, without the container's own keys (damage: HeaderError)."""
    size, pos = read_varint(body, 0)
    if size > len(body) - pos:
        raise HeaderError("the header is cut short (the file is damaged)")
    raw = _inflate(body[pos:pos + size])
    pos += size
    try:
        skeleton = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HeaderError("the header is not valid UTF-8 (the file is damaged)") from None
    marks = [m.group() for m in _SKELETON.finditer(skeleton) if len(m.group()) == 1]
    if len(marks) > MAX_PLACEHOLDERS:
        raise HeaderError("the header has too many packed values (the file is damaged)")
    numbers, pos = _numbers(body, pos, marks.count(NUMBER))
    number_iter = iter(numbers)

    def blob(n: int) -> bytes:
        nonlocal pos
        if n > len(body) - pos:
            raise HeaderError("the header's packed values are cut short (the file is damaged)")
        pos += n
        return body[pos - n:pos]

    def value(m: re.Match[str]) -> str:
        nonlocal pos
        mark = m.group()
        if mark == NUMBER:
            return next(number_iter)
        if mark == HEX32:
            return '"' + blob(32).hex() + '"'
        if mark == BLOB:
            n, pos = read_varint(body, pos)
            return '"' + base64.b64encode(blob(n)).decode("ascii") + '"'
        return mark

    text = _SKELETON.sub(value, skeleton)
    if pos != len(body):
        raise HeaderError("the header has trailing bytes (the file is damaged)")
    if len(text) > MAX_HEADER_BYTES:
        raise HeaderError(f"the header is larger than the {MAX_HEADER_BYTES >> 20} MiB a container holds")

    def no_constants(token: str) -> Any:
        raise ValueError(f"non-standard JSON constant {token}")

    try:
        header = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError):
        raise HeaderError("the header is not valid JSON (the file is damaged)") from None
    if not isinstance(header, dict):
        raise HeaderError("the header is not a JSON object")
    own = [k for k in RESERVED_KEYS if k in header]
    if own:
        raise HeaderError(f"the header stores the container's own field {own[0]!r} (the file is damaged)")
    if "geo" in header:
        header["geo"] = _map_crs(header["geo"], _to_wkt)
    return header
