"""The ``sarcodec`` command line: ``compress``, ``decompress`` and ``info``.

The CLI is a thin front end over ``sarcodec.codec.pipeline``. It owns only what a terminal user
sees and what the engine cannot know:

- which files to read and write (several inputs, ``-o FILE|DIR``, auto-naming, ``-`` for
  stdin/stdout, refusing to overwrite);
- validating option values up front, so a typo fails in a second with exit code 4 instead of after
  loading a model (and never with the model error code 2);
- asking for a CRS on a terminal, warning in a pipeline;
- progress on stderr and a summary per file;
- turning every failure into one line on stderr and an exit code (``sarcodec.errors`` holds the
  mapping), and Ctrl-C/SIGTERM into exit 130 with nothing half-written left behind.

``main(argv)`` returns the exit code instead of exiting, so tests and ``python -m sarcodec`` share
one code path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sarcodec import __version__, interrupts
from sarcodec.cli_progress import make_progress
from sarcodec.cli_streams import (
    copy_fifo,
    copy_stream,
    guard_standard_streams,
    messages_to_stderr,
    one_line,
    stream_was_closed,
)
from sarcodec.destinations import (
    check_destination,
    discard_held,
    forget,
    hold_until,
    remove_temporaries,
    was_published,
)
from sarcodec.errors import (
    EXIT_CODES,
    EXIT_FILE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OOM,
    EXIT_USAGE,
    InputFileError,
    SarcodecError,
    UsageError,
)
from sarcodec.progress import CancelToken
from sarcodec.resources import MODEL_ENV
from sarcodec.vocabulary import MAX_TILE_SIZE, OUTPUT_DTYPES, TIFF_COMPRESSIONS, TILE_STEP

PROG = "sarcodec"
STDIO = "-"
COMPRESSED_SUFFIX = ".npz"
RASTER_SUFFIX = ".tif"
STDIN_NAME = "<stdin>"
STDOUT_NAME = "<stdout>"
CRS_WARNING_MARK = "no valid CRS"  # the engine's own CRS warning is dropped when the CLI already warned


def _pipeline() -> Any:
    """The codec pipeline, imported on first use so parsing and usage errors stay fast."""
    _import_engine()
    from sarcodec.codec import pipeline

    return pipeline

# ----------------------------------------------------------------------------------------------
# messages


def _say(stream: TextIO | None, text: str) -> None:
    """Print and flush, tolerating a closed stream (a summary must not turn success into failure).

    ``stream`` None (Python's stand-in for a closed fd) prints nothing: ``print(file=None)`` would
    write to stdout, which may be the data stream.
    """
    if stream is None:
        return
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        pass


def _error_line(message: str) -> str:
    """The single stderr line every failure produces; control characters (a newline in a file
    name, a multi-line exception text) are escaped so it stays one line and names stay exact."""
    return f"{PROG}: error: {one_line(message)}"


def _warn_line(message: str) -> str:
    return f"{PROG}: warning: {one_line(message)}"


def _say_summary(ctx: Any, text: str) -> None:
    """A per-file summary as one line (names escaped); on stderr (``-o -``) it starts with ``sarcodec:``."""
    line = one_line(text)
    _say(ctx.messages, f"{PROG}: {line}" if ctx.messages is sys.stderr else line)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # unreachable, keeps type checkers calm


# ----------------------------------------------------------------------------------------------
# the default model


def default_model_path() -> Path:
    """The model used when ``--model`` is not given: ``$SARCODEC_MODEL``, else the shipped default.

    One resolver for every front end (``sarcodec.resources``); the path is returned even when the
    file is missing so the error message can name it.
    """
    from sarcodec.resources import default_model_path as engine_default

    return Path(engine_default()).expanduser()


@dataclass
class ModelSummary:
    """What the CLI needs to know about a checkpoint before starting work."""

    path: Path
    model_id: str
    n_qualities: int
    default_quality: int


def load_model_summary(path: str | Path) -> ModelSummary:
    """Load a model once to fail fast (exit 2) and to learn its quality range.

    Loading is cheap next to compressing a scene, and doing it before the first input means a
    missing or corrupt model is reported once, not once per input file. A v2 model (``.npz``) loads
    without torch; a v1 checkpoint imports it.
    """
    _import_engine()  # torch (v1 models, the pipeline) is imported with signals deferred
    from sarcodec.codec import model_store

    model, path, _ = model_store.load(path)
    metadata = getattr(model, "metadata", {}) or {}
    n_qualities = int(getattr(model, "n_qualities", 1) or 1)
    model_id = str(metadata.get("model_id") or path.stem)
    return ModelSummary(path, model_id, n_qualities, min(model_store.default_quality(model), n_qualities))


def version_text() -> str:
    """``--version``: tool, default model and checkpoint hash; never fails on a missing model."""
    lines = [f"{PROG} {__version__}"]
    path = default_model_path()
    if not path.is_file():
        lines.append(f"default model: not found at {path} (install it, set ${MODEL_ENV} or pass --model)")
        return "\n".join(lines)
    try:
        summary = load_model_summary(path)
        lines.append(f"default model: {summary.model_id} (qualities 1..{summary.n_qualities}) at {path}")
    except SarcodecError as exc:
        lines.append(f"default model: unusable: {exc}")
    except Exception as exc:  # noqa: BLE001 - --version must always answer
        lines.append(f"default model: unusable: {type(exc).__name__}: {exc}")
    try:
        from sarcodec.codec.model_store import sha256_of

        lines.append(f"model sha256: {sha256_of(path)}")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"checkpoint sha256: unavailable ({exc})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# argument parsing


class CliParser(argparse.ArgumentParser):
    """argparse with our exit code for usage errors and one-line error messages.

    argparse exits with 2 on a bad option, but 2 is our model error; scripts must be able to tell
    "you typed it wrong" (4) from "the checkpoint is broken" (2).
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f" (see '{self.prog} --help')"
        self.exit(EXIT_USAGE, _error_line(f"{message}{hint}") + "\n")


class _VersionAction(argparse.Action):
    """Computed only when asked: loading the model for every ``--help`` would be wasteful."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the tool version, the default model's version and its checkpoint SHA-256")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        _say(sys.stdout, version_text())
        parser.exit(EXIT_OK)


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be at least {minimum}, got {value}")
        return value

    return parse


def _tile_size(text: str) -> int:
    # The container header's own limit (sarcodec.codec.header), so whatever compress accepts,
    # decompress reads back; imported here, not at module level, so --help stays fast.
    value = _int_at_least(TILE_STEP, "tile size")(text)
    if value % TILE_STEP:
        raise argparse.ArgumentTypeError(f"tile size must be a multiple of {TILE_STEP}, got {value}")
    if value > MAX_TILE_SIZE:
        raise argparse.ArgumentTypeError(f"tile size must be at most {MAX_TILE_SIZE}, got {value}")
    return value


def _check_tile_geometry(args: argparse.Namespace) -> None:
    """Overlap against tile size, before the model loads (each option alone was checked by argparse)."""
    overlap = args.overlap if args.overlap is not None else args.overlap_default
    if 2 * overlap > args.tile_size:
        raise UsageError(f"--overlap {overlap} must be at most half the tile size {args.tile_size}")


def _overlap(text: str) -> int:
    value = _int_at_least(0, "overlap")(text)
    if value % TILE_STEP:
        raise argparse.ArgumentTypeError(f"overlap must be a multiple of {TILE_STEP}, got {value}")
    return value


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _device(text: str) -> str:
    value = text.strip().lower()
    if not _DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"device must be auto, cpu, cuda or cuda:N, got {text!r}")
    return value


def _batch_size(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    return _int_at_least(1, "batch size")(text)


def _max_error(text: str) -> float:
    from sarcodec.codec.bounded import check_bound

    try:
        return check_bound(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _finite_float(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} values must be numbers, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{what} values must be finite, got {text!r}")
        return value

    return parse


def _crs(text: str) -> str:
    """Validated at parse time: a bad ``--crs`` is a usage error before any file is touched."""
    value = text.strip()
    if not _crs_is_valid(value):
        shown = value.splitlines()[0][:60] if value else ""
        raise argparse.ArgumentTypeError(f"invalid CRS {shown!r}: expected EPSG:XXXX or WKT")
    return value


def _crs_is_valid(value: str) -> bool:
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


def _exit_code_table() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())


MAIN_DESCRIPTION = """\
Compress and decompress whole Sentinel-1 SAR scenes with a learned neural codec.
GeoTIFF in, .npz container out, and back; CRS, transform or GCPs, nodata, band descriptions and
tags survive the round trip, and nodata pixels come back unchanged.
"""

MAIN_EXAMPLES = """\
examples:
  sarcodec compress scene.tif                      # -> scene.npz next to it
  sarcodec decompress scene.npz                    # -> scene.tif next to it
  sarcodec compress *.tif -o compressed/           # several inputs into one folder
  cat a.tif | sarcodec compress - -o - | sarcodec decompress - -o b.tif
  sarcodec info scene.npz                          # the container header
  sarcodec COMMAND --help                          # options of one command

environment:
  SARCODEC_MODEL   checkpoint used when --model is not given
"""

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

INFO_EXAMPLES = """\
examples:
  sarcodec info scene.npz
  sarcodec info --json scene.npz | jq .geo
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=100)


