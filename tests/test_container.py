"""The .npz container: round trips, plain-numpy readability, damage detection, no leftovers.

Every behaviour here holds for both format versions: 2 (written by default) and 1 (still read
forever, and written on request). What only version 2 has (the compact header, its layout and its
hostile variants) is in ``test_container_v2.py``.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sarcodec.codec.container import (
    FORMAT_VERSION,
    HEADER_MEMBER,
    KINDS,
    MAGIC,
    MEMBER,
    PREFIX,
    ContainerReader,
    ContainerWriter,
    decode_fallback,
    decode_fallback_block,
    decode_mask,
    encode_fallback,
    encode_mask,
)
from sarcodec.errors import ContainerError, DamagedChunkError, InputFileError

HEADER = {"model": {"id": "sarcodec-test", "sha256": "0" * 64}, "quality": 3, "shape": [2, 300, 200],
          "dtype": "uint16", "domain": "amplitude_dn", "tile": {"size": 256, "overlap": 64},
          "geo": {"nodata": 0}}


def _records(seed: int = 0) -> list[tuple[int, int, int, str, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    for band in range(2):
        for row in range(2):
            for col in range(2):
                out.append((band, row, col, "latent", rng.bytes(int(rng.integers(1, 400)))))
    out.append((0, 1, 1, "mask", encode_mask(rng.random((64, 64)) < 0.1)))
    out.append((1, 0, 0, "fallback", encode_fallback(rng.random((8, 8)).astype(np.float32))))
    out.append((1, 0, 1, "extra", b""))  # empty records are fine
    return out


VERSIONS = pytest.mark.parametrize("version", [2, 1], ids=["v2", "v1"])


def _write(path, records=None, header=None, version=FORMAT_VERSION) -> list[tuple[int, int, int, str, bytes]]:
    records = _records() if records is None else records
    with ContainerWriter(path, format_version=version) as w:
        for rec in records:
            w.add(*rec)
        w.finish(HEADER if header is None else header)
    return records


@pytest.fixture(params=[2, 1], ids=["v2", "v1"])
def container(tmp_path, request):
    """A container of every record kind, in each format version (``request.param``)."""
    path = tmp_path / "scene.npz"
    return path, _write(path, version=request.param)


@pytest.fixture
def container_v1(tmp_path):
    path = tmp_path / "scene.npz"
    return path, _write(path, version=1)


def _only(path) -> list[str]:
    return sorted(os.listdir(path))


# -- round trip -----------------------------------------------------------------------------------


def test_default_format_is_version_2(tmp_path):
    assert FORMAT_VERSION == 2
    _write(tmp_path / "a.npz", header={})
    with ContainerReader(tmp_path / "a.npz") as r, zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert r.version == 2 and r.header["format_version"] == 2 and zf.namelist() == [MEMBER]


def test_round_trip_records_and_header(container):
    path, records = container
    with ContainerReader(path) as r:
        assert r.version in (1, 2)
        for key in HEADER:
            assert r.header[key] == HEADER[key]
        assert r.header["format"] == "sarcodec" and r.header["records"] == len(records)
        assert len(r) == len(records)
        for i, (band, row, col, kind, data) in enumerate(records):
            assert r.read(band, row, col, kind) == data
            rec = r.find(band, row, col, kind)
            assert rec is not None and rec.index == i and rec.kind == kind and rec.length == len(data)
        assert [x.key for x in r.records(kind="latent", band=1)] == [(1, 0, 0, "latent"), (1, 0, 1, "latent"),
                                                                     (1, 1, 0, "latent"), (1, 1, 1, "latent")]
        assert r.get(0, 5, 5, "mask") is None
        with pytest.raises(ContainerError, match="no latent record"):
            r.read(0, 5, 5, "latent")
        assert r.verify() == []
        summary = r.summary()
        assert summary["records_by_kind"] == {"latent": 8, "mask": 1, "fallback": 1, "extra": 1}
        assert summary["file_bytes"] == path.stat().st_size


def test_numpy_can_read_version_1_without_pickle(container_v1):
    path, records = container_v1
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["header", "index", "payload"]
        raw = z["header"].tobytes()
        magic, version, crc = PREFIX.unpack_from(raw)
        assert magic == MAGIC and version == 1 and crc == zlib.crc32(raw[PREFIX.size:])
        header = json.loads(raw[PREFIX.size:])
        index, payload = z["index"], z["payload"]
    assert header["quality"] == 3 and index.shape == (len(records), 7) and index.dtype == np.int64
    for (band, row, col, kind, data), (b, r, c, k, off, n, crc32) in zip(records, index, strict=True):
        assert (b, r, c, k) == (band, row, col, KINDS[kind])
        assert payload[off : off + n].tobytes() == data and zlib.crc32(data) == crc32


@VERSIONS
def test_output_is_deterministic_and_final_only(tmp_path, version):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _write(a, version=version)
    _write(b, version=version)
    assert a.read_bytes() == b.read_bytes()
    assert _only(tmp_path) == ["a.npz", "b.npz"]


@VERSIONS
def test_small_file_overhead_is_small(tmp_path, version):
    path = tmp_path / "chip.npz"
    with ContainerWriter(path, format_version=version) as w:
        w.add(0, 0, 0, "latent", b"x" * 100)
        w.finish({"shape": [1, 100, 100], "dtype": "uint16", "domain": "amplitude_dn"})
    # version 1: about 0.7 bpp on a 100x100 chip before geo metadata; version 2: 0.16 bpp (198 bytes)
    assert path.stat().st_size - 100 < {1: 900, 2: 210}[version]


@VERSIONS
def test_zip64_layout_is_read(tmp_path, monkeypatch, version):
    """Scenes over 4 GiB need zip64 headers; exercise that path with a lowered limit."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 2000)
    path = tmp_path / "z64.npz"
    records = [(0, 0, i, "latent", os.urandom(1500)) for i in range(4)]
    _write(path, records=records, header={}, version=version)
    monkeypatch.undo()
    with zipfile.ZipFile(path) as zf:
        assert all(i.extra for i in zf.infolist() if i.file_size > 2000)  # really zip64
    with ContainerReader(path) as r:
        assert [r.read(*rec[:4]) for rec in records] == [rec[4] for rec in records]
    with np.load(path, allow_pickle=False) as z:
        assert z["payload" if version == 1 else MEMBER].size >= 6000


