"""A real QGIS desktop under Xvfb: the compress dialog (with its CRS prompt) and the decompressed layer.

The plugin is deployed by ``scripts/install_plugin.sh`` into a throwaway profiles folder, QGIS starts
with ``--code tests/plugin/desktop_script.py``, which drives the dialogs and writes a JSON report;
screenshots land in ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import speckled_scene

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
SCRIPT = Path(__file__).with_name("desktop_script.py")


@pytest.mark.qgis_desktop
@pytest.mark.timeout(100)
def test_compress_dialog_prompts_for_crs_and_result_layer_loads(tmp_path, write_geotiff):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (apt install xvfb xauth): no display for the QGIS desktop")
    if shutil.which("qgis") is None:
        pytest.skip("the QGIS desktop (apt install qgis) is not installed")
    write_geotiff(speckled_scene(256, 256, seed=5), "nocrs.tif", crs=None)
    profiles = tmp_path / "profiles-root"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": "/usr/bin:/bin",
        "QGIS_CUSTOM_CONFIG_PATH": str(profiles),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "SARCODEC_DESKTOP_WORK": str(tmp_path),
        "SARCODEC_DESKTOP_ARTIFACTS": str(ARTIFACTS),
    }
    subprocess.run([str(REPO / "scripts" / "install_plugin.sh")], check=True, env=env, capture_output=True, timeout=60)
    proc = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", "qgis", "--profiles-path", str(profiles), "--nologo",
         "--noversioncheck", "--code", str(SCRIPT)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )
    report_file = tmp_path / "report.json"
    assert report_file.exists(), f"QGIS exited ({proc.returncode}) without a report:\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(report_file.read_text())
    assert report["error"] is None, report["error"]
    assert report["plugin_loaded"] and report["provider"]
    assert not report["input_layer_crs_valid"] and report["crs_prompted"]
    assert report["compress_ok"] and report["compress_results"]["RATIO"] > 1
    assert report["decompress_ok"]
    restored = [lyr for lyr in report["project_layers"] if lyr["source"] == str(tmp_path / "restored.tif")]
    assert restored, report["project_layers"]
    assert restored[0]["renderer"] == "singlebandgray" and restored[0]["crs"] == "EPSG:32630"
    for name in ("compress_dialog.png", "crs_prompt.png", "qgis_with_restored_layer.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
