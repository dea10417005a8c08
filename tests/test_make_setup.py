"""``make setup`` (which ``make test`` and ``make demo`` run first) changes no system-wide shell files.

It used to append a ``QT_QPA_PLATFORM`` line to ``/etc/bash.bashrc`` and write
``/etc/profile.d/sarcodec-headless-qt.sh`` on a machine without a display, so that headless
``qgis_process`` would start: a test target must not edit system files. The project now sets the
variable where it calls QGIS itself (the Makefile, the tests), and the README tells users of
headless ``qgis_process`` what to set. Run here as on such a machine: no display, variable unset.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WATCHED = (Path("/etc/bash.bashrc"), Path("/etc/profile.d"), Path("/etc/environment"))


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


def test_setup_on_a_headless_machine_leaves_system_shell_files_alone():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    before = _snapshot()
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert _snapshot() == before
    assert not Path("/etc/profile.d/sarcodec-headless-qt.sh").exists() or \
        "/etc/profile.d/sarcodec-headless-qt.sh" in before  # only an older version's leftover may be there
    assert "QT_QPA_PLATFORM=offscreen" in result.stdout + result.stderr  # it says what to set instead
