"""Every option of the command line, declared once: value parsers and the builders that add them.

A command module (``compress``, ``decompress``, ``info``, ``models``) assembles its parser from these
builders, so an option shared by several commands has one spelling, one help text and one check
(as rasterio's ``rio/options.py`` does for its commands). Values are validated while parsing: a typo
fails in a second with exit code 4 (``CliParser``), before a model loads and never with the model
error code 2. Nothing here imports the engine; ``--max-error-db`` and ``--crs`` import the small
modules that check them only when given.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from sarcodec.errors import EXIT_CODES, UsageError
from sarcodec.resources import MODEL_ENV
from sarcodec.vocabulary import MAX_TILE_SIZE, OUTPUT_DTYPES, TIFF_COMPRESSIONS, TILE_STEP

DEBUG_HELP = "show the Python traceback of a failure"

# ----------------------------------------------------------------------------------------------
# value parsers (argparse ``type=``): ArgumentTypeError's text is the one-line usage error


def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, got {value}")
        return value

    return parse


def parse_tile_size(text: str) -> int:
    # The container header's own limit (sarcodec.vocabulary), so whatever compress accepts,
    # decompress reads back.
    value = int_at_least(TILE_STEP, "tile size")(text)
    if value % TILE_STEP:
        raise argparse.ArgumentTypeError(f"tile size must be a multiple of {TILE_STEP}, got {value}")
    if value > MAX_TILE_SIZE:
        raise argparse.ArgumentTypeError(f"tile size must be at most {MAX_TILE_SIZE}, got {value}")
    return value


def parse_overlap(text: str) -> int:
    value = int_at_least(0, "overlap")(text)
    if value % TILE_STEP:
        raise argparse.ArgumentTypeError(f"overlap must be a multiple of {TILE_STEP}, got {value}")
    return value


def check_tile_geometry(args: argparse.Namespace) -> None:
    """Overlap against tile size, before the model loads (each option alone was checked by argparse)."""
    overlap = args.overlap if args.overlap is not None else args.overlap_default
    if 2 * overlap > args.tile_size:
        raise UsageError(f"--overlap {overlap} must be at most half the tile size {args.tile_size}")


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def parse_device(text: str) -> str:
    value = text.strip().lower()
    if not _DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"device must be auto, cpu, cuda or cuda:N, got {text!r}")
    return value


def parse_batch_size(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    return int_at_least(1, "batch size")(text)


def parse_max_error(text: str) -> float:
    from sarcodec.codec.bounded import check_bound

    try:
        return check_bound(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def finite_float(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} values must be numbers, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{what} values must be finite, got {text!r}")
        return value

    return parse


def parse_crs(text: str) -> str:
    """Validated at parse time: a bad ``--crs`` is a usage error before any file is touched."""
    value = text.strip()
    if not crs_is_valid(value):
        shown = value.splitlines()[0][:60] if value else ""
        raise argparse.ArgumentTypeError(f"invalid CRS {shown!r}: expected EPSG:XXXX or WKT")
    return value


def crs_is_valid(value: str) -> bool:
    if not value:
        return False
    try:
        import rasterio
        from rasterio.crs import CRS

        # Inside an Env, GDAL/PROJ complaints go to rasterio's logger instead of raw "ERROR 1:" lines
        # on stderr, which would break the one-line error rule.
        with rasterio.Env():
            CRS.from_user_input(value)
    except Exception:  # noqa: BLE001 - CRSError and friends: not a CRS
        return False
    return True


# ----------------------------------------------------------------------------------------------
# help layout


def exit_code_table() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())


def epilog(examples: str) -> str:
    """A command's help epilog: its examples, then the exit codes."""
    return examples + "\n" + exit_code_table()


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=100)


# ----------------------------------------------------------------------------------------------
# option builders, in the order the commands show them


def add_io_options(p: argparse.ArgumentParser, *, input_kind: str, output_kind: str, auto: str) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"{input_kind} to read; '-' reads standard input")
    p.add_argument("-o", "--output", metavar="PATH",
                   help=f"{output_kind} to write, or a folder (required to be one with several inputs); "
                        f"'-' writes standard output. Default: {auto} next to each input")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (refused otherwise)")