def test_no_zip64_below_its_limit(tmp_path):
    """Zip64 records cost 20-32 bytes a member: only a file that needs them has them."""
    path = tmp_path / "small.npz"
    _write(path, records=[(0, 0, 0, "latent", os.urandom(5000))], header={})
    with zipfile.ZipFile(path) as zf:
        assert [i.extra for i in zf.infolist()] == [b""]


def test_spill_folder_can_differ_from_destination(tmp_path):
    spill, out = tmp_path / "spill", tmp_path / "out"
    spill.mkdir()
    out.mkdir()
    with ContainerWriter(out / "a.npz", tmp_dir=spill) as w:
        w.add(0, 0, 0, "latent", b"abc")
        assert len(_only(spill)) == 1 and _only(out) == []
        w.finish({})
    assert _only(spill) == [] and _only(out) == ["a.npz"]


@VERSIONS
def test_empty_container(tmp_path, version):
    path = tmp_path / "empty.npz"
    _write(path, records=[], header={}, version=version)
    with ContainerReader(path) as r:
        assert len(r) == 0 and r.records() == [] and r.verify() == []


@VERSIONS
def test_streams_in_and_out(tmp_path, version):
    out = io.BytesIO()
    records = _records(1)
    with ContainerWriter(out, tmp_dir=tmp_path, format_version=version) as w:
        for rec in records:
            w.add(*rec)
        size = w.finish(HEADER)
    assert size == len(out.getvalue())
    assert _only(tmp_path) == []  # no temporary file left in the spill folder

    class Pipe(io.RawIOBase):
        """A read-only, non-seekable stream like stdin."""

        def __init__(self, data: bytes) -> None:
            self._buf = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            chunk = self._buf.read(len(b))
            b[: len(chunk)] = chunk
            return len(chunk)

    for source in (io.BytesIO(out.getvalue()), Pipe(out.getvalue())):
        with ContainerReader(source, name="<stdin>") as r:
            assert [r.read(*rec[:4]) for rec in records] == [rec[4] for rec in records]


