"""Files users already wrote keep decoding: containers made by released versions, pinned bit-exactly.

``tests/fixtures/v1/`` holds containers written by the release before codec v2 (``sarcodec_v1.pt``,
qualities 1, 5 and 3 on a uint16 DN scene with a nodata border and on a two-band float32 dB scene)
and ``expected.json`` the SHA-256 of the pixels that release decoded from them. Every later release
must reproduce those pixels, finding the v1 model by the checksum in the file, without ``--model``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarcodec.codec.pipeline import DecompressOptions, container_info, decompress_container

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1 = json.loads((FIXTURES / "v1" / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(V1))
def test_v1_containers_decode_to_the_released_pixels(name, tmp_path):
    src = FIXTURES / "v1" / name
    assert container_info(src)["codec"] == "sarcodec-hyperprior-v1"
    out = tmp_path / "decoded.tif"
    decompress_container(src, out, DecompressOptions())  # no model given: found by checksum
    with rasterio.open(out) as ds:
        arr = ds.read()
    expected = V1[name]
    assert str(arr.dtype) == expected["dtype"] and list(arr.shape) == expected["shape"]
    assert hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() == expected["decoded_sha256"]
