"""Hostile and extreme files through ``sarcodec compress|decompress|info``: typed exit, one line, nothing left.

Users keep archives for years and feed the tool whatever is on disk. Whatever the bytes, the tool
must answer with the documented exit code and one ``sarcodec: error:`` line, and must never leave a
partial output or a temporary file next to the user's data.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarcodec.codec.domains import check_dtype
from sarcodec.errors import InputFileError
from tests.cli.conftest import write_scene
from tests.conftest import speckled_scene
from tests.robustness.conftest import (
    NODATA,
    assert_failed_cleanly,
    container_parts,
    craft_container,
    header_span,
    listing,
    member_span,
    run_main,
)

pytestmark = pytest.mark.timeout(120)

SIXTEENTHS = range(16)


# -- not our files at all -------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"this is plain text, not a raster\n"], ids=["empty", "text"])
@pytest.mark.parametrize("command, name", [("compress", "in.tif"), ("decompress", "in.npz"), ("info", "in.npz")])
def test_empty_and_text_files(tmp_path, command, name, content):
    (tmp_path / name).write_bytes(content)
    before = listing(tmp_path)
    argv = [command, tmp_path / name] + (["-q"] if command != "info" else [])
    assert_failed_cleanly(run_main(argv), 1, tmp_path, before)


@pytest.mark.parametrize("k", SIXTEENTHS)
def test_truncated_geotiff(tmp_path, k):
    """A GeoTIFF cut short opens (its header survives) but fails on reading tiles: still exit 1, one line."""
    src = write_scene(tmp_path / "src.tif", speckled_scene(96, 96, seed=1))
    data = src.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * k // 16])
    src.unlink()
    before = listing(tmp_path)
    assert_failed_cleanly(run_main(["compress", cut, "-q", "--no-estimate"]), 1, tmp_path, before)


@pytest.mark.parametrize("k", SIXTEENTHS)
def test_truncated_container(tmp_path, small_container, k):
    data = small_container.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) * k // 16])
    before = listing(tmp_path)
    assert_failed_cleanly(run_main(["decompress", cut, "-q"]), 1, tmp_path, before)
    assert_failed_cleanly(run_main(["info", cut]), 1, tmp_path, before)


# -- container sections with one flipped bit ------------------------------------------------------

@pytest.mark.parametrize("where", [0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_bit_flip_in_header_and_index(tmp_path, small_container, where):
    """Version 2 (what compress writes): the .npy header, the prefix, the index and the compact header."""
    start, end = header_span(small_container)
    blob = bytearray(small_container.read_bytes())
    blob[start + int((end - start - 1) * where)] ^= 0x04
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(blob))
    before = listing(tmp_path)
    assert_failed_cleanly(run_main(["decompress", bad, "-q"]), 1, tmp_path, before)
    assert_failed_cleanly(run_main(["decompress", bad, "-q", "--salvage"]), 1, tmp_path, before)
    assert_failed_cleanly(run_main(["info", bad]), 1, tmp_path, before)


@pytest.mark.parametrize("member", ["header.npy", "index.npy"])
@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_bit_flip_in_version_1_header_and_index(tmp_path, small_container, member, where):
    from sarcodec.codec.container import convert

    v1 = tmp_path / "v1.npz"
    convert(small_container, v1, format_version=1)
    start, end = member_span(v1, member)
    blob = bytearray(v1.read_bytes())
    v1.unlink()
    blob[start + int((end - start - 1) * where)] ^= 0x04
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(blob))
    before = listing(tmp_path)
    assert_failed_cleanly(run_main(["decompress", bad, "-q"]), 1, tmp_path, before)
    assert_failed_cleanly(run_main(["decompress", bad, "-q", "--salvage"]), 1, tmp_path, before)
    assert_failed_cleanly(run_main(["info", bad]), 1, tmp_path, before)


# -- hand-crafted hostile headers and indexes (valid checksums, hostile content) -------------------

def _hostile(case: str, header: dict, index: np.ndarray) -> tuple[dict, np.ndarray, int | None]:
    header, index, version = dict(header), index.copy(), None
    if case.startswith("version"):
        version = int(case.split("=")[1])
        header["format_version"] = version
    elif case.startswith("shape"):
        header["shape"] = {"shape=huge": [1, 2**31 - 1, 2**31 - 1], "shape=overflow": [1, 2**40, 2**40],
                           "shape=zero_bands": [0, 64, 64], "shape=zero_height": [1, 0, 64],
                           "shape=negative": [1, -64, 64], "shape=many_bands": [10**6, 64, 64],
                           "shape=float": [1, 64.0, 64]}[case]
    elif case.startswith("dtype"):
        header["dtype"] = case.split("=")[1]
    elif case == "records=negative":
        header["records"] = -1
    elif case == "payload=huge":
        header["payload_bytes"] = 2**62
    elif case.startswith("missing"):  # valid checksums around a header without a field every decoder reads
        del header[case.split("=")[1]]
    elif case.startswith("mask_record"):  # the nodata mask moved to a chunk the raster does not have: it used
        mask = int(np.flatnonzero(index[:, 3] == 1)[0])  # to be ignored, and the mask silently lost
        index[mask, 1 if case.endswith("row_past_grid") else 2] = 5
    elif case.startswith("index"):
        column, value = {"index=negative_length": (5, -1), "index=negative_offset": (4, -8),
                         "index=huge_length": (5, 2**60), "index=band_past_shape": (0, 7),
                         "index=negative_band": (0, -1)}[case]
        index[0, column] = value
    return header, index, version


HOSTILE = ["version=0", "version=2", "version=4294967295", "shape=huge", "shape=overflow", "shape=zero_bands",
           "shape=zero_height", "shape=negative", "shape=many_bands", "shape=float", "dtype=complex64",
           "dtype=int8", "dtype=bool", "records=negative", "payload=huge", "index=negative_length",
           "index=negative_offset", "index=huge_length", "index=band_past_shape", "index=negative_band",
           "missing=shape", "missing=dtype", "missing=domain", "mask_record=row_past_grid",
           "mask_record=col_past_grid"]


#: In version 2 the record count, payload size and offsets are not stored (the reader derives them) and
#: the index holds no negative numbers: those cases have no version-2 spelling (``test_container_v2.py``
#: has the version-2 index's own hostile cases).
HOSTILE_V2 = [c for c in HOSTILE if not c.startswith(("records=", "payload=", "index=negative")) and c != "version=2"]
HOSTILE_V2 += ["version=1", "version=3"]  # a version-2 layout claiming another version


@pytest.mark.parametrize("layout, case", [(1, c) for c in HOSTILE] + [(2, c) for c in HOSTILE_V2],
                         ids=[f"v1-{c}" for c in HOSTILE] + [f"v2-{c}" for c in HOSTILE_V2])
def test_hostile_header_or_index(tmp_path, small_container, layout, case):
    header, index, payload = container_parts(small_container)
    header, index, version = _hostile(case, header, index)
    bad = craft_container(tmp_path / "bad.npz", header, index, payload, version=version, layout=layout)
    before = listing(tmp_path)
    match = "version" if case.startswith("version") else ""
    assert_failed_cleanly(run_main(["decompress", bad, "-q"]), 1, tmp_path, before, match=match)
    assert_failed_cleanly(run_main(["info", bad]), 1, tmp_path, before, match=match)


def _move_fallback_block(source: Path, target: Path, row0: int, col0: int) -> tuple[Path, int]:
    """``source`` with its fallback record's block origin set to (row0, col0), CRCs kept valid."""
    import zlib

    from sarcodec.codec.container import _FB_HEAD

    header, index, payload = container_parts(source)
    i = int(np.flatnonzero(index[:, 3] == 2)[0])
    offset, length = int(index[i, 4]), int(index[i, 5])
    record = bytearray(payload[offset:offset + length])
    fields = list(_FB_HEAD.unpack_from(record))
    fields[7:9] = [row0, col0]
    _FB_HEAD.pack_into(record, 0, *fields)
    index[i, 6] = zlib.crc32(bytes(record))
    payload = payload[:offset] + bytes(record) + payload[offset + length:]
    return craft_container(target, header, index, payload), i


