"""Build dist/sarcodec_plugin.zip, installable with QGIS's "Install from ZIP", with the engine bundled.

Layout (one top folder, as the QGIS plugin installer expects)::

    sarcodec_plugin/
        metadata.txt            the repository's metadata.txt
        __init__.py ...         the plugin modules
        resources/icons/        icons
        resources/models/       shipped model files (training logs left out)
        ext/sarcodec/           the engine package; the plugin appends ext/ to sys.path

torch, numpy, rasterio and constriction are not bundled (hundreds of MB, platform wheels): the
algorithms name what to install when QGIS's Python lacks them. The archive is reproducible: sorted
entries with a fixed timestamp.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "sarcodec_plugin"
FIXED_TIME = (2024, 1, 1, 0, 0, 0)
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo", ".csv", ".log", ".part", ".tmp"}
SKIP_NAMES = {"dependency_paths.txt", ".DS_Store"}
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository", "tracker", "hasProcessingProvider", "category", "icon", "tags")


def files_under(root: Path) -> Iterator[Path]:
    """Regular files below ``root`` that belong in a release (no caches, logs or local config)."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file():
            continue
        if path.suffix in SKIP_SUFFIXES or path.name in SKIP_NAMES:
            continue
        yield path


def check_metadata(path: Path) -> str:
    """Refuse to package a metadata.txt that QGIS's installer would reject; returns the version."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep QGIS's camelCase keys
    parser.read(path, encoding="utf-8")
    missing = [key for key in REQUIRED_METADATA if not parser.get("general", key, fallback="").strip()]
    if missing:
        sys.exit(f"package: metadata.txt lacks {', '.join(missing)}")
    return parser.get("general", "version")


def entries(repo: Path) -> Iterator[tuple[str, Path]]:
    """(name in the archive, file on disk) for every file of the plugin."""
    yield f"{NAME}/metadata.txt", repo / "metadata.txt"
    for path in files_under(repo / NAME):
        yield f"{NAME}/{path.relative_to(repo / NAME).as_posix()}", path
    for path in files_under(repo / "resources"):
        yield f"{NAME}/resources/{path.relative_to(repo / 'resources').as_posix()}", path
    for path in files_under(repo / "engine" / "sarcodec"):
        yield f"{NAME}/ext/sarcodec/{path.relative_to(repo / 'engine' / 'sarcodec').as_posix()}", path
    if (repo / "LICENSE").is_file():
        yield f"{NAME}/LICENSE", repo / "LICENSE"


def build(output: Path, repo: Path = REPO) -> Path:
    """Write the ZIP atomically (temporary name, then rename) and return its path."""
    version = check_metadata(repo / "metadata.txt")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".part")
    count = 0
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, path in sorted(entries(repo)):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
            count += 1
    tmp.replace(output)
    print(f"package: {output} ({count} files, {output.stat().st_size / 1e6:.1f} MB, version {version})")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "dist" / f"{NAME}.zip")
    build(parser.parse_args().output)


if __name__ == "__main__":
    main()
