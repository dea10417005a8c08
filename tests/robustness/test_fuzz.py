"""Fuzzing the container reader *and* the decoder behind it, in bounded time for CI.

``tests/test_container.py`` already fuzzes ``ContainerReader`` alone. Here the whole decode path
runs (``decompress_container`` and ``container_info``): a mutated file must end in a
``SarcodecError`` subclass (exit codes 1/2, one line) or decode, never in another exception, a hang,
or a leftover file. Two targets: byte-level mutation (damage), and structure-aware mutation of the
header JSON with valid checksums (what a hostile tool writes, which no CRC catches).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sarcodec.codec.pipeline import DecompressOptions, container_info, decompress_container
from sarcodec.errors import SarcodecError
from tests.robustness.conftest import container_parts, craft_container

pytestmark = pytest.mark.timeout(60)

# 60 examples per target keep CI bounded (~10 s); FUZZ_EXAMPLES=5000 for a longer local campaign.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=5000, derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _decode_or_refuse(path: Path, salvage: bool) -> None:
    """Decode ``path`` into a fresh folder; only typed errors may escape, and nothing may stay behind."""
    with tempfile.TemporaryDirectory() as out:
        try:
            container_info(path)
            decompress_container(path, Path(out) / "out.tif", DecompressOptions(device="cpu", salvage=salvage))
        except SarcodecError as exc:
            assert "\n" not in str(exc)
            assert list(Path(out).iterdir()) == [], list(Path(out).iterdir())
        else:
            assert [p.name for p in Path(out).iterdir()] == ["out.tif"]


@FUZZ
@given(data=st.data())
def test_byte_mutations_only_raise_typed_errors(tmp_path_factory, small_container, data):
    blob = bytearray(small_container.read_bytes())
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "byte", "cut", "dup", "zero"]))
        pos = data.draw(st.integers(0, len(blob) - 1), label="pos")
        if op == "flip":
            blob[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "byte":
            blob[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del blob[pos:]
        elif op == "dup":
            blob[pos:pos] = blob[pos : pos + data.draw(st.integers(1, 64))]
        elif op == "zero":
            blob[pos : pos + 8] = bytes(8)
        if not blob:
            blob = bytearray(b"\0")
    path = tmp_path_factory.mktemp("fuzz") / "m.npz"
    path.write_bytes(bytes(blob))
    _decode_or_refuse(path, data.draw(st.booleans(), label="salvage"))


HOSTILE_VALUES = st.sampled_from([None, True, -1, 0, 1, 2**31, 2**63 - 1, -(2**63), 1e308, -1e-308, "", "x",
                                  "nan", [], [0], {}, {"a": 1}, [1, 64, 64]])


def _paths(value, prefix=()):
    """Every key path in a JSON tree, so a mutation can target any field, nested ones included."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:4]):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


@FUZZ
@given(data=st.data())
def test_hostile_header_fields_only_raise_typed_errors(tmp_path_factory, small_container, data):
    header, index, payload = container_parts(small_container)
    header = copy.deepcopy(header)
    paths = sorted(_paths(header), key=repr)
    for _ in range(data.draw(st.integers(1, 2), label="fields")):
        path = data.draw(st.sampled_from(paths), label="field")
        node = header
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = data.draw(HOSTILE_VALUES, label="value")
        except (KeyError, IndexError, TypeError):  # an earlier mutation replaced a parent
            continue
    target = tmp_path_factory.mktemp("hfuzz") / "h.npz"
    craft_container(target, header, index, payload, layout=data.draw(st.sampled_from([2, 1]), label="layout"))
    _decode_or_refuse(target, data.draw(st.booleans(), label="salvage"))
