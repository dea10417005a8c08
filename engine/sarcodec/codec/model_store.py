"""Where models are found, and which codec each one belongs to.

A container names the model it was written with by SHA-256, so ``decompress`` finds that model
itself, whichever is the default today: v1 files keep decoding after v2 became the default, and a
user's own models work once they are in a model folder. Folders searched, in order:

0. the model ``$SARCODEC_MODEL`` names, if set (the default model of compress),
1. every folder in ``$SARCODEC_MODEL_PATH`` (``os.pathsep``-separated),
2. the user folder ``$XDG_DATA_HOME/sarcodec/models`` (``~/.local/share/sarcodec/models``),
3. the shipped ``resources/models/`` (beside the engine in a checkout or in the plugin ZIP).

Model kinds: a ``.pt`` PyTorch checkpoint is the v1 hyperprior network (loaded with
``weights_only=True``); a ``.npz`` is a v2 block-DCT model (numpy tables, ``allow_pickle=False``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sarcodec.errors import ModelError
from sarcodec.resources import MODEL_ENV, default_model_path, shipped_models_dir
from sarcodec.vocabulary import CODEC_V1, CODEC_V2

MODEL_PATH_ENV = "SARCODEC_MODEL_PATH"
MODEL_SUFFIXES = (".pt", ".npz")


def search_dirs() -> list[Path]:
    """The model folders, in search order (see the module docstring)."""
    dirs = [Path(p).expanduser() for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep) if p]
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    dirs.append(Path(data_home) / "sarcodec" / "models")
    dirs.append(shipped_models_dir())
    return dirs


def codec_of_file(path: str | Path) -> str:
    """The codec a model file belongs to, from its content (not its name)."""
    from sarcodec.codec.dct_model import is_dct_model

    return CODEC_V2 if is_dct_model(path) else CODEC_V1


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, _mtime: int, _size: int) -> str:
    from sarcodec.codec.dct_model import file_sha256

    try:
        return file_sha256(path)
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror or exc}") from None


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a model file (cached per path, modification time and size)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ModelError(f"model {p} does not exist ({exc.strerror or exc})") from None
    return _sha256_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class InstalledModel:
    """A model file found in a model folder."""

    path: Path
    sha256: str
    codec: str


def installed() -> list[InstalledModel]:
    """Every model file in the model folders (first occurrence of each checksum wins)."""
    seen: dict[str, InstalledModel] = {}
    env = os.environ.get(MODEL_ENV, "").strip()
    if env and Path(env).expanduser().is_file():
        p = Path(env).expanduser()
        with contextlib.suppress(ModelError):
            sha = sha256_of(p)
            seen[sha] = InstalledModel(p, sha, codec_of_file(p))
    for folder in search_dirs():
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.suffix not in MODEL_SUFFIXES or not p.is_file() or p.name.startswith("."):
                continue
            try:
                sha = sha256_of(p)
            except ModelError:
                continue
            seen.setdefault(sha, InstalledModel(p, sha, codec_of_file(p)))
    return list(seen.values())


def find(sha256: str) -> Path | None:
    """The installed model file with this SHA-256, or None."""
    for m in installed():
        if m.sha256 == sha256:
            return m.path
    return None


def missing_model_message(name: str, model_id: str, sha256: str) -> str:
    """What to tell a user whose file needs a model that is not installed (one line)."""
    where = ", ".join(str(d) for d in search_dirs())
    if os.environ.get(MODEL_ENV, "").strip():
        where = f"${MODEL_ENV} ({os.environ[MODEL_ENV].strip()}), " + where
    return (f"{name} was compressed with model {model_id!r} (sha256 {sha256[:12]}...), which is not installed; "
            f"put that model file in one of: {where} (or set {MODEL_PATH_ENV}), or pass it with --model")


def load(path: str | Path | None) -> tuple[Any, Path, str]:
    """Load a model once per process: (model, path, SHA-256); ``None`` is the default model.

    The model is a ``SarCodec`` (v1) or a ``DctModel`` (v2); both have ``n_qualities`` and
    ``metadata``. Every failure is a ``ModelError`` (exit 2).
    """
    resolved = Path(path) if path else default_model_path()
    if not resolved.is_file():
        raise ModelError(f"model {resolved} does not exist")
    st = resolved.stat()
    return _load_cached(str(resolved.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime: int, size: int) -> tuple[Any, Path, str]:
    if codec_of_file(path) == CODEC_V2:
        from sarcodec.codec.dct_model import load_model as load_dct

        model: Any = load_dct(path)
    else:
        from sarcodec.codec.model import load_checkpoint

        model = load_checkpoint(path)
    return model, Path(path), _sha256_cached(path, mtime, size)


def codec_of(model: Any) -> str:
    """The codec of a loaded model."""
    from sarcodec.codec.dct_model import DctModel

    return CODEC_V2 if isinstance(model, DctModel) else CODEC_V1


def default_quality(model: Any) -> int:
    """The quality a model uses when none is asked for."""
    if codec_of(model) == CODEC_V2:
        return int(model.default_quality)
    from sarcodec.codec.model import DEFAULT_QUALITY

    return DEFAULT_QUALITY
