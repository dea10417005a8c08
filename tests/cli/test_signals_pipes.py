"""Real processes: stdin/stdout pipelines and interrupts (SIGINT, SIGTERM) leaving nothing behind."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sarcodec import cli
from sarcodec.cli import jobs
from sarcodec.codec.container import ContainerReader
from tests.cli.conftest import cli_env, error_lines, leftovers, run_cli, write_scene
from tests.cli.test_roundtrip import assert_nodata_preserved, assert_same_metadata
from tests.conftest import speckled_scene


@pytest.fixture
def private_tmp(tmp_path) -> Path:
    """TMPDIR for the child: stdin/stdout spools must be gone when it exits, whatever happened."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    return folder


def test_pipeline_through_stdin_and_stdout(rich_scene, tmp_path, private_tmp):
    py = shlex.quote(sys.executable)
    out = tmp_path / "b.tif"
    command = (f"set -o pipefail; cat {shlex.quote(str(rich_scene))} | {py} -m sarcodec compress - -o - "
               f"| {py} -m sarcodec decompress - -o {shlex.quote(str(out))}")
    result = subprocess.run(["bash", "-c", command], env=cli_env(TMPDIR=str(private_tmp)), capture_output=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    # The compressor's stdout is the data stream; only the decompressor's summary reaches ours.
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"<stdin> -> {out}: ")
    assert_same_metadata(rich_scene, out)
    assert_nodata_preserved(rich_scene, out)
    assert list(private_tmp.iterdir()) == []


def test_stdout_carries_only_the_container(small_scene, tmp_path, private_tmp):
    result = run_cli(["compress", "-", "-o", "-"], input=small_scene.read_bytes(),
                     env=cli_env(TMPDIR=str(private_tmp)))
    assert result.returncode == 0, result.stderr.decode()
    assert b"<stdin> -> <stdout>" in result.stderr  # the summary went to stderr
    (tmp_path / "piped.npz").write_bytes(result.stdout)
    with ContainerReader(tmp_path / "piped.npz") as reader:
        assert reader.header["shape"] == [1, 160, 200]
    assert list(private_tmp.iterdir()) == []


def test_errors_name_stdin_not_the_spool_file(tmp_path, private_tmp):
    result = run_cli(["decompress", "-", "-o", str(tmp_path / "x.tif")], input=b"not a container at all",
                     env=cli_env(TMPDIR=str(private_tmp)))
    assert result.returncode == 1
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "<stdin>" in lines[0] and str(private_tmp) not in lines[0]
    assert list(private_tmp.iterdir()) == []


def test_stdout_refuses_a_terminal_and_stdin_twice(small_scene, capsys, monkeypatch):
    assert cli.main(["compress", "-", "-", "-o", "x"]) == 4
    monkeypatch.setattr(jobs, "is_tty", lambda stream: True)
    assert cli.main(["compress", str(small_scene), "-o", "-"]) == 4
    assert "terminal" in capsys.readouterr().err


def _start(args: list[str], cwd: Path, tmpdir: Path, stdin=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sarcodec", *args], cwd=cwd, env=cli_env(TMPDIR=str(tmpdir)),
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _interrupt_when_running(proc: subprocess.Popen, sig: int) -> tuple[int, list[str]]:
    """Wait until the tiled run has started (its first message), then send ``sig``.

    Returns (exit code, stderr lines). The first message is the CPU warning or a progress line,
    both printed from inside the engine's run, so the signal lands mid-run: the run has a thousand
    tiles of batch size 1 still to go. No sleep: waiting longer only lets a fast machine finish first.
    """
    seen = []
    while True:
        line = proc.stderr.readline().decode()
        if not line:
            break
        seen.append(line.rstrip())
        if "%" in line or "warning" in line:
            break
    assert proc.poll() is None, f"finished before it could be interrupted: {seen}"
    proc.send_signal(sig)
    _out, rest = proc.communicate(timeout=60)
    return proc.returncode, seen + error_lines(rest)


@pytest.fixture
def big_scene(tmp_path) -> Path:
    return write_scene(tmp_path / "big.tif", speckled_scene(2048, 2048, seed=9))


def test_sigint_during_compress_leaves_the_previous_output_and_no_temp_files(big_scene, tmp_path, private_tmp):
    (tmp_path / "big.npz").write_bytes(b"previous output")
    proc = _start(["compress", "big.tif", "--overwrite", "--tile-size", "64", "--overlap", "16", "--batch-size", "1"],
                  tmp_path, private_tmp)
    code, lines = _interrupt_when_running(proc, signal.SIGINT)
    assert code == 130, lines
    assert lines[-1].startswith("sarcodec: error: interrupted")
    assert not any("Traceback" in line for line in lines)
    assert (tmp_path / "big.npz").read_bytes() == b"previous output"
    assert leftovers(tmp_path, {"big.tif", "big.npz", "tmpdir"}) == []
    assert list(private_tmp.iterdir()) == []


def test_sigterm_during_decompress_from_stdin_leaves_nothing(big_scene, tmp_path, private_tmp):
    assert cli.main(["compress", str(big_scene), "-q", "--no-estimate"]) == 0
    with open(tmp_path / "big.npz", "rb") as stdin:
        proc = _start(["decompress", "-", "-o", "out.tif", "--batch-size", "1"], tmp_path, private_tmp, stdin=stdin)
        code, lines = _interrupt_when_running(proc, signal.SIGTERM)
    assert code == 130, lines
    assert lines[-1].startswith("sarcodec: error: interrupted")
    assert leftovers(tmp_path, {"big.tif", "big.npz", "tmpdir"}) == []
    assert list(private_tmp.iterdir()) == []
