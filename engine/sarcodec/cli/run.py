"""Running a command over its files: one ``work`` call per job, every failure one line and an exit code.

``run_each`` is the loop every command shares: a failing file is reported (``report`` maps typed
errors, memory errors and anything unexpected to the exit codes of ``sarcodec.errors``) and the next
file still runs; an interrupt stops the run, leaving no temporary file and no partial output. Under
torchrun each rank runs the same loop on the same files (``sarcodec.distributed`` splits each file).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sarcodec.destinations import discard_held, forget, remove_temporaries, was_published
from sarcodec.errors import EXIT_FILE, EXIT_INTERRUPTED, EXIT_OK, EXIT_OOM, SarcodecError, UsageError
from sarcodec.progress import CancelToken

from .engine import ModelSummary, default_model_path, import_engine
from .jobs import STDIO, Job, release_inputs
from .messages import error_line, say, warn_line
from .stdio import Scratch

CRS_WARNING_MARK = "no valid CRS"  # the engine's own CRS warning is dropped when the CLI already warned


@dataclass
class RunContext:
    """State shared by the files of one invocation."""

    args: argparse.Namespace
    cancel: CancelToken
    messages: TextIO  # summaries: stdout, or stderr when stdout carries data
    taken: set[str] = field(default_factory=set)
    model: ModelSummary | None = None
    inputs: list[str] = field(default_factory=list)  # every file the run reads: no output may replace one


def run_inputs(ctx: RunContext, jobs: Sequence[Job], model: str | os.PathLike[str] | None = None) -> list[str]:
    """The files this run reads: each input (and the product it came from) and the model file
    (``model``, else the codec checkpoint the run uses)."""
    files = [s for j in jobs for s in (j.source, j.origin) if s and s != STDIO]
    if model is None:
        model = ctx.model.path if ctx.model is not None else resolve_model(ctx)
    files.append(str(model))
    return files


def report(exc: BaseException, name: str | None, debug: bool, shown: Callable[[str], str] = str) -> int:
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
    say(sys.stderr, error_line(message))
    return code


def _is_oom(exc: BaseException) -> bool:
    try:
        from sarcodec.device import is_oom
    except ImportError:  # pragma: no cover
        return False
    return is_oom(exc)


def resolve_model(ctx: RunContext) -> Path:
    return Path(ctx.args.model).expanduser() if ctx.args.model else default_model_path()


def unreported_warnings(result_warnings: Sequence[str], progress: Any, *, crs_warned: bool) -> list[str]:
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
                if ctx.cancel.is_set() or (isinstance(exc, SarcodecError) and exc.exit_code == EXIT_INTERRUPTED):
                    # A signal came first: whatever broke on the way out is the interrupt, not a failure
                    # of its own (a KeyboardInterrupt that lands inside a queue's Condition.wait leaves
                    # "RuntimeError: release unlocked lock" in its place). main() says "interrupted", once.
                    raise KeyboardInterrupt(str(exc)) from exc
                code = report(exc, job.source_name, ctx.args.debug, scratch.shown)
                first = first or code
                if torchrun_rank() is not None:
                    break  # torchrun ranks must stay on the same file: after a failure none goes on
            finally:
                discard_held()  # a weight map whose output was not published never appears
                scratch.cleanup()
                release_inputs([job])
    except KeyboardInterrupt:
        remove_temporaries()  # any a Ctrl-C separated from its owner; the published output is not one
        if not jobs or job is not jobs[-1] or not _output_in_place(job):
            raise
        # The signal came after the last file's final rename: the complete new file is in place, so
        # exit 130 ("the previous file is intact") would be a lie. Report success instead.
        say(sys.stderr, warn_line(f"{job.destination_name}: interrupted after it was written completely; "
                                  "it is kept"))
    finally:
        forget(ctx.taken)
    ctx.args.completed_code = first  # main(): a signal arriving after this point changes nothing
    return first


def _output_in_place(job: Job) -> bool:
    """Whether this run's new output (not the previous file) is now at the job's destination."""
    return job.destination != STDIO and was_published(job.destination)


def torchrun_rank() -> int | None:
    """This process's rank when started by torchrun (``sarcodec.distributed`` runs the job), else None."""
    from sarcodec.distributed import is_distributed

    return int(os.environ["RANK"]) if is_distributed() else None


def refuse_stdio_under_torchrun(job: Job, rank: int | None) -> None:
    if rank is not None and STDIO in (job.source, job.destination):
        raise UsageError("standard input/output ('-') cannot be used under torchrun: every rank opens the files")


def check_device(args: argparse.Namespace) -> None:
    """An unusable ``--device cuda[:i]`` is one usage error up front, not one per input file."""
    if args.device.startswith("cuda"):
        import_engine()
        from sarcodec.device import DevicePolicy

        DevicePolicy(args.device, args.batch_size).resolve()


def messages_stream(jobs: list[Job]) -> TextIO:
    """Where summaries go: stdout, or stderr when stdout carries a file (``-o -``)."""
    return sys.stderr if any(j.destination == STDIO for j in jobs) else sys.stdout
