"""Fixtures for the robustness suite: a tiny real model, small hostile files and leftover checks.

Every case here runs the real engine on purpose-built damaged or extreme inputs, so each one must
stay small (a few hundred pixels): the whole suite has to fit in CI next to everything else.
``run_main`` calls ``sarcodec.cli.main`` in-process (exit code and stderr, no interpreter start-up);
only signal tests pay for real subprocesses.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sarcodec import cli
from sarcodec.codec.container import (
    INDEX_MEMBER,
    MAGIC,
    MEMBER,
    PAYLOAD_MEMBER,
    PREFIX,
    ContainerReader,
    npy_header,
    pack_index,
)
from tests.cli.conftest import write_scene
from tests.conftest import speckled_scene

# What a failed run may leave in an output folder: nothing. These patterns are the engine's own
# temporary names (container spill/zip parts, GeoTIFF parts, COG parts), checked by name as well
# as by the exact before/after listing.
TEMP_MARKERS = (".part", ".spill")


@pytest.fixture(autouse=True)
def default_model(tiny_model, monkeypatch) -> Path:
    """Every run (in-process, subprocess, QGIS algorithm) uses the tiny model by default."""
    monkeypatch.setenv("SARCODEC_MODEL", str(tiny_model))
    return tiny_model


@dataclass
class CliRun:
    code: int
    stderr: str
    stdout: str

    @property
    def errors(self) -> list[str]:
        """Non-empty stderr lines other than the CPU fallback notice (harmless, printed once)."""
        return [line for line in self.stderr.splitlines() if line.strip() and "no CUDA GPU" not in line]


def run_main(argv: list[str]) -> CliRun:
    """``sarcodec ARGV`` in-process: the exit code main() returns and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return CliRun(code, err.getvalue(), out.getvalue())


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_failed_cleanly(run: CliRun, code: int, folder: Path, before: set[str], *, match: str = "") -> None:
    """The documented failure contract: exit code, exactly one ``sarcodec: error:`` line, nothing left."""
    assert run.code == code, f"exit {run.code}, expected {code}: {run.stderr}"
    lines = [line for line in run.errors if not (line.startswith("sarcodec: ") and ": warning: " in line)]
    assert len(lines) == 1, f"expected one error line (besides warnings), got: {run.errors}"
    assert lines[0].startswith("sarcodec: error: "), run.errors
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run.stderr
    assert match.lower() in lines[0].lower(), lines[0]
    after = listing(folder)
    assert after == before, f"left behind: {sorted(after - before)}"
    assert not [n for n in after if any(m in n for m in TEMP_MARKERS)], after


# -- scenes and containers -------------------------------------------------------------------------

WIDE = (48, 1040)  # three 512-px chunk columns: one chunk can be damaged while others survive
NODATA = 65535


def damaged_scene_array() -> np.ndarray:
    """Speckle with nodata in chunk 0 (-> a mask record) and zeros in chunk 1 (-> a fallback record)."""
    data = speckled_scene(*WIDE, seed=7)
    data[:, :40] = NODATA
    data[10:20, 600:620] = 0  # zero amplitude cannot be coded in the log domain: stored losslessly
    return data


