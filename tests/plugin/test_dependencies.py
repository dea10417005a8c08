"""The provider loads without torch (or the engine), and the algorithms then say what to install.

Each case runs in a fresh interpreter whose import system refuses the blocked packages, as on a QGIS
install that never had them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import speckled_scene

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib.abc, json, sys
blocked = set(sys.argv[1].split(","))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
sys.path.append(sys.argv[2])
if "sarcodec" not in blocked:
    sys.path.append(sys.argv[2] + "/engine")
sys.path.append("/usr/share/qgis/python/plugins")
from qgis.core import QgsApplication, QgsProcessingException
app = QgsApplication([], False)
app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing
import sarcodec_plugin
plugin = sarcodec_plugin.classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()
report = {"provider": registry.providerById("sarcodec") is not None,
          "algorithms": sorted(a.id() for a in registry.providerById("sarcodec").algorithms())}
report["can_execute"] = list(registry.algorithmById("sarcodec:compress").canExecute())
try:
    processing.run("sarcodec:compress", {"INPUT": sys.argv[3], "OUTPUT": sys.argv[4]})
    report["error"] = None
except QgsProcessingException as exc:
    report["error"] = str(exc)
report["torch_imported"] = "torch" in sys.modules
print("REPORT " + json.dumps(report))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("blocked", "named"),
    [("torch", ["torch", "pip install", "torch>=2.1"]), ("torch,rasterio,sarcodec", ["rasterio", "engine", "ZIP"])],
)
def test_provider_loads_and_algorithm_names_what_to_install(tmp_path, write_geotiff, blocked, named):
    src = write_geotiff(speckled_scene(64, 64), "small.tif")
    out = tmp_path / "small.npz"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, blocked, str(REPO), str(src), str(out)],
        capture_output=True, text=True, timeout=110, env=env, cwd=tmp_path,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, proc.stdout + proc.stderr
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["provider"]
    assert report["algorithms"] == ["sarcodec:compress", "sarcodec:decompress", "sarcodec:infer", "sarcodec:info"]
    assert report["can_execute"][0] is False
    message = report["error"]
    assert message and "\n" not in message and message == report["can_execute"][1]
    for word in named:
        assert word in message, message
    assert not report["torch_imported"]
    assert not out.exists()
