"""``sarcodec infer``: a user's fully-convolutional model (ONNX, or trusted TorchScript) over whole rasters.

The codec's tiled engine with someone else's network in it (``sarcodec.infer``): seamless blending,
nodata kept, bounded memory, an atomic output, the transform scaled by the model's factor. The model
is loaded once before the first file, so a file that is not a model is exit 2 for the whole run; the
probe run that measures its scale and checks its output happens per input, because it depends on
the input's band count. Under torchrun the ranks split each output's rows
(``sarcodec.infer.distributed``).
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from sarcodec.cli_progress import make_progress
from sarcodec.errors import UsageError
from sarcodec.progress import CancelToken
from sarcodec.vocabulary import MAX_TILE_SIZE, OUTPUT_DTYPES, TIFF_COMPRESSIONS

from .jobs import RASTER_SUFFIX, STDIO, Job, check_job_destination, check_source, plan_jobs
from .messages import human_bytes, say, say_summary, warn_line
from .options import (
    add_crs_and_message_options,
    epilog,
    finite_float,
    formatter,
    int_at_least,
    parse_batch_size,
    parse_device,
)
from .run import (
    RunContext,
    check_device,
    messages_stream,
    refuse_stdio_under_torchrun,
    run_each,
    run_inputs,
    torchrun_rank,
    unreported_warnings,
)
from .stdio import Scratch, copy_to_stdout, spooled_source

INFER_EXAMPLES = """\
examples:
  sarcodec infer sr_x2.onnx scene.tif -o scene_x2.tif        # scale and convention from the model's metadata
  sarcodec infer despeckle.onnx scenes/*.tif -o despeckled/  # several inputs into one folder
  sarcodec infer mynet.onnx scene.tif --log-domain --scale 2  # a model without sarcodec metadata
  sarcodec infer mynet.onnx scene.tif --in-range -30 5 --bands 1,2   # dB mapped to 0..1, two channels
  sarcodec infer mynet.pt scene.tif --trust-torchscript --device cuda --batch-size 16
  torchrun --nproc-per-node 4 -m sarcodec infer sr_x2.onnx scene.tif -o scene_x2.tif

The model must be fully convolutional (or take exactly --tile-size pixels with --overlap 0). What it
is fed: raw pixel values (--convention raw, the default without metadata), 10*log10(intensity) dB
(--log-domain; DN, amplitude, intensity or dB inputs are recognised like compress does) or values
mapped from LO..HI to 0..1 (--in-range LO HI). The ONNX metadata keys sarcodec.scale and
sarcodec.convention, when present, make these flags unnecessary; given flags win.
"""


def parse_tile(text: str) -> int:
    value = int_at_least(8, "tile size")(text)
    if value > MAX_TILE_SIZE:
        raise argparse.ArgumentTypeError(f"tile size must be at most {MAX_TILE_SIZE}, got {value}")
    return value


def parse_scale(text: str) -> Fraction:
    """``2``, ``0.5`` or ``1/2``: the output size over the input size."""
    try:
        value = Fraction(text.strip()).limit_denominator(64)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"scale must be a number such as 2, 0.5 or 1/2, got {text!r}") from None
    if not Fraction(1, 16) <= value <= 16:
        raise argparse.ArgumentTypeError(f"scale must be between 1/16 and 16, got {text!r}")
    return value


def parse_bands(text: str) -> list[int]:
    """``1,2``: the input bands, 1-based, in the order the model's channels take them."""
    try:
        bands = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands are 1-based numbers separated by commas, got {text!r}") from None
    if not bands or min(bands) < 1:
        raise argparse.ArgumentTypeError(f"bands are 1-based numbers separated by commas, got {text!r}")
    return bands


def parse_convention(text: str) -> str:
    from sarcodec.infer.model_file import Convention

    try:
        return str(Convention.parse(text))
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any) -> None:
    """The ``infer`` sub-command on ``sub`` (``build_parser``'s sub-parsers)."""
    p = sub.add_parser("infer", help="run an ONNX/TorchScript model over whole rasters (super-resolution, "
                                     "despeckling ...)",
                       description="Run a fully-convolutional model over whole rasters with the tiled engine: "
                                   "no seams, nodata kept, bounded memory, georeferencing scaled with the output.",
                       epilog=epilog(INFER_EXAMPLES), formatter_class=formatter)
    p.add_argument("model", metavar="MODEL", help="the model: an ONNX file (or TorchScript with --trust-torchscript)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="raster(s) to read; '-' reads standard input")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="GeoTIFF to write, or a folder (required to be one with several inputs); '-' writes "
                        "standard output. Default: INPUT_MODEL.tif next to each input")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (refused otherwise)")
    model = p.add_argument_group("the model")
    model.add_argument("--scale", type=parse_scale, metavar="S",
                       help="output size over input size: 2, 1/2 ... (default: the model's sarcodec.scale, "
                            "else measured by a probe run)")
    values = model.add_mutually_exclusive_group()
    values.add_argument("--convention", type=parse_convention, metavar="raw|log_db|range:LO:HI",
                        help="what the model takes and returns (default: the model's sarcodec.convention, else raw)")
    values.add_argument("--log-domain", dest="convention", action="store_const", const="log_db",
                        help="the model works on 10*log10(intensity) dB (same as --convention log_db)")
    values.add_argument("--in-range", nargs=2, type=finite_float("--in-range"), metavar=("LO", "HI"),
                        help="the model takes values mapped from LO..HI to 0..1 (same as --convention range:LO:HI)")
    model.add_argument("--bands", type=parse_bands, metavar="B[,B...]",
                       help="input bands, 1-based, in the order of the model's channels (default: all)")
    model.add_argument("--trust-torchscript", action="store_true",
                       help="accept a TorchScript file (it runs code when loaded: only for models you made)")
    engine = p.add_argument_group("engine")
    engine.add_argument("--tile-size", type=parse_tile, default=256, metavar="PX",
                        help="input tile edge in pixels (default: 256)")
    engine.add_argument("--overlap", type=int_at_least(0, "overlap"), default=32, metavar="PX",
                        help="input tile overlap in pixels, blended with a cosine window (default: 32)")
    engine.add_argument("--device", type=parse_device, default="auto", metavar="auto|cpu|cuda[:i]",
                        help="where the model runs (default: auto, CUDA when present)")
    engine.add_argument("--batch-size", type=parse_batch_size, default="auto", metavar="auto|N",
                        help="tiles per batch (default: auto)")
    out = p.add_argument_group("GeoTIFF output")
    out.add_argument("--output-dtype", type=str.lower, choices=OUTPUT_DTYPES, default=None, metavar="DTYPE",
                     help=f"one of {', '.join(OUTPUT_DTYPES)} (default: the input's type for a log-domain model "
                          "that keeps the bands, else float32)")
    out.add_argument("--tiff-compress", type=str.upper, choices=TIFF_COMPRESSIONS, default="LZW",
                     metavar="|".join(TIFF_COMPRESSIONS), help="GeoTIFF compression (default: LZW)")
    add_crs_and_message_options(p)
    p.set_defaults(handler=run_infer)


def run_infer(args: argparse.Namespace, cancel: CancelToken) -> int:
    if 2 * args.overlap > args.tile_size:
        raise UsageError(f"--overlap {args.overlap} must be at most half the tile size {args.tile_size}")
    if args.in_range is not None:
        low, high = args.in_range
        if not high > low:
            raise UsageError(f"--in-range needs LO < HI, got {low:g} {high:g}")
        args.convention = f"range:{low:g}:{high:g}"
    model_path = Path(args.model).expanduser()
    jobs = plan_jobs(args.inputs, args.output, RASTER_SUFFIX, tag="_" + model_path.stem)
    check_device(args)
    ctx = RunContext(args, cancel, messages_stream(jobs))
    _check_model(model_path, args)
    ctx.inputs = run_inputs(ctx, jobs, model_path)
    return run_each(ctx, jobs, _infer_one)


def _check_model(path: Path, args: argparse.Namespace) -> None:
    """Load the model once before the first file: one that cannot load is exit 2 for the whole run."""
    from sarcodec import interrupts
    from sarcodec.infer.model_file import load_user_model

    with interrupts.deferred():
        load_user_model(path, trust_torchscript=args.trust_torchscript)


def _options(args: argparse.Namespace, crs: str | None) -> Any:
    from sarcodec.infer.run import InferOptions

    return InferOptions(bands=args.bands, scale=args.scale, convention=args.convention, tile_size=args.tile_size,
                        overlap=args.overlap, device=args.device, batch_size=args.batch_size,
                        trust_torchscript=args.trust_torchscript, output_dtype=args.output_dtype,
                        tiff_compress=args.tiff_compress, crs=crs)


def _infer_one(ctx: RunContext, job: Job, scratch: Scratch) -> None:
    args = ctx.args
    rank = torchrun_rank()
    refuse_stdio_under_torchrun(job, rank)
    check_source(job)
    check_job_destination(job, args.overwrite, ctx.taken, inputs=ctx.inputs)
    source = spooled_source(job, scratch, RASTER_SUFFIX)
    destination = str(scratch.path / "stdout.tif") if job.destination == STDIO else job.destination
    options = _options(args, args.crs)
    with make_progress(prefix=job.source_name, quiet=args.quiet or bool(rank), cancel=ctx.cancel) as progress:
        if rank is None:
            from sarcodec.infer.run import infer_raster

            result = infer_raster(args.model, source, destination, options, progress)
        else:
            from sarcodec.infer.distributed import distributed_infer

            result = distributed_infer(args.model, source, destination, options, progress)
    if result is None:  # a torchrun rank other than 0: rank 0 wrote the output and reports it
        return
    for warning in unreported_warnings(result.warnings, progress, crs_warned=False):
        say(sys.stderr, warn_line(f"{job.source_name}: {scratch.shown(warning)}"))
    size = Path(destination).stat().st_size if Path(destination).exists() else None
    if job.destination == STDIO:
        copy_to_stdout(destination)
    if not args.quiet:
        say_summary(ctx, infer_summary(job, result, size))


def infer_summary(job: Job, result: Any, size: int | None) -> str:
    """One line per file: what ran, how it was fed, and what came out."""
    parts = [f"{result.model_kind} model, scale {result.scale}, {result.convention}",
             f"{result.width}x{result.height}x{result.bands_out}", human_bytes(size),
             f"{result.seconds:.1f} s on {result.device}"]
    return f"{job.source_name} -> {job.destination_name}: " + ", ".join(parts)
