"""sarcodec: a learned codec for whole SAR scenes, with a tiled streaming PyTorch engine."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def open(path: Any, mode: str = "r", **kwargs: Any) -> Any:  # noqa: A001 - rasterio.open's name, on purpose
    """Open a ``.npz`` container like ``rasterio.open``: ``profile``, ``crs``, ``transform``, ``bounds``,
    ``read(indexes, window=Window(...))``; see :mod:`sarcodec.reader`. Imported lazily (no torch here)."""
    from .reader import open_container

    return open_container(path, mode, **kwargs)
