"""``sarcodec compress``: rasters, Sentinel-1 products or folders of GeoTIFFs into ``.npz`` containers.

The model is loaded once before the first file (a model problem is exit 2 for the whole run), then
each raster is checked, its CRS asked for or warned about, and ``codec.encode.compress_raster`` (or,
under torchrun, ``sarcodec.distributed``) writes the container; a summary line follows.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sarcodec.cli_progress import make_progress
from sarcodec.codec.options import CompressOptions
from sarcodec.destinations import hold_until
from sarcodec.errors import UsageError
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
    release_inputs,
    weight_map_for,
)
from .messages import human_bytes, say, say_summary, warn_line
from .options import (
    add_codec_options,
    add_crs_and_message_options,
    add_engine_options,
    add_io_options,
    check_tile_geometry,
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

COMPRESS_EXAMPLES = """\
examples:
  sarcodec compress scene.tif                      # -> scene.npz
  sarcodec compress scene.tif -o out.npz --quality 5
  sarcodec compress scene.tif --max-error-db 0.5     # no pixel moves by more than 0.5 dB
  sarcodec compress *.tif -o compressed/ --device cuda --batch-size auto
  sarcodec compress S1A_IW_GRDH_1SDV_...SAFE       # a Sentinel-1 product (.SAFE folder or .zip)
  sarcodec compress scenes/                        # every GeoTIFF in a folder
  sarcodec compress scene.tif --crs EPSG:32630     # set a CRS when the input has none
  cat scene.tif | sarcodec compress - -o - > scene.npz
"""


def add_parser(sub: Any) -> None:
    """The ``compress`` sub-command on ``sub`` (``build_parser``'s sub-parsers)."""
    c = sub.add_parser("compress", help="compress GeoTIFFs into .npz containers",
                       description="Compress rasters (GeoTIFF or any GDAL raster) into .npz containers.",
                       epilog=epilog(COMPRESS_EXAMPLES), formatter_class=formatter)
    add_io_options(c, input_kind="raster(s), Sentinel-1 .SAFE folders or .zip files, or folders of GeoTIFFs",
                   output_kind=".npz file", auto="INPUT with .npz")
    add_codec_options(c)
    add_engine_options(c, overlap_default="64")
    add_crs_and_message_options(c)
    c.set_defaults(handler=run_compress, overlap_default=64)


def run_compress(args: argparse.Namespace, cancel: CancelToken) -> int:
    jobs = plan_jobs(args.inputs, args.output, COMPRESSED_SUFFIX, expand=True)
    try:
        check_weight_map(args, jobs)
        check_tile_geometry(args)
        check_device(args)
        ctx = RunContext(args, cancel, messages_stream(jobs))
        _model_for_compress(ctx)
        ctx.inputs = run_inputs(ctx, jobs)
        return run_each(ctx, jobs, _compress_one)
    finally:
        release_inputs(jobs)  # in-memory VRTs of products that never ran (a model error stops the run early)


def _model_for_compress(ctx: RunContext) -> None:
    """Load the model once before the first file: a model problem is exit 2 for the whole run."""
    if ctx.args.max_error_db is not None and ctx.args.quality is not None:
        raise UsageError("--max-error-db sets the quality itself: give it or --quality, not both")
    ctx.model = load_model_summary(resolve_model(ctx))
    quality = ctx.args.quality
    if quality is not None and not 1 <= quality <= ctx.model.n_qualities:
        raise UsageError(f"--quality must be in 1..{ctx.model.n_qualities} for model {ctx.model.model_id}, "
                         f"got {quality}")


def _compress_one(ctx: RunContext, job: Job, scratch: Scratch) -> None:
    args = ctx.args
    rank = torchrun_rank()
    refuse_stdio_under_torchrun(job, rank)
    check_source(job)
    if job.name:
        scratch.aliases[job.source] = job.name
    weight_map = weight_map_for(args, job) if rank is None else None  # torchrun ranks write none
    check_job_destination(job, args.overwrite, ctx.taken, inputs=ctx.inputs, weight_map=weight_map)
    source = spooled_source(job, scratch, RASTER_SUFFIX)
    import_engine()  # torch and the codec (already imported when the model was loaded)
    from sarcodec.codec import encode, raster_info

    info = raster_info.inspect_raster(source)
    crs = resolve_crs(job.source_name, info.has_valid_crs, args.crs, interactive=interactive() and rank is None)
    crs_warned = not info.has_valid_crs and crs is None
    from sarcodec.codec.container import check_raster_metadata_fits

    check_raster_metadata_fits(source, crs=crs, name=job.source_name)  # before coding, not after it
    destination = str(scratch.path / "stdout.npz") if job.destination == STDIO else job.destination
    if weight_map:
        hold_until(weight_map, destination)  # published right after the output, never before or without it
    assert ctx.model is not None
    options = CompressOptions(
        quality=args.quality,
        tile_size=args.tile_size,
        overlap=args.overlap if args.overlap is not None else args.overlap_default,
        device=args.device,
        batch_size=args.batch_size,
        model_path=str(ctx.model.path),
        crs=crs,
        weight_map=weight_map if rank is None else weight_map_for(args, job),
        estimate_quality=args.estimate_quality,
        max_error_db=args.max_error_db,
    )
    with make_progress(prefix=job.source_name, quiet=args.quiet or bool(rank), cancel=ctx.cancel) as progress:
        if rank is None:
            result = encode.compress_raster(source, destination, options, progress)
        else:
            from sarcodec.distributed import distributed_compress

            result = distributed_compress(source, destination, options, progress)
    if result is None:  # a torchrun rank other than 0: rank 0 wrote the output and reports it
        return
    for warning in unreported_warnings(result.warnings, progress, crs_warned=crs_warned):
        say(sys.stderr, warn_line(f"{job.source_name}: {scratch.shown(warning)}"))
    if job.destination == STDIO:
        copy_to_stdout(destination)
    if not args.quiet:
        say_summary(ctx, compress_summary(job, result))


def compress_summary(job: Job, result: Any) -> str:
    """One line per file: what a user checks first (size, ratio, bpp, expected fidelity, time)."""
    if result.input_bytes > 0:
        parts = [f"{human_bytes(result.input_bytes)} -> {human_bytes(result.output_bytes)}",
                 f"ratio {result.ratio:.1f}:1"]
    else:  # a virtual input (a product's VRT) has no file size to compare with
        parts = [human_bytes(result.output_bytes)]
    parts.append(f"{result.bpp:.3f} bpp")
    if getattr(result, "max_error_db", None) is not None:
        parts.append(f"every pixel within {result.max_error_db:g} dB (checked)")
    if result.est_rmse_db is not None:
        parts.append(f"est. RMSE {result.est_rmse_db:.2f} dB")
    if result.est_psnr_db is not None:
        parts.append(f"PSNR {result.est_psnr_db:.1f} dB")
    parts.append(f"{result.seconds:.1f} s on {result.device}")
    if result.bad_tiles:
        parts.append(f"{result.bad_tiles} bad tile(s) kept lossless")
    return f"{job.source_name} -> {job.destination_name}: " + ", ".join(parts)
