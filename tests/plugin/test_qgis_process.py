"""End to end through ``qgis_process.bin`` with the plugin deployed by ``scripts/install_plugin.sh``.

The plugin goes into a throwaway settings root (QGIS_CUSTOM_CONFIG_PATH, QGIS's own override) and
qgis_process runs with a minimal environment (no PYTHONPATH, no venv): the deployed plugin must find
torch and the engine by itself, exactly as after ``make setup``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.plugin.conftest import SIZE, files_in, read_band

REPO = Path(__file__).resolve().parents[2]
QGIS_PROCESS = "/usr/bin/qgis_process.bin"

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not Path(QGIS_PROCESS).exists(), reason="qgis_process.bin is not installed"),
]


@pytest.fixture(scope="module")
def qgis_env(tmp_path_factory) -> dict[str, str]:
    """A clean environment whose QGIS profile has the plugin deployed and enabled by install_plugin.sh."""
    config = tmp_path_factory.mktemp("qgis-config")
    env = {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": "/usr/bin:/bin",
        "QGIS_CUSTOM_CONFIG_PATH": str(config),
        "QT_QPA_PLATFORM": "offscreen",  # qgis_process is a Qt GUI app: it needs a display or this
        "XDG_RUNTIME_DIR": str(config),
    }
    subprocess.run([str(REPO / "scripts" / "install_plugin.sh")], check=True, env=env, capture_output=True, timeout=60)
    assert (config / "profiles" / "default" / "python" / "plugins" / "sarcodec_plugin" / "metadata.txt").exists()
    return env


def qgis_process(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([QGIS_PROCESS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=170)


def test_plugin_is_listed_as_loaded(qgis_env, tmp_path):
    proc = qgis_process(qgis_env, "plugins", cwd=tmp_path)
    assert "* sarcodec_plugin" in proc.stdout, proc.stdout + proc.stderr


def test_compress_and_decompress_with_json(qgis_env, scene_tif, tmp_path):
    assert scene_tif.parent == tmp_path  # relative paths, as typed in a shell
    proc = qgis_process(qgis_env, "--json", "run", "sarcodec:compress", "--", f"INPUT={scene_tif.name}", "OUTPUT=a.npz",
                        "QUALITY=2", "DEVICE=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    results = report["results"]
    assert Path(results["OUTPUT"]).name == "a.npz" and (tmp_path / "a.npz").stat().st_size > 0
    assert results["RATIO"] > 1 and results["BPP"] > 0
    assert any("ratio" in line for line in report["log"]["info"])

    proc = qgis_process(qgis_env, "--json", "run", "sarcodec:decompress", "--", "INPUT=a.npz", "OUTPUT=b.tif",
                        "TIFF_COMPRESS=DEFLATE", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert Path(json.loads(proc.stdout)["results"]["OUTPUT"]).name == "b.tif"
    assert read_band(tmp_path / "b.tif")[1]["shape"] == (SIZE, SIZE)


def test_bad_input_fails_with_one_line_and_no_output(qgis_env, tmp_path):
    (tmp_path / "text.tif").write_text("not a raster\n")
    before = files_in(tmp_path)
    proc = qgis_process(qgis_env, "run", "sarcodec:compress", "--", "INPUT=text.tif", "OUTPUT=t.npz", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Input is not a raster GDAL can read: text.tif" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert files_in(tmp_path) == before


def test_help_is_plain_text_and_enums_take_option_numbers(qgis_env, scene_tif, tmp_path):
    for alg in ("sarcodec:compress", "sarcodec:decompress", "sarcodec:info"):
        proc = qgis_process(qgis_env, "help", alg, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert not any(tag in proc.stdout for tag in ("<p>", "<b>", "<li>", "<code>")), proc.stdout[:2000]
    proc = qgis_process(qgis_env, "run", "sarcodec:compress", "--", f"INPUT={scene_tif.name}", "OUTPUT=n.npz",
                        "DEVICE=1", "ESTIMATE_QUALITY=0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("compress band 1/1:") == 1, proc.stdout  # each progress line once
    assert f"sarcodec compress {scene_tif.name} -o n.npz" in proc.stdout and "--device cpu" in proc.stdout
    assert "WARNING" not in proc.stdout + proc.stderr  # a CPU run is normal, not a warning
    proc = qgis_process(qgis_env, "run", "sarcodec:decompress", "--", "INPUT=n.npz", "OUTPUT=n.tif",
                        "TIFF_COMPRESS=2", "OUTPUT_DTYPE=3", "DEVICE=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    import rasterio

    with rasterio.open(tmp_path / "n.tif") as ds:
        assert ds.dtypes[0] == "int16" and ds.profile["compress"].upper() == "ZSTD"


def test_sigterm_leaves_no_temporary_files(qgis_env, write_geotiff, tmp_path):
    """Batch schedulers, `timeout` and systemd stop qgis_process with SIGTERM: nothing may be left behind."""
    import signal
    import time

    from tests.conftest import speckled_scene

    write_geotiff(speckled_scene(2048, 2048, seed=9), "big.tif")
    before = files_in(tmp_path)
    proc = subprocess.Popen([QGIS_PROCESS, "run", "sarcodec:compress", "--", "INPUT=big.tif", "OUTPUT=big.npz",
                             "DEVICE=cpu"], env=qgis_env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 150
        # wait until the engine is writing its hidden temporary file: the signal then lands mid-write
        # (QGIS may write big.tif.aux.xml first: that is not the cue)
        def hidden_files() -> list[str]:
            return [name for name in files_in(tmp_path) - before if Path(name).name.startswith(".")]

        while not hidden_files() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it started writing: the test proves nothing"
        assert hidden_files()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, out[-2000:]
    assert "Stopped by SIGTERM: no output was written." in out, out[-2000:]
    assert files_in(tmp_path) - before <= {"big.tif.aux.xml"}, sorted(files_in(tmp_path) - before)
