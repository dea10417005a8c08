"""Where the shipped resources (default model weights) live, in a checkout and in the plugin ZIP."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_NAME = "sarcodec_v1.pt"
MODEL_ENV = "SARCODEC_MODEL"


def default_model_path() -> Path:
    """The default checkpoint: ``$SARCODEC_MODEL``, else ``resources/models/`` beside the engine.

    In a checkout the engine is ``engine/sarcodec`` and resources sit at the repository root; in the
    plugin ZIP the engine is bundled as ``<plugin>/ext/sarcodec`` with ``<plugin>/resources``.
    """
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for root in (here.parents[1], here.parents[0], here.parents[2]):
        candidate = root / "resources" / "models" / DEFAULT_MODEL_NAME
        if candidate.is_file():
            return candidate
    return here.parents[1] / "resources" / "models" / DEFAULT_MODEL_NAME