def _add_common_io(p: argparse.ArgumentParser, *, input_kind: str, output_kind: str, auto: str) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"{input_kind} to read; '-' reads standard input")
    p.add_argument("-o", "--output", metavar="PATH",
                   help=f"{output_kind} to write, or a folder (required to be one with several inputs); "
                        f"'-' writes standard output. Default: {auto} next to each input")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (refused otherwise)")


def _add_engine_options(p: argparse.ArgumentParser, *, overlap_default: str) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--model", metavar="PATH",
                   help=f"model file (compress default: ${MODEL_ENV}, else the shipped sarcodec_v2.npz; "
                        "decompress default: the model the file names, found by checksum in the model "
                        "folders, see 'sarcodec models')")
    g.add_argument("--device", type=_device, default="auto", metavar="auto|cpu|cuda[:i]",
                   help="where the network runs (default: auto, CUDA when present)")
    g.add_argument("--batch-size", type=_batch_size, default="auto", metavar="auto|N",
                   help="tiles per batch (default: auto, sized from free GPU memory)")
    g.add_argument("--overlap", type=_overlap, default=None, metavar="PX",
                   help=f"tile overlap in pixels, a multiple of 16 (default: {overlap_default})")
    g.add_argument("--weight-map", metavar="PATH",
                   help="also write the tile blending weights as a GeoTIFF (debugging); with several "
                        "inputs, a folder")