@VERSIONS
def test_reading_one_chunk_does_not_read_the_payload(tmp_path, version):
    path = tmp_path / "big.npz"
    with ContainerWriter(path, format_version=version) as w:
        w.add(0, 0, 0, "latent", os.urandom(4 << 20))
        w.add(0, 0, 1, "latent", b"small")
        w.finish({})

    class Counting(io.FileIO):
        bytes_read = 0

        def read(self, n=-1):
            data = super().read(n)
            Counting.bytes_read += len(data)
            return data

        def readinto(self, b):
            n = super().readinto(b)
            Counting.bytes_read += n or 0
            return n

    with Counting(path, "r") as f, ContainerReader(f) as r:
        opened = Counting.bytes_read
        assert opened < 64 << 10
        assert r.read(0, 0, 1, "latent") == b"small"
        assert Counting.bytes_read - opened < 1024


# -- writer discipline ----------------------------------------------------------------------------


def test_abort_and_exceptions_leave_no_files(tmp_path):
    w = ContainerWriter(tmp_path / "a.npz")
    w.add(0, 0, 0, "latent", b"abc")
    assert len(_only(tmp_path)) == 1 and _only(tmp_path)[0].startswith(".") and _only(tmp_path)[0].endswith(
        ".part"
    )
    w.abort()
    w.abort()
    assert _only(tmp_path) == []

    with pytest.raises(RuntimeError):
        with ContainerWriter(tmp_path / "b.npz") as w:
            w.add(0, 0, 0, "latent", b"abc")
            raise RuntimeError("boom")
    assert _only(tmp_path) == []

    with ContainerWriter(tmp_path / "c.npz") as w:  # left without finish: nothing appears
        w.add(0, 0, 0, "latent", b"abc")
    assert _only(tmp_path) == []

    with pytest.raises(ValueError, match="header"):
        with ContainerWriter(tmp_path / "d.npz") as w:
            w.add(0, 0, 0, "latent", b"abc")
            w.finish({"bad": float("nan")})
    assert _only(tmp_path) == []


def test_dropped_writer_cleans_up(tmp_path):
    import gc

    w = ContainerWriter(tmp_path / "a.npz")
    w.add(0, 0, 0, "latent", b"abc")
    del w
    gc.collect()
    assert _only(tmp_path) == []


def test_header_accepts_numpy_values_and_tuples(tmp_path):
    path = tmp_path / "np.npz"
    _write(path, records=[], header={"shape": (np.int64(1), 5, 7), "offsets": np.array([1.5, 2.0]),
                                     "quality": np.int32(2)})
    with ContainerReader(path) as r:
        assert r.header["shape"] == [1, 5, 7] and r.header["offsets"] == [1.5, 2.0]
        assert r.header["quality"] == 2


def test_existing_file_is_only_replaced_when_finished(tmp_path):
    path = tmp_path / "scene.npz"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with ContainerWriter(path) as w:
            w.add(0, 0, 0, "latent", b"abc")
            raise RuntimeError
    assert path.read_bytes() == b"previous"
    _write(path)
    with ContainerReader(path) as r:
        assert len(r) == len(_records())


def test_writer_rejects_bad_records_and_headers(tmp_path):
    with ContainerWriter(tmp_path / "x.npz") as w:
        w.add(0, 0, 0, "latent", b"a")
        with pytest.raises(ValueError, match="duplicate"):
            w.add(0, 0, 0, "latent", b"b")
        with pytest.raises(ValueError, match="kind"):
            w.add(0, 0, 1, "pixels", b"b")
        with pytest.raises(ValueError, match="range"):
            w.add(-1, 0, 1, "latent", b"b")
        with pytest.raises(ValueError, match="shape"):
            w.finish({"shape": [1, 0, 10]})
    assert _only(tmp_path) == []


def test_unwritable_folder_is_a_file_error(tmp_path):
    with pytest.raises(InputFileError, match="temporary file"):
        ContainerWriter(tmp_path / "missing-folder" / "x.npz")


