"""Where the shipped resources (default model weights) live, in a checkout and in the plugin ZIP."""

from __future__ import annotations

import os
from pathlib import Path

#: The default model: codec v2 (block DCT with a learned context entropy model). The v1 network
#: (``sarcodec_v1.pt``) still ships so that files written with it keep decoding.
DEFAULT_MODEL_NAME = "sarcodec_v2.npz"
MODEL_ENV = "SARCODEC_MODEL"


def shipped_models_dir() -> Path:
    """``resources/models`` beside the engine.

    In a checkout the engine is ``engine/sarcodec`` and resources sit at the repository root; in the
    plugin ZIP the engine is bundled as ``<plugin>/ext/sarcodec`` with ``<plugin>/resources``.
    """
    here = Path(__file__).resolve().parent
    for root in (here.parents[1], here.parents[0], here.parents[2]):
        candidate = root / "resources" / "models"
        if (candidate / DEFAULT_MODEL_NAME).is_file():
            return candidate
    return here.parents[1] / "resources" / "models"


def default_model_path() -> Path:
    """The default model: ``$SARCODEC_MODEL``, else the shipped one."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    return shipped_models_dir() / DEFAULT_MODEL_NAME
