"""Simulated CUDA out-of-memory: the batch is halved until it fits, and a persistent OOM is exit 3.

A GPU shared with other jobs runs out of memory at unpredictable batch sizes. The engine must retry
with half the batch (same result: tiles are blended in grid order, whatever the batching) and only
give up, with the documented exit code 3 and nothing written, when one tile per batch does not fit.
The model's transforms are patched to raise ``torch.cuda.OutOfMemoryError`` above a batch size, so
this runs on any CPU machine.
"""

from __future__ import annotations

import pytest
import rasterio
import torch

from sarcodec.codec.model import SarCodec
from tests.cli.conftest import write_scene
from tests.conftest import speckled_scene
from tests.robustness.conftest import assert_failed_cleanly, listing, run_main

pytestmark = pytest.mark.timeout(120)


def _oom_above(monkeypatch, limit: int) -> list[int]:
    """Make analysis and synthesis raise CUDA OOM for batches larger than ``limit``; returns seen sizes."""
    seen: list[int] = []
    for name in ("analysis", "synthesis"):
        real = getattr(SarCodec, name)

        def patched(self, x, *args, _real=real, **kwargs):
            seen.append(int(x.shape[0]))
            if x.shape[0] > limit:
                raise torch.cuda.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate 2.00 GiB (batch of {x.shape[0]} tiles)")
            return _real(self, x, *args, **kwargs)

        monkeypatch.setattr(SarCodec, name, patched)
    return seen


@pytest.fixture
def scene(tmp_path):
    # 4x4 encoder tiles of 256 px with overlap: batches of 8 tiles exist to be halved
    return write_scene(tmp_path / "scene.tif", speckled_scene(400, 400, seed=21))


def test_oom_halves_the_batch_and_gives_the_same_result(tmp_path, scene, monkeypatch):
    ref = tmp_path / "ref"
    ref.mkdir()
    assert run_main(["compress", scene, "-q", "--no-estimate", "--batch-size", "8", "-o", ref / "a.npz"]).code == 0
    assert run_main(["decompress", ref / "a.npz", "-q", "--batch-size", "8", "-o", ref / "a.tif"]).code == 0

    seen = _oom_above(monkeypatch, 2)
    run = run_main(["compress", scene, "-q", "--no-estimate", "--batch-size", "8", "-o", tmp_path / "b.npz"])
    assert run.code == 0, run.stderr
    assert max(seen) > 2 and 2 in seen, f"the batch was never halved to fit: {sorted(set(seen))}"
    assert "retrying with batch size" in run.stderr, run.stderr
    assert (tmp_path / "b.npz").read_bytes() == (ref / "a.npz").read_bytes(), "halving changed the container"

    seen.clear()
    run = run_main(["decompress", tmp_path / "b.npz", "-q", "--batch-size", "8", "-o", tmp_path / "b.tif"])
    assert run.code == 0, run.stderr
    assert 2 in seen and max(seen) > 2, sorted(set(seen))
    with rasterio.open(ref / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert (a.read() == b.read()).all(), "halving changed the decoded pixels"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz", "b.tif", "ref", "scene.tif"]


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_persistent_oom_is_exit_3_and_leaves_nothing(tmp_path, scene, small_container, monkeypatch, command):
    out = tmp_path / "out"
    out.mkdir()
    _oom_above(monkeypatch, 0)
    source, name = (scene, "x.npz") if command == "compress" else (small_container, "x.tif")
    before = listing(out)
    run = run_main([command, source, "-q", "--batch-size", "4", "-o", out / name])
    assert_failed_cleanly(run, 3, out, before, match="out of memory")


def test_persistent_oom_keeps_the_previous_output(tmp_path, scene, monkeypatch):
    previous = tmp_path / "scene.npz"
    previous.write_bytes(b"previous container")
    _oom_above(monkeypatch, 0)
    run = run_main(["compress", scene, "-q", "--overwrite"])
    assert run.code == 3, run.stderr
    assert previous.read_bytes() == b"previous container"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.npz", "scene.tif"]
