"""Container format version 2: a chip costs at most 256 bytes, every header key comes back, hostile files fail typed.

``test_container.py`` runs the generic behaviours (round trips, damage, fuzzing) on both versions;
here is what only version 2 has: the compact header (``compact_header``), its one-member layout and
what a hostile tool could put in it with valid checksums.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.crs import CRS

from sarcodec.codec import compact_header
from sarcodec.codec.compact_header import decode_compact, encode_compact, put_varint
from sarcodec.codec.container import (
    MAGIC,
    MAX_HEADER_BLOCK,
    MEMBER,
    PREFIX,
    ContainerReader,
    ContainerWriter,
    npy_header,
    pack_index,
)
from sarcodec.codec.header import RESERVED_KEYS
from sarcodec.errors import ContainerError
from tests.cli.conftest import write_scene
from tests.conftest import speckled_scene

UTM30 = CRS.from_epsg(32630).to_wkt()
WGS84 = CRS.from_epsg(4326).to_wkt()
CUSTOM = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=-3.3 +k=0.9996 +x_0=500000 +y_0=0 +datum=WGS84 +units=m").to_wkt()

#: Every field the pipeline writes, plus keys this version does not know, at every level: all must
#: come back with the same value, type and order.
FULL = {
    "codec": "sarcodec-dct-v2",
    "created_by": "sarcodec 9.9.9",
    "model": {"id": "somebody's model", "sha256": "ab" * 32, "trained_on": "Ω data"},
    "quality": 6,
    "grid": {"stride": 1, "chunk": 512, "future": [1, 2]},
    "shape": [3, 700, 1100],
    "dtype": "float32",
    "domain": "db",
    "bands": [
        {"stats": {"offset_db": -12.345, "min_db": -40.0, "max_db": 12.5, "p01_db": -30.25, "p99_db": 5.0,
                   "valid_fraction": 0.875, "uncodable_fraction": 1e-05, "count": 770000,
                   "dtype_min": -3.4028234663852886e+38, "dtype_max": 3.4028234663852886e+38},
         "gain_db": -0.0, "uncodable_pixels": 12, "params": "AggKAPUw+AI1AQAMAA==", "step_db": 2.121,
         "max_error_db": 0.5, "residual_offset_db": 0.03125},
        {"stats": {"offset_db": 1e-300, "min_db": 0, "max_db": 1e+100, "p01_db": 0.1, "p99_db": 0.30000000000000004,
                   "valid_fraction": 1.0, "uncodable_fraction": 0.0, "count": 0, "dtype_min": 0.0, "dtype_max": 1.0},
         "gain_db": 0.018324, "uncodable_pixels": 0, "params": "AiAKAAkVAv8HAAdeAA==" * 5, "step_db": 0.7071,
         "a_new_band_key": {"nested": [None, True, False, "#%&", "\"quoted\" \\ back"]}},
        {"stats": {"offset_db": 3.0}, "gain_db": 0.0, "uncodable_pixels": 0, "params": "AA==", "step_db": 1},
    ],
    "geo": {
        "crs": UTM30,
        "transform": [10.0, 0.0, 423410.0, 0.0, -10.0, 4612370.0],
        "gcps": {"crs": WGS84,
                 "points": [[0.5, 1.5, -3.25, 40.125, None, "1", "info"], [1e3, 2e3, 0.0, 0.0, 7.5, "", ""]]},
        "nodata": [0, "nan", "-inf"],
        "descriptions": ["VV", None, "ñ 漢字 \u2028"],
        "tags": {"AREA_OR_POINT": "Area", "HEX": "ABCDEF" * 10 + "0123", "LOWHEX": "cd" * 32, "NUM": "42"},
        "band_tags": [{"POLARISATION": "VV"}, {}, {"x": "y"}],
        "colorinterp": ["gray", "undefined", "red"],
        "units": ["dB", "dB", ""],
        "scales": [1.0, 0.5, 2],
        "offsets": [0.0, -1.5, 3],
        "domains": {"RPC": {"LINE_OFF": "1"}},
    },
    "zz_top_level_future_key": {"list": [1, -2, 3.5, -4.25e-07, 12345678901234567890], "empty": {}, "s": ""},
}


def _write(path: Path | io.BytesIO, header: dict, records=((0, 0, 0, "latent", b"chunk-bytes"),), **kw) -> None:
    with ContainerWriter(path, **kw) as w:
        for rec in records:
            w.add(*rec)
        w.finish(header)


def _normalised(header: dict) -> dict:
    return json.loads(json.dumps(header))


# -- every key comes back --------------------------------------------------------------------------


def test_every_header_field_and_unknown_keys_round_trip_exactly(tmp_path):
    path = tmp_path / "full.npz"
    _write(path, FULL)
    with ContainerReader(path) as r:
        got = r.header
        assert r.version == 2
    own = {"format": "sarcodec", "format_version": 2, "records": 1, "payload_bytes": 11}
    assert {k: got[k] for k in own} == own and isinstance(got["index_crc32"], int)
    rest = {k: v for k, v in got.items() if k not in RESERVED_KEYS}
    assert rest == _normalised(FULL)
    # same types and the same key order, all the way down (json.dumps shows both)
    assert json.dumps(rest) == json.dumps(_normalised(FULL))
    assert list(got) == [*RESERVED_KEYS, *FULL]


def test_version_1_and_2_give_the_same_header_and_records(tmp_path):
    records = [(0, 0, 0, "latent", b"a" * 300), (1, 0, 1, "latent", b""), (2, 1, 0, "mask", b"zz"),
               (0, 0, 0, "fallback", b"fb"), (2, 0, 0, "extra", b"side info")]
    for version in (1, 2):
        _write(tmp_path / f"v{version}.npz", FULL, records, format_version=version)
    with ContainerReader(tmp_path / "v1.npz") as a, ContainerReader(tmp_path / "v2.npz") as b:
        assert a.version == 1 and b.version == 2
        ha, hb = dict(a.header), dict(b.header)
        assert ha.pop("format_version") == 1 and hb.pop("format_version") == 2
        assert ha == hb  # records, payload_bytes and index_crc32 included
        assert np.array_equal(a.index, b.index)
        assert [a.read_record(i) for i in range(len(a))] == [b.read_record(i) for i in range(len(b))]
        assert a.file_size - a.payload_bytes > 2 * (b.file_size - b.payload_bytes)


def test_convert_goes_to_version_1_and_back_byte_for_byte(tmp_path):
    """``container.convert`` keeps records and header: v2 -> v1 -> v2 is the very same file."""
    from sarcodec.codec.container import convert

    records = [(0, 0, 0, "latent", b"a" * 300), (1, 1, 2, "mask", b"m"), (2, 0, 1, "extra", b"")]
    _write(tmp_path / "a.npz", FULL, records)
    convert(tmp_path / "a.npz", tmp_path / "old.npz", format_version=1)
    convert(tmp_path / "old.npz", tmp_path / "b.npz")
    with ContainerReader(tmp_path / "old.npz") as r:
        assert r.version == 1 and r.read(1, 1, 2, "mask") == b"m"
    assert (tmp_path / "b.npz").read_bytes() == (tmp_path / "a.npz").read_bytes()


def test_epsg_crs_is_stored_as_its_code_and_read_back_as_the_same_wkt(tmp_path):
    header = {"geo": {"crs": UTM30, "gcps": {"crs": WGS84, "points": []}}}
    body = encode_compact(header)
    assert b"PROJCS" not in zlib.decompressobj(-15, compact_header.DICTIONARY).decompress(body[1:])
    assert decode_compact(body) == header
    assert len(body) < 40  # two CRSs: 900 bytes of WKT


def test_a_crs_without_an_epsg_code_is_kept_as_wkt(tmp_path):
    header = {"geo": {"crs": CUSTOM}}
    assert compact_header.epsg_code(CUSTOM) is None
    assert decode_compact(encode_compact(header)) == header
    tweaked = UTM30.replace("0.9996", "0.9995")  # looks like EPSG:32630, is not
    assert decode_compact(encode_compact({"geo": {"crs": tweaked}})) == {"geo": {"crs": tweaked}}


JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
                        st.sampled_from(["#", "%", "&", "AggKAPUw+AI1AQAMAA==", "ab" * 32, "AB" * 32, "QUJD" * 5]))
JSON_TREES = st.recursive(JSON_LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=5),
                                                               st.dictionaries(st.text(max_size=12), kids, max_size=5)),
                          max_leaves=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=12).filter(lambda k: k not in RESERVED_KEYS), JSON_TREES, max_size=6))
def test_any_json_object_round_trips_through_the_compact_body(header):
    assert json.dumps(decode_compact(encode_compact(header))) == json.dumps(header)


def test_the_v2_dictionary_is_frozen():
    """Changing one byte of it makes every version-2 file unreadable: a new one needs a new format version."""
    assert len(compact_header.DICTIONARY) == 3550
    assert hashlib.sha256(compact_header.DICTIONARY).hexdigest() == \
        "a76e66dd4c4d78512da548a4422d674ff077bab444f69a7e1d3a9e3e7c2a378d"


# -- what a user notices: a chip's container is small -----------------------------------------------


def test_a_chip_costs_at_most_256_bytes_more_than_its_payload(tmp_path, monkeypatch):
    """The issue's goal: a 64 x 64 single-band chip with an EPSG CRS, coded by the default model,
    is at most 256 bytes more than its coded data (version 1: about 1,400), and decodes with the
    very same CRS."""
    from sarcodec.codec.pipeline import CompressOptions, DecompressOptions, compress_raster, decompress_container

    monkeypatch.delenv("SARCODEC_MODEL", raising=False)  # the shipped default model
    src = write_scene(tmp_path / "chip.tif", speckled_scene(64, 64, seed=11), crs="EPSG:32630", nodata=None)
    compress_raster(src, tmp_path / "chip.npz", CompressOptions())
    with ContainerReader(tmp_path / "chip.npz") as r:
        overhead = r.file_size - r.payload_bytes
        assert r.version == 2
    assert overhead <= 256, (f"a 64x64 chip's container is {overhead} bytes more than its payload; a new default "
                             "model's checksum is not in the format-2 dictionary (+35 bytes, docs/container.md)")
    decompress_container(tmp_path / "chip.npz", tmp_path / "back.tif", DecompressOptions())
    with rasterio.open(src) as a, rasterio.open(tmp_path / "back.tif") as b:
        assert b.crs == a.crs and b.crs.to_wkt() == a.crs.to_wkt() and b.transform == a.transform


# -- plain numpy --------------------------------------------------------------------------------------


def _doc_reader():
    """The version-2 reading recipe of ``docs/container.md``, run as written."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "container.md").read_text()
    code = re.search(r"```python\n(# version 2.*?)```", doc, re.S)
    assert code, "docs/container.md lost its version-2 numpy recipe"
    scope: dict = {}
    exec(compile(code.group(1), "docs/container.md", "exec"), scope)  # noqa: S102 - our own documentation
    return scope["read_v2"]


