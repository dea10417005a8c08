"""A SIGTERM right after each file a run creates, for every such file: nothing temporary survives.

The hardest moment for cleanup is the one between creating a temporary file and recording it: the
creating call has returned, its owner has not written the name down yet, and an interrupt raised
there leaves a file nobody removes. A full-suite run on a loaded machine hit one (Python's probe file
of ``tempfile.gettempdir``, left in ``$TMPDIR`` by a SIGTERM). These tests make the moment exact
instead of hoping a timer finds it: ``os.open(O_CREAT)`` and ``os.mkdir`` (what ``tempfile`` uses)
are wrapped so that the run signals itself right after the k-th file or folder it creates in the
output folder or ``$TMPDIR``, for every k a clean run reaches. Each run must end with exit 130 and
the previous output, or exit 0 and the complete new one, and leave no other file.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env, write_scene
from tests.conftest import speckled_scene
from tests.robustness.conftest import run_main

pytestmark = pytest.mark.timeout(300)

PREVIOUS = b"the previous output\n" * 20


class SignalAfterCreation:
    """Wraps ``os.open``/``os.mkdir``: counts creations under ``folders``; SIGTERMs itself after the ``at``-th."""

    def __init__(self, monkeypatch, folders: list[Path], at: int | None) -> None:
        self.folders = [str(f) for f in folders]
        self.at = at
        self.created: list[str] = []
        real_open, real_mkdir = os.open, os.mkdir

        def counting_open(path, flags, *args, **kwargs):
            fd = real_open(path, flags, *args, **kwargs)
            if flags & os.O_CREAT:
                self._created(path)
            return fd

        def counting_mkdir(path, *args, **kwargs):
            real_mkdir(path, *args, **kwargs)
            self._created(path)

        monkeypatch.setattr(os, "open", counting_open)
        monkeypatch.setattr(os, "mkdir", counting_mkdir)

    def _created(self, path) -> None:
        if os.path.dirname(os.path.abspath(os.fspath(path))) not in self.folders:
            return
        self.created.append(os.fspath(path))
        if len(self.created) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode of this thread


@pytest.fixture
def scene(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return write_scene(folder / "scene.tif", speckled_scene(96, 128, seed=21))


def _run(monkeypatch, argv: list[str], folders: list[Path], at: int | None, stdin: Path | None = None):
    with monkeypatch.context() as patch:
        if stdin is not None:
            patch.setattr(sys, "stdin", io.TextIOWrapper(open(stdin, "rb")))  # noqa: SIM115 - closed below
        hook = SignalAfterCreation(patch, folders, at)
        try:
            run = run_main(argv)
        finally:
            if stdin is not None:
                sys.stdin.close()
    return run, hook.created


@pytest.mark.parametrize("command", ["compress", "compress-stdin", "compress-weight-map", "decompress"])
def test_a_sigterm_right_after_any_file_is_created_leaves_no_temporary_file(command, scene, tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    private = tmp_path / "tmpdir"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # in-process: what $TMPDIR is to a new process
    source, stdin = scene, None
    if command == "decompress":
        source = tmp_path / "in" / "scene.npz"
        assert run_main(["compress", scene, "--no-estimate", "-q", "-o", source]).code == 0
    elif command == "compress-stdin":
        source, stdin = "-", scene
    suffix = ".tif" if command == "decompress" else ".npz"
    dest = out_dir / f"out{suffix}"
    argv = [command.split("-")[0], source, "--overwrite", "-q", "-o", dest]
    if command != "decompress":
        argv.append("--no-estimate")
    outputs = [dest]  # what the run replaces: the output, and its weight map when asked for
    if command == "compress-weight-map":
        outputs.append(out_dir / "weights.tif")
        argv += ["--weight-map", outputs[-1]]

    reference, created = _run(monkeypatch, argv, [out_dir, private], None, stdin)
    assert reference.code == 0, reference.stderr
    new_bytes = [p.read_bytes() for p in outputs]
    assert created, "the run created no file: the hook sees nothing"
    for k in range(1, len(created) + 1):
        for path in outputs:
            path.write_bytes(PREVIOUS)
        run, _ = _run(monkeypatch, argv, [out_dir, private], k, stdin)
        moment = f"after creating {Path(created[k - 1]).name} (file {k} of {len(created)})"
        assert "Traceback" not in run.stderr, (moment, run.stderr)
        assert run.code in (0, 130), (moment, run.code, run.stderr)
        if run.code == 130:  # all previous files, the weight map included
            assert [p.read_bytes() for p in outputs] == [PREVIOUS] * len(outputs), moment
            assert "sarcodec: error: interrupted" in run.stderr, (moment, run.stderr)
        else:  # all new ones
            assert [p.read_bytes() for p in outputs] == new_bytes, moment
        assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in outputs), moment
        assert list(private.iterdir()) == [], moment


# The first file a new process creates in $TMPDIR is Python's probe of the folder (created, written,
# removed by tempfile.gettempdir). A SIGTERM right after it used to leave it there.
_SIGNAL_AFTER_FIRST_FILE_IN_TMPDIR = """
import os, signal, sys
from sarcodec import cli

tmpdir, real_open = os.environ["TMPDIR"], os.open
created = []

def signalling_open(path, flags, *args, **kwargs):
    fd = real_open(path, flags, *args, **kwargs)
    if flags & os.O_CREAT and not created and os.path.dirname(os.path.abspath(path)) == tmpdir:
        created.append(path)
        os.kill(os.getpid(), signal.SIGTERM)
    return fd

os.open = signalling_open
code = cli.main(sys.argv[1:])
print("signalled after creating:", created, file=sys.stderr)
sys.exit(code)
"""


def test_a_sigterm_right_after_the_first_file_in_tmpdir_leaves_nothing_there(scene, tmp_path):
    private = tmp_path / "tmpdir"
    private.mkdir()
    dest = tmp_path / "out.npz"
    with open(scene, "rb") as stdin:  # stdin is spooled to $TMPDIR: the run has to create files there
        result = subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_FIRST_FILE_IN_TMPDIR, "compress", "-",
                                 "--no-estimate", "-o", str(dest)], stdin=stdin, env=cli_env(TMPDIR=str(private)),
                                capture_output=True, timeout=240)
    stderr = result.stderr.decode(errors="replace")
    assert "signalled after creating: ['" in stderr, stderr  # the hook did fire
    assert result.returncode == 130, stderr
    assert "Traceback" not in stderr and "sarcodec: error: interrupted" in stderr, stderr
    assert list(private.iterdir()) == []
    assert not dest.exists()