# The wide container's fallback record (zeros the log domain cannot hold) belongs to chunk column 1 of a
# 48 x 1040 raster: columns 512..1023. Moved past the raster it used to crash the decoder (internal
# IndexError); moved below its chunk's rows it was silently dropped, its lossless pixels lost.
@pytest.mark.parametrize("row0, col0", [(0, 1040), (0, 4000), (0, 2**31 - 1), (600, 512), (0, 0)],
                         ids=["col_at_raster_end", "col_past_raster", "col_at_limit", "row_past_chunk",
                              "other_chunk"])
def test_fallback_block_outside_its_chunk_is_a_damaged_record(tmp_path, wide_container, row0, col0):
    bad, record = _move_fallback_block(wide_container["plain"], tmp_path / "bad.npz", row0, col0)
    before = listing(tmp_path)
    assert_failed_cleanly(run_main(["decompress", bad, "-q"]), 1, tmp_path, before, match=f"record {record}")
    out = tmp_path / "salvaged.tif"
    salvaged = run_main(["decompress", bad, "-q", "--salvage", "-o", out])
    assert salvaged.code == 0, salvaged.stderr
    assert f"damaged chunks [{record}]" in salvaged.stderr, salvaged.stderr
    with rasterio.open(out) as ds, rasterio.open(wide_container["plain.clean"]) as clean:
        got, want = ds.read(1), clean.read(1)
        assert np.all(got[:, 512:1024] == ds.nodata)  # the chunk of the damaged record, marked
        assert np.array_equal(got[:, 1024:], want[:, 1024:])  # the chunk beyond it decodes as ever