def test_numpy_reads_version_2_as_documented(tmp_path):
    path = tmp_path / "full.npz"
    records = [(0, 0, 0, "latent", b"first"), (1, 1, 2, "mask", b""), (2, 0, 1, "fallback", b"third record")]
    _write(path, FULL, records)
    with np.load(path, allow_pickle=False) as z:
        assert z.files == [MEMBER] and z[MEMBER].dtype == np.uint8 and z[MEMBER].ndim == 1
    header, index, payload = _doc_reader()(path)
    with ContainerReader(path) as r:
        want = {k: v for k, v in r.header.items() if k not in RESERVED_KEYS}
        want["geo"] = {**want["geo"], "crs": 32630, "gcps": {**want["geo"]["gcps"], "crs": 4326}}
        assert header == want  # the recipe leaves EPSG codes as codes (no PROJ needed)
        assert np.array_equal(index, r.index)
    for (band, row, col, kind, offset, length, crc), rec in zip(index, records, strict=True):
        assert (band, row, col) == rec[:3] and kind == {"latent": 0, "mask": 1, "fallback": 2}[rec[3]]
        assert payload[offset:offset + length].tobytes() == rec[4] and zlib.crc32(rec[4]) == crc


# -- hostile version-2 files: typed, one-line errors -----------------------------------------------


