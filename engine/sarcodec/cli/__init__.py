"""The ``sarcodec`` command line: ``compress``, ``decompress``, ``info`` and ``models``.

The CLI is a thin front end over the codec (``sarcodec.codec``). It owns only what a terminal user
sees and what the engine cannot know:

- which files to read and write (several inputs, ``-o FILE|DIR``, auto-naming, ``-`` for
  stdin/stdout, refusing to overwrite): ``jobs``, ``stdio``;
- validating option values up front, so a typo fails in a second with exit code 4 instead of after
  loading a model (and never with the model error code 2): ``options``, declared once for every
  command;
- asking for a CRS on a terminal, warning in a pipeline: ``terminal``;
- progress on stderr and a summary per file: ``sarcodec.cli_progress``, ``messages``;
- turning every failure into one line on stderr and an exit code (``sarcodec.errors`` holds the
  mapping), and Ctrl-C/SIGTERM into exit 130 with nothing half-written left behind: ``run``,
  ``entry``.

One module per command (``compress``, ``decompress``, ``info``, ``models``) declares its sub-parser
and runs it; ``parser`` puts them together. ``main(argv)`` returns the exit code instead of exiting,
so tests and ``python -m sarcodec`` share one code path.
"""

from __future__ import annotations

# What callers of the former single-module ``sarcodec/cli.py`` import (``_check_destination`` is
# ``jobs.check_job_destination`` under its old name).
from .engine import default_model_path, version_text
from .entry import interrupt_handlers, main
from .info import format_header
from .jobs import Job, plan_jobs
from .jobs import check_job_destination as _check_destination
from .parser import build_parser

__all__ = [
    "Job",
    "_check_destination",
    "build_parser",
    "default_model_path",
    "format_header",
    "interrupt_handlers",
    "main",
    "plan_jobs",
    "version_text",
]