def test_full_disk_is_a_file_error_and_leaves_nothing(tmp_path, monkeypatch):
    w = ContainerWriter(tmp_path / "x.npz")
    w.add(0, 0, 0, "latent", b"abc")

    def no_space(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(InputFileError, match="No space left"):
        w.finish({})
    assert _only(tmp_path) == []


# -- damage ---------------------------------------------------------------------------------------


def test_truncation_at_every_sixteenth(container, tmp_path):
    path, _ = container
    data = path.read_bytes()
    bad = tmp_path / "cut.npz"
    for k in range(16):
        bad.write_bytes(data[: len(data) * k // 16])
        with pytest.raises(ContainerError):
            ContainerReader(bad)


def test_flipped_payload_bit_names_the_chunk(container, tmp_path):
    path, records = container
    data = path.read_bytes()
    with ContainerReader(path) as r:
        start = r._payload_start
        layout = [(rec.offset, rec.length) for rec in r]
    bad = tmp_path / "flip.npz"
    for i, (offset, length) in enumerate(layout):
        if length == 0:
            continue
        flipped = bytearray(data)
        flipped[start + offset + length // 2] ^= 0x10
        bad.write_bytes(bytes(flipped))
        with ContainerReader(bad) as r:  # opening works: only one chunk is damaged
            with pytest.raises(DamagedChunkError) as info:
                r.read(*records[i][:4])
            assert info.value.chunk_index == i
            assert str(info.value).startswith(str(bad)) and "\n" not in str(info.value)
            assert r.verify() == [i]
            others = [j for j in range(len(records)) if j != i]
            assert all(r.read(*records[j][:4]) == records[j][4] for j in others)


def _rebuild(path, *, header_raw: bytes | None = None, index: np.ndarray | None = None,
             payload: bytes | None = None, version: int = 1, fix_crc: bool = True,
             header_update: dict | None = None) -> None:
    """Rewrite a version-1 container's members (valid zip, valid npy) with chosen content."""
    with np.load(path, allow_pickle=False) as z:
        raw, idx, pay = z["header"].tobytes(), z["index"], z["payload"].tobytes()
    body = raw[PREFIX.size:]
    if header_update:
        head = json.loads(body)
        head.update(header_update)
        body = json.dumps(head).encode()
    idx = idx if index is None else index
    pay = pay if payload is None else payload
    crc = zlib.crc32(body) if fix_crc else PREFIX.unpack_from(raw)[2]
    raw = PREFIX.pack(MAGIC, version, crc) + body if header_raw is None else header_raw
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in (("header.npy", np.frombuffer(raw, np.uint8)), ("index.npy", idx),
                          ("payload.npy", np.frombuffer(pay, np.uint8))):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr)
            zf.writestr(name, buf.getvalue())


def test_header_damage_and_versions(container_v1):
    path, _ = container_v1
    original = path.read_bytes()

    def check(match, **kw):
        path.write_bytes(original)
        _rebuild(path, **kw)
        with pytest.raises(ContainerError, match=match):
            ContainerReader(path)

    check("version 2", version=2)  # a version-2 prefix in the version-1 layout
    check("version 0", version=0)
    check("header checksum", header_update={"quality": 4}, fix_crc=False)
    check("bad magic", header_raw=b"NOTSARCO" + b"\0" * 20)
    check("wrong type or size", header_raw=b"SARC")
    check("JSON", header_raw=PREFIX.pack(MAGIC, 1, zlib.crc32(b"{oops")) + b"{oops")
    check("index checksum", header_update={"index_crc32": 12345})
    check("shape", header_update={"shape": [1, 10**12, 10**12]})
    check("shape", header_update={"shape": [-1, 10, 10]})
    check("dtype", header_update={"dtype": "complex64"})
    check("records", header_update={"records": -3})
    check("payload", header_update={"payload_bytes": 10**9})


def test_hostile_index_is_rejected(container_v1):
    path, _ = container_v1
    original = path.read_bytes()
    with np.load(path, allow_pickle=False) as z:
        index = z["index"].copy()

    def check(match, idx):
        path.write_bytes(original)
        _rebuild(path, index=idx, header_update={"index_crc32": zlib.crc32(idx.tobytes())})
        with pytest.raises(ContainerError, match=match):
            ContainerReader(path)

    for col, value in ((0, -1), (4, -5), (5, -1), (3, 999), (4, 10**12)):
        bad = index.copy()
        bad[2, col] = value
        check("out-of-range|tile the payload", bad)
    bad = index.copy()
    bad[1, 5] += 1  # overlaps the next record
    check("tile the payload", bad)
    bad = index.copy()
    bad[1, :4] = bad[0, :4]
    check("duplicate", bad)
    bad = index.copy()
    bad[0, 0] = 7
    check("band 7", bad)
    check("shape", index[:, :5].copy())
    check("shape|type", index.astype(np.float64))


def test_flipped_header_bits_are_detected(container, tmp_path):
    """Version 1: the deflated header member; version 2: everything before the payload."""
    path, _ = container
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(HEADER_MEMBER if HEADER_MEMBER in zf.namelist() else MEMBER)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    with ContainerReader(path) as r:
        end = start + info.compress_size if info.filename == HEADER_MEMBER else r._payload_start
    detected = 0
    for pos in range(start, end):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (pos % 8)
        try:
            with ContainerReader(io.BytesIO(bytes(flipped))) as r:
                # a flip deflate does not notice (padding bits, unused codes) must be harmless
                assert {k: r.header[k] for k in HEADER} == HEADER
        except ContainerError:
            detected += 1
    if info.filename == MEMBER:
        assert detected == end - start  # the .npy header and the CRC-32 cover every byte
    assert detected >= 0.95 * (end - start)  # the rest decoded to the very same header


def test_every_byte_flip_is_detected_or_harmless(container, tmp_path):
    """One bit flipped in any byte of the file: a ContainerError, or every record still exact."""
    path, records = container
    data = path.read_bytes()
    undetected = 0
    for pos in range(len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (pos % 8)
        try:
            with ContainerReader(io.BytesIO(bytes(flipped))) as r:
                got = [r.read(*rec[:4]) for rec in records]
                header = {k: r.header[k] for k in HEADER}
        except ContainerError:
            continue
        undetected += 1
        assert got == [rec[4] for rec in records], f"silent damage at byte {pos}"
        assert header == HEADER, f"silent header damage at byte {pos}"
    assert undetected < len(data) // 4  # only zip bookkeeping (times, attributes) may go unnoticed


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n" * 10, b"PK\x03\x04" + b"\0" * 100])
def test_not_a_container(tmp_path, content):
    path = tmp_path / "fake.npz"
    path.write_bytes(content)
    with pytest.raises(ContainerError, match="fake.npz"):
        ContainerReader(path)


def test_other_npz_is_not_ours(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.arange(3))
    with pytest.raises(ContainerError, match="not a sarcodec container"):
        ContainerReader(path)
    np.savez(path, header=np.arange(3), index=np.arange(3), payload=np.arange(3))
    with pytest.raises(ContainerError):
        ContainerReader(path)
    pickled = np.array([{"x": 1}], dtype=object)
    np.savez(path, header=pickled, index=pickled, payload=pickled)
    with pytest.raises(ContainerError):
        ContainerReader(path)


def test_missing_file_is_a_file_error(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        ContainerReader(tmp_path / "nope.npz")
    with pytest.raises(InputFileError, match="folder"):
        ContainerReader(tmp_path)


def test_payload_must_be_stored_not_deflated(container):
    path, _ = container
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ContainerError, match="compressed"):
        ContainerReader(path)


# -- fuzzing --------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_container_error(data):
    try:
        with ContainerReader(io.BytesIO(data)) as r:
            for rec in r:
                r.read_record(rec)
    except ContainerError:
        pass


_VALID: dict[int, bytes] = {}


def _valid_bytes(version: int) -> bytes:
    if version not in _VALID:
        buf = io.BytesIO()
        with ContainerWriter(buf, format_version=version) as w:
            for rec in _records(3)[:5]:
                w.add(*rec)
            w.finish(HEADER)
        _VALID[version] = buf.getvalue()
    return _VALID[version]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_containers_only_raise_container_error(data):
    blob = bytearray(_valid_bytes(data.draw(st.sampled_from([2, 1]), label="version")))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if op == "flip" and blob:
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and blob:
            value = data.draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]))  # size/offset extremes
            blob[pos : pos + 4] = struct.pack("<I", value)
        elif op == "cut":
            del blob[pos:]
        elif op == "insert":
            blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del blob[pos : pos + data.draw(st.integers(1, 16))]
    try:
        with ContainerReader(io.BytesIO(bytes(blob))) as r:
            for rec in r:
                r.read_record(rec)
    except ContainerError:
        pass


# -- lossless helpers -----------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=70)))
def test_mask_round_trip(mask):
    np.testing.assert_array_equal(decode_mask(encode_mask(mask), mask.shape), mask)


def test_mask_damage_is_a_container_error():
    blob = encode_mask(np.ones((10, 10), bool))
    with pytest.raises(ContainerError):
        decode_mask(blob, (10, 11))
    with pytest.raises(ContainerError):
        decode_mask(blob[:-3], (10, 10))
    with pytest.raises(ContainerError):
        decode_mask(b"junk", (10, 10))
    with pytest.raises(ContainerError):
        decode_mask(blob, (10**6, 10**6))
    with pytest.raises(ContainerError):
        decode_mask(zlib.compress(b"\0" * (1 << 20)), (10, 10))  # no zlib bombs


_DTYPES = st.sampled_from(["uint8", "uint16", "int16", "uint32", "int32", "float32", "float64", ">f4", "<i8"])


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_fallback_round_trip_is_bit_exact(data):
    dtype = np.dtype(data.draw(_DTYPES))
    shape = data.draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40))
    values = data.draw(hnp.arrays(dtype, shape))
    mask = data.draw(st.one_of(st.none(), hnp.arrays(bool, shape)))
    origin = (data.draw(st.integers(0, 10**6)), data.draw(st.integers(0, 10**6)))
    block = decode_fallback_block(encode_fallback(values, mask, origin))
    want_mask = np.ones(shape, bool) if mask is None else mask
    assert (block.row0, block.col0) == origin
    np.testing.assert_array_equal(block.mask, want_mask)
    got = block.values[want_mask]
    want = values[want_mask].astype(dtype.newbyteorder("="))
    assert got.dtype == want.dtype
    assert got.tobytes() == want.tobytes()  # bit patterns, NaN payloads and -0.0 included


