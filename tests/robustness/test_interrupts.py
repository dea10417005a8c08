"""SIGINT and SIGTERM at well-defined moments of a real ``python -m sarcodec`` run over an existing output.

The promise to users is that Ctrl-C, a job scheduler's SIGTERM or a closed terminal never costs them
the file they already had: afterwards the destination is byte-for-byte the previous file or the
complete new one, no ``.part``/spill file is left, and an interrupted run exits 130.

The moments are announced by the child itself, never guessed from timings (CI is a loaded 2-core
machine where durations mean nothing):

- ``start-up``: libtorch appears in the child's memory map, i.e. torch is being imported (a
  ``KeyboardInterrupt`` raised inside a pybind11 call there used to abort the process with a C++
  message). The input is a FIFO the test writes nothing into, so the run cannot finish before the
  signal: exit 130 and the previous file are certain;
- ``first-progress``: the first progress line on stderr (the tiled run is under way);
- ``last-progress``: the last progress line of an uninterrupted reference run (entropy coding or
  the GeoTIFF write is done; the rename is next), where either outcome is legitimate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env, write_scene
from tests.conftest import speckled_scene
from tests.robustness.conftest import TEMP_MARKERS

pytestmark = pytest.mark.timeout(300)

PREVIOUS = b"the previous output, which must survive an interrupted run\n" * 50
MOMENTS = ("start-up", "first-progress", "last-progress")


def _start(args: list[str], tmpdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sarcodec", *args], env=cli_env(TMPDIR=str(tmpdir)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _is_progress(line: bytes) -> bool:
    return b"%" in line and b"warning" not in line


def _torch_loading(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def workload(tmp_path_factory, tiny_model):
    """A scene, its container, and for each command the bytes and progress-line count of a clean run."""
    folder = tmp_path_factory.mktemp("interrupt")
    private = folder / "tmp"
    private.mkdir()
    scene = write_scene(folder / "scene.tif", speckled_scene(512, 768, seed=12))
    previous = os.environ.get("SARCODEC_MODEL")
    os.environ["SARCODEC_MODEL"] = str(tiny_model)  # module scope: monkeypatch is per test
    try:
        refs = {}
        for command, src, out in (("compress", scene, folder / "ref.npz"),
                                  ("decompress", folder / "ref.npz", folder / "ref.tif")):
            proc = _start([command, str(src), "-o", str(out)], private)
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err.decode()
            progress_lines = sum(1 for line in err.splitlines() if _is_progress(line))
            assert progress_lines >= 2, err.decode()  # the moments below need a first and a last one
            refs[command] = (src, out.read_bytes(), progress_lines)
        yield folder, private, refs
    finally:  # later test modules must see the environment they started with
        if previous is None:
            os.environ.pop("SARCODEC_MODEL", None)
        else:
            os.environ["SARCODEC_MODEL"] = previous


def _wait_for_torch_then_signal(proc: subprocess.Popen, signum: int, fifo: Path) -> int | None:
    """Signal as soon as torch is being imported (or, at the latest, once the child waits on its FIFO).

    Returns our write end of the FIFO when the child had opened it (closed by the caller once the
    child is gone: closing it earlier would hand the child an empty input instead of a signal).
    """
    write_end = None
    while proc.poll() is None and not _torch_loading(proc.pid):
        try:
            write_end = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until the child reads it
            break
        except OSError:
            time.sleep(0.002)
    assert proc.poll() is None, "the child ended before it was signalled"
    proc.send_signal(signum)
    return write_end


def _wait_for_progress_then_signal(proc: subprocess.Popen, signum: int, nth: int) -> None:
    """Read stderr until the ``nth`` progress line (1-based), then signal if the child still runs."""
    seen = 0
    for line in proc.stderr:
        if _is_progress(line):
            seen += 1
            if seen == nth:
                break
    if proc.poll() is None:
        proc.send_signal(signum)


@pytest.mark.parametrize("command", ["compress", "decompress"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_previous_or_complete_output(workload, command, signum, tmp_path):
    folder, private, refs = workload
    src, new_bytes, progress_lines = refs[command]
    suffix = ".npz" if command == "compress" else ".tif"
    outcomes = {}
    for moment in MOMENTS:
        out_dir = tmp_path / moment
        out_dir.mkdir()
        dest = out_dir / f"out{suffix}"
        dest.write_bytes(PREVIOUS)
        fifo, write_end = None, None
        if moment == "start-up":
            fifo = tmp_path / f"{moment}.pipe"  # never written: the run waits on it after loading torch
            os.mkfifo(fifo)
            proc = _start([command, str(fifo), "--overwrite", "-o", str(dest)], private)
            write_end = _wait_for_torch_then_signal(proc, signum, fifo)
        else:
            proc = _start([command, str(src), "--overwrite", "-o", str(dest)], private)
            _wait_for_progress_then_signal(proc, signum, 1 if moment == "first-progress" else progress_lines)
        try:
            _, err = proc.communicate(timeout=240)
        finally:
            if fifo is not None and write_end is not None:
                os.close(write_end)
        stderr = err.decode(errors="replace")
        content = dest.read_bytes()
        outcomes[moment] = proc.returncode
        assert "Traceback" not in stderr and "terminate called" not in stderr, stderr
        assert proc.returncode in (0, 130), f"exit {proc.returncode} at {moment}: {stderr}"
        if moment == "start-up":
            assert proc.returncode == 130 and content == PREVIOUS, f"{moment}: exit {proc.returncode}: {stderr}"
        if proc.returncode == 130:
            assert "sarcodec: error: interrupted" in stderr, stderr
            assert content in (PREVIOUS, new_bytes), f"partial output after an interrupt at {moment}"
        else:
            assert content == new_bytes, f"exit 0 but the output differs from the reference ({moment})"
        left = [p.name for p in out_dir.iterdir() if p.name != dest.name]
        assert left == [], f"temporary files left after an interrupt at {moment}: {left}"
        assert not [p for p in private.iterdir()], list(private.iterdir())
        assert not [p for p in folder.iterdir() if any(m in p.name for m in TEMP_MARKERS)]
        if fifo is not None:
            fifo.unlink()
    assert outcomes["start-up"] == 130, outcomes


# A SIGTERM sent from inside torch's import, just before its pybind11 extension loads: the exact
# moment is the import system's, not a timer's. The CLI must hold it until torch is imported (an
# exception raised in there can reach a C++ noexcept frame and abort the process), then exit 130.
_SIGNAL_INSIDE_TORCH_IMPORT = """
import importlib.abc, os, signal, sys
from sarcodec import cli

