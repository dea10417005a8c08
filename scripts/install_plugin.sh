#!/usr/bin/env bash
# Deploys the QGIS plugin into a QGIS profile (default: "default"), enabled, with its dependencies
# resolvable from QGIS's system Python. Idempotent and fast; `make setup` calls it.
#
# The profile gets a symlink to build/qgis_plugin/sarcodec_plugin, a folder assembled here from symlinks
# (the plugin modules, metadata.txt, resources/) plus dependency_paths.txt naming the venv's
# site-packages (torch lives there) and engine/; the plugin appends those folders to sys.path at load.
# Edits to the plugin's modules are live; new modules need this script again (make setup runs it).
#
# Environment: QGIS_CUSTOM_CONFIG_PATH (QGIS's own override of the settings root),
#              SARCODEC_QGIS_PROFILE (profile name, default "default"), SARCODEC_VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd -P)"
NAME=sarcodec_plugin
VENV="${SARCODEC_VENV:-$REPO/.venv}"
CONFIG_ROOT="${QGIS_CUSTOM_CONFIG_PATH:-$HOME/.local/share/QGIS/QGIS3}"
PROFILE_DIR="$CONFIG_ROOT/profiles/${SARCODEC_QGIS_PROFILE:-default}"
PLUGINS_DIR="$PROFILE_DIR/python/plugins"
INI="$PROFILE_DIR/QGIS/QGIS3.ini"
ASSEMBLED="$REPO/build/qgis_plugin/$NAME"

# 1. Assemble the plugin folder: symlinks to the sources, so edits need no redeploy.
mkdir -p "$ASSEMBLED"
find "$ASSEMBLED" -maxdepth 1 -type l ! -exec test -e {} \; -delete  # drop links to removed modules
for src in "$REPO/$NAME"/*; do
  base="$(basename "$src")"
  [ "$base" = "__pycache__" ] && continue
  ln -sfn "$src" "$ASSEMBLED/$base"
done
ln -sfn "$REPO/metadata.txt" "$ASSEMBLED/metadata.txt"
ln -sfn "$REPO/resources" "$ASSEMBLED/resources"

# 2. Tell the plugin where torch and the engine live (appended to sys.path, never prepended).
paths="# Written by scripts/install_plugin.sh: folders the plugin appends to sys.path when QGIS loads it."
if [ -x "$VENV/bin/python" ]; then
  paths+=$'\n'"$("$VENV/bin/python" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"]) if p["platlib"] != p["purelib"] else None')"
else
  echo "install_plugin: warning: no venv at $VENV; torch must be importable by QGIS's own Python" >&2
fi
paths+=$'\n'"$REPO/engine"
if [ ! -f "$ASSEMBLED/dependency_paths.txt" ] || [ "$(cat "$ASSEMBLED/dependency_paths.txt")" != "$paths" ]; then
  printf '%s\n' "$paths" > "$ASSEMBLED/dependency_paths.txt.tmp"
  mv -f "$ASSEMBLED/dependency_paths.txt.tmp" "$ASSEMBLED/dependency_paths.txt"
fi

# 3. Deploy into the profile (replacing an older copy or link) and enable it in QGIS3.ini.
mkdir -p "$PLUGINS_DIR"
target="$PLUGINS_DIR/$NAME"
if [ -e "$target" ] && [ ! -L "$target" ]; then
  rm -rf "$target"
fi
if [ "$(readlink "$target" 2>/dev/null || true)" != "$ASSEMBLED" ]; then
  ln -sfn "$ASSEMBLED" "$target"
fi
mkdir -p "$(dirname "$INI")"
if ! grep -qx "$NAME=true" "$INI" 2>/dev/null; then
  # Qt without a display: render offscreen for this one call (no system file is changed for it)
  headless_qt=()
  if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
    headless_qt=(env QT_QPA_PLATFORM=offscreen)
  fi
  "${headless_qt[@]}" /usr/bin/python3 - "$INI" "$NAME" <<'PY'
import sys

from PyQt5.QtCore import QSettings

settings = QSettings(sys.argv[1], QSettings.IniFormat)
settings.setValue(f"PythonPlugins/{sys.argv[2]}", True)
settings.sync()
PY
fi
echo "install_plugin: $NAME deployed to $target (enabled in $INI)"
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
  echo "install_plugin: note: no display here; run qgis_process.bin (a Qt program) as" \
       "'QT_QPA_PLATFORM=offscreen qgis_process.bin ...' or under xvfb-run -a (see README, Headless qgis_process)"
fi
