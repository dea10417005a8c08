"""``sarcodec models``: the models ``decompress`` can find by checksum, and the folders searched.

Files name their model by SHA-256; ``decompress`` looks it up in ``$SARCODEC_MODEL_PATH``, the user's
model folder and the shipped ``resources/models/`` (``codec.model_store``). This command shows what
is installed there, in search order, and which one ``compress`` uses by default.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sarcodec.errors import EXIT_OK, SarcodecError
from sarcodec.progress import CancelToken

from .engine import default_model_path, load_model_summary
from .messages import say
from .options import add_json_and_debug_options, formatter


def add_parser(sub: Any) -> None:
    """The ``models`` sub-command on ``sub`` (``build_parser``'s sub-parsers)."""
    m = sub.add_parser("models", help="list the installed models and where models are looked for",
                       description="List the models decompress can find (by checksum) and the folders "
                                   "searched, in order.", formatter_class=formatter)
    add_json_and_debug_options(m, json_help="print the list as JSON")
    m.set_defaults(handler=run_models)


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
        say(sys.stdout, json.dumps({"models": rows, "search_path": folders}, indent=2))
        return EXIT_OK
    for r in rows:
        mark = " (default)" if r["default"] else ""
        say(sys.stdout, f"{r['model_id']}{mark}: {r['codec']}, qualities {r['qualities']}, "
                         f"sha256 {r['sha256'][:12]}..., {r['path']}")
    say(sys.stdout, "model folders searched, in order: " + ", ".join(folders))
    return EXIT_OK
