"""Fixtures for the torchrun tests: a tiny real checkpoint, a synthetic SAFE product, a launcher.

Ranks are real processes started by ``python -m torch.distributed.run`` (gloo on CPU), exactly as
users start them; each runs ``worker.py``. The scene is 1100 x 80 pixels with two polarisations:
three chunk rows, so 2 and 3 ranks each get a shard, small enough for two shared CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import random_checkpoint

from .safe_fixture import PRODUCT, build_safe, zip_safe

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"
LAUNCH_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def dist_model(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("dist-models") / "small.pt", latent_channels=32,
                             hyper_channels=16, model_id="test-small")


@pytest.fixture(scope="session")
def safe_product(tmp_path_factory) -> dict:
    """The product as a folder and as a zip, plus the measurement arrays written into it."""
    root = tmp_path_factory.mktemp("safe")
    arrays = build_safe(root)
    return {"folder": root / PRODUCT, "zip": zip_safe(root), "arrays": arrays}


def torchrun(nproc: int, *args: str, env: dict[str, str] | None = None,
             module: str | None = None) -> subprocess.CompletedProcess:
    """Run ``worker.py`` (or ``-m module``) on ``nproc`` local ranks; returns the finished process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SARCODEC_TEST_")}
    full_env.update({"PYTHONWARNINGS": "ignore", **(env or {})})
    target = ["-m", module] if module else [str(WORKER)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           *target, *args]
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