@pytest.fixture(scope="session")
def wide_container(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Multi-chunk containers with every record kind (with nodata) and without nodata, plus clean decodes."""
    import os

    folder = tmp_path_factory.mktemp("wide")
    old = os.environ.get("SARCODEC_MODEL")
    os.environ["SARCODEC_MODEL"] = str(tiny_model)
    try:
        out = {}
        for name, nodata in (("nodata", NODATA), ("plain", None)):
            tif = write_scene(folder / f"{name}.tif", damaged_scene_array(), nodata=nodata)
            assert run_main(["compress", tif, "-q", "--no-estimate"]).code == 0
            clean = folder / f"{name}.clean.tif"
            assert run_main(["decompress", tif.with_suffix(".npz"), "-q", "-o", clean]).code == 0
            out[name] = tif.with_suffix(".npz")
            out[f"{name}.clean"] = clean
    finally:
        if old is None:
            os.environ.pop("SARCODEC_MODEL", None)
        else:
            os.environ["SARCODEC_MODEL"] = old
    return out


@pytest.fixture(scope="session")
def small_container(tmp_path_factory, tiny_model) -> Path:
    """A one-chunk 64x64 container with nodata: the cheapest valid input for damage and fuzzing."""
    import os

    folder = tmp_path_factory.mktemp("small")
    data = speckled_scene(64, 64, seed=9)
    data[:8, :8] = 0
    tif = write_scene(folder / "small.tif", data, nodata=0)
    old = os.environ.get("SARCODEC_MODEL")
    os.environ["SARCODEC_MODEL"] = str(tiny_model)
    try:
        assert run_main(["compress", tif, "-q", "--no-estimate"]).code == 0
    finally:
        if old is None:
            os.environ.pop("SARCODEC_MODEL", None)
        else:
            os.environ["SARCODEC_MODEL"] = old
    return tif.with_suffix(".npz")


def container_parts(path: Path) -> tuple[dict, np.ndarray, bytes]:
    """Header dict, index array and payload bytes of a valid container."""
    with ContainerReader(path) as reader:
        header = dict(reader.header)
        index = np.array(reader._index)
        payload = b"".join(reader.read_record(r) for r in sorted(reader, key=lambda r: r.offset))
    return header, index, payload


def craft_container(path: Path, header: dict, index: np.ndarray, payload: bytes, *, version: int | None = None,
                    fix_crcs: bool = True, layout: int = 1) -> Path:
    """Write a container by hand, bypassing the writer's validation: what a hostile tool could produce.

    ``layout`` is the format version whose layout is written (1: three members, the JSON header as
    is; 2: one member, the compact header, the container's own keys derived by the reader) and
    ``version`` the version its prefix claims (default: the layout's). With ``fix_crcs`` the
    checksums are recomputed, so only the content under test is wrong, not the checksums that would
    otherwise catch it first.
    """
    from sarcodec.codec.compact_header import encode_compact, put_varint
    from sarcodec.codec.container import _npy_bytes

    version = layout if version is None else version
    header = dict(header)
    index = np.ascontiguousarray(np.asarray(index, dtype="<i8"))
    if layout == 2:
        block = pack_index(index) + encode_compact(header)
        sized = put_varint(len(block)) + block
        data = PREFIX.pack(MAGIC, version, zlib.crc32(sized) ^ (0 if fix_crcs else 1)) + sized + payload
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(MEMBER, npy_header(len(data)) + data, compress_type=zipfile.ZIP_STORED)
        return path
    if fix_crcs:
        header["index_crc32"] = zlib.crc32(index.tobytes())
    header.setdefault("format_version", version)
    if header["format_version"] in (1, 2):  # a version-2 file's header, now in the version-1 layout
        header["format_version"] = version
    body = json.dumps(header, separators=(",", ":")).encode()
    blob = PREFIX.pack(MAGIC, version, zlib.crc32(body)) + body
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("header.npy", _npy_bytes(np.frombuffer(blob, np.uint8)), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(INDEX_MEMBER, _npy_bytes(index), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(PAYLOAD_MEMBER, _npy_bytes(np.frombuffer(payload, np.uint8)), compress_type=zipfile.ZIP_STORED)
    return path


def header_span(path: Path) -> tuple[int, int]:
    """File offsets [start, end) of a version-2 container's header: .npy header, prefix, index, compact header."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(MEMBER)
    with ContainerReader(path) as reader:
        return info.header_offset + 30 + len(info.filename) + len(info.extra), reader._payload_start


def member_span(path: Path, member: str) -> tuple[int, int]:
    """File offsets [start, end) of a zip member's (possibly compressed) data."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = path.read_bytes()
    nlen, xlen = int.from_bytes(raw[info.header_offset + 26: info.header_offset + 28], "little"), \
        int.from_bytes(raw[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + nlen + xlen
    return start, start + info.compress_size


# -- hostile environments: read-only folder, full disk ---------------------------------------------

def _mount(args: list[str], target: Path) -> bool:
    import subprocess

    try:
        return subprocess.run(["mount", *args, str(target)], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _umount(target: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=20)


@pytest.fixture
def readonly_dir(tmp_path, monkeypatch) -> Path:
    """An output folder that refuses writes: a read-only tmpfs (root ignores chmod), else a patched mkstemp."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    if _mount(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"], folder):
        yield folder
        _umount(folder)
        return
    import errno
    import os
    import tempfile

    real = tempfile.mkstemp

    def refusing(*args, **kwargs):
        target = kwargs.get("dir") or (args[2] if len(args) > 2 else None)
        if target is not None and Path(target).resolve() == folder.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refusing)
    yield folder


@pytest.fixture
def full_dir(tmp_path, monkeypatch) -> Path:
    """An output folder on a full disk: a tiny tmpfs filled to the last byte, else a patched fsync.

    Filling it first means even a few hundred bytes fail with ENOSPC, the way a real full disk does
    after the output's name has already been created.
    """
    import errno
    import os

    folder = tmp_path / "full"
    folder.mkdir()
    if _mount(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], folder):
        filler = folder / ".filler"
        try:
            with open(filler, "wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        except OSError:
            pass
        yield folder
        _umount(folder)
        return
    real = os.fsync

    def enospc(fd):  # delayed allocation: a real full disk often reports itself at fsync
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", enospc)
    yield folder
    monkeypatch.setattr(os, "fsync", real)


# -- hostile models ---------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs ``open(marker, "w")``: proof of code execution if the marker appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_models(folder: Path) -> tuple[list[Path], Path]:
    """A raw pickle and a torch-zip checkpoint, both carrying the payload; and the marker it would create."""
    import pickle

    import torch

    marker = folder / "PWNED"
    raw = folder / "evil_pickle.pt"
    raw.write_bytes(pickle.dumps({"format": "sarcodec-checkpoint", "state_dict": _Payload(marker)}))
    zipped = folder / "evil_torch.pt"
    torch.save({"format": "sarcodec-checkpoint", "config": _Payload(marker)}, zipped)
    assert not marker.exists()
    return [raw, zipped], marker


def foreign_models(folder: Path) -> list[Path]:
    """Checkpoints that load safely but are not a SarCodec: another network, wrong config, wrong widths."""
    import torch

    from sarcodec.codec.model import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, SarCodec

    plain = folder / "resnet_like.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).state_dict(), plain)
    alien = folder / "alien_config.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": {"layers": 50},
                "state_dict": {"w": torch.zeros(2)}}, alien)
    widths = folder / "other_widths.pt"
    other = SarCodec(n_channels=8, latent_channels=12, hyper_channels=4, n_qualities=5)
    state = other.state_dict()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "config": {"n_channels": 16, "latent_channels": 24, "hyper_channels": 8, "n_qualities": 5},
                "state_dict": state}, widths)
    return [plain, alien, widths]