def test_a_tag_too_large_for_the_header_fails_before_any_coding(tmp_path, monkeypatch):
    # 17 MB in one tag value: the container header holds 16 MiB. Found only after every chunk was coded,
    # it used to end in "internal error: ValueError" at the very end of the run.
    from sarcodec.codec.container import ContainerWriter

    scene = write_scene(tmp_path / "tagged.tif", speckled_scene(64, 64, seed=2), tags={"HISTORY": "x" * (17 << 20)})
    monkeypatch.setattr(ContainerWriter, "add", lambda *a, **k: pytest.fail("a chunk was coded"))
    before = listing(tmp_path)
    run = run_main(["compress", scene])
    assert_failed_cleanly(run, 1, tmp_path, before, match="too large for the container header")
    assert not [line for line in run.errors if "%" in line], run.errors  # not a single progress line


def test_library_compress_refuses_a_tag_too_large_for_the_header_before_any_coding(tmp_path, monkeypatch):
    # The same check for Python callers of the engine, who skip the CLI's early inspection.
    from sarcodec.codec import encode
    from sarcodec.codec.container import ContainerWriter
    from sarcodec.codec.options import CompressOptions

    scene = write_scene(tmp_path / "tagged.tif", speckled_scene(64, 64, seed=2), tags={"HISTORY": "x" * (17 << 20)})
    monkeypatch.setattr(ContainerWriter, "add", lambda *a, **k: pytest.fail("a chunk was coded"))
    before = listing(tmp_path)
    with pytest.raises(InputFileError, match="tagged.tif: the raster's metadata .* too large for the container header"):
        encode.compress_raster(scene, tmp_path / "tagged.npz", CompressOptions())
    assert listing(tmp_path) == before


@pytest.mark.parametrize("layout", [1, 2])
def test_crafted_copy_of_a_valid_container_still_decodes(tmp_path, small_container, wide_container, layout):
    """Guards the helpers: the hostile cases above differ from a valid file only in what they change."""
    header, index, payload = container_parts(small_container)
    good = craft_container(tmp_path / "good.npz", header, index, payload, layout=layout)
    assert run_main(["decompress", good, "-q"]).code == 0
    assert run_main(["info", good]).code == 0
    same, _ = _move_fallback_block(wide_container["plain"], tmp_path / "same.npz", 0, 512)
    out = tmp_path / "same.tif"
    assert run_main(["decompress", same, "-q", "-o", out]).code == 0
    with rasterio.open(out) as ds, rasterio.open(wide_container["plain.clean"]) as clean:
        assert np.array_equal(ds.read(1), clean.read(1))


def test_other_zip_named_npz(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as zf:
        zf.writestr("header.npy", b"\x93NUMPY garbage")
    np.savez(tmp_path / "y.npz", header=np.arange(3))
    before = listing(tmp_path)
    for name in ("x.npz", "y.npz"):
        assert_failed_cleanly(run_main(["decompress", tmp_path / name, "-q"]), 1, tmp_path, before)
        assert_failed_cleanly(run_main(["info", tmp_path / name]), 1, tmp_path, before)


# -- unsupported and extreme rasters --------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["complex64", "int8"])
def test_unsupported_raster_dtype(tmp_path, dtype):
    arr = (np.arange(64).reshape(1, 8, 8) % 7 + 1).astype(dtype)
    path = tmp_path / f"{dtype}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype=dtype, crs="EPSG:32630",
                       transform=rasterio.transform.from_origin(0, 80, 10, 10)) as ds:
        ds.write(arr)
    before = listing(tmp_path)
    assert_failed_cleanly(run_main(["compress", path, "-q"]), 1, tmp_path, before, match="unsupported data type")


