"""The one thread pool that codes and decodes chunks, shared by both codecs and every band.

Chunks are coded independently, so a chunk row's chunks are coded (and v2's are decoded) on a few
threads; the heavy parts run in numpy and the entropy coder (v1's float64 hyperprior releases the
GIL). One process-wide pool of at most 4 threads, created on first use, instead of one per band or
per run.

v1 compression codes a finished chunk row off the engine's thread so the network goes on meanwhile
(``chunk_row_pool``): each band keeps one chunk row in flight; two threads let two runs in one
process (the QGIS plugin's parallel algorithms) each have theirs. Its jobs wait on ``coding_pool``,
never the other way round, so the two pools cannot deadlock.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor


@functools.lru_cache(maxsize=1)
def coding_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="sarcodec-code")


@functools.lru_cache(maxsize=1)
def chunk_row_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="sarcodec-rows")
