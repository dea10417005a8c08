"""The same hostile files and faults through the QGIS algorithms (``processing.run``).

Most users meet sarcodec in QGIS, where a traceback dialog or a half-written layer is as bad as a
crash. Each case must raise ``QgsProcessingException`` with a one-line message, leave the output
folder exactly as it was, and never execute a model file's payload.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.cli.conftest import write_scene
from tests.conftest import speckled_scene
from tests.plugin.conftest import RecordingFeedback, sarcodec_provider  # noqa: F401 - fixture
from tests.robustness.conftest import (
    NODATA,
    container_parts,
    craft_container,
    evil_models,
    foreign_models,
    header_span,
    listing,
)

pytestmark = [pytest.mark.usefixtures("sarcodec_provider"), pytest.mark.timeout(120)]


def _run(algorithm: str, params: dict) -> dict:
    import processing  # importable once tests.plugin.conftest has put QGIS's plugins on sys.path

    return processing.run(f"sarcodec:{algorithm}", {k: str(v) if isinstance(v, Path) else v
                                                     for k, v in params.items()}, feedback=RecordingFeedback())


def assert_refused(algorithm: str, params: dict, folder: Path, match: str = "") -> str:
    from qgis.core import QgsProcessingException

    before = listing(folder)
    with pytest.raises(QgsProcessingException) as err:
        _run(algorithm, params)
    # processing.run puts "Unable to execute algorithm" before a checkParameterValues message
    message = str(err.value).strip().removeprefix("Unable to execute algorithm").strip()
    assert "\n" not in message and "Traceback" not in message and "Unexpected engine error" not in message, message
    assert match.lower() in message.lower(), message
    after = listing(folder)
    assert after == before, f"left behind: {sorted(after - before)}"
    return message


@pytest.fixture
def scene(tmp_path) -> Path:
    return write_scene(tmp_path / "scene.tif", speckled_scene(64, 64, seed=4))


@pytest.mark.parametrize("content", [b"", b"plain text\n"], ids=["empty", "text"])
def test_empty_and_text_files(tmp_path, content):
    (tmp_path / "x.tif").write_bytes(content)
    (tmp_path / "x.npz").write_bytes(content)
    assert_refused("compress", {"INPUT": tmp_path / "x.tif", "OUTPUT": tmp_path / "o.npz"}, tmp_path)
    assert_refused("decompress", {"INPUT": tmp_path / "x.npz", "OUTPUT": tmp_path / "o.tif"}, tmp_path)
    assert_refused("info", {"INPUT": tmp_path / "x.npz"}, tmp_path)


def test_truncated_geotiffs(tmp_path):
    data = write_scene(tmp_path / "src.tif", speckled_scene(96, 96, seed=1)).read_bytes()
    (tmp_path / "src.tif").unlink()
    for k in range(16):
        cut = tmp_path / f"cut{k}.tif"
        cut.write_bytes(data[: len(data) * k // 16])
        assert_refused("compress", {"INPUT": cut, "OUTPUT": tmp_path / "o.npz"}, tmp_path)
        cut.unlink()


def test_truncated_containers(tmp_path, small_container):
    data = small_container.read_bytes()
    for k in range(16):
        cut = tmp_path / "cut.npz"
        cut.write_bytes(data[: len(data) * k // 16])
        assert_refused("decompress", {"INPUT": cut, "OUTPUT": tmp_path / "o.tif"}, tmp_path)
        assert_refused("info", {"INPUT": cut}, tmp_path)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9], ids=["prefix", "index", "header"])
def test_flipped_bit_in_header_or_index(tmp_path, small_container, where):
    start, end = header_span(small_container)
    blob = bytearray(small_container.read_bytes())
    blob[start + int((end - start - 1) * where)] ^= 0x01
    (tmp_path / "bad.npz").write_bytes(bytes(blob))
    for salvage in (False, True):
        assert_refused("decompress", {"INPUT": tmp_path / "bad.npz", "OUTPUT": tmp_path / "o.tif",
                                      "SALVAGE": salvage}, tmp_path)
    assert_refused("info", {"INPUT": tmp_path / "bad.npz"}, tmp_path)


@pytest.mark.parametrize("record", [0, 1, 3], ids=["latent", "mask", "fallback"])
def test_flipped_payload_record_is_named_then_salvaged(tmp_path, wide_container, record):
    from sarcodec.codec.container import ContainerReader

    src = wide_container["nodata"]
    with ContainerReader(src) as reader:
        start, rec = reader._payload_start, reader.record(record)
    blob = bytearray(src.read_bytes())
    blob[start + rec.offset + rec.length // 2] ^= 0x80
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(blob))
    message = assert_refused("decompress", {"INPUT": bad, "OUTPUT": tmp_path / "o.tif"}, tmp_path)
    assert f" {record} " in message, message
    _run("decompress", {"INPUT": bad, "OUTPUT": tmp_path / "o.tif", "SALVAGE": True})
    with rasterio.open(tmp_path / "o.tif") as ds:
        chunk = ds.read(1)[:, rec.col * 512:(rec.col + 1) * 512]
        assert ds.nodata == NODATA and np.all(chunk == NODATA)


@pytest.mark.parametrize("field, value", [("version", 2), ("shape", [1, 2**31 - 1, 2**31 - 1]), ("shape", [1, -5, 64]),
                                          ("shape", [0, 64, 64]), ("dtype", "complex64"), ("dtype", "bool")])
def test_hostile_headers(tmp_path, small_container, field, value):
    header, index, payload = container_parts(small_container)
    version = value if field == "version" else None
    if field != "version":
        header[field] = value
    bad = craft_container(tmp_path / "bad.npz", header, index, payload, version=version)
    assert_refused("decompress", {"INPUT": bad, "OUTPUT": tmp_path / "o.tif"}, tmp_path,
                   match="version" if field == "version" else "")
    assert_refused("info", {"INPUT": bad}, tmp_path)


def test_a_tag_too_large_for_the_header_is_refused_before_coding(tmp_path, monkeypatch):
    from sarcodec.codec.container import ContainerWriter

    scene = write_scene(tmp_path / "tagged.tif", speckled_scene(64, 64, seed=2), tags={"HISTORY": "x" * (17 << 20)})
    monkeypatch.setattr(ContainerWriter, "add", lambda *a, **k: pytest.fail("a chunk was coded"))
    assert_refused("compress", {"INPUT": scene, "OUTPUT": tmp_path / "o.npz"}, tmp_path,
                   match="too large for the container header")


@pytest.mark.parametrize("dtype", ["complex64", "int8"])
def test_unsupported_dtype(tmp_path, dtype):
    path = tmp_path / f"{dtype}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype=dtype, crs="EPSG:32630",
                       transform=rasterio.transform.from_origin(0, 80, 10, 10)) as ds:
        ds.write(np.ones((1, 8, 8), dtype))
    assert_refused("compress", {"INPUT": path, "OUTPUT": tmp_path / "o.npz"}, tmp_path, match="unsupported")


def test_read_only_output_folder(readonly_dir, scene, small_container):
    assert_refused("compress", {"INPUT": scene, "OUTPUT": readonly_dir / "o.npz"}, readonly_dir)
    assert_refused("decompress", {"INPUT": small_container, "OUTPUT": readonly_dir / "o.tif"}, readonly_dir)


def test_full_disk(full_dir, scene, small_container):
    assert_refused("compress", {"INPUT": scene, "OUTPUT": full_dir / "o.npz", "ESTIMATE_QUALITY": False}, full_dir)
    assert_refused("decompress", {"INPUT": small_container, "OUTPUT": full_dir / "o.tif"}, full_dir)


def test_pickle_model_is_refused_without_running_it(tmp_path, scene, small_container):
    folder = tmp_path / "models"
    folder.mkdir()
    models, marker = evil_models(folder)
    for model in models:
        assert_refused("compress", {"INPUT": scene, "OUTPUT": tmp_path / "o.npz", "MODEL": model}, tmp_path)
        assert_refused("decompress", {"INPUT": small_container, "OUTPUT": tmp_path / "o.tif", "MODEL": model},
                       tmp_path)
        assert not marker.exists(), f"loading {model.name} in QGIS EXECUTED its pickle payload"


def test_model_of_another_architecture(tmp_path, scene, small_container):
    folder = tmp_path / "models"
    folder.mkdir()
    for model in foreign_models(folder):
        assert_refused("compress", {"INPUT": scene, "OUTPUT": tmp_path / "o.npz", "MODEL": model}, tmp_path,
                       match=model.name)
        assert_refused("decompress", {"INPUT": small_container, "OUTPUT": tmp_path / "o.tif", "MODEL": model},
                       tmp_path, match=model.name)


@pytest.mark.parametrize("case", ["all_nodata", "all_nan", "1x1", "1x100000", "100_bands"])
def test_extreme_rasters_round_trip(tmp_path, case):
    array, nodata = {
        "all_nodata": (np.zeros((32, 32), np.uint16), 0),
        "all_nan": (np.full((32, 32), np.nan, np.float32), None),
        "1x1": (np.full((1, 1), 500, np.uint16), None),
        "1x100000": (speckled_scene(1, 100_000, seed=5), None),
        "100_bands": (np.stack([speckled_scene(8, 8, seed=i) for i in range(100)]), None),
    }[case]
    src = write_scene(tmp_path / "in.tif", array, nodata=nodata)
    _run("compress", {"INPUT": src, "OUTPUT": tmp_path / "in.npz", "ESTIMATE_QUALITY": False})
    _run("decompress", {"INPUT": tmp_path / "in.npz", "OUTPUT": tmp_path / "out.tif"})
    with rasterio.open(src) as a, rasterio.open(tmp_path / "out.tif") as b:
        assert (a.count, a.height, a.width, a.dtypes) == (b.count, b.height, b.width, b.dtypes)
        if case in ("all_nodata", "all_nan"):
            np.testing.assert_array_equal(b.read(), a.read())
    # QGIS itself may cache statistics of the *input* layer in in.tif.aux.xml (GDAL PAM): not our output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "in.tif.aux.xml") == ["in.npz", "in.tif", "out.tif"]
