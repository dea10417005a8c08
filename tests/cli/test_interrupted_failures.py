"""A failure that a signal causes is the interrupt (exit 130), not an internal error (exit 1).

CI caught it: SIGINT during compress landed inside a queue's ``Condition.wait`` on the main thread,
and CPython replaced the KeyboardInterrupt with ``RuntimeError: release unlocked lock``; the user saw
"internal error" and exit 1 although the previous output was intact. These tests make that failure
deterministic instead of waiting for the signal to hit the right bytecode.
"""

from __future__ import annotations

import argparse
import io

import pytest

from sarcodec.cli import entry
from sarcodec.cli.jobs import Job
from sarcodec.cli.run import RunContext, run_each
from sarcodec.errors import EXIT_INTERRUPTED
from sarcodec.progress import CancelToken


def _context(cancel: CancelToken) -> RunContext:
    return RunContext(args=argparse.Namespace(debug=False), cancel=cancel, messages=io.StringIO())


def test_a_failure_after_a_signal_stops_the_run_as_an_interrupt(tmp_path):
    ctx = _context(CancelToken())
    seen: list[str] = []

    def work(ctx: RunContext, job: Job, scratch) -> None:
        seen.append(job.source)
        ctx.cancel.cancel()  # what the signal handler does first
        raise RuntimeError("release unlocked lock")

    jobs = [Job(str(tmp_path / f"{n}.tif"), str(tmp_path / f"{n}.npz")) for n in "ab"]
    with pytest.raises(KeyboardInterrupt):
        run_each(ctx, jobs, work)
    assert seen == [jobs[0].source]  # the second file is not started after an interrupt


def test_a_failure_without_a_signal_is_reported_and_the_next_file_runs(tmp_path, capsys):
    ctx = _context(CancelToken())
    seen: list[str] = []

    def work(ctx: RunContext, job: Job, scratch) -> None:
        seen.append(job.source)
        raise RuntimeError("boom")

    jobs = [Job(str(tmp_path / f"{n}.tif"), str(tmp_path / f"{n}.npz")) for n in "ab"]
    assert run_each(ctx, jobs, work) not in (0, EXIT_INTERRUPTED)
    assert seen == [j.source for j in jobs]
    assert "internal error: RuntimeError: boom" in capsys.readouterr().err


@pytest.mark.parametrize("signalled, code", [(True, EXIT_INTERRUPTED), (False, 1)])
def test_main_reports_a_plan_level_failure_after_a_signal_as_interrupted(monkeypatch, capsys, signalled, code):
    def handler(args: argparse.Namespace, cancel: CancelToken) -> int:
        if signalled:
            cancel.cancel()
        raise RuntimeError("release unlocked lock")

    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(command="info", handler=handler, debug=False, output=None, inputs=[])

    monkeypatch.setattr(entry, "build_parser", Parser)
    assert entry.main(["info"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sarcodec: ")
    assert ("interrupted" in err[0]) == signalled and ("internal error" in err[0]) != signalled


def test_a_signal_while_waiting_for_a_worker_is_raised_after_the_wait(tmp_path):
    """The signal arrives while the main thread is blocked in ``Future.result``: the worker still hands
    over its result, the lock is left sane (a later wait returns), and the interrupt follows."""
    import os
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor, wait

    from sarcodec import interrupts

    cancel = CancelToken()

    def work() -> str:
        deadline = time.monotonic() + 2
        while not interrupts._STATE.depth and time.monotonic() < deadline:  # main is inside the wait
            time.sleep(0.01)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # lands on the main thread, blocked in the wait
        time.sleep(0.2)
        return "row"

    with entry.interrupt_handlers(cancel), ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(work)
        with pytest.raises(KeyboardInterrupt):
            interrupts.result(future)
        assert cancel.is_set() and future.done() and future.result() == "row"
        assert wait([future], timeout=5).not_done == set()
