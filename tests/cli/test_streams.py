"""The standard streams as a shell leaves them: closed fds, FIFOs, odd file names, foreign warnings.

What a user notices: with ``-o -`` stdout is a valid container or GeoTIFF even when stderr is closed
(``2>&-``); a closed stdout or stdin is one error line and exit 1, not an internal error; a FIFO
(``mkfifo``, ``<(cmd)``) is read like stdin, and SIGTERM while waiting on it exits 130; every stderr
line starts with ``sarcodec:``, whatever rasterio, GDAL or Python warn about, and a newline in a
file name cannot split a line.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import rasterio

from sarcodec import cli
from sarcodec.codec.container import ContainerReader
from tests.cli.conftest import cli_env, error_lines, run_cli, write_scene
from tests.conftest import speckled_scene

pytestmark = pytest.mark.timeout(300)

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
ZIP_MAGIC = b"PK\x03\x04"


@pytest.fixture
def private_tmp(tmp_path) -> Path:
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    return folder


def _shell(command: str, tmpdir: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` in bash, with ``$SARCODEC`` the CLI: redirections such as ``2>&-`` are the shell's."""
    sarcodec = f"{shlex.quote(sys.executable)} -m sarcodec"
    return subprocess.run(["bash", "-c", command.replace("$SARCODEC", sarcodec)], cwd=cwd, capture_output=True,
                          env=cli_env(TMPDIR=str(tmpdir)), timeout=240)


def _assert_sarcodec_lines(stderr: str | bytes) -> list[str]:
    lines = error_lines(stderr)
    assert all(line.startswith("sarcodec: ") for line in lines), lines
    return lines


# -- item 5: with -o - and stderr closed, stdout is the data and nothing else ----------------------


def test_closed_stderr_leaves_stdout_a_valid_container_and_geotiff(small_scene, tmp_path, private_tmp):
    # Not -q: progress lines and the CPU notice are exactly what used to leak into stdout.
    compressed = _shell(f"$SARCODEC compress {shlex.quote(str(small_scene))} -o - 2>&-", private_tmp, tmp_path)
    assert compressed.returncode == 0
    assert compressed.stdout.startswith(ZIP_MAGIC), compressed.stdout[:80]
    (tmp_path / "piped.npz").write_bytes(compressed.stdout)
    with ContainerReader(tmp_path / "piped.npz") as reader:
        assert reader.header["shape"] == [1, 160, 200]

    decompressed = _shell("$SARCODEC decompress piped.npz -o - 2>&-", private_tmp, tmp_path)
    assert decompressed.returncode == 0
    assert decompressed.stdout[:4] in TIFF_MAGIC, decompressed.stdout[:80]
    (tmp_path / "piped.tif").write_bytes(decompressed.stdout)
    with rasterio.open(tmp_path / "piped.tif") as ds:
        assert (ds.width, ds.height, ds.count) == (200, 160, 1)
    assert list(private_tmp.iterdir()) == []


# -- item 11 (closed stdout) and its sibling, closed stdin -----------------------------------------


def test_closed_stdout_with_dash_o_is_one_error_line_and_exit_1(small_scene, tmp_path, private_tmp):
    result = _shell(f"$SARCODEC compress {shlex.quote(str(small_scene))} -o - >&-", private_tmp, tmp_path)
    assert result.returncode == 1, result.stderr.decode()
    lines = _assert_sarcodec_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("sarcodec: error: ") and "standard output is closed" in lines[0]
    assert "internal error" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.tif", "tmpdir"]
    assert list(private_tmp.iterdir()) == []


def test_closed_stdin_with_dash_is_one_error_line_and_exit_1(tmp_path, private_tmp):
    result = _shell("$SARCODEC decompress - -o out.tif <&-", private_tmp, tmp_path)
    assert result.returncode == 1, result.stderr.decode()
    lines = _assert_sarcodec_lines(result.stderr)
    assert len(lines) == 1 and "standard input is closed" in lines[0], lines
    assert not (tmp_path / "out.tif").exists()


# -- item 10: FIFOs are spooled like stdin ---------------------------------------------------------


