#!/usr/bin/env bash
# Installs everything sarcodec needs on Debian 12; idempotent and fast when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qgis python3-qgis qgis-providers python3-gdal python3-rasterio python3-matplotlib
              gdal-bin xvfb xauth libjxl-tools)
# onnxruntime 1.18 / onnx 1.16: the newest that accept Debian's numpy 1.24, which GDAL, rasterio and QGIS
# are built against (newer ones pull numpy 2 into the venv and break them). `sarcodec infer` runs ONNX.
PIP_PACKAGES=(torch==2.13.0 nvidia-ml-py rich constriction pytest pytest-qgis==2.1.0 pytest-timeout
              hypothesis ruff onnxruntime==1.18.1 onnx==1.16.2)
VENV=.venv
STAMP="$VENV/.setup-stamp"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV (with system site packages, so QGIS, GDAL and torch share one interpreter)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

want="$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  echo "setup: installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  # GDAL, rasterio and QGIS are compiled against Debian's numpy: a numpy in the venv would break them
  if ! "$VENV/bin/python" -c "import numpy, sys; sys.exit('dist-packages' not in numpy.__file__)"; then
    echo "setup: a package pulled its own numpy into $VENV; Debian's numpy must stay in use" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
fi

# Deploy the QGIS plugin into the default profile (issue 5) when its installer exists.
if [ -x scripts/install_plugin.sh ]; then
  scripts/install_plugin.sh
fi