def test_fallback_keeps_nan_payloads_and_infinities():
    values = np.array([[np.nan, np.inf], [-np.inf, -0.0]], np.float32)
    values.view(np.uint32)[0, 0] = 0x7FA00001  # a signalling NaN with a payload
    mask, back = decode_fallback(encode_fallback(values, np.array([[True, True], [True, False]])))
    assert back.view(np.uint32)[0, 0] == 0x7FA00001 and back[0, 1] == np.inf and back[1, 0] == -np.inf
    assert not mask[1, 1]


def test_fallback_damage_is_a_container_error():
    blob = encode_fallback(np.arange(100, dtype=np.float32).reshape(10, 10), np.eye(10, dtype=bool))
    for broken in (blob[:10], blob[:-2], b"XXXX" + blob[4:], blob[:5] + b"\x09" + blob[6:]):
        with pytest.raises(ContainerError):
            decode_fallback(broken)
    with pytest.raises(ValueError, match="2-D"):
        encode_fallback(np.zeros(3), None)
    with pytest.raises(ValueError, match="dtype"):
        encode_fallback(np.zeros((2, 2), dtype=object), None)


def test_a_header_over_the_limit_is_a_file_error_not_an_internal_one(tmp_path):
    """Library callers that skip ``check_raster_metadata_fits`` still get a typed, one-line error."""
    w = ContainerWriter(tmp_path / "x.npz")
    w.add(0, 0, 0, "latent", b"abc")
    with pytest.raises(InputFileError, match="more than the 16 MiB a container holds"):
        w.finish({**HEADER, "geo": {"tags": {"HUGE": "x" * (17 << 20)}}})
    assert _only(tmp_path) == []