def _add_common_tail(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("georeferencing and output")
    g.add_argument("--crs", type=_crs, metavar="EPSG:XXXX|WKT",
                   help="CRS to use when the input has none or an invalid one (default: ask on a "
                        "terminal, warn and keep none in a pipeline)")
    m = p.add_argument_group("messages")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress and no summary (warnings and errors stay)")
    m.add_argument("--debug", action="store_true", help="show the Python traceback of a failure")


def build_parser() -> CliParser:
    """The whole command-line grammar, in one place so ``--help`` documents exactly what runs."""
    epilog_tail = "\n" + _exit_code_table()
    parser = CliParser(prog=PROG, description=MAIN_DESCRIPTION, epilog=MAIN_EXAMPLES + epilog_tail,
                       formatter_class=_formatter)
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)

    c = sub.add_parser("compress", help="compress GeoTIFFs into .npz containers",
                       description="Compress rasters (GeoTIFF or any GDAL raster) into .npz containers.",
                       epilog=COMPRESS_EXAMPLES + epilog_tail, formatter_class=_formatter)
    _add_common_io(c, input_kind="raster(s), Sentinel-1 .SAFE folders or .zip files, or folders of GeoTIFFs",
                   output_kind=".npz file", auto="INPUT with .npz")
    codec = c.add_argument_group("codec")
    codec.add_argument("--quality", type=_int_at_least(1, "quality"), metavar="N",
                       help="quality level, 1 (smallest) .. the model's maximum (default: the model's default)")
    codec.add_argument("--tile-size", type=_tile_size, default=256, metavar="PX",
                       help="tile edge in pixels, a multiple of 16 (default: 256)")
    codec.add_argument("--max-error-db", type=_max_error, metavar="E", default=None,
                       help="error-bounded: no valid pixel moves by more than E dB (20*log10 DN, 10*log10 intensity, "
                            "absolute dB), checked for every pixel before the file is written; 0.01 to 20; not "
                            "with --quality")
    codec.add_argument("--no-estimate", dest="estimate_quality", action="store_false",
                       help="skip the quality estimate (decoding a sample of tiles) in the summary")
    _add_engine_options(c, overlap_default="64")
    _add_common_tail(c)
    c.set_defaults(handler=run_compress, overlap_default=64)

    d = sub.add_parser("decompress", help="decompress .npz containers into GeoTIFFs",
                       description="Decompress .npz containers into GeoTIFFs (or Cloud Optimized GeoTIFFs).",
                       epilog=DECOMPRESS_EXAMPLES + epilog_tail, formatter_class=_formatter)
    _add_common_io(d, input_kind=".npz container(s)", output_kind="GeoTIFF", auto="INPUT with .tif")
    out = d.add_argument_group("GeoTIFF output")
    out.add_argument("--tiff-compress", type=str.upper, choices=TIFF_COMPRESSIONS, default="LZW",
                     metavar="|".join(TIFF_COMPRESSIONS), help="GeoTIFF compression (default: LZW)")
    out.add_argument("--output-dtype", type=str.lower, choices=OUTPUT_DTYPES, default=None,
                     metavar="DTYPE", help=f"output data type, one of {', '.join(OUTPUT_DTYPES)} "
                                           "(default: the original dtype)")
    out.add_argument("--cog", action="store_true", help="write a Cloud Optimized GeoTIFF with overviews")
    out.add_argument("--salvage", action="store_true",
                     help="decode around damaged chunks, marking them nodata, instead of failing")
    area = d.add_argument_group("part of the scene (only the chunks it covers are decoded)")
    area.add_argument("--window", nargs=4, type=_int_at_least(0, "window values"),
                      metavar=("COL", "ROW", "WIDTH", "HEIGHT"),
                      help="decode this pixel window; the output's transform (or GCPs) moves with it")
    area.add_argument("--bbox", nargs=4, type=_finite_float("bounding box"),
                      metavar=("MINX", "MINY", "MAXX", "MAXY"),
                      help="decode the whole pixels this box covers (in the file's CRS unless --bbox-crs)")
    area.add_argument("--bbox-crs", type=_crs, metavar="EPSG:XXXX|WKT", help="CRS of --bbox (default: the file's)")
    _add_engine_options(d, overlap_default="as recorded at compression")
    _add_common_tail(d)
    d.set_defaults(handler=run_decompress, overlap_default=None)

    i = sub.add_parser("info", help="print the header of .npz containers",
                       description="Print the header of .npz containers (validated, nothing decoded).",
                       epilog=INFO_EXAMPLES + epilog_tail, formatter_class=_formatter)
    i.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz container(s); '-' reads standard input")
    i.add_argument("--json", action="store_true", help="print the full header as JSON")
    i.add_argument("--debug", action="store_true", help="show the Python traceback of a failure")
    i.set_defaults(handler=run_info, quiet=False)

    m = sub.add_parser("models", help="list the installed models and where models are looked for",
                       description="List the models decompress can find (by checksum) and the folders "
                                   "searched, in order.", formatter_class=_formatter)
    m.add_argument("--json", action="store_true", help="print the list as JSON")
    m.add_argument("--debug", action="store_true", help="show the Python traceback of a failure")
    m.set_defaults(handler=run_models, quiet=False)
    return parser


# ----------------------------------------------------------------------------------------------
# planning: which file goes where


@dataclass
class Job:
    """One raster (or container) to process and where its output goes; ``-`` is stdin/stdout.

    ``name`` is set when ``source`` is not what the user typed (a Sentinel-1 product becomes an
    in-memory VRT); ``error`` holds an input that could not even be resolved, reported when its
    turn comes so that the other inputs still run; ``release`` frees what resolving allocated.
    """

    source: str
    destination: str
    name: str | None = None
    error: SarcodecError | None = None
    release: Callable[[], None] | None = None
    origin: str | None = None  # the file the user gave when ``source`` is a VRT inside it (a .zip)

    @property
    def source_name(self) -> str:
        if self.name:
            return self.name
        return STDIN_NAME if self.source == STDIO else self.source

    @property
    def destination_name(self) -> str:
        return STDOUT_NAME if self.destination == STDIO else self.destination


@dataclass
class _Entry:
    """An input after resolution, before its destination is decided."""

    source: str
    default_destination: str  # auto-naming next to the input
    name: str | None = None
    error: SarcodecError | None = None
    release: Callable[[], None] | None = None
    origin: str | None = None


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _auto_name(source: str, suffix: str) -> str:
    return "stdin" + suffix if source == STDIO else str(Path(source).with_suffix(suffix))


def _resolve_raster_inputs(source: str, suffix: str) -> list[_Entry]:
    """Expand a compress input with ``sarcodec.inputs``: Sentinel-1 ``.SAFE`` folders and zips, folders.

    A plain file stays itself. A product's rasters are named after the product (its ``.npz`` goes
    next to the ``.SAFE``/``.zip``); a folder's GeoTIFFs each get theirs next to them.
    """
    try:
        from sarcodec.inputs import resolve_inputs
    except ImportError:  # an engine without input resolution: plain files only
        return [_Entry(source, _auto_name(source, suffix))]
    try:
        items = resolve_inputs(source)
    except SarcodecError as exc:
        return [_Entry(source, _auto_name(source, suffix), error=exc)]
    entries = []
    for item in items:
        if item.kind in ("geotiff", "folder"):
            entries.append(_Entry(item.path, _auto_name(item.path, suffix), release=item.release))
            continue
        anchor = Path(item.origin)
        if anchor.name.lower() == "manifest.safe":
            anchor = anchor.parent
        same = anchor.stem == item.name  # one raster named after its product: the origin says it all
        entries.append(_Entry(item.path, str(anchor.parent / f"{item.name}{suffix}"),
                              name=item.origin if same else f"{item.origin} [{item.name}]", release=item.release,
                              origin=item.origin))
    return entries