GOOD_HEADER = {"codec": "sarcodec-dct-v2", "grid": {"stride": 1, "chunk": 512}, "shape": [1, 64, 64],
               "dtype": "uint16", "domain": "amplitude_dn", "geo": {"crs": UTM30}}
GOOD_INDEX = np.array([[0, 0, 0, 0, 0, 5, zlib.crc32(b"hello")]], dtype="<i8")


def _craft(path: Path, *, version: int = 2, block: bytes | None = None, body: bytes | None = None,
           index: np.ndarray = GOOD_INDEX, payload: bytes = b"hello", fix_crc: bool = True,
           size_field: bytes | None = None, npy_length: int | None = None, member: str = MEMBER,
           method: int = zipfile.ZIP_STORED) -> Path:
    """A version-2 file built by hand, with valid checksums unless told otherwise: what a hostile tool writes."""
    if block is None:
        block = pack_index(index) + (encode_compact(GOOD_HEADER) if body is None else body)
    sized = (put_varint(len(block)) if size_field is None else size_field) + block
    crc = zlib.crc32(sized) if fix_crc else zlib.crc32(sized) ^ 1
    data = PREFIX.pack(MAGIC, version, crc) + sized + payload
    head = npy_header(len(data) if npy_length is None else npy_length)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0)), head + data, compress_type=method)
    return path