@pytest.mark.parametrize("dtype", ["bool", "complex128", "int64", "int8"])
def test_unsupported_dtypes_are_refused_before_any_work(dtype):
    """GDAL has no bool rasters (1-bit TIFFs read as uint8), so bool is checked at the engine's gate."""
    with pytest.raises(InputFileError, match="unsupported data type"):
        check_dtype(dtype)


def _round_trip(tmp_path: Path, array: np.ndarray, nodata) -> tuple[np.ndarray, np.ndarray]:
    src = write_scene(tmp_path / "in.tif", array, nodata=nodata)
    assert run_main(["compress", src, "-q", "--no-estimate"]).code == 0
    run = run_main(["decompress", src.with_suffix(".npz"), "-q", "-o", tmp_path / "out.tif"])
    assert run.code == 0, run.stderr
    with rasterio.open(src) as a, rasterio.open(tmp_path / "out.tif") as b:
        assert (a.count, a.height, a.width, a.dtypes) == (b.count, b.height, b.width, b.dtypes)
        assert b.nodata == a.nodata or (np.isnan(a.nodata) and np.isnan(b.nodata))
        before, after = a.read(), b.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "in.tif", "out.tif"]
    return before, after


@pytest.mark.parametrize("case", ["all_nodata", "all_nan", "all_nan_nodata_nan"])
def test_rasters_without_a_single_valid_pixel_round_trip_exactly(tmp_path, case):
    array, nodata = {
        "all_nodata": (np.zeros((40, 40), np.uint16), 0),
        "all_nan": (np.full((40, 40), np.nan, np.float32), None),
        "all_nan_nodata_nan": (np.full((40, 40), np.nan, np.float32), float("nan")),
    }[case]
    before, after = _round_trip(tmp_path, array, nodata)
    np.testing.assert_array_equal(after, before)  # NaN == NaN here: every pixel came back as stored


@pytest.mark.parametrize("shape", [(1, 1), (1, 100_000)], ids=["1x1", "1x100000"])
def test_degenerate_shapes_round_trip(tmp_path, shape):
    array = speckled_scene(*shape, seed=3) if shape != (1, 1) else np.full(shape, 321, np.uint16)
    before, after = _round_trip(tmp_path, array, None)
    assert after.shape == before.shape
    assert np.all(after > 0)  # decoded (lossy) amplitudes, no holes or nodata invented at the ragged edge


def test_hundred_bands(tmp_path):
    stack = np.stack([speckled_scene(8, 8, seed=i) for i in range(100)])
    stack[:, 0, 0] = NODATA
    before, after = _round_trip(tmp_path, stack, NODATA)
    assert after.shape == (100, 8, 8)
    np.testing.assert_array_equal(after[:, 0, 0], NODATA)


# -- what a shell really sees: GDAL writes to fd 2 behind Python's back ------------------------------

def _real_errors(result) -> list[str]:
    return [line for line in result.stderr.decode().splitlines() if line.strip() and "no CUDA GPU" not in line]


def test_truncated_geotiff_in_a_real_process_prints_one_line(tmp_path):
    """GDAL's own "ERROR 1: TIFFFillTile..." lines bypass sys.stderr; only a subprocess can see them."""
    from tests.cli.conftest import run_cli

    data = write_scene(tmp_path / "src.tif", speckled_scene(96, 96, seed=1)).read_bytes()
    (tmp_path / "src.tif").unlink()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    result = run_cli(["compress", "cut.tif", "-q", "--no-estimate"], cwd=tmp_path)
    assert result.returncode == 1
    lines = _real_errors(result)
    assert len(lines) == 1 and lines[0].startswith("sarcodec: error: "), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif"]


def test_full_disk_in_a_real_process_is_exit_1_with_one_line(full_dir, small_container):
    """GDAL reports ENOSPC only as log lines and closes "successfully": the sink must notice."""
    from tests.cli.conftest import run_cli

    before = listing(full_dir)
    result = run_cli(["decompress", str(small_container), "-q", "-o", str(full_dir / "out.tif")])
    assert result.returncode == 1, result.stderr.decode()
    lines = _real_errors(result)
    assert len(lines) == 1 and lines[0].startswith("sarcodec: error: "), lines
    assert listing(full_dir) == before