def plan_jobs(inputs: Sequence[str], output: str | None, suffix: str, *, expand: bool = False) -> list[Job]:
    """Map inputs to outputs; problems of the command line as a whole are usage errors (exit 4).

    Problems of one file (missing, existing output) are left to the run of that file, so one bad
    input does not stop the others. ``expand`` resolves products and folders into their rasters
    (compress); "several inputs" then counts rasters, not arguments.
    """
    if sum(1 for s in inputs if s == STDIO) > 1:
        raise UsageError("standard input ('-') can be given only once")
    if (output == STDIO or (output is None and STDIO in inputs)) and _is_tty(sys.stdout):
        raise UsageError("refusing to write binary data to a terminal: redirect standard output or use -o FILE")
    if STDIO in inputs and _is_tty(sys.stdin):
        raise UsageError("'-' reads standard input, but it is a terminal: pipe a file in")
    entries: list[_Entry] = []
    for source in inputs:
        if source == STDIO:
            entries.append(_Entry(STDIO, STDIO if output is None else _auto_name(STDIO, suffix)))
        elif expand:
            entries.extend(_resolve_raster_inputs(source, suffix))
        else:
            entries.append(_Entry(source, _auto_name(source, suffix)))
    several = len(entries) > 1
    into_folder = False
    if output == STDIO:
        if several:
            _release(entries)
            raise UsageError("-o - (standard output) takes a single input")
    elif output is not None:
        out_path = Path(output)
        if several:
            # A missing -o is created as the folder, unless its name says it was meant as one file.
            looks_like_file = not out_path.exists() and out_path.suffix.lower() in (suffix, ".tiff", ".tif", ".npz")
            if (out_path.exists() and not out_path.is_dir()) or looks_like_file:
                _release(entries)
                raise UsageError(f"-o {output}: with several inputs the output must be a folder")
            into_folder = True
        else:
            into_folder = out_path.is_dir() or output.endswith(("/", os.sep))
            if not into_folder and suffix == COMPRESSED_SUFFIX and out_path.suffix.lower() != COMPRESSED_SUFFIX:
                _release(entries)
                raise UsageError(f"-o {output}: a compressed output must be named *{COMPRESSED_SUFFIX} "
                                 "(end a folder name with '/')")
        if into_folder and not out_path.is_dir():
            try:
                out_path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                _release(entries)
                raise InputFileError(f"cannot create output folder {output}: {exc.strerror or exc}") from None
    jobs = []
    for e in entries:
        if output is None:
            destination = e.default_destination
        elif into_folder:
            destination = str(Path(output) / Path(e.default_destination).name)
        else:
            destination = output
        jobs.append(Job(e.source, destination, name=e.name, error=e.error, release=e.release, origin=e.origin))
    return jobs


def _release(items: Sequence[_Entry | Job]) -> None:
    for item in items:
        if item.release is not None:
            with contextlib.suppress(Exception):
                item.release()


def _check_destination(job: Job, overwrite: bool, taken: set[str], *, inputs: Sequence[str] = (),
                       weight_map: str | None = None) -> None:
    """Refuse before any work, for the output and the weight map alike (``sarcodec.destinations``).

    ``inputs`` are every file the run reads (all inputs, the products they came from, the model);
    ``taken`` the destinations written so far in this run.
    """
    reads = [s for s in (job.source, job.origin, *inputs) if s and s != STDIO]
    if job.destination != STDIO:
        check_destination(job.destination, overwrite=overwrite, inputs=reads, taken=taken, what="output")
    if weight_map is not None:
        check_destination(weight_map, overwrite=overwrite, inputs=reads, taken=taken, what="weight map")


def _check_source(job: Job) -> None:
    if job.error is not None:
        raise job.error
    if job.source == STDIO or job.source.startswith("/vsi"):
        return
    path = Path(job.source)
    if not path.exists():
        raise InputFileError(f"{job.source}: no such file")
    if path.is_dir():
        raise InputFileError(f"{job.source}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{job.source}: permission denied")


# ----------------------------------------------------------------------------------------------
# standard input / output


