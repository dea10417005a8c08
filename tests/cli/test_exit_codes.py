"""Exit codes and one-line errors, seen from a real process as a shell script would see them.

Each failing case also checks that nothing was written: no output, no temporary file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sarcodec import cli
from sarcodec.errors import EXIT_CODES
from tests.cli.conftest import cli_env, error_lines, leftovers, run_cli, write_scene
from tests.conftest import speckled_scene


@pytest.fixture
def workdir(tmp_path) -> Path:
    write_scene(tmp_path / "good.tif", speckled_scene(96, 96, seed=11))
    (tmp_path / "text.tif").write_text("this is not a GeoTIFF\n")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp_path


def _truncated_container(folder: Path) -> None:
    assert cli.main(["compress", str(folder / "good.tif"), "-q", "--no-estimate"]) == 0
    data = (folder / "good.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(data[: len(data) // 2])
    (folder / "good.npz").unlink()


CASES = [
    # name, argv, expected exit code
    ("missing file", ["compress", "missing.tif"], 1),
    ("text file named .tif", ["compress", "text.tif"], 1),
    ("truncated npz", ["decompress", "truncated.npz"], 1),
    ("missing model", ["compress", "good.tif", "--model", "nowhere.pt"], 2),
    ("corrupt model", ["compress", "good.tif", "--model", "random.pt"], 2),
    ("quality beyond the model", ["compress", "good.tif", "--quality", "99"], 4),
    ("negative overlap", ["compress", "good.tif", "--overlap", "-1"], 4),
    ("unknown device", ["compress", "good.tif", "--device", "tpu"], 4),
    ("absent gpu", ["compress", "good.tif", "--device", "cuda:99"], 4),
    ("tile size not a multiple of 16", ["compress", "good.tif", "--tile-size", "100"], 4),
    ("bad batch size", ["decompress", "x.npz", "--batch-size", "0"], 4),
    ("unknown tiff compression", ["decompress", "x.npz", "--tiff-compress", "JPEG"], 4),
    ("bad crs", ["compress", "good.tif", "--crs", "EPSG:999999999"], 4),
    ("no command", [], 4),
    ("unknown option", ["compress", "good.tif", "--frobnicate"], 4),
    ("stdout to several inputs", ["compress", "good.tif", "text.tif", "-o", "-"], 4),
]


@pytest.mark.parametrize("name, argv, code", CASES, ids=[c[0] for c in CASES])
def test_exit_code_and_one_line(workdir, name, argv, code):
    if name == "truncated npz":
        _truncated_container(workdir)
    before = {p.name for p in workdir.iterdir()}
    result = run_cli(argv, cwd=workdir)
    assert result.returncode == code, result.stderr.decode()
    lines = error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("sarcodec: error: ")
    assert b"Traceback" not in result.stderr
    assert leftovers(workdir, before) == []


def test_existing_output_is_refused_without_overwrite(workdir):
    target = workdir / "good.npz"
    target.write_bytes(b"precious")
    result = run_cli(["compress", "good.tif"], cwd=workdir)
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "--overwrite" in lines[0]
    assert target.read_bytes() == b"precious"
    result = run_cli(["compress", "good.tif", "--overwrite", "-q"], cwd=workdir)
    assert result.returncode == 0, result.stderr.decode()
    assert target.read_bytes()[:2] == b"PK"


def test_several_inputs_one_bad_the_rest_still_run(workdir, capsys):
    write_scene(workdir / "second.tif", speckled_scene(64, 80, seed=12))
    out = workdir / "out"
    code = cli.main(["compress", str(workdir / "good.tif"), str(workdir / "text.tif"), str(workdir / "missing.tif"),
                     str(workdir / "second.tif"), "-o", str(out), "--no-estimate"])
    assert code == 1  # the first failure's code
    assert sorted(p.name for p in out.iterdir()) == ["good.npz", "second.npz"]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sarcodec: error: ")]
    assert len(errors) == 2 and "text.tif" in errors[0] and "missing.tif" in errors[1]


def test_first_failure_code_wins(workdir, capsys):
    missing, own_output = str(workdir / "missing.npz"), str(workdir / "good.tif")  # good.tif -> good.tif: usage
    assert cli.main(["decompress", missing, own_output]) == 1
    assert cli.main(["decompress", own_output, missing]) == 4
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sarcodec: error: ")]
    assert len(errors) == 4


def test_debug_shows_the_traceback(workdir, capsys):
    assert cli.main(["compress", str(workdir / "good.tif"), "--model", str(workdir / "random.pt"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("sarcodec: error: ")


def test_internal_errors_are_one_line_too(workdir, monkeypatch, capsys):
    from sarcodec.codec import raster_info

    def boom(*args, **kwargs):
        raise RuntimeError("unexpected\nmultiline")

    monkeypatch.setattr(raster_info, "inspect_raster", boom)
    assert cli.main(["compress", str(workdir / "good.tif")]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "RuntimeError" in lines[0] and "--debug" in lines[0]


def test_host_out_of_memory_is_exit_3(workdir, monkeypatch, capsys):
    from sarcodec.codec import encode

    def oom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(encode, "compress_raster", oom)
    assert cli.main(["compress", str(workdir / "good.tif")]) == 3


def test_help_has_examples_and_the_exit_code_table(capsys):
    for argv in (["--help"], ["compress", "--help"], ["decompress", "--help"], ["info", "--help"]):
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "examples:" in out and "exit codes:" in out
        for code, meaning in EXIT_CODES.items():
            assert f"{code:>3}  {meaning}" in out


def test_version_names_the_default_model_and_its_hash(default_model, capsys):
    from sarcodec.codec.model import checkpoint_sha256

    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sarcodec ") and "tiny-test" in out and checkpoint_sha256(default_model) in out


def test_version_survives_a_missing_or_corrupt_model(workdir):
    result = run_cli(["--version"], env=cli_env(SARCODEC_MODEL=str(workdir / "nowhere.pt")))
    assert result.returncode == 0 and b"not found" in result.stdout
    result = run_cli(["--version"], env=cli_env(SARCODEC_MODEL=str(workdir / "random.pt")))
    assert result.returncode == 0 and b"unusable" in result.stdout and b"sha256" in result.stdout


def test_every_offered_compression_and_dtype_is_one_the_engine_writes(workdir, capsys):
    """The choices in --help are the engine's own vocabulary: each one works end to end."""
    import rasterio

    from sarcodec.vocabulary import OUTPUT_DTYPES, TIFF_COMPRESSIONS

    npz = workdir / "v.npz"
    assert cli.main(["compress", str(workdir / "good.tif"), "-o", str(npz), "-q"]) == 0
    for comp in TIFF_COMPRESSIONS:
        out = workdir / f"c_{comp}.tif"
        assert cli.main(["decompress", str(npz), "-o", str(out), "--tiff-compress", comp.lower(), "-q"]) == 0
        with rasterio.open(out) as ds:
            assert ds.profile.get("compress", "none").upper() in ({comp} if comp != "NONE" else {"NONE"})
    for dtype in OUTPUT_DTYPES:
        out = workdir / f"d_{dtype}.tif"
        assert cli.main(["decompress", str(npz), "-o", str(out), "--output-dtype", dtype, "-q"]) == 0
        with rasterio.open(out) as ds:
            assert ds.dtypes[0] == dtype
