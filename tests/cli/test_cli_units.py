"""Small pieces of the CLI: output planning, progress adapters, signal handling, header listing."""

from __future__ import annotations

import io
import os
import signal
import time

import pytest

from sarcodec import cli
from sarcodec.cli_progress import PlainProgress, QuietProgress, RichProgress, make_progress
from sarcodec.errors import InputFileError, UsageError
from sarcodec.progress import CancelToken

# ------------------------------------------------------------------ planning


def test_auto_naming_next_to_the_input(tmp_path):
    jobs = cli.plan_jobs([str(tmp_path / "a" / "scene.tif")], None, ".npz")
    assert jobs[0].destination == str(tmp_path / "a" / "scene.npz")
    jobs = cli.plan_jobs([str(tmp_path / "scene.npz")], None, ".tif")
    assert jobs[0].destination == str(tmp_path / "scene.tif")


def test_output_file_folder_and_stdout(tmp_path):
    assert cli.plan_jobs(["x.tif"], str(tmp_path / "y.npz"), ".npz")[0].destination == str(tmp_path / "y.npz")
    assert cli.plan_jobs(["d/x.tif"], str(tmp_path), ".npz")[0].destination == str(tmp_path / "x.npz")
    new = tmp_path / "new"
    jobs = cli.plan_jobs(["a/x.tif", "b/y.tif"], str(new), ".npz")
    assert new.is_dir() and [j.destination for j in jobs] == [str(new / "x.npz"), str(new / "y.npz")]
    assert cli.plan_jobs(["-"], None, ".npz")[0].destination == "-"
    assert cli.plan_jobs(["-"], str(tmp_path), ".npz")[0].destination == str(tmp_path / "stdin.npz")


def test_planning_errors_are_usage_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):
        cli.plan_jobs(["a.tif", "b.tif"], str(tmp_path / "file"), ".npz")
    with pytest.raises(UsageError):
        cli.plan_jobs(["-", "-"], None, ".npz")
    with pytest.raises(UsageError):
        cli.plan_jobs(["a.tif", "b.tif"], "-", ".npz")


def test_destination_checks(tmp_path):
    src = tmp_path / "x.tif"
    src.write_text("x")
    with pytest.raises(UsageError, match="own input"):
        cli._check_destination(cli.Job(str(src), str(src)), True, set())
    taken: set[str] = set()
    cli._check_destination(cli.Job("a.tif", str(tmp_path / "o.npz")), False, taken)
    with pytest.raises(InputFileError, match="earlier input"):
        cli._check_destination(cli.Job("b.tif", str(tmp_path / "o.npz")), False, taken)
    with pytest.raises(InputFileError, match="does not exist"):
        cli._check_destination(cli.Job("a.tif", str(tmp_path / "nope" / "o.npz")), False, set())


def test_decompress_auto_names_next_to_the_container(small_scene, capsys):
    assert cli.main(["compress", str(small_scene), "-q", "--no-estimate"]) == 0
    small_scene.unlink()
    assert cli.main(["decompress", str(small_scene.with_suffix(".npz")), "-q"]) == 0
    assert small_scene.is_file()


def test_weight_map_with_several_inputs_needs_a_folder(small_scene, tmp_path, capsys):
    code = cli.main(["compress", str(small_scene), str(small_scene), "-o", str(tmp_path / "o"),
                     "--weight-map", str(tmp_path / "w.tif")])
    assert code == 4


def test_info_reads_stdin(small_scene, monkeypatch, capsys):
    assert cli.main(["compress", str(small_scene), "-q", "--no-estimate"]) == 0
    data = small_scene.with_suffix(".npz").read_bytes()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert cli.main(["info", "-"]) == 0
    assert capsys.readouterr().out.startswith("<stdin>\n")


def test_format_header_flattens_and_shortens():
    text = cli.format_header("f.npz", {"quality": 3, "geo": {"crs": 'GEOGCS["WGS 84",DATUM["WGS_1984"]]',
                                                              "gcps": {"points": [[0, 0, 1, 2]] * 4}},
                                        "long": "x" * 500})
    assert "  quality: 3" in text and "  geo.gcps.points: 4 GCPs" in text
    assert max(len(line) for line in text.splitlines()) < 120


# ------------------------------------------------------------------ progress


def test_plain_progress_prints_every_ten_percent():
    stream = io.StringIO()
    p = PlainProgress(stream, prefix="a.tif")
    p.start(100, "compress")
    for _ in range(100):
        p.advance(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("sarcodec: a.tif: compress  10% (10/100), ETA")
    assert lines[-1].endswith("100% (100/100)")
    stream.truncate(0)
    stream.seek(0)
    p.start(10, "decompress")
    p.advance(10)  # one big step: one line, not ten
    assert len(stream.getvalue().splitlines()) == 1


def test_quiet_progress_prints_only_warnings():
    stream = io.StringIO()
    p = QuietProgress(stream, prefix="a.tif")
    p.start(10, "x")
    p.advance(10)
    p.info("note")
    p.warn("careful")
    assert stream.getvalue() == "sarcodec: a.tif: warning: careful\n"


def test_rich_progress_draws_a_bar_with_eta():
    from rich.console import Console

    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    with RichProgress(stream, prefix="a.tif", console=console) as p:
        p.start(4, "compress")
        p.advance(2)
        p.warn("careful")
        p.advance(2)
    out = stream.getvalue()
    assert "a.tif compress" in out and "ETA" in out and "4/4" in out and "warning: careful" in out


def test_make_progress_picks_by_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_progress(prefix="a", quiet=False, stream=io.StringIO()), PlainProgress)
    assert isinstance(make_progress(prefix="a", quiet=True, stream=Tty()), QuietProgress)
    rich = make_progress(prefix="a", quiet=False, stream=Tty())
    assert isinstance(rich, RichProgress)
    rich.close()
    token = CancelToken()
    p = make_progress(prefix="a", quiet=False, cancel=token, stream=io.StringIO())
    assert not p.cancelled()
    token.cancel()
    assert p.cancelled()


# ------------------------------------------------------------------ signals


def test_sigterm_becomes_keyboard_interrupt_and_cancels():
    token = CancelToken()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with cli.interrupt_handlers(token):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler's KeyboardInterrupt cuts this short
    assert token.is_set()
    assert signal.getsignal(signal.SIGTERM) == before
