"""The streaming tiled inference engine.

``run_tiled`` runs any fully-convolutional model over a raster of any size: it reads the next batch
of tiles in a background thread while the current batch computes, blends overlapping outputs in a
row band, writes rows as soon as no later tile can touch them, and hands tiles with non-finite or
extreme values to a caller-supplied fallback instead of failing the run. Memory depends on tile
size, batch and scene width, never on scene height. With ``write_behind`` (``sarcodec infer``) a
batch's output check, blending and writing run on one more thread while the next batch computes.

On CUDA a batch stays on the device from the model to the blended rows (issue 15): its inputs go up
from one reused pinned buffer, the bad-tile check runs there and returns a flag and a peak per tile,
the overlapping outputs are blended into a device-side row band (``device_blending``), and each
finished row band comes back once, through pinned memory. On the CPU the host path (numpy blending)
runs exactly as before. ``DEVICE_BLENDING`` overrides the choice: the tests force the device path on
the CPU, where it must give the same rows bit for bit, and ``bench/gpu_check.py`` times both on a GPU.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np
import torch

from . import interrupts
from .blending import CosineWindow, RowBandAccumulator, WindowKind
from .device import DeviceChoice, DevicePolicy, batch_from_memory, is_oom
from .device_blending import DeviceRowBandAccumulator
from .errors import OutOfMemoryError, UsageError
from .progress import NullProgress, Progress, check_cancelled
from .raster_io import RowSink, TileSource, bounded_gdal_cache
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, Tile, TileGrid, as_scale

DEFAULT_MAX_ABS = 1e6
PLANNED_BATCH = 8  # batch used to plan read-ahead before a CUDA probe has sized the real one
# Keep batches on the device through blending: None = on CUDA only; True/False force it either way.
DEVICE_BLENDING: bool | None = None

BadTileFallback = Callable[[Tile, np.ndarray, str], np.ndarray]
TileOrder = Literal["grid", "shuffled"]


class TileModel:
    """A model plus what the engine must know about it: scale, stride, channels, AMP safety."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        scale: int | float | Fraction = 1,
        multiple_of: int = 1,
        in_channels: int = 1,
        out_channels: int = 1,
        amp_safe: bool = True,
        module: torch.nn.Module | None = None,
        name: str = "model",
    ) -> None:
        self.fn = fn
        self.module = module if module is not None else (fn if isinstance(fn, torch.nn.Module) else None)
        self.scale = as_scale(scale)
        self.multiple_of = int(multiple_of)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.amp_safe = amp_safe
        self.name = name

    def to(self, device: torch.device) -> TileModel:
        if self.module is not None:
            self.module.to(device).eval()
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.fn(batch)


@dataclass
class RunReport:
    tiles: int = 0
    bad_tiles: list[tuple[int, str]] = field(default_factory=list)
    device: str = ""
    batch_size: int = 0
    amp: bool = False
    oom_retries: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    grid: TileGrid | None = None


def passthrough_fallback(tile: Tile, tile_input: np.ndarray, reason: str) -> np.ndarray:
    """Default for scale-1 models: the bad tile's own input goes through unchanged."""
    return tile_input


def _reasons(finite: np.ndarray, peak: np.ndarray, max_abs: float) -> list[str | None]:
    return [
        "non-finite values" if not f else (f"values beyond +/-{max_abs:g}" if p > max_abs else None)
        for f, p in zip(finite, peak, strict=True)
    ]


def _bad_tiles(batch: np.ndarray, max_abs: float) -> list[str | None]:
    """Per tile: None when usable, else a short reason (non-finite or extreme values)."""
    flat = batch.reshape(batch.shape[0], -1)
    # Two reductions and no temporary array (this runs on every input and output batch): a NaN
    # anywhere makes the max or the min NaN, an infinity makes the peak infinite.
    with np.errstate(invalid="ignore"):
        peak = np.maximum(flat.max(axis=1, initial=-np.inf), -flat.min(axis=1, initial=np.inf))
    finite = np.isfinite(peak)
    return _reasons(finite, np.where(finite, peak, 0.0), max_abs)


