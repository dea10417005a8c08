"""``sarcodec decompress``: ``.npz`` containers into GeoTIFFs (or COGs), whole or a window of them.

A ``--model`` given is checked once before the first file; otherwise each file's model is found by
checksum. Each container's header is validated first (a foreign file fails before anything is
written), its CRS asked for or warned about when it has none, and ``codec.decode.decompress_container``
(or, under torchrun, ``sarcodec.distributed``) writes the GeoTIFF; a summary line follows.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from sarcodec.cli_progress import make_progress
from sarcodec.codec.options import DecompressOptions
from sarcodec.destinations import hold_until
from sarcodec.progress import CancelToken

from .engine import import_engine, load_model_summary
from .jobs import (
    COMPRESSED_SUFFIX,
    RASTER_SUFFIX,
    STDIO,
    Job,
    check_job_destination,
    check_source,
    check_weight_map,
    plan_jobs,
    weight_map_for,
)
from .messages import human_bytes, say, say_summary, warn_line
from .options import (
    add_area_options,
    add_crs_and_message_options,
    add_engine_options,
    add_geotiff_output_options,
    add_io_options,
    epilog,
    formatter,
)
from .run import (
    RunContext,
    check_device,
    messages_stream,
    refuse_stdio_under_torchrun,
    resolve_model,
    run_each,
    run_inputs,
    torchrun_rank,
    unreported_warnings,
)
from .stdio import Scratch, copy_to_stdout, spooled_source
from .terminal import interactive, resolve_crs

DECOMPRESS_EXAMPLES = """\
examples:
  sarcodec decompress scene.npz                    # -> scene.tif (LZW, original dtype)
  sarcodec decompress scene.npz -o scene_cog.tif --cog --tiff-compress ZSTD
  sarcodec decompress scene.npz --output-dtype float32 -o scene_f32.tif
  sarcodec decompress damaged.npz --salvage        # damaged chunks become nodata
  sarcodec decompress *.npz -o restored/ --overwrite
  sarcodec decompress scene.npz --window 4096 2048 1024 1024 -o area.tif   # COL ROW WIDTH HEIGHT
  sarcodec decompress scene.npz --bbox 12.1 41.8 12.3 41.95 --bbox-crs EPSG:4326 -o rome.tif
"""


def add_parser(sub: Any) -> None:
    """The ``decompress`` sub-command on ``sub`` (``build_parser``'s sub-parsers)."""
    d = sub.add_parser("decompress", help="decompress .npz containers into GeoTIFFs",
                       description="Decompress .npz containers into GeoTIFFs (or Cloud Optimized GeoTIFFs).",
                       epilog=epilog(DECOMPRESS_EXAMPLES), formatter_class=formatter)
    add_io_options(d, input_kind=".npz container(s)", output_kind="GeoTIFF", auto="INPUT with .tif")
    add_geotiff_output_options(d)
    add_area_options(d)
    add_engine_options(d, overlap_default="as recorded at compression")
    add_crs_and_message_options(d)
    d.set_defaults(handler=run_decompress, overlap_default=None)


def run_decompress(args: argparse.Namespace, cancel: CancelToken) -> int:
    jobs = plan_jobs(args.inputs, args.output, RASTER_SUFFIX)
    check_weight_map(args, jobs)
    check_device(args)
    ctx = RunContext(args, cancel, messages_stream(jobs))
    _model_for_decompress(ctx)
    ctx.inputs = run_inputs(ctx, jobs)
    return run_each(ctx, jobs, _decompress_one)


def _model_for_decompress(ctx: RunContext) -> None:
    """Validate an explicit ``--model`` once; else the engine finds the model each file names."""
    if ctx.args.model:
        ctx.model = load_model_summary(resolve_model(ctx))


def _decompress_one(ctx: RunContext, job: Job, scratch: Scratch) -> None:
    args = ctx.args
    rank = torchrun_rank()
    refuse_stdio_under_torchrun(job, rank)
    check_source(job)
    weight_map = weight_map_for(args, job) if rank is None else None  # torchrun ranks write none
    check_job_destination(job, args.overwrite, ctx.taken, inputs=ctx.inputs, weight_map=weight_map)
    source = spooled_source(job, scratch, COMPRESSED_SUFFIX)
    import_engine()  # torch and the codec
    from sarcodec.codec import decode

    header = decode.container_info(source)
    valid_crs = _container_has_valid_crs(header)
    crs = resolve_crs(job.source_name, valid_crs, args.crs, interactive=interactive() and rank is None)
    crs_warned = valid_crs is False and crs is None
    destination = str(scratch.path / "stdout.tif") if job.destination == STDIO else job.destination
    if weight_map:
        hold_until(weight_map, destination)  # published right after the output, never before or without it
    options = DecompressOptions(
        tiff_compress=args.tiff_compress,
        output_dtype=args.output_dtype,
        cog=args.cog,
        device=args.device,
        batch_size=args.batch_size,
        model_path=str(ctx.model.path) if ctx.model is not None else None,
        crs=crs,
        overlap=args.overlap,
        weight_map=weight_map if rank is None else weight_map_for(args, job),
        salvage=args.salvage,
        window=tuple(args.window) if args.window else None,
        bbox=tuple(args.bbox) if args.bbox else None,
        bbox_crs=args.bbox_crs,
    )
    with make_progress(prefix=job.source_name, quiet=args.quiet or bool(rank), cancel=ctx.cancel) as progress:
        if rank is None:
            result = decode.decompress_container(source, destination, options, progress)
        else:
            from sarcodec.distributed import distributed_decompress

            result = distributed_decompress(source, destination, options, progress)
    if result is None:  # a torchrun rank other than 0: rank 0 wrote the output and reports it
        return
    for warning in unreported_warnings(result.warnings, progress, crs_warned=crs_warned):
        say(sys.stderr, warn_line(f"{job.source_name}: {scratch.shown(warning)}"))
    if result.damaged_chunks and not any("damaged" in w for w in result.warnings):
        shown = ", ".join(str(i) for i in result.damaged_chunks[:20])
        more = " ..." if len(result.damaged_chunks) > 20 else ""
        say(sys.stderr, warn_line(f"{job.source_name}: damaged chunk(s) {shown}{more} written as nodata"))
    size = os.path.getsize(destination) if os.path.exists(destination) else None
    if job.destination == STDIO:
        copy_to_stdout(destination)
    if not args.quiet:
        say_summary(ctx, decompress_summary(job, result, size, args))


def decompress_summary(job: Job, result: Any, size: int | None, args: argparse.Namespace) -> str:
    kind = "COG" if args.cog else "GeoTIFF"
    parts = [
        f"{result.width}x{result.height}x{result.bands} {result.dtype}",
        f"{human_bytes(size)} {kind} ({args.tiff_compress})",
        f"{result.seconds:.1f} s on {result.device}",
    ]
    return f"{job.source_name} -> {job.destination_name}: " + ", ".join(parts)


def _container_has_valid_crs(header: dict[str, Any]) -> bool | None:
    geo = header.get("geo")
    if not isinstance(geo, dict):
        return None
    from sarcodec.geometa import has_valid_crs

    return bool(has_valid_crs(geo))
