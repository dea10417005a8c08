"""``torchrun --nproc-per-node N -m sarcodec infer ...``: one scene, contiguous row shards, one output.

The workflow this product grew from (``../shared/seeds``), with the codec's own machinery
(``sarcodec.distributed``): every rank plans the same run (the probe included), takes a contiguous band
of *output* rows, runs the engine over just those rows (``run_tiled(out_rows=...)``: the tiles that
touch them, blended exactly as in one process) and writes them as a shard (``rank-K.bin`` plus an
index JSON) in a hidden folder next to the output; rank 0 checks that the shards cover every row
exactly once and stitches them into the GeoTIFF, renamed into place at the end. The output is the
same whatever the number of ranks, and a failed or interrupted rank leaves neither output nor shards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from sarcodec.distributed import (
    ShardFolder,
    ShardWriter,
    _rank_job,
    agreed_step,
    copy_shard_rows,
    shard_ranges,
)
from sarcodec.infer.run import InferOptions, InferPlan, InferResult, _ValueSink, engine_device, plan_inference
from sarcodec.infer.run import preprocess as _preprocess
from sarcodec.infer.run import tile_model as _tile_model
from sarcodec.progress import NullProgress, Progress


@dataclass
class _RankOptions(InferOptions):
    """``InferOptions`` as ``sarcodec.distributed``'s rank set-up handles options (it clears a weight map)."""

    weight_map: None = None


class _RowRange:
    """Passes on only the rows ``[r0, r1)`` a rank owns (the engine also emits its tiles' other rows)."""

    def __init__(self, out: Any, r0: int, r1: int) -> None:
        self.out, self.r0, self.r1 = out, r0, r1

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None,
                   indexes: list[int] | None = None) -> None:
        a, b = max(row0, self.r0), min(row0 + block.shape[1], self.r1)
        if a < b:
            self.out.write_rows(a, block[:, a - row0 : b - row0], None if valid is None else valid[a - row0 : b - row0])

    def close(self) -> None:
        """The shard is finished by the caller."""

    def abort(self) -> None:
        """Nothing of its own to remove."""


class _ValidToNodata:
    """A shard keeps converted values only: invalid pixels become nodata before they are stored."""

    def __init__(self, out: ShardWriter, nodata: float | None, dtype: np.dtype) -> None:
        self.out, self.nodata, self.dtype = out, nodata, dtype

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None) -> None:
        if valid is not None and self.nodata is not None and not valid.all():
            block = np.where(valid[None], block, np.asarray(self.nodata, dtype=block.dtype))
        for c in range(block.shape[0]):  # one shard block per band, as the decompress shards are
            self.out.write_rows(row0, np.ascontiguousarray(block[c : c + 1].astype(self.dtype, copy=False)), None,
                                indexes=[c + 1])

    def close(self) -> None:
        """The shard is finished by the caller."""

    def abort(self) -> None:
        self.out.abort()


def distributed_infer(model_path: str | Path, source: str | Path, destination: str | Path,
                      options: InferOptions | None = None, progress: Progress | None = None, *,
                      timeout_s: float | None = None) -> InferResult | None:
    """``infer_raster`` run by every torchrun rank: the result on rank 0, None elsewhere."""
    import rasterio

    from sarcodec.device import DevicePolicy
    from sarcodec.raster_io import RasterSource, bounded_gdal_cache
    from sarcodec.runner import run_tiled
    from sarcodec.serial_reads import SerialReads

    t0 = time.monotonic()
    options = _RankOptions(**{f.name: getattr(options or InferOptions(), f.name) for f in fields(InferOptions)})
    progress = progress or NullProgress()
    with _rank_job(source, destination, options, progress, timeout_s) as (ctx, shards, opts, mine_progress):
        plan = agreed_step(ctx, "planning the inference", lambda: plan_inference(model_path, source, opts))
        height = int(plan.profile["height"])
        rows = shard_ranges(height, ctx.world_size)[ctx.rank]

        def run_shard() -> str:
            writer = ShardWriter(shards, ctx.rank)
            device = ""
            try:
                if len(rows):
                    sink = _RowRange(_ValueSink(_ValidToNodata(writer, plan.nodata, plan.out_dtype), plan),
                                     rows.start, rows.stop)
                    with rasterio.open(str(source)) as ds, bounded_gdal_cache():
                        src = RasterSource(SerialReads(ds), plan.bands, nodata=plan.nodata,
                                           preprocess=_preprocess(plan), fill=plan.fill)
                        policy = DevicePolicy(engine_device(plan, opts.device), opts.batch_size)
                        rep = run_tiled(_tile_model(plan), src, sink, tile_size=opts.tile_size, overlap=opts.overlap,
                                        window="partition", policy=policy, progress=mine_progress,
                                        out_rows=(rows.start, rows.stop))
                        device = rep.device
                writer.finish({"device": device})
            except BaseException:
                writer.abort()
                raise
            return device

        device = agreed_step(ctx, "running its shard", run_shard)

        def stitch() -> InferResult:
            progress.info(f"stitching the rows of {ctx.world_size} ranks into {destination}")
            stitch_rows(ctx.world_size, shards, plan, destination)
            shown = device if plan.model.kind == "torchscript" else "onnxruntime"
            return InferResult(str(source), str(destination), plan.profile["width"], height, len(plan.bands),
                               plan.probe.out_channels, plan.probe.scale, str(plan.convention), plan.model.kind,
                               f"{shown} x {ctx.world_size} ranks", time.monotonic() - t0, list(plan.warnings))

        return agreed_step(ctx, "stitching the shards", stitch, root_only=True)


def stitch_rows(world_size: int, shards: ShardFolder, plan: InferPlan, destination: str | Path) -> None:
    """Rank 0: every rank's rows of every band into one GeoTIFF, each row covered exactly once."""
    from sarcodec.geometa import apply_geo_metadata
    from sarcodec.raster_io import GeoTiffSink

    meta = plan.meta
    out = GeoTiffSink(destination, plan.profile, finalize=lambda ds: apply_geo_metadata(ds, meta))
    try:
        copy_shard_rows([shards.read_index(k) for k in range(world_size)], shards, out,
                        int(plan.profile["count"]), int(plan.profile["height"]))
        out.close()
    except BaseException:
        out.abort()
        raise