def add_codec_options(p: argparse.ArgumentParser) -> None:
    codec = p.add_argument_group("codec")
    codec.add_argument("--quality", type=int_at_least(1, "quality"), metavar="N",
                       help="quality level, 1 (smallest) .. the model's maximum (default: the model's default)")
    codec.add_argument("--tile-size", type=parse_tile_size, default=256, metavar="PX",
                       help="tile edge in pixels, a multiple of 16 (default: 256)")
    codec.add_argument("--max-error-db", type=parse_max_error, metavar="E", default=None,
                       help="error-bounded: no valid pixel moves by more than E dB (20*log10 DN, 10*log10 intensity, "
                            "absolute dB), checked for every pixel before the file is written; 0.01 to 20; not "
                            "with --quality")
    codec.add_argument("--no-estimate", dest="estimate_quality", action="store_false",
                       help="skip the quality estimate (decoding a sample of tiles) in the summary")


def add_geotiff_output_options(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("GeoTIFF output")
    out.add_argument("--tiff-compress", type=str.upper, choices=TIFF_COMPRESSIONS, default="LZW",
                     metavar="|".join(TIFF_COMPRESSIONS), help="GeoTIFF compression (default: LZW)")
    out.add_argument("--output-dtype", type=str.lower, choices=OUTPUT_DTYPES, default=None,
                     metavar="DTYPE", help=f"output data type, one of {', '.join(OUTPUT_DTYPES)} "
                                           "(default: the original dtype)")
    out.add_argument("--cog", action="store_true", help="write a Cloud Optimized GeoTIFF with overviews")
    out.add_argument("--salvage", action="store_true",
                     help="decode around damaged chunks, marking them nodata, instead of failing")


def add_area_options(p: argparse.ArgumentParser) -> None:
    area = p.add_argument_group("part of the scene (only the chunks it covers are decoded)")
    area.add_argument("--window", nargs=4, type=int_at_least(0, "window values"),
                      metavar=("COL", "ROW", "WIDTH", "HEIGHT"),
                      help="decode this pixel window; the output's transform (or GCPs) moves with it")
    area.add_argument("--bbox", nargs=4, type=finite_float("bounding box"),
                      metavar=("MINX", "MINY", "MAXX", "MAXY"),
                      help="decode the whole pixels this box covers (in the file's CRS unless --bbox-crs)")
    area.add_argument("--bbox-crs", type=parse_crs, metavar="EPSG:XXXX|WKT", help="CRS of --bbox (default: the file's)")


def add_engine_options(p: argparse.ArgumentParser, *, overlap_default: str) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--model", metavar="PATH",
                   help=f"model file (compress default: ${MODEL_ENV}, else the shipped sarcodec_v2.npz; "
                        "decompress default: the model the file names, found by checksum in the model "
                        "folders, see 'sarcodec models')")
    g.add_argument("--device", type=parse_device, default="auto", metavar="auto|cpu|cuda[:i]",
                   help="where the network runs (default: auto, CUDA when present)")
    g.add_argument("--batch-size", type=parse_batch_size, default="auto", metavar="auto|N",
                   help="tiles per batch (default: auto, sized from free GPU memory)")
    g.add_argument("--overlap", type=parse_overlap, default=None, metavar="PX",
                   help=f"tile overlap in pixels, a multiple of 16 (default: {overlap_default})")
    g.add_argument("--weight-map", metavar="PATH",
                   help="also write the tile blending weights as a GeoTIFF (debugging); with several "
                        "inputs, a folder")


def add_crs_and_message_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("georeferencing and output")
    g.add_argument("--crs", type=parse_crs, metavar="EPSG:XXXX|WKT",
                   help="CRS to use when the input has none or an invalid one (default: ask on a "
                        "terminal, warn and keep none in a pipeline)")
    m = p.add_argument_group("messages")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary (warnings and errors stay)")
    m.add_argument("--debug", action="store_true", help=DEBUG_HELP)


def add_json_and_debug_options(p: argparse.ArgumentParser, *, json_help: str) -> None:
    """``info`` and ``models``: ``--json`` and ``--debug``, and no progress to silence (``quiet`` False)."""
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    p.set_defaults(quiet=False)
