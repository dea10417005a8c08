"""What the CLI asks of the engine before any file runs: the model, the version, the heavy imports.

The engine (torch for v1 models, the codec) is imported only when a command needs it, with signals
deferred (``sarcodec.interrupts``), so ``--help``, parsing and usage errors stay fast and a Ctrl-C
during the import still ends in exit 130 and one line. A model is loaded once before the first file
so that a missing or broken model is one exit 2 for the whole run, not one per input.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from sarcodec import __version__, interrupts
from sarcodec.errors import SarcodecError
from sarcodec.resources import MODEL_ENV

from .messages import PROG

#: The codec modules the commands call; importing them imports torch, the models and the device policy.
_ENGINE_MODULES = ("sarcodec.codec.encode", "sarcodec.codec.decode")


def import_engine() -> None:
    """Import the torch-based engine with signals deferred (``sarcodec.interrupts``); cheap once done."""
    if all(name in sys.modules for name in _ENGINE_MODULES):
        return
    with interrupts.deferred():
        import sarcodec.codec.decode  # noqa: F401 - imports torch, the model and the device policy
        import sarcodec.codec.encode  # noqa: F401


def default_model_path() -> Path:
    """The model used when ``--model`` is not given: ``$SARCODEC_MODEL``, else the shipped default.

    One resolver for every front end (``sarcodec.resources``); the path is returned even when the
    file is missing so the error message can name it.
    """
    from sarcodec.resources import default_model_path as engine_default

    return Path(engine_default()).expanduser()


@dataclass
class ModelSummary:
    """What the CLI needs to know about a checkpoint before starting work."""

    path: Path
    model_id: str
    n_qualities: int
    default_quality: int


def load_model_summary(path: str | Path) -> ModelSummary:
    """Load a model once to fail fast (exit 2) and to learn its quality range.

    Loading is cheap next to compressing a scene, and doing it before the first input means a
    missing or corrupt model is reported once, not once per input file. A v2 model (``.npz``) loads
    without torch; a v1 checkpoint imports it.
    """
    import_engine()  # torch (v1 models, the codec) is imported with signals deferred
    from sarcodec.codec import model_store

    model, path, _ = model_store.load(path)
    metadata = getattr(model, "metadata", {}) or {}
    n_qualities = int(getattr(model, "n_qualities", 1) or 1)
    model_id = str(metadata.get("model_id") or path.stem)
    return ModelSummary(path, model_id, n_qualities, min(model_store.default_quality(model), n_qualities))


def version_text() -> str:
    """``--version``: tool, default model and checkpoint hash; never fails on a missing model."""
    lines = [f"{PROG} {__version__}"]
    path = default_model_path()
    if not path.is_file():
        lines.append(f"default model: not found at {path} (install it, set ${MODEL_ENV} or pass --model)")
        return "\n".join(lines)
    try:
        summary = load_model_summary(path)
        lines.append(f"default model: {summary.model_id} (qualities 1..{summary.n_qualities}) at {path}")
    except SarcodecError as exc:
        lines.append(f"default model: unusable: {exc}")
    except Exception as exc:  # noqa: BLE001 - --version must always answer
        lines.append(f"default model: unusable: {type(exc).__name__}: {exc}")
    try:
        from sarcodec.codec.model_store import sha256_of

        lines.append(f"model sha256: {sha256_of(path)}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"checkpoint sha256: unavailable ({exc})")
    return "\n".join(lines)