def _refused(path: Path, match: str) -> str:
    with pytest.raises(ContainerError) as info:
        ContainerReader(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    assert re.search(match, message), message
    return message


def test_the_hand_crafted_file_is_valid(tmp_path):
    """Guards the helper: every hostile case below differs from a readable file only in what it changes."""
    with ContainerReader(_craft(tmp_path / "ok.npz")) as r:
        assert r.read(0, 0, 0, "latent") == b"hello" and r.header["geo"]["crs"] == UTM30


def _body(text: str, numbers: bytes = b"", blobs: bytes = b"") -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, compact_header.DICTIONARY)
    packed = z.compress(text.encode()) + z.flush()
    return put_varint(len(packed)) + packed + numbers + blobs


HOSTILE_V2 = {
    # the prefix
    "version=0": (dict(version=0), r"unsupported container format version 0 \(this sarcodec reads versions 1, 2\)"),
    "version=1": (dict(version=1), "unsupported container format version 1"),
    "version=3": (dict(version=3), "unsupported container format version 3"),
    "version=max": (dict(version=2**32 - 1), "unsupported container format version 4294967295"),
    "wrong_crc": (dict(fix_crc=False), "header checksum mismatch"),
    # declared sizes
    "size=huge": (dict(size_field=put_varint(2**62)), "more than the .* allowed"),
    "size=past_member": (dict(size_field=put_varint(10**6)), "more than the file holds"),
    "size=not_a_varint": (dict(size_field=b"\xff" * 12), "length damaged"),
    "npy_shape=past_member": (dict(npy_length=10**12), "size disagrees|truncated"),
    "npy_shape=short": (dict(npy_length=20), "size disagrees"),
    "records=huge": (dict(block=put_varint(10**9) + b"\x00"), "more than the 4000000 allowed"),
    "records=past_block": (dict(block=put_varint(1000) + put_varint(2) + b"\x00" * 10), "index is truncated"),
    "widths=unknown": (dict(block=put_varint(1) + put_varint(7) + b"\x00" * 20), "unknown column layout"),
    "lengths=past_payload": (dict(index=np.array([[0, 0, 0, 0, 0, 500, 1]])), "do not tile the payload"),
    "lengths=wrap": (dict(index=np.array([[0, 0, c, 0, 0, 2**62, 1] for c in range(4)] + [[0, 0, 4, 0, 0, 5, 1]])),
                     "do not tile the payload"),  # 4 x 2**62 + 5 wraps to 5, the payload's size
    "lengths=over_2**62": (dict(index=np.array([[0, 0, 0, 0, 0, 2**62 + 1, 1]])), "out-of-range"),
    "records=none_but_payload": (dict(index=np.zeros((0, 7), dtype="<i8")), "no records"),
    "records=duplicate": (dict(index=np.array([[0, 0, 0, 0, 0, 2, 1], [0, 0, 0, 0, 0, 3, 1]])), "duplicate"),
    "kind=over_255": (dict(index=np.array([[0, 0, 0, 300, 0, 5, 1]])), "out-of-range"),
    "band=past_shape": (dict(index=np.array([[3, 0, 0, 0, 0, 5, 1]])), "band 3"),
    "chunk=past_grid": (dict(index=np.array([[0, 9, 0, 0, 0, 5, 1]])), "outside the raster"),
    # the compact body, under a valid CRC
    "body=not_deflate": (dict(body=put_varint(4) + b"\xff\xff\xff\xff"), "does not decompress"),
    "body=cut_short": (dict(body=put_varint(200) + b"\x00"), "cut short"),
    "body=trailing": (dict(body=encode_compact(GOOD_HEADER) + b"\x00"), "trailing bytes"),
    "body=not_json": (dict(body=_body("{oops")), "not valid JSON"),
    "body=array": (dict(body=_body("[1,2]")), "not a JSON object"),
    "body=nan": (dict(body=_body('{"x":NaN}')), "not valid JSON"),
    "body=own_key": (dict(body=_body('{"records":5}')), "container's own field 'records'"),
    "body=numbers_missing": (dict(body=_body('{"x":#}')), "numbers are cut short"),
    "body=number_too_long": (dict(body=_body('{"x":#}', b"\x11" * 40)), "damaged number"),
    "body=number_not_json": (dict(body=_body('{"x":#}', b"\xdb\xff")), "not valid JSON"),
    "body=empty_number": (dict(body=_body('{"x":#}', b"\xff")), "empty number"),
    "body=blob_missing": (dict(body=_body('{"x":%}', b"", b"\x01" * 5)), "cut short"),
    "body=b64_blob_huge": (dict(body=_body('{"x":&}', b"", put_varint(2**40))), "cut short"),
    "body=too_big": (dict(body=_body('{"x":"' + "a" * (17 << 20) + '"}')), "larger than the 16 MiB"),
    "crs=unknown_epsg": (dict(body=_body('{"geo":{"crs":999999}}')), "EPSG:999999"),
    "crs=negative": (dict(body=_body('{"geo":{"crs":-5}}')), "EPSG:-5"),
    "shape=huge": (dict(body=_body('{"shape":[1,2147483647,2147483647]}')), "implausibly large"),
    "dtype=complex": (dict(body=_body('{"dtype":"complex64"}')), "dtype"),
    "missing=shape": (dict(body=_body('{"codec":"sarcodec-dct-v2","dtype":"uint16","domain":"db"}')), "'shape'"),
    # the zip member
    "member=deflated": (dict(method=zipfile.ZIP_DEFLATED), "compressed"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_V2))
