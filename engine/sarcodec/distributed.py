"""Compress and decompress one scene with several processes started by ``torchrun``.

Why this shape (the large-file workflow of the design note, adapted to a codec):

- Each rank takes a contiguous band of chunk rows (512 pixel rows each) and runs only the tiles
  that touch it (``run_tiled(out_rows=...)``), so its rows are bit-identical to those of a single
  process: overlap context is recomputed at shard edges, never blended across processes.
- Ranks never write the final output. Each writes its records into a shard folder next to the
  output (``.<name>.shards.<runid>/rank-K.bin`` plus ``rank-K.json``, the index, written last and
  atomically, so its presence means the shard is complete). After a barrier rank 0 merges the
  indices (deduplicated, sorted by band, row, column, kind: the order one process writes in), writes
  the container or stitches the GeoTIFF, renames it into place and removes the shard folder. That
  is why a container made by 1, 2 or 3 ranks is byte-identical.
- Ranks only exchange small Python objects (run id, status, errors) through a gloo group, even on
  GPUs (the default group is NCCL there, for anyone who needs it): bulk data goes through files,
  which also works when the ranks are on several nodes sharing the output folder.
- Every collective has a bounded timeout (``SARCODEC_DIST_TIMEOUT`` seconds, default 1800; it must
  cover the longest time a fast rank waits for a slow one). A rank that raises reports its error at
  the next checkpoint and every rank fails with it; a rank that dies breaks the group's sockets, so
  the survivors fail at their next collective with ``DistributedRunError`` (or are stopped by
  torchrun's SIGTERM first, which unwinds like Ctrl-C). Whoever fails removes the shard folder;
  rank 0 also removes stale shard folders of earlier crashed runs before starting.
- Progress: rank 0 drives the front end's ``Progress`` (bar, QGIS feedback); other ranks use
  ``RankLogProgress``, which logs a line per 25 % and every warning as ``sarcodec: [rank K] ...``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .cli_streams import one_line
from .errors import EXIT_FILE, InputFileError, SarcodecError
from .progress import BaseProgress, NullProgress, Progress

if TYPE_CHECKING:
    from .codec.decode import DecodePlan

TIMEOUT_ENV = "SARCODEC_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
SHARDS_INFIX = ".shards."


class DistributedRunError(SarcodecError):
    """Another rank failed, was killed or stopped answering: the run as a whole failed (exit 1)."""

    exit_code = EXIT_FILE


def is_distributed() -> bool:
    """True inside a process started by ``torchrun`` (it sets RANK and WORLD_SIZE, also for one process)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def shard_ranges(n: int, world_size: int) -> list[range]:
    """Split ``range(n)`` into ``world_size`` contiguous, nearly equal ranges (first ones larger)."""
    base, extra = divmod(n, world_size)
    out, start = [], 0
    for k in range(world_size):
        stop = start + base + (1 if k < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out


def timeout_seconds(value: float | None = None) -> float:
    """The collective timeout: the argument, else ``$SARCODEC_DIST_TIMEOUT``, else 30 minutes."""
    if value is not None:
        return float(value)
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        return float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DistributedRunError(f"${TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None


# ------------------------------------------------------------------------------------------- progress


def rank_line(rank: int | str, text: str) -> str:
    """One stderr line of a non-zero rank: ``sarcodec: [rank K] text``, like every other line the tool prints."""
    return f"sarcodec: [rank {rank}] {one_line(text)}"


class RankLogProgress(BaseProgress):
    """Progress of a non-zero rank: a log line per quarter of the work, warnings as they come.

    Several ranks drawing bars on one terminal would garble it; lines prefixed with the rank keep
    a torchrun log readable (torchrun's ``--tee``/``--log-dir`` can split them per rank).
    """

    def __init__(self, rank: int, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.rank = rank
        self.stream = stream
        self._next = 0.25

    def _say(self, text: str) -> None:
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            stream.write(rank_line(self.rank, text) + "\n")
            stream.flush()

    def start(self, total: int, label: str) -> None:
        super().start(total, label)
        self._next = 0.25
        self._say(label)

    def on_update(self) -> None:
        if self.total and self.fraction >= self._next:
            self._say(f"{self.label.split(':')[0]}: {self.fraction:.0%}")
            while self._next <= self.fraction:
                self._next += 0.25

    def info(self, message: str) -> None:
        super().info(message)
        self._say(message)

    def warn(self, message: str) -> None:
        super().warn(message)
        self._say(f"warning: {message}")


# ------------------------------------------------------------------------------------------- ranks


@dataclass
class RankContext:
    """This process's place in the run and the gloo group used for coordination."""

    rank: int
    world_size: int
    local_rank: int
    group: Any  # gloo process group for objects (None: the default group, already gloo)
    timeout_s: float
    cuda: bool

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def device_for(self, requested: str) -> str:
        """``auto``/``cuda`` become this rank's own GPU (``cuda:LOCAL_RANK``); explicit choices stay."""
        req = (requested or "auto").strip().lower()
        if self.cuda and req in ("auto", "cuda"):
            return f"cuda:{self.local_rank}"
        return requested


_GLOO_GROUPS: dict[int, Any] = {}


def rank_context(timeout_s: float | None = None, device: str = "auto") -> RankContext:
    """Join the process group torchrun describes in the environment, once per process.

    NCCL when this rank has a GPU to use, gloo otherwise; coordination always goes through a gloo
    group so it needs no GPU tensors. The group stays up for the life of the process (destroyed at
    exit): ``sarcodec compress a.tif b.tif`` under torchrun runs one distributed job per file, and
    a torchrun store cannot host a second default group after the first is destroyed. A group that
    the caller initialised already is reused as it is.
    """
    import torch
    import torch.distributed as dist

    seconds = timeout_seconds(timeout_s)
    timeout = timedelta(seconds=seconds)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and (device or "auto").strip().lower() != "cpu"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank % max(torch.cuda.device_count(), 1))
        try:
            dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
        except Exception as exc:  # rendezvous failures surface as RuntimeError/DistStoreError/ValueError
            raise DistributedRunError(f"cannot join the torchrun process group: {_first_line(exc)}") from None
        atexit.register(_destroy_group)
    if dist.get_backend() == "gloo":
        group = None
    else:
        key = id(dist.group.WORLD)
        if key not in _GLOO_GROUPS:
            _GLOO_GROUPS[key] = dist.new_group(backend="gloo", timeout=timeout)
        group = _GLOO_GROUPS[key]
    cuda = cuda and dist.get_backend() != "gloo"
    return RankContext(dist.get_rank(), dist.get_world_size(), local_rank, group, seconds, cuda)


def _destroy_group() -> None:
    import torch.distributed as dist

    with contextlib.suppress(Exception):
        if dist.is_initialized():
            dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _backend_reason(exc: BaseException) -> str:
    """gloo's message without its source location and boilerplate: "Read error ...: Connection reset by peer"."""
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", _first_line(exc))
    return text.split(". This is typically")[0].rstrip(".")


def _collective_error(ctx: RankContext, stage: str, exc: BaseException) -> DistributedRunError:
    return DistributedRunError(
        f"rank {ctx.rank}: lost contact with the other ranks while {stage} (a rank failed, was killed or "
        f"did not answer within {ctx.timeout_s:g} s, see ${TIMEOUT_ENV}): {_backend_reason(exc)}; "
        "no output was written")


def _gather(ctx: RankContext, obj: Any, stage: str) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    try:
        dist.all_gather_object(out, obj, group=ctx.group)
    except Exception as exc:  # gloo raises RuntimeError/DistBackendError when a peer is gone
        raise _collective_error(ctx, stage, exc) from None
    return out


def _broadcast(ctx: RankContext, obj: Any, stage: str) -> Any:
    import torch.distributed as dist

    box = [obj if ctx.is_root else None]
    try:
        dist.broadcast_object_list(box, src=0, group=ctx.group)
    except Exception as exc:
        raise _collective_error(ctx, stage, exc) from None
    return box[0]


def checkpoint(ctx: RankContext, error: BaseException | None, stage: str) -> None:
    """Barrier that also agrees on success: if any rank failed, every rank raises.

    The rank that failed re-raises its own exception (its exit code stays meaningful: a bad
    option is still a usage error); the others raise ``DistributedRunError`` naming it.
    """
    status = None if error is None else (type(error).__name__, _first_line(error))
    statuses = _gather(ctx, status, stage)
    failed = [(k, s) for k, s in enumerate(statuses) if s is not None]
    if not failed:
        return
    if error is not None:
        raise error
    k, (kind, message) = failed[0]
    raise DistributedRunError(f"rank {k} failed while {stage}: {kind}: {message}")


def agreed_step(ctx: RankContext, stage: str, work: Any, *, root_only: bool = False) -> Any:
    """Run ``work()`` (on rank 0 alone with ``root_only``), then ``checkpoint``: all ranks succeed or all raise."""
    result, error = None, None
    if ctx.is_root or not root_only:
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - reported to every rank at the checkpoint
            error = exc
    checkpoint(ctx, error, stage)
    return result


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Make SIGTERM (what torchrun sends the survivors when a rank dies) unwind like Ctrl-C.

    The CLI installs such a handler already; a library caller may not have, and Python's default
    would end the process without removing the shard folder.
    """
    installed = False
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                def handler(signum: int, frame: Any) -> None:
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
                    raise KeyboardInterrupt("SIGTERM")

                previous = signal.signal(signal.SIGTERM, handler)
                installed = True
    try:
        yield
    except KeyboardInterrupt as exc:
        if str(exc) == "SIGTERM":  # the CLI's handler and ours name the signal
            rank = os.environ.get("RANK", "?")
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(rank_line(rank, "stopped by SIGTERM: torchrun stops every rank when one fails "
                                                 "(its 'Root Cause' names it); no output was written") + "\n")
        raise
    finally:
        if installed:
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------- shards


class ShardFolder:
    """The hidden folder next to the output where ranks leave their results for rank 0."""

    def __init__(self, destination: Path, run_id: str) -> None:
        self.destination = destination
        self.run_id = run_id
        self.path = destination.parent / f".{destination.name}{SHARDS_INFIX}{run_id}"

    @classmethod
    def agree(cls, ctx: RankContext, source: str | os.PathLike[str],
              destination: str | os.PathLike[str]) -> ShardFolder:
        """Check every rank runs the same job; rank 0 picks the run id, clears stale folders, creates ours.

        The job check matters when a front end runs several files: a rank that skipped one (its
        own pre-check failed) would otherwise pair its next file's collectives with this file's.
        """
        dest = Path(destination)
        key = (Path(os.fspath(source)).name, str(dest.resolve()))  # a SAFE's /vsimem/<uuid>/ differs per rank
        keys = _gather(ctx, key, "checking that every rank runs the same job")
        if any(k != key for k in keys):
            odd = next(k for k, other in enumerate(keys) if other != keys[0])
            raise DistributedRunError(f"ranks disagree on the job: rank 0 writes {keys[0][1]}, rank {odd} "
                                      f"writes {keys[odd][1]}; every rank must get the same inputs and options")
        status: tuple[str, str | None] = ("", None)
        if ctx.is_root:
            run_id = f"{uuid.uuid4().hex[:12]}"
            try:
                remove_stale_shards(dest)
                (dest.parent / f".{dest.name}{SHARDS_INFIX}{run_id}").mkdir()
            except OSError as exc:
                status = (run_id, f"cannot create a shard folder next to {dest}: {exc.strerror or exc}")
            else:
                status = (run_id, None)
        run_id, problem = _broadcast(ctx, status, "agreeing on a run id")
        if problem:
            raise InputFileError(problem)
        return cls(dest, run_id)

    def bin(self, rank: int) -> Path:
        return self.path / f"rank-{rank}.bin"

    def index(self, rank: int) -> Path:
        return self.path / f"rank-{rank}.json"

    def read_index(self, rank: int) -> dict:
        path = self.index(rank)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DistributedRunError(
                f"rank {rank}'s shard index {path} is missing: with several nodes the output folder must be "
                "on storage every node shares") from None
        except (OSError, ValueError) as exc:
            raise DistributedRunError(f"rank {rank}'s shard index {path} is unreadable: {exc}") from None
        if data.get("run_id") != self.run_id or data.get("rank") != rank:
            raise DistributedRunError(f"{path} belongs to another run")
        return data

    def remove(self) -> None:
        """Remove the folder completely, even when SIGTERM or Ctrl-C interrupts the removal.

        torchrun sends SIGTERM to the survivors of a dead rank just as they clean up after the
        broken collective; the signal's KeyboardInterrupt used to stop ``rmtree`` half-way and
        leave the folder behind. The removal is finished first, then the interrupt goes on.
        """
        interrupted: KeyboardInterrupt | None = None
        while True:
            try:
                shutil.rmtree(self.path, ignore_errors=True)
                break
            except KeyboardInterrupt as exc:  # the handlers ignore repeats, so the retry completes
                interrupted = exc
        if interrupted is not None:
            raise interrupted


def remove_stale_shards(destination: Path) -> list[Path]:
    """Remove shard folders an earlier, crashed run left for the same output (only rank 0 calls this).

    Two runs writing the same output at once are not supported anyway: they would race on the
    final rename.
    """
    removed = []
    folder = destination.parent if str(destination.parent) else Path(".")
    prefix = f".{destination.name}{SHARDS_INFIX}"
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            if p.name.startswith(prefix) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


class ShardWriter:
    """Appends a rank's byte records to ``rank-K.bin``; ``finish`` writes the index JSON atomically.

    Has the ``add`` of ``ContainerWriter`` (records of the codec) and the ``write_rows`` of a row
    sink (decoded pixel rows), so the pipeline's own sinks write into it unchanged.
    """

    def __init__(self, folder: ShardFolder, rank: int) -> None:
        self.folder, self.rank = folder, rank
        self._lock = threading.Lock()
        self._file = open(folder.bin(rank), "wb")  # noqa: SIM115 - closed in finish/abort
        self._size = 0
        self.records: list[list[Any]] = []
        self.blocks: list[list[Any]] = []

    def _append(self, data: bytes) -> tuple[int, int]:
        offset = self._size
        try:
            self._file.write(data)
        except OSError as exc:
            raise InputFileError(f"cannot write {self.folder.bin(self.rank)}: {exc.strerror or exc}") from None
        self._size += len(data)
        return offset, len(data)

    def add(self, band: int, row: int, col: int, kind: str, data: bytes) -> None:
        """A container record (same signature as ``ContainerWriter.add``)."""
        blob = bytes(data)
        with self._lock:
            offset, length = self._append(blob)
            self.records.append([int(band), int(row), int(col), str(kind), offset, length, zlib.crc32(blob)])

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None,
                   indexes: list[int] | None = None) -> None:
        """Decoded pixel rows ``(1, n, W)`` of band ``indexes[0]`` (1-based), as ``BandWriter`` writes them."""
        arr = np.ascontiguousarray(block[0] if block.ndim == 3 else block)
        band = (indexes or [1])[0] - 1
        with self._lock:
            offset, length = self._append(arr.tobytes())
            self.blocks.append([band, int(row0), int(arr.shape[0]), int(arr.shape[1]), arr.dtype.str, offset, length])

    def close(self) -> None:
        """Row-sink protocol: the shard is finished by ``finish``, after every band."""

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()

    def finish(self, extra: dict[str, Any]) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            doc = {"run_id": self.folder.run_id, "rank": self.rank, "records": self.records,
                   "blocks": self.blocks, **extra}
            target = self.folder.index(self.rank)
            tmp = target.with_suffix(".json.part")
            tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:
            raise InputFileError(f"cannot write the shard of rank {self.rank}: {exc.strerror or exc}") from None


class _ShardReader:
    """Reads records back from the ranks' ``.bin`` files, checking each record's CRC."""

    def __init__(self, folder: ShardFolder) -> None:
        self.folder = folder
        self._files: dict[int, IO[bytes]] = {}

    def read(self, rank: int, offset: int, length: int) -> bytes:
        f = self._files.get(rank)
        if f is None:
            f = self._files[rank] = open(self.folder.bin(rank), "rb")  # noqa: SIM115 - closed in close()
        f.seek(offset)
        data = f.read(length)
        if len(data) != length:
            raise DistributedRunError(f"{self.folder.bin(rank)} is shorter than its index says")
        return data

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


# ------------------------------------------------------------------------------------------- compress


@contextlib.contextmanager
def _rank_job(source: Any, destination: Any, options: Any, progress: Progress,
              timeout_s: float | None) -> Iterator[tuple[RankContext, ShardFolder, Any, Progress]]:
    """Setup and cleanup every torchrun job shares: rank context, this rank's options and progress,
    the agreed shard folder; the folder is removed by rank 0 after success and by any rank on failure.
    """
    with _sigterm_unwinds():
        ctx = rank_context(timeout_s, options.device)
        mine_progress: Progress = progress if ctx.is_root else RankLogProgress(ctx.rank)
        opts = replace(options, device=ctx.device_for(options.device), weight_map=None)
        shards = ShardFolder.agree(ctx, source, destination)
        ok = False
        try:
            yield ctx, shards, opts, mine_progress
            ok = True
        finally:
            if ctx.is_root or not ok:
                shards.remove()


def distributed_compress(source: str | os.PathLike[str], destination: str | os.PathLike[str],
                         options: Any = None, progress: Progress | None = None, *,
                         timeout_s: float | None = None) -> Any:
    """``compress_raster`` run by every torchrun rank: a ``CompressResult`` on rank 0, None elsewhere.

    Every rank must call it with the same arguments (each opens ``source`` itself, so it must be
    readable on every node). Weight maps are a single-process debugging aid and are not written.
    """
    import rasterio

    from .codec.encode import encode_band, plan_compression
    from .codec.options import CompressOptions

    t0 = time.monotonic()
    options = options or CompressOptions()
    progress = progress or NullProgress()
    with _rank_job(source, destination, options, progress, timeout_s) as (ctx, shards, opts, mine_progress):
        plan = agreed_step(ctx, "planning the compression", lambda: plan_compression(source, opts))
        rows = shard_ranges(plan.chunk_rows, ctx.world_size)[ctx.rank]

        def encode_shard() -> None:
            writer = ShardWriter(shards, ctx.rank)
            try:
                bands = []
                if len(rows):
                    with rasterio.open(plan.source) as ds:
                        for i in range(ds.count):
                            enc = encode_band(plan, ds, i, writer, opts, mine_progress, chunk_rows=rows)
                            bands.append({"stats": enc.stats, "uncodable_pixels": enc.uncodable_pixels,
                                          "bad_tiles": enc.bad_tiles, "device": enc.device,
                                          "batch_size": enc.batch_size,
                                          "samples": [[cr, cc, s.to_list()]
                                                      for (cr, cc), s in sorted(enc.samples.items())]})
                writer.finish({"chunk_rows": [rows.start, rows.stop], "bands": bands})
            except BaseException:
                writer.abort()
                raise

        agreed_step(ctx, "encoding its shard", encode_shard)

        def merge() -> Any:
            progress.info(f"merging the shards of {ctx.world_size} ranks into {destination}")
            return _unwritten_weight_map(_merge_container(ctx, shards, plan, opts, destination, t0), options)

        return agreed_step(ctx, "merging the shards", merge, root_only=True)


def _unwritten_weight_map(result: Any, options: Any) -> Any:
    """Weight maps are a single-process debugging aid: say so when one was asked for."""
    if options.weight_map:
        result.warnings.append("--weight-map is not written in a torchrun run")
    return result


def _merge_container(ctx: RankContext, shards: ShardFolder, plan: Any, options: Any,
                     destination: str | os.PathLike[str], t0: float) -> Any:
    """Rank 0: one container from every shard, records in single-process order, header from all."""
    from .codec.container import KINDS, ContainerWriter
    from .codec.encode import build_header, compress_result
    from .codec.options import BandEncoding
    from .codec.quality import QualitySample

    indices = [shards.read_index(k) for k in range(ctx.world_size)]
    entries: dict[tuple[int, int, int, int], tuple[int, int, int, int, str]] = {}
    for k, idx in enumerate(indices):
        for band, row, col, kind, offset, length, crc in idx["records"]:
            key = (band, row, col, KINDS[kind])
            seen = entries.get(key)
            if seen is not None:
                if seen[3] != crc:  # a chunk coded twice must be coded alike, or the run is not reproducible
                    raise DistributedRunError(f"ranks {seen[0]} and {k} coded {kind} record {key[:3]} differently")
                continue
            entries[key] = (k, offset, length, crc, kind)
    bands = _merge_bands(indices, plan.info.bands, BandEncoding, QualitySample)
    reader = _ShardReader(shards)
    try:
        with ContainerWriter(destination) as writer:
            for key in sorted(entries):
                k, offset, length, crc, kind = entries[key]
                data = reader.read(k, offset, length)
                if zlib.crc32(data) != crc:
                    raise DistributedRunError(f"{shards.bin(k)}: record {key[:3]} {kind} is damaged")
                writer.add(key[0], key[1], key[2], kind, data)
            out_bytes = writer.finish(build_header(plan, options, bands))
    finally:
        reader.close()
    result = compress_result(plan, destination, bands, out_bytes, time.monotonic() - t0)
    result.device = f"{result.device} x {ctx.world_size} ranks"
    return result


def _merge_bands(indices: list[dict], n_bands: int, band_cls: Any, sample_cls: Any) -> list[Any]:
    """Per-band statistics, samples and counts of all ranks, checked to agree where they must."""
    bands = []
    for i in range(n_bands):
        parts = [(k, idx["bands"][i]) for k, idx in enumerate(indices) if idx["bands"]]
        if not parts:
            raise DistributedRunError(f"no rank coded band {i + 1}")
        k0, first = parts[0]
        for k, b in parts[1:]:
            if b["stats"] != first["stats"]:  # every rank estimates them from the same deterministic sample
                raise DistributedRunError(f"ranks {k0} and {k} estimated different statistics for band {i + 1}")
        samples = {}
        for _, b in parts:
            for cr, cc, values in b["samples"]:
                samples.setdefault((cr, cc), sample_cls.from_list(values))
        bands.append(band_cls(first["stats"], samples, sum(b["uncodable_pixels"] for _, b in parts),
                              sum(b["bad_tiles"] for _, b in parts), first["device"], first["batch_size"]))
    return bands


# ------------------------------------------------------------------------------------------- decompress


def distributed_decompress(source: str | os.PathLike[str], destination: str | os.PathLike[str],
                           options: Any = None, progress: Progress | None = None, *,
                           timeout_s: float | None = None) -> Any:
    """``decompress_container`` run by every torchrun rank: a ``DecompressResult`` on rank 0, None elsewhere.

    Each rank decodes a contiguous band of rows of every band into its shard (pixel values already
    converted, nodata and lossless fallbacks applied); rank 0 stitches them into the GeoTIFF (or
    COG). The rows are those one process would write, so the raster does not depend on the rank count.
    """
    from .codec.container import ContainerReader
    from .codec.decode import plan_decompression
    from .codec.options import DecompressOptions

    t0 = time.monotonic()
    options = options or DecompressOptions()
    progress = progress or NullProgress()
    if options.window is not None or options.bbox is not None:
        from .errors import UsageError

        raise UsageError("a window or bounding box decodes a small part of one file: run it without torchrun")
    with _rank_job(source, destination, options, progress, timeout_s) as (ctx, shards, opts, mine_progress):
        with contextlib.ExitStack() as stack:

            def plan_it() -> tuple[Any, Any]:
                reader = stack.enter_context(ContainerReader(source))
                return reader, plan_decompression(reader, opts)

            reader, plan = agreed_step(ctx, "planning the decompression", plan_it)
            report = agreed_step(ctx, "decoding its shard",
                                 lambda: _decode_shard(ctx, shards, reader, plan, opts, mine_progress))

        def stitch() -> Any:
            progress.info(f"stitching the rows of {ctx.world_size} ranks into {destination}")
            return _unwritten_weight_map(_stitch(ctx, shards, plan, opts, source, destination, report, t0),
                                         options)

        return agreed_step(ctx, "stitching the shards", stitch, root_only=True)


def _decode_shard(ctx: RankContext, shards: ShardFolder, reader: Any, plan: DecodePlan, options: Any,
                  progress: Progress) -> dict[str, Any]:
    """This rank's rows of every band, through the pipeline's own band decoder (one decode path)."""
    from .codec.decode import decode_band
    from .device import DevicePolicy

    bands, height, _ = plan.header["shape"]
    grid = plan.header["grid"]
    stride, chunk = grid["stride"], grid["chunk"]
    units = -(-height // stride)  # grid units (v1: latents, v2: pixels); the last may run past the raster
    rows = shard_ranges(-(-units // chunk), ctx.world_size)[ctx.rank]
    policy = DevicePolicy(options.device, options.batch_size)
    damaged: list[int] = []
    device, batch_size = "", 0
    writer = ShardWriter(shards, ctx.rank)
    try:
        if len(rows):
            out_rows = (rows.start * chunk * stride, min(rows.stop * chunk, units) * stride)
            for i in range(bands):
                rep = decode_band(plan, reader, i, writer, policy, progress, damaged, salvage=options.salvage,
                                  rows=out_rows)
                device, batch_size = rep.device, rep.batch_size
        writer.finish({"damaged": sorted(set(damaged)), "device": device})
    except BaseException:
        writer.abort()
        raise
    return {"device": device, "batch_size": batch_size}


def copy_shard_rows(indices: list[dict[str, Any]], shards: ShardFolder, out: Any, bands: int, height: int) -> None:
    """Rank 0: every rank's row blocks into ``out`` (a ``GeoTiffSink``), checking that each row of each
    band comes from exactly one rank (the first rank's block wins where two ranks wrote the same one)."""
    blocks: dict[tuple[int, int], tuple[int, list[Any]]] = {}
    for k, idx in enumerate(indices):
        for b in idx["blocks"]:
            blocks.setdefault((b[0], b[1]), (k, b))
    reader = _ShardReader(shards)
    try:
        covered = dict.fromkeys(range(bands), 0)
        for (band, row0), (k, b) in sorted(blocks.items()):
            _, _, n, w, dtype, offset, length = b
            if row0 != covered[band]:
                raise DistributedRunError(f"band {band + 1}: rows {covered[band]}..{row0} came from no rank")
            arr = np.frombuffer(reader.read(k, offset, length), dtype=np.dtype(dtype)).reshape(n, w)
            out.write_rows(row0, arr[None], None, indexes=[band + 1])
            covered[band] = row0 + n
        short = [i + 1 for i, end in covered.items() if end != height]
        if short:
            raise DistributedRunError(f"band(s) {short} are not fully covered by the ranks' shards")
    finally:
        reader.close()


def _stitch(ctx: RankContext, shards: ShardFolder, plan: DecodePlan, options: Any, source: Any,
            destination: str | os.PathLike[str], report: dict[str, Any], t0: float) -> Any:
    """Rank 0: write every rank's rows into one GeoTIFF, checking each band is covered exactly once."""
    from .codec.decode import salvage_warning
    from .codec.geotiff_output import to_cog
    from .codec.options import DecompressResult
    from .geometa import apply_geo_metadata
    from .raster_io import GeoTiffSink

    bands, height, width = plan.header["shape"]
    indices = [shards.read_index(k) for k in range(ctx.world_size)]
    damaged: set[int] = set()
    for idx in indices:
        damaged.update(idx.get("damaged", []))
    final = Path(destination)
    meta = plan.meta

    def finalize(ds: Any) -> None:
        apply_geo_metadata(ds, meta)
        if damaged and plan.damage_value is not None:
            ds.nodata = plan.damage_value  # as in one process: salvage marks need a nodata value

    out = GeoTiffSink(final, plan.profile, finalize=finalize,
                      commit_on_close=not options.cog)
    try:
        copy_shard_rows(indices, shards, out, bands, height)
        out.close()
        if options.cog:
            to_cog(out.tmp, final, plan.profile)
    except BaseException:
        out.abort()
        raise
    finally:
        if options.cog:
            out.tmp.unlink(missing_ok=True)
    warnings = list(plan.warnings)
    if damaged:
        warnings.append(salvage_warning(sorted(damaged), plan.damage_value))
    device = report.get("device", "")
    return DecompressResult(input=str(source), output=str(destination), width=width, height=height, bands=bands,
                            dtype=plan.out_dtype.name, device=f"{device} x {ctx.world_size} ranks",
                            seconds=time.monotonic() - t0, damaged_chunks=sorted(damaged), warnings=warnings,
                            batch_size=report.get("batch_size", 0))


__all__ = [
    "DistributedRunError",
    "RankContext",
    "RankLogProgress",
    "ShardFolder",
    "ShardWriter",
    "checkpoint",
    "distributed_compress",
    "distributed_decompress",
    "is_distributed",
    "rank_context",
    "remove_stale_shards",
    "shard_ranges",
]
