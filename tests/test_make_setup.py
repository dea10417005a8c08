"""``make setup`` (which ``make test`` and ``make demo`` run first) changes no system-wide shell files.

It used to append a ``QT_QPA_PLATFORM`` line to ``/etc/bash.bashrc`` and write
``/etc/profile.d/sarcodec-headless-qt.sh`` on a machine without a display, so that headless
``qgis_process`` would start: a test target must not edit system files. The project now sets the
variable where it calls QGIS itself (the Makefile, the tests), and the README tells users of
headless ``qgis_process`` what to set.

The script runs here as on such a machine (no display, variable unset), from a copy of the repository
layout whose ``.venv/bin/python`` installs nothing and whose QGIS settings root is a throwaway folder:
the shared venv and the user's QGIS profile stay as they are, whatever the setup stamp says.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WATCHED = (Path("/etc/bash.bashrc"), Path("/etc/profile.d"), Path("/etc/environment"))
# Hands everything to the system interpreter (setup's numpy check, install_plugin's sysconfig
# query) except ``-m pip``, which would install into the venv.
PYTHON_STUB = '#!/bin/sh\n[ "$1" = "-m" ] && [ "$2" = "pip" ] && exit 0\nexec /usr/bin/python3 "$@"\n'


def _snapshot() -> dict[str, tuple[int, int] | None]:
    state: dict[str, tuple[int, int] | None] = {}
    for path in WATCHED:
        entries = sorted(path.iterdir()) if path.is_dir() else [path]
        for entry in entries:
            try:
                st = entry.stat()
                state[str(entry)] = (st.st_mtime_ns, st.st_size)
            except OSError:
                state[str(entry)] = None
    return state


def _repository_copy(root: Path) -> Path:
    """The files setup.sh and install_plugin.sh read, with a venv whose pip does nothing."""
    (root / "scripts").mkdir(parents=True)
    for name in ("scripts/setup.sh", "scripts/install_plugin.sh", "pyproject.toml"):
        target = root / name
        target.write_bytes((REPO / name).read_bytes())
        target.chmod(0o755)
    for name in ("sarcodec_plugin", "metadata.txt", "resources", "engine"):
        (root / name).symlink_to(REPO / name)
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(PYTHON_STUB)
    python.chmod(0o755)
    return root


def test_setup_on_a_headless_machine_leaves_system_shell_files_alone(tmp_path):
    repo = _repository_copy(tmp_path / "repo")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(tmp_path / "qgis")
    before = _snapshot()
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert _snapshot() == before
    assert "QT_QPA_PLATFORM=offscreen" in output  # it says what to set instead
    assert (tmp_path / "qgis" / "profiles" / "default" / "python" / "plugins" / "sarcodec_plugin").is_symlink()