@torch.inference_mode()
def _bad_tiles_on_device(batch: torch.Tensor, max_abs: float) -> list[str | None]:
    """``_bad_tiles`` for a batch on the device: only a flag and a peak per tile come back to the host."""
    flat = batch.reshape(batch.shape[0], -1)
    finite = torch.isfinite(flat).all(dim=1)
    peak = torch.where(finite, torch.nan_to_num(flat).abs().amax(dim=1), 0.0)
    stats = torch.stack([finite.to(peak.dtype), peak]).cpu().numpy()
    return _reasons(stats[0] != 0, stats[1], max_abs)


def _blends_on_device(device: torch.device) -> bool:
    return device.type == "cuda" if DEVICE_BLENDING is None else DEVICE_BLENDING


class PinnedStaging:
    """One host buffer every batch passes through on its way to the device, pinned on CUDA.

    A copy from pageable memory makes the driver stage it through its own pinned buffer and blocks
    the caller; from pinned memory it is one DMA that runs while the host goes on. Pinning costs a
    page-locking system call, so the buffer is pinned once and reused (grown when a batch is
    larger). Before it is overwritten the previous batch's copy must have read it: an event marks
    that point.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pin = device.type == "cuda"
        self._buffer: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def upload(self, chunk: np.ndarray) -> torch.Tensor:
        """A device tensor holding ``chunk`` in the same memory layout; never a view of the staging buffer.

        The layout matters: a batch of channels-last tiles (a decoder's latents at a ragged edge)
        reaches the model channels-last, as ``torch.from_numpy(chunk).to(device)`` hands it over,
        and a convolution may round differently in the other layout.
        """
        src = torch.from_numpy(chunk)
        layout = torch.empty_like(src, device="meta")  # src's strides when dense, else contiguous ones
        if self._copied is not None:
            self._copied.synchronize()
        if self._buffer is None or self._buffer.dtype != src.dtype or self._buffer.numel() < src.numel():
            self._buffer = torch.empty(src.numel(), dtype=src.dtype, pin_memory=self.pin)
        staged = self._buffer.as_strided(layout.shape, layout.stride())
        staged.copy_(src)
        x = torch.empty_strided(layout.shape, layout.stride(), dtype=src.dtype, device=self.device)
        x.copy_(staged, non_blocking=self.pin)
        if self.pin:
            self._copied = torch.cuda.Event()
            self._copied.record(torch.cuda.current_stream(self.device))
        return x


class BatchExecutor:
    """Runs batches on the chosen device, halving the batch on CUDA out-of-memory.

    ``on_device``: outputs stay on the device as one float32 tensor (the device path), inputs go up
    through ``PinnedStaging``; otherwise they come back as a numpy array.
    """

    def __init__(self, model: TileModel, choice: DeviceChoice, progress: Progress, report: RunReport,
                 *, on_device: bool = False):
        self.model = model
        self.choice = choice
        self.progress = progress
        self.report = report
        self.batch_size = choice.batch_size
        self.on_device = on_device
        self.staging = PinnedStaging(choice.device) if on_device else None

    def _forward(self, chunk: np.ndarray) -> np.ndarray | torch.Tensor:
        dev = self.choice.device
        with torch.inference_mode():
            if self.staging is not None:
                x = self.staging.upload(chunk)
            else:
                x = torch.from_numpy(chunk).to(dev, non_blocking=dev.type == "cuda")
            if self.choice.amp:
                with torch.autocast(device_type=dev.type, dtype=torch.float16):
                    y = self.model(x)
            else:
                y = self.model(x)
            return y.float() if self.on_device else y.float().cpu().numpy()

    def _probe(self, one: np.ndarray) -> np.ndarray | torch.Tensor:
        """Size the batch from the memory one tile really takes (CUDA with --batch-size auto)."""
        dev = self.choice.device
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        out = self._forward(one)
        per_tile = max(torch.cuda.max_memory_allocated(dev) - base, 1)
        self.batch_size = batch_from_memory(DevicePolicy.free_memory(dev), int(per_tile * 1.25))
        self.progress.info(f"batch size {self.batch_size} ({per_tile / 2**20:.0f} MiB per tile)")
        return out

    def run(self, batch: np.ndarray) -> np.ndarray | torch.Tensor:
        outs: list = []
        i = 0
        if self.batch_size is None:
            outs.append(self._probe(batch[:1]))
            i = 1
        while i < len(batch):
            chunk = batch[i : i + self.batch_size]
            try:
                outs.append(self._forward(chunk))
                i += len(chunk)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                if self.choice.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch_size <= 1:
                    raise OutOfMemoryError(
                        f"out of memory on {self.choice.description} even with one tile per batch; "
                        "use a smaller --tile-size or --device cpu"
                    ) from None
                self.batch_size = max(1, self.batch_size // 2)
                self.report.oom_retries += 1
                self.progress.warn(f"out of memory: retrying with batch size {self.batch_size}")
        if len(outs) == 1:
            return outs[0]
        if self.on_device:
            with torch.inference_mode():
                return torch.cat(outs)
        return np.concatenate(outs)


def _tile_batches(grid: TileGrid, tile_rows: range, sizer: Callable[[], int], order: TileOrder,
                  seed: int) -> Iterator[list[Tile]]:
    """Batches of tiles; ``shuffled`` permutes each tile row (used to prove order-independence)."""
    rng = random.Random(seed)
    pending: list[Tile] = []
    for r in tile_rows:
        row = grid.row_tiles(r)
        if order == "shuffled":
            rng.shuffle(row)
        pending.extend(row)
        while len(pending) >= sizer():
            n = sizer()
            yield pending[:n]
            pending = pending[n:]
    if pending:
        yield pending


def _valid_rows(source: TileSource, grid: TileGrid, a: int, b: int) -> np.ndarray | None:
    """Validity of output rows a..b, from the source mask mapped through the model's scale."""
    s = grid.scale
    if s == 1:
        return source.valid_mask(a, 0, b - a, grid.width)
    if s.denominator == 1:  # upsampling: each input pixel becomes an s x s block
        k = s.numerator
        r0, r1 = a // k, -(-b // k)
        m = source.valid_mask(r0, 0, r1 - r0, grid.width)
        if m is None or m.all():  # the usual case: no s x s blow-up of an all-true mask
            return None
        m = np.repeat(np.repeat(m, k, axis=0), k, axis=1)
        return m[a - r0 * k : b - r0 * k, : grid.out_width]
    if s.numerator == 1:  # downsampling: an output pixel is valid if any input pixel under it is
        k = s.denominator
        r0, r1 = a * k, min(b * k, grid.height)
        m = source.valid_mask(r0, 0, r1 - r0, grid.width)
        if m is None:
            return None
        ph, pw = (b - a) * k - m.shape[0], grid.out_width * k - m.shape[1]
        m = np.pad(m, ((0, ph), (0, pw)), constant_values=False)
        return m.reshape(b - a, k, grid.out_width, k).any(axis=(1, 3))
    return None


def run_tiled(
    model: TileModel,
    source: TileSource,
    sink: RowSink,
    *,
    tile_size: int = DEFAULT_TILE_SIZE,
    overlap: int = DEFAULT_OVERLAP,
    window: WindowKind = "cosine",
    policy: DevicePolicy | None = None,
    progress: Progress | None = None,
    fallback: BadTileFallback | None = None,
    weight_sink: RowSink | None = None,
    max_abs: float = DEFAULT_MAX_ABS,
    order: TileOrder = "grid",
    seed: int = 0,
    out_rows: tuple[int, int] | None = None,
    write_behind: bool = False,
) -> RunReport:
    """Run ``model`` over ``source`` tile by tile and stream the blended result into ``sink``.

    The sink (and ``weight_sink``, which receives the blending weight sum for debugging) is closed
    on success and aborted on any error or cancel, so no partial output survives. ``out_rows``
    restricts the run to a band of output rows (a torchrun rank's shard): only the tiles touching
    it run, and only its rows reach the sink, with values identical to those of a full run.

    ``write_behind`` (host path only): each batch is finished (output check, fallback, blending,
    ``write_rows``, ``source.valid_mask``) on one worker thread while the next batch runs through the
    model, with the same values in the same order. The caller's sinks, fallback and ``source`` must
    then bear a second thread (``sarcodec infer``: a ``GeoTiffSink`` and a ``SerialReads`` source).
    An error there is raised here, as it is, at the next batch or at the end.
    """
    with bounded_gdal_cache():
        return _run_tiled(model, source, sink, tile_size=tile_size, overlap=overlap, window=window, policy=policy,
                          progress=progress, fallback=fallback, weight_sink=weight_sink, max_abs=max_abs,
                          order=order, seed=seed, out_rows=out_rows, write_behind=write_behind)


def _run_tiled(
    model: TileModel,
    source: TileSource,
    sink: RowSink,
    *,
    tile_size: int,
    overlap: int,
    window: WindowKind,
    policy: DevicePolicy | None,
    progress: Progress | None,
    fallback: BadTileFallback | None,
    weight_sink: RowSink | None,
    max_abs: float,
    order: TileOrder,
    seed: int,
    out_rows: tuple[int, int] | None,
    write_behind: bool,
) -> RunReport:
    t0 = time.monotonic()
    progress = progress or NullProgress()
    policy = policy or DevicePolicy()
    sinks = [s for s in (sink, weight_sink) if s is not None]
    try:
        if source.channels != model.in_channels:
            raise UsageError(f"{model.name} expects {model.in_channels} band(s), the input has {source.channels}")
        grid = TileGrid(
            source.height, source.width, scale=model.scale, tile_size=tile_size,
            overlap=overlap, multiple_of=model.multiple_of,
        )
        if fallback is None:
            same = model.scale == 1 and model.in_channels == model.out_channels
            fallback = passthrough_fallback if same else _nan_fallback(model)
        choice = policy.resolve(amp_safe=model.amp_safe)
        if choice.warning:
            progress.warn(choice.warning)
        report = RunReport(device=choice.description, amp=choice.amp, grid=grid)
        model.to(choice.device)
        on_device = _blends_on_device(choice.device)
        executor = BatchExecutor(model, choice, progress, report, on_device=on_device)
        first_row, last_row = (0, grid.out_height) if out_rows is None else out_rows
        if not 0 <= first_row < last_row <= grid.out_height:
            raise UsageError(f"output rows {out_rows} are outside 0..{grid.out_height}")
        tile_rows = range(
            next(r for r, s in enumerate(grid.row_spans) if s.out_start + s.out_size > first_row),
            1 + max(r for r, s in enumerate(grid.row_spans) if s.out_start < last_row),
        )
        if window == "partition" and weight_sink is not None:
            window = "cosine"  # the same weights, with the weight sums a weight map shows
        acc: RowBandAccumulator | DeviceRowBandAccumulator
        if on_device:
            acc = DeviceRowBandAccumulator(grid, model.out_channels, CosineWindow(grid, window), choice.device,
                                           weight_rows=weight_sink is not None)
        else:
            acc = RowBandAccumulator(grid, model.out_channels, CosineWindow(grid, window))
        acc.row0 = grid.row_spans[tile_rows.start].out_start
        n_tiles = len(tile_rows) * grid.cols
        progress.start(n_tiles, f"{model.name}: {n_tiles} tiles on {choice.description}")

        def sizer() -> int:
            return executor.batch_size or PLANNED_BATCH

        def load(tiles: list[Tile]) -> tuple[list[Tile], np.ndarray, list[str | None]]:
            """Read a batch and check its inputs, both on the read-ahead thread (beside the network)."""
            inputs = np.stack([source.read(t.y0, t.x0, t.height, t.width) for t in tiles])
            return tiles, inputs, _bad_tiles(inputs, max_abs)

        batches = _tile_batches(grid, tile_rows, sizer, order, seed)
        outputs: dict[int, np.ndarray | torch.Tensor] = {}
        next_index = tile_rows.start * grid.cols

        def finish(tiles: list[Tile], inputs: np.ndarray, reasons: list[str | None], good: list[int],
                   out: np.ndarray | torch.Tensor | None, out_reasons: list[str | None] | None) -> list[str]:
            """Everything after the model: output check, fallbacks, blending, finished rows to the sinks.

            Returns the warnings to show (the caller's thread shows them: progress is not thread-safe).
            """
            nonlocal next_index
            warnings: list[str] = []
            results: list[np.ndarray | torch.Tensor | None] = [None] * len(tiles)
            if out is not None:
                if out_reasons is None:
                    out_reasons = _bad_tiles(out, max_abs)
                for k, i in enumerate(good):
                    results[i] = out[k]
                    if out_reasons[k] is not None:
                        reasons[i] = f"model output has {out_reasons[k]}"
            for i, tile in enumerate(tiles):
                if reasons[i] is not None:
                    report.bad_tiles.append((tile.index, reasons[i]))
                    warnings.append(f"tile {tile.index}: {reasons[i]}; handed to the fallback")
                    results[i] = fallback(tile, inputs[i], reasons[i])
                outputs[tile.index] = results[i]

            # Commit in grid order: float sums then do not depend on batch composition.
            while next_index in outputs:
                tile_row, tile_col = divmod(next_index, grid.cols)
                acc.add(grid.tile(tile_row, tile_col), outputs.pop(next_index))
                next_index += 1
                if tile_col == grid.cols - 1:
                    end = min(grid.rows_final_after(tile_row), last_row)
                    row0, blended, weight = acc.pop_rows(end)
                    if row0 < first_row:  # rows of the previous shard: context only
                        cut = min(first_row - row0, blended.shape[1])
                        row0, blended = row0 + cut, blended[:, cut:]
                        weight = None if weight is None else weight[cut:]
                    if blended.shape[1]:
                        sink.write_rows(row0, blended, _valid_rows(source, grid, row0, end))
                        if weight_sink is not None and weight is not None:
                            weight_sink.write_rows(row0, weight[None], None)
            return warnings

        # Write-behind (host path, when the caller's sinks and source allow another thread): the
        # finishing of batch k runs on one worker thread while this one runs batch k+1 through the
        # model. At most one batch is being finished; its error surfaces here at the next hand-off.
        behind = write_behind and not on_device
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sarcodec-read") as pool, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="sarcodec-write") as writer:
            finishing: tuple[Future, int] | None = None

            def handed_off() -> None:
                nonlocal finishing
                if finishing is not None:
                    done, n = finishing
                    finishing = None
                    for message in interrupts.result(done):
                        progress.warn(message)
                    progress.advance(n)

            try:
                first = next(batches, None)
                future: Future | None = pool.submit(load, first) if first else None
                while future is not None:
                    check_cancelled(progress)
                    tiles, inputs, reasons = interrupts.result(future)
                    following = next(batches, None)
                    future = pool.submit(load, following) if following else None  # read-ahead

                    good = [i for i, r in enumerate(reasons) if r is None]
                    out, out_reasons = None, None
                    if good:
                        tm = time.monotonic()
                        out = executor.run(inputs[good] if len(good) < len(tiles) else inputs)
                        if on_device:  # the check waits for the device: the model's time ends there
                            out_reasons = _bad_tiles_on_device(out, max_abs)
                        report.model_seconds += time.monotonic() - tm
                    if behind:
                        handed_off()
                        finishing = writer.submit(finish, tiles, inputs, reasons, good, out, out_reasons), len(tiles)
                    else:
                        for message in finish(tiles, inputs, reasons, good, out, out_reasons):
                            progress.warn(message)
                        progress.advance(len(tiles))
                handed_off()
            except BaseException:
                writer.shutdown(wait=True, cancel_futures=True)  # the sinks are aborted after the writer stops
                raise
            report.tiles = n_tiles
        for s in sinks:
            s.close()
    except BaseException:
        for s in sinks:
            s.abort()
        raise
    report.batch_size = executor.batch_size or 1
    report.seconds = time.monotonic() - t0
    return report


def _nan_fallback(model: TileModel) -> BadTileFallback:
    """Without a caller fallback, a bad tile of a scale-changing model becomes NaN output."""

    def fallback(tile: Tile, tile_input: np.ndarray, reason: str) -> np.ndarray:
        return np.full((model.out_channels, tile.row.out_size, tile.col.out_size), np.nan, np.float32)

    return fallback
