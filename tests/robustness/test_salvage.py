"""One flipped bit in a payload record: the chunk is named by index, ``--salvage`` saves the rest.

A bit flip in a years-old archive must cost one 512x512 chunk, not the scene, and must never come back
as plausible-looking wrong pixels: without ``--salvage`` the run fails naming the record; with it the
damaged chunk is written as nodata and every other pixel decodes as before.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio

from sarcodec.codec.container import ContainerReader
from tests.robustness.conftest import assert_failed_cleanly, listing, run_main

pytestmark = pytest.mark.timeout(120)

CHUNK_PX = 512
# The decoder blends overlapping tiles; a zeroed latent chunk reaches into its neighbours by at most
# one decoder tile overlap plus the synthesis receptive field. Beyond this margin pixels are identical.
BLEED_PX = 64


def _records(path):
    with ContainerReader(path) as reader:
        return reader._payload_start, list(reader)


def _flip_record(src, dst, record_index: int) -> tuple[int, int]:
    start, records = _records(src)
    rec = records[record_index]
    blob = bytearray(src.read_bytes())
    blob[start + rec.offset + rec.length // 2] ^= 0x10
    dst.write_bytes(bytes(blob))
    return rec.row, rec.col


def _kinds(path) -> list[tuple[int, str]]:
    return [(r.index, r.kind) for r in _records(path)[1]]


@pytest.mark.parametrize("variant", ["nodata", "plain"])
def test_every_record_kind_is_present(wide_container, variant):
    kinds = {k for _, k in _kinds(wide_container[variant])}
    assert {"latent", "fallback"} <= kinds
    if variant == "nodata":
        assert "mask" in kinds


@pytest.mark.parametrize("variant, record", [("nodata", i) for i in range(5)] + [("plain", i) for i in range(4)])
def test_flipped_record_is_named_and_salvaged(tmp_path, wide_container, variant, record):
    src = wide_container[variant]
    kinds = dict(_kinds(src))
    if record not in kinds:
        pytest.fail(f"the {variant} container has no record {record}: {kinds}")
    bad = tmp_path / "bad.npz"
    row, col = _flip_record(src, bad, record)
    before = listing(tmp_path)

    run = run_main(["decompress", bad, "-q", "-o", tmp_path / "out.tif"])
    assert_failed_cleanly(run, 1, tmp_path, before)
    numbers = re.findall(r"(?:chunk|record) (\d+)", run.errors[-1])
    assert str(record) in numbers, f"damaged record {record} ({kinds[record]}) not named: {run.errors[-1]}"

    run = run_main(["decompress", bad, "-q", "-o", tmp_path / "out.tif", "--salvage"])
    assert run.code == 0, run.stderr
    assert any("damaged" in line and str(record) in line for line in run.errors), run.errors
    assert sorted(listing(tmp_path)) == ["bad.npz", "out.tif"]

    with rasterio.open(wide_container[f"{variant}.clean"]) as ds:
        clean = ds.read(1)
    with rasterio.open(tmp_path / "out.tif") as ds:
        salvaged, nodata = ds.read(1), ds.nodata
        width = ds.width
    assert nodata is not None, (
        f"--salvage decoded damaged {kinds[record]} record {record} of a file without nodata, but the output "
        "has no nodata value: the damaged chunk came back as invented pixels instead of being marked")
    c0, c1 = col * CHUNK_PX, min((col + 1) * CHUNK_PX, width)
    damaged = salvaged[:, c0:c1]
    assert np.all(damaged == nodata) or (np.isnan(nodata) and np.all(np.isnan(damaged))), \
        f"damaged chunk {record} is not entirely nodata"
    far = np.ones(width, bool)
    far[max(0, c0 - BLEED_PX): c1 + BLEED_PX] = False
    np.testing.assert_array_equal(salvaged[:, far], clean[:, far],
                                  err_msg="pixels away from the damaged chunk changed")