def test_a_fifo_input_is_read_like_stdin(small_scene, tmp_path, private_tmp):
    fifo = tmp_path / "scene.pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(small_scene.read_bytes()), daemon=True)
    writer.start()
    result = run_cli(["compress", str(fifo), "-q", "--no-estimate", "-o", str(tmp_path / "out.npz")],
                     env=cli_env(TMPDIR=str(private_tmp)))
    writer.join(timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    with ContainerReader(tmp_path / "out.npz") as reader:
        assert reader.header["shape"] == [1, 160, 200]
    assert list(private_tmp.iterdir()) == []


def _wait_for_reader(fifo: Path, proc: subprocess.Popen) -> int:
    """Block until ``proc`` has the FIFO open for reading; returns our (write) end.

    Opening a FIFO for writing without blocking fails with ENXIO while no reader has it open, so
    this is the exact moment the child starts waiting for data: no sleeps, no timing.
    """
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert proc.poll() is None, proc.communicate()[1].decode()
            threading.Event().wait(0.01)


def test_sigterm_while_waiting_on_a_fifo_exits_130_without_traceback(tmp_path, private_tmp):
    fifo = tmp_path / "scene.pipe"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "sarcodec", "compress", str(fifo), "-o", str(tmp_path / "o.npz")],
                            env=cli_env(TMPDIR=str(private_tmp)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    write_end = _wait_for_reader(fifo, proc)
    try:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        os.close(write_end)
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = _assert_sarcodec_lines(stderr)
    assert lines[-1].startswith("sarcodec: error: interrupted"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.pipe", "tmpdir"]
    assert list(private_tmp.iterdir()) == []


# -- item 14: every stderr line starts with sarcodec:, names escaped -------------------------------


def test_no_raw_python_warning_for_a_raster_without_geotransform(tmp_path, private_tmp):
    # rasterio warns NotGeoreferencedWarning (two lines, with a source path) for such a file, as for
    # every GCP-only Sentinel-1 scene; the CLI's own "no valid CRS" warning already says it.
    scene = tmp_path / "plain.tif"
    data = speckled_scene(64, 96, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(scene, "w", driver="GTiff", width=96, height=64, count=1, dtype=data.dtype) as ds:
            ds.write(data[None])
    result = run_cli(["compress", str(scene), "--no-estimate", "-o", str(tmp_path / "p.npz")],
                     env=cli_env(TMPDIR=str(private_tmp)))
    assert result.returncode == 0, result.stderr.decode()
    lines = _assert_sarcodec_lines(result.stderr)
    assert not any("NotGeoreferencedWarning" in line or "identity matrix" in line for line in lines), lines
    assert any("no valid CRS" in line for line in lines), lines


def test_python_warnings_and_gdal_messages_become_one_sarcodec_line_each(monkeypatch, capsys):
    def noisy_info(args, cancel):
        warnings.warn("a warning\nover two lines", UserWarning, stacklevel=1)
        logging.getLogger("rasterio._env").warning("CPLE_AppDefined in TIFFReadDirectory: odd tag")
        return 0

    monkeypatch.setattr(cli, "run_info", noisy_info)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["info", "whatever.npz"]) == 0
    lines = error_lines(capsys.readouterr().err)
    assert lines == ["sarcodec: warning: a warning over two lines",
                     "sarcodec: warning: CPLE_AppDefined in TIFFReadDirectory: odd tag"], lines


def test_a_newline_in_a_file_name_is_escaped_in_every_line(tmp_path, private_tmp):
    scene = write_scene(tmp_path / "two\nlines.tif", speckled_scene(64, 96, seed=8), crs=None)
    out = tmp_path / "out\tput.npz"
    result = run_cli(["compress", str(scene), "--no-estimate", "-o", str(out)], env=cli_env(TMPDIR=str(private_tmp)))
    assert result.returncode == 0, result.stderr.decode()
    lines = _assert_sarcodec_lines(result.stderr)
    escaped = str(scene).replace("\n", "\\n")
    assert any(escaped in line and "%" in line for line in lines), lines  # a progress line
    assert any(escaped in line and "no valid CRS" in line for line in lines), lines
    summary = result.stdout.decode().splitlines()
    escaped_out = str(out).replace("\t", "\\t")
    assert len(summary) == 1 and summary[0].startswith(f"{escaped} -> {escaped_out}: "), summary

    missing = run_cli(["decompress", str(tmp_path / "no\nsuch.npz")], env=cli_env(TMPDIR=str(private_tmp)))
    assert missing.returncode == 1
    lines = _assert_sarcodec_lines(missing.stderr)
    assert len(lines) == 1 and "no\\nsuch.npz" in lines[0], lines


def test_the_start_up_exit_code_matches_the_documented_one():
    code = ("import sarcodec.__main__ as m, sarcodec.errors as e; "
            "assert m.EXIT_INTERRUPTED == e.EXIT_INTERRUPTED, (m.EXIT_INTERRUPTED, e.EXIT_INTERRUPTED)")
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
