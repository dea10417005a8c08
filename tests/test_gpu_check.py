"""The prepared GPU check (``make gpu-check``) must work the day a GPU comes: it is run here on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the real check runs instead")
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines() == [
        "gpu_check: no CUDA GPU on this machine (torch sees none): nothing to measure"]


def test_every_step_runs_end_to_end_on_the_cpu(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run-cpu", "--size", "256", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "gpu_check_dry_run_cpu.json").read_text())
    assert {r["case"].split()[0] for r in res["roundtrips"]} == {"v1", "v2"}
    assert all(r["compress_mpx_s"] > 0 and r["decompress_mpx_s"] > 0 for r in res["roundtrips"])
    assert res["engine_vs_raw"]["ratio"] > 0
    assert res["profile"]["model + host-device copies s"] > 0
    assert res["cross_device"]["containers_identical"] is True
    assert res["oom"] == {"skipped": "needs CUDA"} and res["torchrun"] == {"skipped": "needs CUDA"}
