"""``sarcodec infer`` from a shell: the shipped example models, output naming, pipes and exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarcodec.errors import EXIT_FILE, EXIT_MODEL, EXIT_OK, EXIT_USAGE
from tests.conftest import speckled_scene

from .conftest import REPO, error_lines, leftovers, run_cli, write_scene

EXAMPLES = REPO / "resources" / "models" / "examples"
SR = EXAMPLES / "sr_x2.onnx"
DESPECKLE = EXAMPLES / "despeckle.onnx"


@pytest.fixture
def scene(tmp_path) -> Path:
    a = speckled_scene(200, 240, seed=7)
    a[:16, :24] = 0
    return write_scene(tmp_path / "scene.tif", a)


def _read(path: Path) -> tuple[np.ndarray, rasterio.Affine, object, float | None]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs, ds.nodata


def test_shipped_sr_example_doubles_the_scene_without_flags(scene, tmp_path):
    res = run_cli(["infer", str(SR), str(scene)])
    assert res.returncode == EXIT_OK, res.stderr.decode()
    out = tmp_path / "scene_sr_x2.tif"  # the default name: input stem, model stem
    src, t_in, crs_in, _ = _read(scene)
    dst, t_out, crs_out, nodata = _read(out)
    assert dst.shape == (2 * src.shape[0], 2 * src.shape[1])
    assert (t_out.a, t_out.e) == (t_in.a / 2, t_in.e / 2) and (t_out.c, t_out.f) == (t_in.c, t_in.f)
    assert crs_out == crs_in and nodata == 0
    assert (dst[:32, :48] == 0).all() and (dst[32:, 48:] > 0).all()  # nodata doubled with the grid, nowhere else
    assert "scale 2, log_db" in res.stdout.decode()


def test_shipped_despeckle_example_smooths_and_keeps_the_mean(tmp_path):
    # A flat field under 4.4-look speckle, as 16-bit amplitude DN: any smoothing shows as ENL.
    rng = np.random.default_rng(11)
    amplitude = 300.0 * np.sqrt(rng.gamma(4.4, 1 / 4.4, (160, 200)))
    amplitude[:16, :24] = 0
    scene = write_scene(tmp_path / "flat.tif", np.clip(np.round(amplitude), 0, 65535).astype(np.uint16))
    out = tmp_path / "smooth.tif"
    res = run_cli(["infer", str(DESPECKLE), str(scene), "-o", str(out)])
    assert res.returncode == EXIT_OK, res.stderr.decode()
    src, _, _, _ = _read(scene)
    dst, _, _, _ = _read(out)
    assert dst.dtype == src.dtype  # a log-domain model that keeps the bands keeps the type
    valid = src > 0
    assert ((dst == 0) == ~valid).all()
    i_src, i_dst = src[valid].astype(float) ** 2, dst[valid].astype(float) ** 2  # DN amplitude -> intensity
    assert abs(i_dst.mean() / i_src.mean() - 1) < 0.05
    enl = lambda i: i.mean() ** 2 / i.var()  # noqa: E731
    assert enl(i_dst) > 1.5 * enl(i_src)


def test_several_inputs_go_into_a_folder_and_pipes_work(scene, tmp_path):
    other = write_scene(tmp_path / "other.tif", speckled_scene(64, 80, seed=8))
    res = run_cli(["infer", str(DESPECKLE), str(scene), str(other), "-o", str(tmp_path / "out") + "/"])
    assert res.returncode == EXIT_OK, res.stderr.decode()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other_despeckle.tif", "scene_despeckle.tif"]
    piped = run_cli(["infer", str(DESPECKLE), "-", "-o", "-", "-q"], input=scene.read_bytes())
    assert piped.returncode == EXIT_OK, piped.stderr.decode()
    (tmp_path / "piped.tif").write_bytes(piped.stdout)
    np.testing.assert_array_equal(_read(tmp_path / "piped.tif")[0], _read(tmp_path / "out" / "scene_despeckle.tif")[0])


def test_flags_override_what_the_model_declares(scene, tmp_path):
    out = tmp_path / "raw.tif"
    res = run_cli(["infer", str(DESPECKLE), str(scene), "-o", str(out), "--convention", "raw",
                   "--output-dtype", "float32", "--tile-size", "64", "--overlap", "16"])
    assert res.returncode == EXIT_OK, res.stderr.decode()
    assert "scale 1, raw" in res.stdout.decode()
    assert _read(out)[0].dtype == np.float32


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--in-range", "5", "1"], EXIT_USAGE, "LO < HI"),
    (["--scale", "zero"], EXIT_USAGE, "scale must be a number"),
    (["--tile-size", "64", "--overlap", "40"], EXIT_USAGE, "at most half the tile size"),
    (["--bands", "2"], EXIT_USAGE, "--bands must name bands 1..1"),
    (["--scale", "3"], EXIT_MODEL, "declared as 3"),
    (["--log-domain", "--convention", "raw"], EXIT_USAGE, "not allowed with"),
])
def test_bad_options_are_one_line_and_write_nothing(scene, tmp_path, args, code, message):
    res = run_cli(["infer", str(SR), str(scene), "-o", str(tmp_path / "o.tif"), *args])
    lines = error_lines(res.stderr)
    assert res.returncode == code, res.stderr.decode()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0]
    assert leftovers(tmp_path, {"scene.tif"}) == []


def test_a_file_that_is_not_a_model_stops_the_run_before_any_input(scene, tmp_path):
    res = run_cli(["infer", str(scene), str(scene), str(tmp_path / "missing.tif"), "-o", str(tmp_path / "out/")])
    assert res.returncode == EXIT_MODEL
    assert error_lines(res.stderr) == [
        line for line in error_lines(res.stderr) if "neither an ONNX model nor a TorchScript file" in line]
    assert not any((tmp_path / "out").iterdir())


def test_a_missing_input_fails_but_the_others_run_and_no_output_replaces_an_input(scene, tmp_path):
    res = run_cli(["infer", str(DESPECKLE), str(tmp_path / "missing.tif"), str(scene), "-o", str(tmp_path / "o/")])
    assert res.returncode == EXIT_FILE
    assert (tmp_path / "o" / "scene_despeckle.tif").is_file()
    clash = run_cli(["infer", str(DESPECKLE), str(scene), "-o", str(scene), "--overwrite"])
    assert clash.returncode == EXIT_USAGE
    assert [ln for ln in error_lines(clash.stderr) if "would replace its own input" in ln] == error_lines(clash.stderr)
    assert _read(scene)[0].shape == (200, 240)
