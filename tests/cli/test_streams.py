"""The standard streams as a shell leaves them: closed fds, FIFOs, odd file names, foreign warnings.

What a user notices: with ``-o -`` stdout is a valid container or GeoTIFF even when stderr is closed
(``2>&-``); a closed stdout or stdin is one error line and exit 1, not an internal error; a FIFO
(``mkfifo``, ``<(cmd)``) is read like stdin, and SIGTERM while waiting on it exits 130; every stderr
line starts with ``sarcodec:``, whatever rasterio, GDAL or Python warn about, and a newline in a
file name cannot split a line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import rasterio

from sarcodec import cli
from sarcodec.cli import info as info_command
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


def _wait_until(condition, proc: subprocess.Popen, what: str) -> None:
    """Poll a state the child itself reaches (never a guessed duration); fail if it ends or never gets there."""
    deadline = time.monotonic() + 120  # a bound on a hang, not a guess at when the child is ready
    while not condition():
        assert proc.poll() is None, f"the child ended before it {what}: {proc.communicate()[1].decode()}"
        assert time.monotonic() < deadline, f"the child never {what}"
        threading.Event().wait(0.01)


def _holds_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (read from /proc: the child's state, not a timing)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd) == str(path):
                return True
    return False


def _open_write_end(fifo: Path) -> int | None:
    """Our write end, or None while nobody reads the FIFO (non-blocking open for writing gives ENXIO)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None


def _assert_interrupted_cleanly(proc: subprocess.Popen, tmp_path: Path, private_tmp: Path) -> None:
    _out, err = proc.communicate(timeout=120)
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = _assert_sarcodec_lines(stderr)
    assert lines[-1].startswith("sarcodec: error: interrupted"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.pipe", "tmpdir"]
    assert list(private_tmp.iterdir()) == []


def _start_on_fifo(tmp_path: Path, private_tmp: Path) -> tuple[Path, subprocess.Popen]:
    fifo = tmp_path / "scene.pipe"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "sarcodec", "compress", str(fifo), "-o", str(tmp_path / "o.npz")],
                            env=cli_env(TMPDIR=str(private_tmp)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return fifo, proc


def test_sigterm_while_no_writer_has_opened_the_fifo_exits_130_without_traceback(tmp_path, private_tmp):
    # The child opens the FIFO itself and waits for a writer that never comes (a user who typed the
    # wrong name, or whose producer never started). It used to sit in open() where a SIGTERM that came
    # just before the call was lost; now it holds the FIFO open while it waits, and that is our cue.
    fifo, proc = _start_on_fifo(tmp_path, private_tmp)
    try:
        _wait_until(lambda: _holds_open(proc.pid, fifo), proc, "opened the FIFO")
        proc.send_signal(signal.SIGTERM)
        _assert_interrupted_cleanly(proc, tmp_path, private_tmp)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_while_a_fifo_writer_sends_nothing_exits_130_without_traceback(tmp_path, private_tmp):
    # bash's <(slow command): the writer is there, the data is not. Our write end opens only once
    # the child reads the FIFO, i.e. once it is waiting for data with everything else set up.
    fifo, proc = _start_on_fifo(tmp_path, private_tmp)
    write_end: list[int] = []

    def child_reads_the_fifo() -> bool:
        end = _open_write_end(fifo)
        if end is not None:
            write_end.append(end)  # kept open until the child is gone: closing it would mean "empty input"
        return end is not None

    try:
        _wait_until(child_reads_the_fifo, proc, "opened the FIFO for reading")
        proc.send_signal(signal.SIGTERM)
        _assert_interrupted_cleanly(proc, tmp_path, private_tmp)
    finally:
        if proc.poll() is None:
            proc.kill()
        for end in write_end:
            os.close(end)


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

    monkeypatch.setattr(info_command, "run_info", noisy_info)
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
