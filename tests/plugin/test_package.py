"""``make package``'s ZIP: the layout "Install from ZIP" expects, and a working install from it alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAME = "sarcodec_plugin"


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / f"{NAME}.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "package_plugin.py"), "-o", str(out)], check=True,
                   capture_output=True, timeout=120)
    return out


def test_zip_layout(plugin_zip):
    names = set(zipfile.ZipFile(plugin_zip).namelist())
    assert {n.split("/")[0] for n in names} == {NAME}  # one top folder
    for required in ("metadata.txt", "__init__.py", "provider.py", "compress.py", "decompress.py",
                     "resources/icons/sarcodec.svg", "ext/sarcodec/__init__.py", "ext/sarcodec/codec/pipeline.py"):
        assert f"{NAME}/{required}" in names, required
    assert any(n.startswith(f"{NAME}/resources/models/") and n.endswith(".pt") for n in names)
    assert not any("__pycache__" in n or n.endswith((".pyc", "dependency_paths.txt")) for n in names)


def test_zip_is_reproducible(plugin_zip, tmp_path):
    again = tmp_path / "again.zip"
    subprocess.run([sys.executable, str(REPO / "scripts" / "package_plugin.py"), "-o", str(again)], check=True,
                   capture_output=True, timeout=120)
    assert again.read_bytes() == plugin_zip.read_bytes()


@pytest.mark.timeout(180)
def test_installed_from_zip_runs_with_its_bundled_engine(plugin_zip, tmp_path, write_geotiff):
    """Unzip into a fresh profile (what "Install from ZIP" does); only torch & co come from outside."""
    from tests.conftest import speckled_scene

    config = tmp_path / "config"
    plugins = config / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(plugin_zip).extractall(plugins)
    ini = config / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[PythonPlugins]\n{NAME}=true\n")
    src = write_geotiff(speckled_scene(128, 128), "z.tif")
    env = {
        "HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen",
        "QGIS_CUSTOM_CONFIG_PATH": str(config), "XDG_RUNTIME_DIR": str(tmp_path),
        "PYTHONPATH": sysconfig.get_paths()["purelib"],  # torch "installed into QGIS's Python"; no engine/
    }
    proc = subprocess.run(["/usr/bin/qgis_process.bin", "--json", "run", "sarcodec:compress", "--",
                           f"INPUT={src}", f"OUTPUT={tmp_path / 'z.npz'}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads(proc.stdout)["results"]["RATIO"] > 1
