"""SIGINT and SIGTERM at random moments of a real ``python -m sarcodec`` run over an existing output.

The promise to users is that Ctrl-C, a job scheduler's SIGTERM or a closed terminal never costs them
the file they already had: afterwards the destination is byte-for-byte the previous file or the
complete new one, no ``.part``/spill file is left, and an interrupted run exits 130. The moments are
drawn from a seeded RNG over the whole run (model loading, tiling, entropy coding, the final
rename), so a failure is reproducible from its test id.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env, write_scene
from tests.conftest import speckled_scene
from tests.robustness.conftest import TEMP_MARKERS

pytestmark = pytest.mark.timeout(180)

RUNS_PER_SIGNAL = 3
PREVIOUS = b"the previous output, which must survive an interrupted run\n" * 50


def _handlers_installed(pid: int) -> bool:
    """Whether the child catches SIGINT and SIGTERM yet (``SigCgt`` in /proc): before that the
    interpreter is still starting and the default action applies, which writes nothing at all."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return all(caught & (1 << (s - 1)) for s in (signal.SIGINT, signal.SIGTERM))


def _start(args: list[str], tmpdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sarcodec", *args], env=cli_env(TMPDIR=str(tmpdir)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def workload(tmp_path_factory, tiny_model):
    """A scene, its container, and the reference outputs of uninterrupted runs (with their durations)."""
    folder = tmp_path_factory.mktemp("interrupt")
    private = folder / "tmp"
    private.mkdir()
    scene = write_scene(folder / "scene.tif", speckled_scene(512, 768, seed=12))
    os.environ["SARCODEC_MODEL"] = str(tiny_model)
    refs = {}
    for command, src, out in (("compress", scene, folder / "ref.npz"), ("decompress", folder / "ref.npz",
                                                                         folder / "ref.tif")):
        t0 = time.monotonic()
        proc = _start([command, str(src), "-q", "-o", str(out)], private)
        while not _handlers_installed(proc.pid) and proc.poll() is None:
            time.sleep(0.005)
        t_ready = time.monotonic() - t0
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        refs[command] = (src, out.read_bytes(), t_ready, time.monotonic() - t0)
    return folder, private, refs


@pytest.mark.parametrize("command", ["compress", "decompress"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_previous_or_complete_output(workload, command, signum, tmp_path):
    folder, private, refs = workload
    src, new_bytes, t_ready, t_total = refs[command]
    rng = random.Random(f"{command}-{int(signum)}")
    suffix = ".npz" if command == "compress" else ".tif"
    outcomes = []
    for run in range(RUNS_PER_SIGNAL):
        out_dir = tmp_path / f"run{run}"
        out_dir.mkdir()
        dest = out_dir / f"out{suffix}"
        dest.write_bytes(PREVIOUS)
        proc = _start([command, str(src), "-q", "--overwrite", "-o", str(dest)], private)
        while not _handlers_installed(proc.pid) and proc.poll() is None:
            time.sleep(0.005)
        # anywhere from "just started" to a little past the reference run's end (the rename race); the
        # first run lands in the first third, so a loaded machine (slower reference) still interrupts one
        delay = rng.uniform(0.0, (0.3 if run == 0 else 1.1) * max(t_total - t_ready, 0.1))
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        stderr = err.decode()
        content = dest.read_bytes()
        outcomes.append((round(delay, 2), proc.returncode))
        assert "Traceback" not in stderr, stderr
        assert proc.returncode in (0, 130), f"exit {proc.returncode} after {delay:.2f} s: {stderr}"
        if proc.returncode == 130:
            assert "interrupted" in stderr, stderr
            assert content in (PREVIOUS, new_bytes), f"partial output after an interrupt at {delay:.2f} s"
        else:
            assert content == new_bytes, f"exit 0 but the output differs from the reference ({delay:.2f} s)"
        left = [p.name for p in out_dir.iterdir() if p.name != dest.name]
        assert left == [], f"temporary files left after an interrupt at {delay:.2f} s: {left}"
        assert not [p for p in private.iterdir()], list(private.iterdir())
        assert not [p for p in folder.iterdir() if any(m in p.name for m in TEMP_MARKERS)]
    assert any(code == 130 for _, code in outcomes), f"no run was actually interrupted: {outcomes}"
