"""Where the engine and its dependencies come from, and what to tell the user when one is missing.

QGIS runs its own Python (the system one on Linux), which usually lacks torch. Three sources are
tried, in order, without importing anything heavy:

1. the interpreter's own ``sys.path`` (packages installed into QGIS's Python);
2. ``ext/`` inside the plugin folder, where ``make package`` bundles the ``sarcodec`` engine;
3. ``dependency_paths.txt`` beside this module, written by ``scripts/install_plugin.sh``: one folder a
   line (the development venv's site-packages and the repository's ``engine/``).

Paths are appended, never prepended, so QGIS's own numpy and GDAL always win over a venv's copies.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).parent  # not resolved: the deployed folder may be a symlink farm
PATHS_FILE = PLUGIN_DIR / "dependency_paths.txt"
BUNDLED_DIR = PLUGIN_DIR / "ext"

# import name -> (pip requirement, why the plugin needs it)
DEPENDENCIES: dict[str, tuple[str, str]] = {
    "numpy": ("numpy", "arrays"),
    "rasterio": ("rasterio>=1.3", "GeoTIFF reading and writing"),
    "torch": ("torch>=2.1", "the neural codec"),
    "constriction": ("constriction>=0.3", "entropy coding"),
    "sarcodec": ("sarcodec", "the sarcodec engine"),
}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def dependency_paths(paths_file: Path = PATHS_FILE) -> list[str]:
    """Folders listed in the generated paths file (comments and missing folders skipped)."""
    if not paths_file.is_file():
        return []
    folders = []
    for line in paths_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and Path(line).is_dir():
            folders.append(line)
    return folders


def add_dependency_paths() -> list[str]:
    """Make the bundled engine and the configured folders importable; returns the folders added."""
    candidates = ([str(BUNDLED_DIR)] if (BUNDLED_DIR / "sarcodec").is_dir() else []) + dependency_paths()
    added = []
    for folder in candidates:
        if folder not in sys.path:
            sys.path.append(folder)
            added.append(folder)
    if added:
        importlib.invalidate_caches()
    return added


def is_importable(name: str) -> bool:
    """True when ``name`` can be imported, found without importing it (torch takes seconds)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_dependencies() -> list[str]:
    """Import names of the engine's dependencies that this Python cannot find."""
    return [name for name in DEPENDENCIES if not is_importable(name)]


def install_hint(missing: list[str]) -> str:
    """One line naming exactly what to install, and the command that installs it for QGIS's Python."""
    python = "python" if os.name == "nt" else "python3"  # sys.executable is the QGIS binary inside QGIS
    # double quotes keep ">=" from becoming a redirection, in POSIX shells and in cmd alike
    wanted = [f'"{DEPENDENCIES[name][0]}"' if ">" in DEPENDENCIES[name][0] else DEPENDENCIES[name][0]
              for name in missing if name != "sarcodec"]
    parts = [
        "The SAR codec needs Python packages that QGIS's Python cannot import: "
        + ", ".join(f"{name} ({DEPENDENCIES[name][1]})" for name in missing)
        + "."
    ]
    if wanted:
        index = f" --extra-index-url {TORCH_CPU_INDEX}" if "torch" in missing else ""
        shell = " in the OSGeo4W Shell" if os.name == "nt" else ""
        pep668 = "" if os.name == "nt" else " (add --break-system-packages on Debian 12 and other managed Pythons)"
        parts.append(f"Install them{shell} with: {python} -m pip install --user {' '.join(wanted)}{index}{pep668}.")
    if "rasterio" in missing and os.name != "nt":
        parts.append("On Debian/Ubuntu rasterio and numpy also come from apt: apt install python3-rasterio.")
    if "sarcodec" in missing:
        parts.append(
            "The engine itself is missing: reinstall the plugin from its ZIP (it bundles the engine in ext/) "
            "or run `make setup` in a sarcodec checkout."
        )
    else:
        parts.append("In a sarcodec checkout, `make setup` does this for you.")
    return " ".join(parts)