class SignalOnTorchC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch._C":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.{signame})
        return None

sys.meta_path.insert(0, SignalOnTorchC())
code = cli.main(sys.argv[1:])
torch = sys.modules.get("torch")
print("torch imported completely:", torch is not None and hasattr(torch, "nn"), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_inside_the_torch_import_exits_130_after_the_import(workload, signame, tmp_path):
    folder, private, refs = workload
    src = refs["compress"][0]
    dest = tmp_path / "out.npz"
    dest.write_bytes(PREVIOUS)
    script = _SIGNAL_INSIDE_TORCH_IMPORT.replace("{signame}", signame)
    result = subprocess.run([sys.executable, "-c", script, "compress", str(src), "--overwrite", "-o", str(dest)],
                            env=cli_env(TMPDIR=str(private)), capture_output=True, timeout=240)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 130, stderr
    assert "Traceback" not in stderr and "terminate called" not in stderr, stderr
    assert "torch imported completely: True" in stderr, stderr
    assert "sarcodec: error: interrupted" in stderr, stderr
    assert dest.read_bytes() == PREVIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]
    assert not [p for p in private.iterdir()], list(private.iterdir())


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_before_main_starts_exits_130_with_one_line(signame):
    """Between the interpreter's start and ``main``'s handlers (the imports of ``python -m sarcodec``)."""
    script = ("import os, signal, time; import sarcodec.__main__; "
              f"os.kill(os.getpid(), signal.{signame}); time.sleep(60); print('not interrupted')")
    result = subprocess.run([sys.executable, "-c", script], env=cli_env(), capture_output=True, timeout=120)
    assert result.returncode == 130, result.stderr.decode()
    assert result.stderr.decode().splitlines() == ["sarcodec: error: interrupted during start-up; nothing was written"]
    assert result.stdout == b""
