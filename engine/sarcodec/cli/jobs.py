"""Which file goes where: inputs resolved, outputs named and checked before any work.

``plan_jobs`` turns the command line's inputs and ``-o`` into one ``Job`` per raster (a Sentinel-1
product or a folder expands into its rasters; ``-`` is stdin/stdout; several inputs need a folder).
Problems of the command line as a whole are usage errors (exit 4) before anything runs; problems of
one file (missing, an existing output) are raised when its turn comes, so the other inputs still run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sarcodec.destinations import check_destination
from sarcodec.errors import InputFileError, SarcodecError, UsageError

from .terminal import is_tty

STDIO = "-"
COMPRESSED_SUFFIX = ".npz"
RASTER_SUFFIX = ".tif"
STDIN_NAME = "<stdin>"
STDOUT_NAME = "<stdout>"


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


def _auto_name(source: str, suffix: str, tag: str = "") -> str:
    """``scene.tif`` -> ``scene.npz``; with a ``tag`` (infer: ``_sr_x2``) -> ``scene_sr_x2.tif``."""
    if source == STDIO:
        return "stdin" + tag + suffix
    path = Path(source)
    return str(path.with_name(path.stem + tag + suffix)) if tag else str(path.with_suffix(suffix))


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


def plan_jobs(inputs: Sequence[str], output: str | None, suffix: str, *, expand: bool = False,
              tag: str = "") -> list[Job]:
    """Map inputs to outputs; problems of the command line as a whole are usage errors (exit 4).

    Problems of one file (missing, existing output) are left to the run of that file, so one bad
    input does not stop the others. ``expand`` resolves products and folders into their rasters
    (compress); "several inputs" then counts rasters, not arguments. ``tag`` goes between an
    input's stem and ``suffix`` in the names made for it (infer writes a ``.tif`` next to a ``.tif``).
    """
    if sum(1 for s in inputs if s == STDIO) > 1:
        raise UsageError("standard input ('-') can be given only once")
    if (output == STDIO or (output is None and STDIO in inputs)) and is_tty(sys.stdout):
        raise UsageError("refusing to write binary data to a terminal: redirect standard output or use -o FILE")
    if STDIO in inputs and is_tty(sys.stdin):
        raise UsageError("'-' reads standard input, but it is a terminal: pipe a file in")
    entries: list[_Entry] = []
    for source in inputs:
        if source == STDIO:
            entries.append(_Entry(STDIO, STDIO if output is None else _auto_name(STDIO, suffix, tag)))
        elif expand:
            entries.extend(_resolve_raster_inputs(source, suffix))
        else:
            entries.append(_Entry(source, _auto_name(source, suffix, tag)))
    several = len(entries) > 1
    into_folder = False
    if output == STDIO:
        if several:
            release_inputs(entries)
            raise UsageError("-o - (standard output) takes a single input")
    elif output is not None:
        out_path = Path(output)
        if several:
            # A missing -o is created as the folder, unless its name says it was meant as one file.
            looks_like_file = not out_path.exists() and out_path.suffix.lower() in (suffix, ".tiff", ".tif", ".npz")
            if (out_path.exists() and not out_path.is_dir()) or looks_like_file:
                release_inputs(entries)
                raise UsageError(f"-o {output}: with several inputs the output must be a folder")
            into_folder = True
        else:
            into_folder = out_path.is_dir() or output.endswith(("/", os.sep))
            if not into_folder and suffix == COMPRESSED_SUFFIX and out_path.suffix.lower() != COMPRESSED_SUFFIX:
                release_inputs(entries)
                raise UsageError(f"-o {output}: a compressed output must be named *{COMPRESSED_SUFFIX} "
                                 "(end a folder name with '/')")
        if into_folder and not out_path.is_dir():
            try:
                out_path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                release_inputs(entries)
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


def release_inputs(items: Sequence[_Entry | Job]) -> None:
    """Free what resolving the inputs allocated (a product's in-memory VRT); never fails."""
    for item in items:
        if item.release is not None:
            with contextlib.suppress(Exception):
                item.release()


def check_job_destination(job: Job, overwrite: bool, taken: set[str], *, inputs: Sequence[str] = (),
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


def check_source(job: Job) -> None:
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


def check_weight_map(args: argparse.Namespace, jobs: list[Job]) -> None:
    """``--weight-map`` with several inputs must be a folder (one map per output)."""
    if args.weight_map and len(jobs) > 1 and not Path(args.weight_map).is_dir():
        raise UsageError("--weight-map must be an existing folder when several inputs are given")


def weight_map_for(args: argparse.Namespace, job: Job) -> str | None:
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
