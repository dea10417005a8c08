"""``sarcodec info``: the validated header of ``.npz`` containers, as ``key: value`` lines or JSON.

Nothing is decoded; the header goes through the same checks ``decompress`` starts with, so a file
that is not a valid container fails here as it would there (one line, exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sarcodec.errors import UsageError
from sarcodec.progress import CancelToken

from .engine import import_engine
from .jobs import COMPRESSED_SUFFIX, STDIO, Job, check_source
from .messages import say
from .options import add_json_and_debug_options, epilog, formatter
from .run import RunContext, run_each
from .stdio import Scratch, spooled_source

INFO_EXAMPLES = """\
examples:
  sarcodec info scene.npz
  sarcodec info --json scene.npz | jq .geo
"""


def add_parser(sub: Any) -> None:
    """The ``info`` sub-command on ``sub`` (``build_parser``'s sub-parsers)."""
    i = sub.add_parser("info", help="print the header of .npz containers",
                       description="Print the header of .npz containers (validated, nothing decoded).",
                       epilog=epilog(INFO_EXAMPLES), formatter_class=formatter)
    i.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz container(s); '-' reads standard input")
    add_json_and_debug_options(i, json_help="print the full header as JSON")
    i.set_defaults(handler=run_info)


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
    check_source(job)
    source = spooled_source(job, scratch, COMPRESSED_SUFFIX)
    import_engine()  # torch and the codec
    from sarcodec.codec import decode

    header = decode.container_info(source)
    if ctx.args.json:
        say(sys.stdout, json.dumps({"file": job.source_name, "header": header}, indent=2, default=str))
    else:
        say(sys.stdout, format_header(job.source_name, header))


def run_info(args: argparse.Namespace, cancel: CancelToken) -> int:
    if sum(1 for s in args.inputs if s == STDIO) > 1:
        raise UsageError("standard input ('-') can be given only once")
    jobs = [Job(s, "") for s in args.inputs]
    ctx = RunContext(args, cancel, sys.stdout)
    return run_each(ctx, jobs, _info_one)