class Scratch:
    """A private temporary folder for stdin/stdout spools, removed whatever happens.

    The engine needs seekable files (GDAL, zip), so stdin is spooled to a file first and stdout is
    written from a finished file: a pipe never sees a partial container or GeoTIFF.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self.aliases: dict[str, str] = {}  # spool path -> what the user called it ("<stdin>")

    def shown(self, text: str) -> str:
        """Engine messages name the spool file; the user should read ``<stdin>`` instead."""
        for path, name in self.aliases.items():
            text = text.replace(path, name)
        return text

    @property
    def path(self) -> Path:
        if self._path is None:
            with interrupts.deferred():  # a folder made but not yet recorded would outlive cleanup()
                self._path = Path(tempfile.mkdtemp(prefix="sarcodec-"))
        return self._path

    def cleanup(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


def _spool_stdin(scratch: Scratch, suffix: str) -> str:
    if stream_was_closed(0) or sys.stdin is None:
        raise InputFileError(f"{STDIN_NAME}: standard input is closed")
    return _spool(scratch, lambda out: copy_stream(sys.stdin.buffer, out), f"stdin{suffix}", STDIN_NAME)


def _spool(scratch: Scratch, copy: Callable[[Any], None], file_name: str, shown_as: str) -> str:
    """Copy a stream (stdin, a FIFO) into the scratch folder; GDAL and zip need a seekable file.

    ``copy`` writes into the open spool file. It waits for data in short slices
    (``cli_streams.copy_stream``/``copy_fifo``), so Ctrl-C or SIGTERM while waiting for a writer
    ends the run with 130; the spool file already lives in the scratch folder, which is removed.
    """
    target = scratch.path / file_name
    try:
        with open(target, "wb") as fh:
            copy(fh)
    except OSError as exc:
        raise InputFileError(f"{shown_as}: cannot read it into a temporary file: {exc.strerror or exc}") from None
    if target.stat().st_size == 0:
        raise InputFileError(f"{shown_as}: empty input")
    scratch.aliases[str(target)] = shown_as
    return str(target)


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _spooled_source(job: Job, scratch: Scratch, suffix: str) -> str:
    """What the engine opens for ``job``: the file itself, or a spool of stdin or of a FIFO.

    A FIFO (``mkfifo``, or bash's ``<(cmd)``, which is ``/dev/fd/N``) can be read only once and not
    seeked, so it is treated like stdin: its writer is waited for, then it is copied.
    """
    if job.source == STDIO:
        return _spool_stdin(scratch, suffix)
    if not _is_fifo(job.source):
        return job.source
    return _spool(scratch, lambda out: copy_fifo(job.source, out), f"fifo{suffix}", job.source_name)


def _copy_to_stdout(path: str) -> None:
    if stream_was_closed(1) or sys.stdout is None or not hasattr(sys.stdout, "buffer"):
        raise InputFileError(f"{STDOUT_NAME}: standard output is closed; nothing was written")
    try:
        with open(path, "rb") as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The reader went away; point stdout at devnull so the interpreter's final flush is quiet.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise InputFileError(f"{STDOUT_NAME}: the reading end of the pipe was closed") from None
    except OSError as exc:
        raise InputFileError(f"cannot write standard output: {exc.strerror or exc}") from None


# ----------------------------------------------------------------------------------------------
# CRS


def _ask_crs(name: str) -> str | None:
    """Prompt on the terminal until a valid CRS or Enter (keep none); EOF keeps none too."""
    for _attempt in range(3):
        try:
            sys.stderr.write(f"{PROG}: CRS for {one_line(name)} (EPSG:XXXX or WKT, Enter keeps none): ")
            sys.stderr.flush()
            answer = sys.stdin.readline()
        except (OSError, ValueError):
            return None
        if not answer:  # EOF
            sys.stderr.write("\n")
            return None
        answer = answer.strip()
        if not answer:
            return None
        if _crs_is_valid(answer):
            return answer
        _say(sys.stderr, _warn_line(f"{answer[:60]!r} is not a CRS: expected EPSG:XXXX or WKT"))
    return None


def resolve_crs(name: str, has_valid_crs: bool | None, option: str | None, *, interactive: bool) -> str | None:
    """The CRS to hand the engine: ``--crs``, else an answer on a terminal, else none with a warning.

    ``None`` for ``has_valid_crs`` means the CLI could not tell; then only ``--crs`` is passed on.
    """
    if option or has_valid_crs is None or has_valid_crs:
        return option
    if interactive:
        answer = _ask_crs(name)
        if answer:
            return answer
        _say(sys.stderr, _warn_line(f"{name}: no valid CRS; the output will have none"))
        return None
    _say(sys.stderr, _warn_line(f"{name}: no valid CRS; the output will have none (set one with --crs)"))
    return None


def _container_has_valid_crs(header: dict[str, Any]) -> bool | None:
    geo = header.get("geo")
    if not isinstance(geo, dict):
        return None
    from sarcodec.geometa import has_valid_crs

    return bool(has_valid_crs(geo))


def _interactive() -> bool:
    return _is_tty(sys.stdin) and _is_tty(sys.stderr)


# ----------------------------------------------------------------------------------------------
# running


@dataclass
class RunContext:
    """State shared by the files of one invocation."""

    args: argparse.Namespace
    cancel: CancelToken
    messages: TextIO  # summaries: stdout, or stderr when stdout carries data
    taken: set[str] = field(default_factory=set)
    model: ModelSummary | None = None
    inputs: list[str] = field(default_factory=list)  # every file the run reads: no output may replace one


def _run_inputs(ctx: RunContext, jobs: Sequence[Job]) -> list[str]:
    """The files this run reads: each input (and the product it came from) and the model checkpoint."""
    files = [s for j in jobs for s in (j.source, j.origin) if s and s != STDIO]
    files.append(str(ctx.model.path if ctx.model is not None else _resolve_model(ctx)))
    return files


def _report(exc: BaseException, name: str | None, debug: bool, shown: Callable[[str], str] = str) -> int:
    """Print the one line for a failure (traceback first with --debug); return its exit code.

    ``shown`` rewrites internal paths (stdin spools) into the names the user gave.
    """
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, SarcodecError):
        message, code = str(exc), exc.exit_code
    elif isinstance(exc, MemoryError):
        message, code = "out of memory", EXIT_OOM
    elif _is_oom(exc):
        message, code = f"out of memory: {str(exc).splitlines()[0][:120]}", EXIT_OOM
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
        if not debug:
            message += " (run with --debug for the traceback)"
        code = EXIT_FILE
    message = shown(message)
    if name and name not in message:
        message = f"{name}: {message}"
    _say(sys.stderr, _error_line(message))
    return code


def _is_oom(exc: BaseException) -> bool:
    try:
        from sarcodec.device import is_oom
    except ImportError:  # pragma: no cover
        return False
    return is_oom(exc)


def _resolve_model(ctx: RunContext) -> Path:
    return Path(ctx.args.model).expanduser() if ctx.args.model else default_model_path()


def _check_weight_map(args: argparse.Namespace, jobs: list[Job]) -> None:
    if args.weight_map and len(jobs) > 1 and not Path(args.weight_map).is_dir():
        raise UsageError("--weight-map must be an existing folder when several inputs are given")


def _weight_map_for(args: argparse.Namespace, job: Job) -> str | None:
    """The weight map's path: ``--weight-map`` itself, or ``<output stem>.weights.tif`` in that folder.

    Named after the output, not the source: outputs are unique within a run (a product's source is an
    in-memory VRT whose name means nothing), so weight maps are too.
    """
    if not args.weight_map:
        return None
    target = Path(args.weight_map)
    if target.is_dir():
        stem = Path(job.destination).stem if job.destination != STDIO else (
            "stdin" if job.source == STDIO else Path(job.source).stem)
        return str(target / f"{stem}.weights.tif")
    return str(target)


def _unreported_warnings(result_warnings: Sequence[str], progress: Any, *, crs_warned: bool) -> list[str]:
    """Engine warnings not yet shown through the progress adapter (and not the CRS one, if already said)."""
    seen = set(getattr(progress, "warnings", []) or [])
    return [w for w in result_warnings if w not in seen and not (crs_warned and CRS_WARNING_MARK in w)]


def run_each(ctx: RunContext, jobs: list[Job], work: Callable[[RunContext, Job, Scratch], None]) -> int:
    """Run ``work`` on each job in turn; a failure is reported and the next file still runs.

    Returns the exit code of the first failure (0 when all succeeded). An interrupt stops the whole
    run: the user wants the command to end, not to skip to the next file.
    """
    first = EXIT_OK
    job: Job | None = None
    try:
        for job in jobs:
            scratch = Scratch()
            try:
                work(ctx, job, scratch)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes one line and a code
                if isinstance(exc, SarcodecError) and exc.exit_code == EXIT_INTERRUPTED:
                    raise KeyboardInterrupt(str(exc)) from exc  # main() says "interrupted", once
                code = _report(exc, job.source_name, ctx.args.debug, scratch.shown)
                first = first or code
                if _torchrun_rank() is not None:
                    break  # torchrun ranks must stay on the same file: after a failure none goes on
            finally:
                discard_held()  # a weight map whose output was not published never appears
                scratch.cleanup()
                _release([job])
    except KeyboardInterrupt:
        remove_temporaries()  # any a Ctrl-C separated from its owner; the published output is not one
        if not jobs or job is not jobs[-1] or not _output_in_place(job):
            raise
        # The signal came after the last file's final rename: the complete new file is in place, so
        # exit 130 ("the previous file is intact") would be a lie. Report success instead.
        _say(sys.stderr, _warn_line(f"{job.destination_name}: interrupted after it was written completely; "
                                    "it is kept"))
    finally:
        forget(ctx.taken)
    ctx.args.completed_code = first  # main(): a signal arriving after this point changes nothing
    return first


def _output_in_place(job: Job) -> bool:
    """Whether this run's new output (not the previous file) is now at the job's destination."""
    return job.destination != STDIO and was_published(job.destination)


def _torchrun_rank() -> int | None:
    """This process's rank when started by torchrun (``sarcodec.distributed`` runs the job), else None."""
    from sarcodec.distributed import is_distributed

    return int(os.environ["RANK"]) if is_distributed() else None


def _refuse_stdio_under_torchrun(job: Job, rank: int | None) -> None:
    if rank is not None and STDIO in (job.source, job.destination):
        raise UsageError("standard input/output ('-') cannot be used under torchrun: every rank opens the files")


def _compress_one(ctx: RunContext, job: Job, scratch: Scratch) -> None:
    args = ctx.args
    rank = _torchrun_rank()
    _refuse_stdio_under_torchrun(job, rank)
    _check_source(job)
    if job.name:
        scratch.aliases[job.source] = job.name
    weight_map = _weight_map_for(args, job) if rank is None else None  # torchrun ranks write none
    _check_destination(job, args.overwrite, ctx.taken, inputs=ctx.inputs, weight_map=weight_map)
    source = _spooled_source(job, scratch, RASTER_SUFFIX)
    info = _pipeline().inspect_raster(source)
    crs = resolve_crs(job.source_name, info.has_valid_crs, args.crs, interactive=_interactive() and rank is None)
    crs_warned = not info.has_valid_crs and crs is None
    from sarcodec.codec.container import check_raster_metadata_fits

    check_raster_metadata_fits(source, crs=crs, name=job.source_name)  # before coding, not after it
    destination = str(scratch.path / "stdout.npz") if job.destination == STDIO else job.destination
    if weight_map:
        hold_until(weight_map, destination)  # published right after the output, never before or without it
    assert ctx.model is not None
    options = _pipeline().CompressOptions(
        quality=args.quality,
        tile_size=args.tile_size,
        overlap=args.overlap if args.overlap is not None else args.overlap_default,
        device=args.device,
        batch_size=args.batch_size,
        model_path=str(ctx.model.path),
        crs=crs,
        weight_map=weight_map if rank is None else _weight_map_for(args, job),
        estimate_quality=args.estimate_quality,
        max_error_db=args.max_error_db,
    )
    with make_progress(prefix=job.source_name, quiet=args.quiet or bool(rank), cancel=ctx.cancel) as progress:
        if rank is None:
            result = _pipeline().compress_raster(source, destination, options, progress)
        else:
            from sarcodec.distributed import distributed_compress

            result = distributed_compress(source, destination, options, progress)
    if result is None:  # a torchrun rank other than 0: rank 0 wrote the output and reports it
        return
    for warning in _unreported_warnings(result.warnings, progress, crs_warned=crs_warned):
        _say(sys.stderr, _warn_line(f"{job.source_name}: {scratch.shown(warning)}"))
    if job.destination == STDIO:
        _copy_to_stdout(destination)
    if not args.quiet:
        _say_summary(ctx, compress_summary(job, result))


def compress_summary(job: Job, result: Any) -> str:
    """One line per file: what a user checks first (size, ratio, bpp, expected fidelity, time)."""
    if result.input_bytes > 0:
        parts = [f"{_human_bytes(result.input_bytes)} -> {_human_bytes(result.output_bytes)}",
                 f"ratio {result.ratio:.1f}:1"]
    else:  # a virtual input (a product's VRT) has no file size to compare with
        parts = [_human_bytes(result.output_bytes)]
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


def _decompress_one(ctx: RunContext, job: Job, scratch: Scratch) -> None:
    args = ctx.args
    rank = _torchrun_rank()
    _refuse_stdio_under_torchrun(job, rank)
    _check_source(job)
    weight_map = _weight_map_for(args, job) if rank is None else None  # torchrun ranks write none
    _check_destination(job, args.overwrite, ctx.taken, inputs=ctx.inputs, weight_map=weight_map)
    source = _spooled_source(job, scratch, COMPRESSED_SUFFIX)
    header = _pipeline().container_info(source)
    valid_crs = _container_has_valid_crs(header)
    crs = resolve_crs(job.source_name, valid_crs, args.crs, interactive=_interactive() and rank is None)
    crs_warned = valid_crs is False and crs is None
    destination = str(scratch.path / "stdout.tif") if job.destination == STDIO else job.destination
    if weight_map:
        hold_until(weight_map, destination)  # published right after the output, never before or without it
    options = _pipeline().DecompressOptions(
        tiff_compress=args.tiff_compress,
        output_dtype=args.output_dtype,
        cog=args.cog,
        device=args.device,
        batch_size=args.batch_size,
        model_path=str(ctx.model.path) if ctx.model is not None else None,
        crs=crs,
        overlap=args.overlap,
        weight_map=weight_map if rank is None else _weight_map_for(args, job),
        salvage=args.salvage,
        window=tuple(args.window) if args.window else None,
        bbox=tuple(args.bbox) if args.bbox else None,
        bbox_crs=args.bbox_crs,
    )
    with make_progress(prefix=job.source_name, quiet=args.quiet or bool(rank), cancel=ctx.cancel) as progress:
        if rank is None:
            result = _pipeline().decompress_container(source, destination, options, progress)
        else:
            from sarcodec.distributed import distributed_decompress

            result = distributed_decompress(source, destination, options, progress)
    if result is None:  # a torchrun rank other than 0: rank 0 wrote the output and reports it
        return
    for warning in _unreported_warnings(result.warnings, progress, crs_warned=crs_warned):
        _say(sys.stderr, _warn_line(f"{job.source_name}: {scratch.shown(warning)}"))
    if result.damaged_chunks and not any("damaged" in w for w in result.warnings):
        shown = ", ".join(str(i) for i in result.damaged_chunks[:20])
        more = " ..." if len(result.damaged_chunks) > 20 else ""
        _say(sys.stderr, _warn_line(f"{job.source_name}: damaged chunk(s) {shown}{more} written as nodata"))
    size = os.path.getsize(destination) if os.path.exists(destination) else None
    if job.destination == STDIO:
        _copy_to_stdout(destination)
    if not args.quiet:
        _say_summary(ctx, decompress_summary(job, result, size, args))


def decompress_summary(job: Job, result: Any, size: int | None, args: argparse.Namespace) -> str:
    kind = "COG" if args.cog else "GeoTIFF"
    parts = [
        f"{result.width}x{result.height}x{result.bands} {result.dtype}",
        f"{_human_bytes(size)} {kind} ({args.tiff_compress})",
        f"{result.seconds:.1f} s on {result.device}",
    ]
    return f"{job.source_name} -> {job.destination_name}: " + ", ".join(parts)


def _model_for_compress(ctx: RunContext) -> None:
    """Load the model once before the first file: a model problem is exit 2 for the whole run."""
    if ctx.args.max_error_db is not None and ctx.args.quality is not None:
        raise UsageError("--max-error-db sets the quality itself: give it or --quality, not both")
    ctx.model = load_model_summary(_resolve_model(ctx))
    quality = ctx.args.quality
    if quality is not None and not 1 <= quality <= ctx.model.n_qualities:
        raise UsageError(f"--quality must be in 1..{ctx.model.n_qualities} for model {ctx.model.model_id}, "
                         f"got {quality}")


def _model_for_decompress(ctx: RunContext) -> None:
    """Validate an explicit ``--model`` once; else the engine finds the model each file names."""
    if ctx.args.model:
        ctx.model = load_model_summary(_resolve_model(ctx))


def _check_device(args: argparse.Namespace) -> None:
    """An unusable ``--device cuda[:i]`` is one usage error up front, not one per input file."""
    if args.device.startswith("cuda"):
        _import_engine()
        from sarcodec.device import DevicePolicy

        DevicePolicy(args.device, args.batch_size).resolve()


def _messages_stream(jobs: list[Job]) -> TextIO:
    return sys.stderr if any(j.destination == STDIO for j in jobs) else sys.stdout


def run_compress(args: argparse.Namespace, cancel: CancelToken) -> int:
    jobs = plan_jobs(args.inputs, args.output, COMPRESSED_SUFFIX, expand=True)
    try:
        _check_weight_map(args, jobs)
        _check_tile_geometry(args)
        _check_device(args)
        ctx = RunContext(args, cancel, _messages_stream(jobs))
        _model_for_compress(ctx)
        ctx.inputs = _run_inputs(ctx, jobs)
        return run_each(ctx, jobs, _compress_one)
    finally:
        _release(jobs)  # in-memory VRTs of products that never ran (a model error stops the run early)


def run_decompress(args: argparse.Namespace, cancel: CancelToken) -> int:
    jobs = plan_jobs(args.inputs, args.output, RASTER_SUFFIX)
    _check_weight_map(args, jobs)
    _check_device(args)
    ctx = RunContext(args, cancel, _messages_stream(jobs))
    _model_for_decompress(ctx)
    ctx.inputs = _run_inputs(ctx, jobs)
    return run_each(ctx, jobs, _decompress_one)


# ----------------------------------------------------------------------------------------------
# info


def _short(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _crs_label(wkt: Any) -> str:
    """EPSG:XXXX when the WKT has an authority code; otherwise the CRS name; WKT is too long to show."""
    try:
        import rasterio
        from rasterio.crs import CRS

        with rasterio.Env():
            crs = CRS.from_user_input(wkt)
            epsg = crs.to_epsg()
            return f"EPSG:{epsg}" if epsg else _short(crs.to_string(), 60)
    except Exception:  # noqa: BLE001
        return _short(wkt, 60)


def format_header(name: str, header: dict[str, Any]) -> str:
    """A readable listing of a container header: flat ``key: value`` lines, long values shortened."""
    lines = [name]

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
            return
        if prefix.endswith("crs") and isinstance(value, str):
            shown = _crs_label(value)
        elif prefix.endswith("gcps.points") and isinstance(value, list):
            shown = f"{len(value)} GCPs"
        else:
            shown = _short(value)
        lines.append(f"  {prefix}: {shown}")

    walk("", header)
    return "\n".join(lines)


def _info_one(ctx: RunContext, job: Job, scratch: Scratch) -> None:
    _check_source(job)
    source = _spooled_source(job, scratch, COMPRESSED_SUFFIX)
    header = _pipeline().container_info(source)
    if ctx.args.json:
        _say(sys.stdout, json.dumps({"file": job.source_name, "header": header}, indent=2, default=str))
    else:
        _say(sys.stdout, format_header(job.source_name, header))


def run_info(args: argparse.Namespace, cancel: CancelToken) -> int:
    if sum(1 for s in args.inputs if s == STDIO) > 1:
        raise UsageError("standard input ('-') can be given only once")
    jobs = [Job(s, "") for s in args.inputs]
    ctx = RunContext(args, cancel, sys.stdout)
    return run_each(ctx, jobs, _info_one)


def run_models(args: argparse.Namespace, cancel: CancelToken) -> int:
    """``sarcodec models``: what is installed (id, codec, qualities, checksum, file) and where."""
    from sarcodec.codec import model_store

    default = default_model_path()
    rows = []
    for m in model_store.installed():
        try:
            summary = load_model_summary(m.path)
            ident, qualities = summary.model_id, f"1..{summary.n_qualities}"
        except SarcodecError as exc:
            ident, qualities = f"unusable ({exc})", "-"
        rows.append({"model_id": ident, "codec": m.codec, "qualities": qualities, "sha256": m.sha256,
                     "path": str(m.path), "default": m.path.resolve() == default.resolve()})
    folders = [str(d) for d in model_store.search_dirs()]
    if args.json:
        _say(sys.stdout, json.dumps({"models": rows, "search_path": folders}, indent=2))
        return EXIT_OK
    for r in rows:
        mark = " (default)" if r["default"] else ""
        _say(sys.stdout, f"{r['model_id']}{mark}: {r['codec']}, qualities {r['qualities']}, "
                         f"sha256 {r['sha256'][:12]}..., {r['path']}")
    _say(sys.stdout, "model folders searched, in order: " + ", ".join(folders))
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# signals and the entry point


def _import_engine() -> None:
    """Import the torch-based engine with signals deferred (``sarcodec.interrupts``); cheap once done."""
    if "sarcodec.codec.pipeline" in sys.modules:
        return
    with interrupts.deferred():
        import sarcodec.codec.pipeline  # noqa: F401 - imports torch, the model and the device policy


@contextlib.contextmanager
def interrupt_handlers(cancel: CancelToken) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP all become ``KeyboardInterrupt`` plus a set cancel token.

    The exception unwinds through the engine's ``finally`` blocks (temporary files removed, nothing
    renamed into place); the token stops worker threads that poll it. Later signals while that
    cleanup runs are ignored so a second Ctrl-C cannot cut the cleanup short (SIGKILL still works).
    Inside ``interrupts.deferred`` (creating a temporary file, importing torch) the exception waits
    for the end of the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = threading.Event()
    interrupts.forget_pending()

    def handler(signum: int, frame: Any) -> None:
        if fired.is_set():
            return
        fired.set()
        cancel.cancel()
        interrupts.interrupt(signal.Signals(signum).name)

    wanted = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {}
    for sig in wanted:
        with contextlib.suppress(OSError, ValueError):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, old)