def test_hostile_version_2_files_are_typed_one_line_errors(tmp_path, case):
    kwargs, match = HOSTILE_V2[case]
    _refused(_craft(tmp_path / "bad.npz", **kwargs), match)


def test_a_member_that_is_not_a_byte_array_is_refused(tmp_path):
    path = tmp_path / "ints.npz"
    buf = io.BytesIO()
    np.save(buf, np.arange(10))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, buf.getvalue())
    _refused(path, "expected a 1-D uint8 array")


def test_truncated_version_2_files_are_refused_everywhere(tmp_path):
    src = tmp_path / "full.npz"
    _write(src, FULL, [(0, 0, 0, "latent", b"x" * 2000)])
    data = src.read_bytes()
    cut = tmp_path / "cut.npz"
    for n in range(0, len(data), 7):
        cut.write_bytes(data[:n])
        with pytest.raises(ContainerError):
            ContainerReader(cut)


def test_the_header_block_limit_bounds_what_is_read():
    assert MAX_HEADER_BLOCK < 1 << 31  # read in one call, never more than ~200 MiB


def test_the_writer_refuses_an_unknown_version(tmp_path):
    with pytest.raises(ValueError, match="format_version"):
        ContainerWriter(tmp_path / "x.npz", format_version=3)
    assert list(tmp_path.iterdir()) == []


def test_a_flip_in_the_prefix_version_names_the_version(tmp_path):
    path = tmp_path / "v.npz"
    _write(path, GOOD_HEADER)
    data = bytearray(path.read_bytes())
    pos = data.index(MAGIC) + len(MAGIC)
    assert struct.unpack_from("<I", data, pos)[0] == 2
    data[pos] = 3  # the version sits before the CRC: a newer file is "unsupported", never "damaged"
    (tmp_path / "v3.npz").write_bytes(bytes(data))
    _refused(tmp_path / "v3.npz", "unsupported container format version 3")
