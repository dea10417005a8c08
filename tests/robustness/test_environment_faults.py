"""Faults around the data: an unwritable or full output folder, hostile and foreign model files.

A full disk or a read-only share must fail like any other file error (exit 1, one line) without
leaving ``.part`` files that would fill the disk further; a checkpoint is code-adjacent, so a pickle
with a payload must be refused *without running it*, and a checkpoint of another network must be a
model error (exit 2), never a crash halfway through a scene.
"""

from __future__ import annotations

import pytest

from tests.cli.conftest import write_scene
from tests.conftest import speckled_scene
from tests.robustness.conftest import assert_failed_cleanly, evil_models, foreign_models, listing, run_main

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def scene(tmp_path):
    return write_scene(tmp_path / "scene.tif", speckled_scene(64, 64, seed=2))


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_read_only_output_folder(readonly_dir, scene, small_container, command):
    source, name = (scene, "out.npz") if command == "compress" else (small_container, "out.tif")
    before = listing(readonly_dir)
    run = run_main([command, source, "-q", "-o", readonly_dir / name])
    assert_failed_cleanly(run, 1, readonly_dir, before)


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_full_disk(full_dir, scene, small_container, command):
    source, name = (scene, "out.npz") if command == "compress" else (small_container, "out.tif")
    before = listing(full_dir)
    run = run_main([command, source, "-q", "--no-estimate" if command == "compress" else "--overwrite",
                    "-o", full_dir / name])
    assert_failed_cleanly(run, 1, full_dir, before)


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_pickle_model_with_payload_is_refused_without_running_it(tmp_path, scene, small_container, command):
    (tmp_path / "models").mkdir()
    models, marker = evil_models(tmp_path / "models")
    source = scene if command == "compress" else small_container
    out = tmp_path / ("out.npz" if command == "compress" else "out.tif")
    for model in models:
        before = listing(tmp_path)
        run = run_main([command, source, "-q", "--model", model, "-o", out])
        assert not marker.exists(), f"loading {model.name} EXECUTED its pickle payload"
        assert_failed_cleanly(run, 2, tmp_path, before)


def test_pickle_model_via_environment_and_version(tmp_path, monkeypatch):
    """``$SARCODEC_MODEL`` and ``--version`` load the default model too: same refusal, no execution."""
    models, marker = evil_models(tmp_path)
    for model in models:
        monkeypatch.setenv("SARCODEC_MODEL", str(model))
        run = run_main(["--version"])
        assert run.code == 0 and "unusable" in run.stdout, run.stdout
        assert not marker.exists()


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_model_of_another_architecture(tmp_path, scene, small_container, command):
    folder = tmp_path / "models"
    folder.mkdir()
    source = scene if command == "compress" else small_container
    out = tmp_path / ("out.npz" if command == "compress" else "out.tif")
    for model in foreign_models(folder):
        before = listing(tmp_path)
        run = run_main([command, source, "-q", "--model", model, "-o", out])
        assert_failed_cleanly(run, 2, tmp_path, before, match=model.name)


def test_decompress_with_a_different_valid_model(tmp_path, small_container):
    """A real SarCodec checkpoint that is not the one the file names: exit 2, never wrong pixels."""
    import torch

    from sarcodec.codec.model import SarCodec, save_checkpoint

    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    save_checkpoint(SarCodec(n_channels=16, latent_channels=24, hyper_channels=8, n_qualities=5), other,
                    metadata={"model_id": "other"})
    before = listing(tmp_path)
    run = run_main(["decompress", small_container, "-q", "--model", other, "-o", tmp_path / "out.tif"])
    assert_failed_cleanly(run, 2, tmp_path, before, match="model")


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_unwritable_weight_map_leaves_no_partial_main_output(tmp_path, readonly_dir, scene, small_container, command):
    """The debugging weight map fails to open after the main output's temporary file exists: both go."""
    out = tmp_path / "out"
    out.mkdir()
    source, name = (scene, "x.npz") if command == "compress" else (small_container, "x.tif")
    before = listing(out)
    run = run_main([command, source, "-q", "-o", out / name, "--weight-map", readonly_dir / "w.tif"])
    assert_failed_cleanly(run, 1, out, before)
    assert listing(readonly_dir) == set()