@contextlib.contextmanager
def _gdal_messages_to_log() -> Iterator[None]:
    """Route GDAL's own "ERROR 1: ..." lines to rasterio's logger for the whole run.

    Without an active ``rasterio.Env`` GDAL prints them straight to stderr (a truncated GeoTIFF gives
    three of them), which breaks the one-line error rule; the typed error still says what failed.
    """
    try:
        import rasterio
    except ImportError:  # pragma: no cover - the engine needs rasterio anyway
        yield
        return
    with rasterio.Env():
        yield


def _stdout_closed_for_data(args: argparse.Namespace) -> bool:
    """``-o -`` (or ``-`` in with no ``-o``) while stdout was closed at start-up (``>&-``)."""
    if not stream_was_closed(1) or args.command not in ("compress", "decompress"):
        return False
    return args.output == STDIO or (args.output is None and STDIO in args.inputs)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, and return the exit code (also for ``--help`` and usage errors).

    The standard fds are checked before anything prints, and the signal handlers are in place
    before parsing (``--crs`` validation imports rasterio): from here on a Ctrl-C or SIGTERM
    always ends in exit 130 and one line.
    """
    guard_standard_streams()
    cancel = CancelToken()
    started = time.monotonic()
    args: argparse.Namespace | None = None
    with interrupt_handlers(cancel), messages_to_stderr():
        try:
            with interrupts.deferred():
                # The first call creates and removes a probe file in $TMPDIR: done here, where an
                # interrupt cannot cut between the two, and cached for every later temporary file.
                tempfile.gettempdir()
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as exc:  # --help, --version and usage errors exit from inside argparse
                return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
            if getattr(args, "command", None) is None:
                _say(sys.stderr, _error_line(f"a command is required: compress, decompress or info "
                                             f"(see '{PROG} --help')"))
                return EXIT_USAGE
            if _stdout_closed_for_data(args):
                _say(sys.stderr, _error_line(f"{STDOUT_NAME}: standard output is closed; nothing was written"))
                return EXIT_FILE
            with _gdal_messages_to_log():
                return args.handler(args, cancel)
        except KeyboardInterrupt as exc:
            if args is not None and args.debug:
                traceback.print_exception(exc, file=sys.stderr)
            _say(sys.stderr, _error_line(f"interrupted after {time.monotonic() - started:.1f} s; "
                                         "no partial output was left"))
            return EXIT_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - plan-level failures (usage, model): one line
            return _report(exc, None, bool(args is not None and args.debug))


__all__ = ["build_parser", "default_model_path", "main", "version_text"]
