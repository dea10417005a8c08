"""The command-line grammar: the ``sarcodec`` parser with one sub-command per command module.

Each command declares its own sub-parser (``compress.add_parser`` ...) from the shared option
builders of ``options``; this module puts them together under the top-level ``--help`` and
``--version``, with argparse's exit code for usage errors changed to ours.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sarcodec.errors import EXIT_OK, EXIT_USAGE

from . import compress, decompress, infer, info, models
from .engine import version_text
from .messages import PROG, error_line, say
from .options import epilog, formatter

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
  sarcodec infer sr_x2.onnx scene.tif -o x2.tif    # run an ONNX model over the whole scene
  sarcodec COMMAND --help                          # options of one command

environment:
  SARCODEC_MODEL   checkpoint used when --model is not given
"""


class CliParser(argparse.ArgumentParser):
    """argparse with our exit code for usage errors and one-line error messages.

    argparse exits with 2 on a bad option, but 2 is our model error; scripts must be able to tell
    "you typed it wrong" (4) from "the checkpoint is broken" (2).
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f" (see '{self.prog} --help')"
        self.exit(EXIT_USAGE, error_line(f"{message}{hint}") + "\n")


class _VersionAction(argparse.Action):
    """Computed only when asked: loading the model for every ``--help`` would be wasteful."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the tool version, the default model's version and its checkpoint SHA-256")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        say(sys.stdout, version_text())
        parser.exit(EXIT_OK)


def build_parser() -> CliParser:
    """The whole command-line grammar, every command's sub-parser under one, so ``--help`` documents
    exactly what runs."""
    parser = CliParser(prog=PROG, description=MAIN_DESCRIPTION, epilog=epilog(MAIN_EXAMPLES),
                       formatter_class=formatter)
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    compress.add_parser(sub)
    decompress.add_parser(sub)
    info.add_parser(sub)
    models.add_parser(sub)
    infer.add_parser(sub)
    return parser
