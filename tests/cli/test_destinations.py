"""Every path the tool writes goes through one destination check and one atomic publish (issue 10).

The output (``-o``), the weight map (``--weight-map``) and the COG are refused when they would
replace an input (the scene, the container, the model), an existing file without ``--overwrite``,
or something that is not a regular file (FIFO, socket, device); the final rename refuses a file that
appeared while the run was working; temporary names fit a 255-byte output name; a signal arriving
after the final rename reports success, one arriving before it leaves the previous file.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import pytest

from sarcodec import cli, destinations, raster_io
from sarcodec.cli import compress as compress_command
from sarcodec.codec import container
from sarcodec.codec.header import MAX_TILE_SIZE
from tests.cli.conftest import error_lines, leftovers

FAST = ["-q", "--no-estimate"]


def _one_error_line(capsys) -> str:
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("sarcodec: error:"), lines
    return lines[0]


@pytest.fixture
def npz(small_scene, capsys) -> Path:
    out = small_scene.with_suffix(".npz")
    assert cli.main(["compress", str(small_scene), *FAST]) == 0
    capsys.readouterr()
    return out


# -- weight maps get the checks -o has ----------------------------------------------------------------


def test_compress_weight_map_cannot_replace_its_input(small_scene, capsys):
    before = small_scene.read_bytes()
    code = cli.main(["compress", str(small_scene), "-o", str(small_scene.with_name("o.npz")),
                     "--weight-map", str(small_scene), "--overwrite", *FAST])
    assert code == 4
    assert "own input" in _one_error_line(capsys)
    assert small_scene.read_bytes() == before
    assert not small_scene.with_name("o.npz").exists()


def test_decompress_weight_map_cannot_replace_the_container(npz, capsys):
    before = npz.read_bytes()
    code = cli.main(["decompress", str(npz), "--weight-map", str(npz), "--overwrite", "-q"])
    assert code == 4
    _one_error_line(capsys)
    assert npz.read_bytes() == before


def test_weight_map_cannot_replace_the_model(small_scene, default_model, capsys):
    before = default_model.read_bytes()
    code = cli.main(["compress", str(small_scene), "--weight-map", str(default_model), "--overwrite", *FAST])
    assert code == 4
    _one_error_line(capsys)
    assert default_model.read_bytes() == before


def test_output_cannot_replace_a_later_input(small_scene, tmp_path, capsys):
    """``compress a.tif a.npz --overwrite``: a.tif's output is the second input, which must survive."""
    other = tmp_path / "small.npz"
    other.write_bytes(b"not read yet")
    code = cli.main(["compress", str(small_scene), str(other), "--overwrite", *FAST])
    assert code != 0
    assert other.read_bytes() == b"not read yet"


def test_existing_weight_map_needs_overwrite(npz, tmp_path, capsys):
    weights = tmp_path / "w.tif"
    weights.write_bytes(b"keep me")
    out = tmp_path / "back.tif"
    code = cli.main(["decompress", str(npz), "-o", str(out), "--weight-map", str(weights), "-q"])
    assert code == 1
    assert "--overwrite" in _one_error_line(capsys)
    assert weights.read_bytes() == b"keep me"
    assert not out.exists()
    assert cli.main(["decompress", str(npz), "-o", str(out), "--weight-map", str(weights), "-q", "--overwrite"]) == 0
    import rasterio

    with rasterio.open(weights) as ds:
        assert ds.dtypes[0] == "float32"


def test_weight_map_cannot_be_the_output(npz, tmp_path, capsys):
    out = tmp_path / "back.tif"
    code = cli.main(["decompress", str(npz), "-o", str(out), "--weight-map", str(out), "-q"])
    assert code == 1
    _one_error_line(capsys)
    assert not out.exists()


# -- a weight map is published with its output, never before or without it ---------------------------
# The weight map is finished first (while band 1 is coded). Published then, a run that failed later
# left a new weight map beside the old output; now it follows the output's own publish, or never appears.

OLD = b"the previous file\n"


def _other_run_writes(path: Path, monkeypatch) -> None:
    """Another run creates ``path`` just before this one publishes its container there."""
    finish = container.ContainerWriter.finish

    def finish_after_the_other_run(self, header):
        path.write_bytes(b"the other run's container")
        return finish(self, header)

    monkeypatch.setattr(container.ContainerWriter, "finish", finish_after_the_other_run)


def test_no_weight_map_appears_when_the_output_cannot_be_published(small_scene, tmp_path, monkeypatch, capsys):
    out, weights = tmp_path / "o.npz", tmp_path / "w.tif"
    _other_run_writes(out, monkeypatch)
    assert cli.main(["compress", str(small_scene), "-o", str(out), "--weight-map", str(weights), *FAST]) == 1
    assert "appeared while this run was writing it" in _one_error_line(capsys)
    assert out.read_bytes() == b"the other run's container"
    assert not weights.exists()
    assert leftovers(tmp_path, {"small.tif", "o.npz"}) == []


def test_a_failed_run_keeps_the_old_output_and_the_old_weight_map(small_scene, tmp_path, monkeypatch, capsys):
    out, weights = tmp_path / "o.npz", tmp_path / "w.tif"
    out.write_bytes(OLD)
    weights.write_bytes(OLD)

    def disk_full(self, header):
        raise container.InputFileError(f"cannot write {out}: No space left on device")

    monkeypatch.setattr(container.ContainerWriter, "finish", disk_full)
    assert cli.main(["compress", str(small_scene), "-o", str(out), "--weight-map", str(weights), "--overwrite",
                     *FAST]) == 1
    _one_error_line(capsys)
    assert out.read_bytes() == OLD and weights.read_bytes() == OLD
    assert leftovers(tmp_path, {"small.tif", "o.npz", "w.tif"}) == []


def test_decompress_publishes_the_weight_map_only_with_its_output(npz, tmp_path, monkeypatch, capsys):
    out, weights = tmp_path / "back.tif", tmp_path / "w.tif"
    out.write_bytes(OLD)
    weights.write_bytes(OLD)
    verify = raster_io.GeoTiffSink._verify

    def output_did_not_reach_the_disk(self):
        if self.destination == out:
            raise OSError("the file did not reach the disk completely (disk full?)")
        verify(self)

    monkeypatch.setattr(raster_io.GeoTiffSink, "_verify", output_did_not_reach_the_disk)
    args = ["decompress", str(npz), "-o", str(out), "--weight-map", str(weights), "--overwrite", "-q"]
    assert cli.main(args) == 1
    _one_error_line(capsys)
    assert out.read_bytes() == OLD and weights.read_bytes() == OLD
    assert leftovers(tmp_path, {"small.tif", npz.name, "back.tif", "w.tif"}) == []
    monkeypatch.setattr(raster_io.GeoTiffSink, "_verify", verify)
    assert cli.main(args) == 0  # and when the output succeeds, both are replaced
    assert out.read_bytes() != OLD and weights.read_bytes() != OLD


# -- non-regular destinations ---------------------------------------------------------------------------


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("option", ["-o", "--weight-map"])
def test_a_fifo_destination_is_refused_not_replaced(small_scene, tmp_path, option, capsys):
    fifo = _fifo(tmp_path / "pipe.npz")
    args = ["compress", str(small_scene), option, str(fifo), "--overwrite", *FAST]
    if option == "--weight-map":
        args += ["-o", str(tmp_path / "o.npz")]
    assert cli.main(args) == 1
    assert "not a regular file" in _one_error_line(capsys)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path, {"small.tif", "pipe.npz"}) == []


def test_a_socket_destination_is_refused_not_replaced(npz, tmp_path, capsys):
    path = tmp_path / "s.tif"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        assert cli.main(["decompress", str(npz), "-o", str(path), "--overwrite", "-q"]) == 1
        assert "not a regular file" in _one_error_line(capsys)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        sock.close()


def _null_device(path: Path, kind: str) -> Path:
    """A character device like /dev/null at ``path`` (a real node, or a symlink to /dev/null).

    Never /dev/null itself: if the check ever regressed, the test would replace the machine's own.
    """
    if kind == "link":
        path.symlink_to("/dev/null")
        return path
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD (root); the link case covers the check")
    return path


@pytest.mark.parametrize("kind", ["node", "link"])
@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_a_device_destination_is_refused_not_replaced(small_scene, npz, tmp_path, command, kind, capsys):
    # -o /dev/null --overwrite used to replace the device with a regular file (as root: the real /dev/null)
    device = _null_device(tmp_path / ("null.npz" if command == "compress" else "null.tif"), kind)
    source = small_scene if command == "compress" else npz
    args = [command, str(source), "-o", str(device), "--overwrite", "-q"]
    if command == "decompress":
        args[3] = str(tmp_path / "out.tif")
        args += ["--weight-map", str(device)]
    assert cli.main(args) == 1
    assert "is a device, not a regular file" in _one_error_line(capsys)
    assert stat.S_ISCHR(os.stat(device).st_mode) and os.path.islink(device) == (kind == "link")
    assert leftovers(tmp_path, {"small.tif", npz.name, device.name}) == []


def test_publish_refuses_a_destination_that_became_a_fifo(tmp_path):
    tmp = tmp_path / ".x.part"
    tmp.write_bytes(b"new")
    fifo = _fifo(tmp_path / "x.tif")
    with pytest.raises(destinations.InputFileError, match="not a regular file"):
        destinations.publish(tmp, fifo, overwrite=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# -- the final rename does not replace a file that appeared meanwhile -----------------------------------


def _appearing(monkeypatch, module, content: bytes) -> None:
    """Another run creates the destination just before this one publishes."""
    real = module.publish

    def publish(tmp, destination, **kw):
        Path(destination).write_bytes(content)
        return real(tmp, destination, **kw)

    monkeypatch.setattr(module, "publish", publish)


def test_compress_fails_when_the_output_appears_during_the_run(small_scene, tmp_path, monkeypatch, capsys):
    out = tmp_path / "o.npz"
    _appearing(monkeypatch, container, b"the other run's result")
    assert cli.main(["compress", str(small_scene), "-o", str(out), *FAST]) == 1
    assert "appeared" in _one_error_line(capsys)
    assert out.read_bytes() == b"the other run's result"
    assert leftovers(tmp_path, {"small.tif", "o.npz"}) == []


def test_decompress_fails_when_the_output_appears_during_the_run(npz, tmp_path, monkeypatch, capsys):
    out = tmp_path / "back.tif"
    _appearing(monkeypatch, raster_io, b"the other run's result")
    assert cli.main(["decompress", str(npz), "-o", str(out), "-q"]) == 1
    _one_error_line(capsys)
    assert out.read_bytes() == b"the other run's result"
    assert leftovers(tmp_path, {"small.tif", "small.npz", "back.tif"}) == []


def test_with_overwrite_the_appeared_file_is_replaced(npz, tmp_path, monkeypatch):
    out = tmp_path / "back.tif"
    _appearing(monkeypatch, raster_io, b"older")
    assert cli.main(["decompress", str(npz), "-o", str(out), "-q", "--overwrite"]) == 0
    assert out.read_bytes()[:2] in (b"II", b"MM")


def test_publish_without_overwrite_never_replaces(tmp_path):
    tmp, dest = tmp_path / ".a.part", tmp_path / "a.npz"
    tmp.write_bytes(b"new")
    dest.write_bytes(b"old")
    with pytest.raises(destinations.InputFileError, match="appeared"):
        destinations.publish(tmp, dest, overwrite=False)
    assert dest.read_bytes() == b"old"
    dest.unlink()
    destinations.publish(tmp, dest, overwrite=False)
    assert dest.read_bytes() == b"new" and not tmp.exists()


# -- temporary names fit -------------------------------------------------------------------------------


def test_a_255_byte_output_name_works(small_scene, tmp_path, capsys):
    npz = tmp_path / ("c" * 251 + ".npz")
    tif = tmp_path / ("é" * 125 + "d.tif")  # 255 bytes of UTF-8, cut on a character boundary
    weights = tmp_path / ("w" * 251 + ".tif")
    assert len(os.fsencode(npz.name)) == len(os.fsencode(tif.name)) == len(os.fsencode(weights.name)) == 255
    assert cli.main(["compress", str(small_scene), "-o", str(npz), *FAST]) == 0
    assert cli.main(["decompress", str(npz), "-o", str(tif), "--weight-map", str(weights), "-q"]) == 0
    assert cli.main(["decompress", str(npz), "-o", str(tif), "--cog", "--overwrite", "-q"]) == 0
    assert leftovers(tmp_path, {"small.tif", npz.name, tif.name, weights.name}) == []


def test_temporary_names_stay_within_the_name_limit():
    for name in ("x" * 255, "é" * 127 + "x", "a.tif"):
        prefix = destinations.temp_prefix(name, ".spill.part")
        assert len(os.fsencode(prefix)) + 8 + len(".spill.part") <= destinations.NAME_MAX
        prefix.encode("utf-8")  # never half a character


# -- whatever compress accepts, decompress reads --------------------------------------------------------


def test_tile_size_above_the_container_limit_is_a_usage_error(small_scene, capsys):
    code = cli.main(["compress", str(small_scene), "--tile-size", str(MAX_TILE_SIZE + 16), *FAST])
    assert code == 4
    assert str(MAX_TILE_SIZE) in _one_error_line(capsys)
    assert not small_scene.with_suffix(".npz").exists()


def test_the_largest_accepted_tile_size_decompresses(small_scene, tmp_path):
    out = tmp_path / "big_tiles.npz"
    assert cli.main(["compress", str(small_scene), "-o", str(out), "--tile-size", str(MAX_TILE_SIZE),
                     "--overlap", "0", *FAST]) == 0
    assert cli.main(["decompress", str(out), "-o", str(tmp_path / "back.tif"), "-q"]) == 0


def test_overlap_over_half_the_tile_is_refused_before_any_work(small_scene, capsys, monkeypatch):
    monkeypatch.setattr(compress_command, "load_model_summary", lambda p: pytest.fail("the model was loaded"))
    assert cli.main(["compress", str(small_scene), "--tile-size", "64", "--overlap", "48", *FAST]) == 4
    _one_error_line(capsys)


# -- a compressed output is a .npz -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.tif", "out"])
def test_compress_output_must_be_named_npz(small_scene, tmp_path, name, capsys):
    assert cli.main(["compress", str(small_scene), "-o", str(tmp_path / name), *FAST]) == 4
    assert ".npz" in _one_error_line(capsys)
    assert leftovers(tmp_path, {"small.tif"}) == []


# -- a signal around the final rename: the exit code says which file is there -------------------------


def _signal_at_publish(monkeypatch, module, *, after: bool) -> None:
    real = module.publish

    def publish(tmp, destination, **kw):
        if not after:
            os.kill(os.getpid(), signal.SIGINT)
        real(tmp, destination, **kw)
        if after:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(module, "publish", publish)


@pytest.mark.parametrize("after", [False, True], ids=["before-rename", "after-rename"])
def test_interrupt_at_the_final_rename_reports_what_is_on_disk(npz, tmp_path, monkeypatch, after, capsys):
    out = tmp_path / "back.tif"
    out.write_bytes(b"previous")
    _signal_at_publish(monkeypatch, raster_io, after=after)
    code = cli.main(["decompress", str(npz), "-o", str(out), "-q", "--overwrite"])
    if after:
        assert code == 0
        assert out.read_bytes()[:2] in (b"II", b"MM")
    else:
        assert code == 130
        assert out.read_bytes() == b"previous"
    assert leftovers(tmp_path, {"small.tif", "small.npz", "back.tif"}) == []


def test_interrupt_after_the_container_rename_exits_0(small_scene, tmp_path, monkeypatch):
    out = tmp_path / "o.npz"
    out.write_bytes(b"previous")
    _signal_at_publish(monkeypatch, container, after=True)
    assert cli.main(["compress", str(small_scene), "-o", str(out), "--overwrite", *FAST]) == 0
    assert out.read_bytes()[:2] == b"PK"


# -- front ends that call the engine directly (the QGIS plugin) get the same refusal -------------------


def test_engine_refuses_an_output_that_is_its_input(small_scene, tmp_path):
    """The plugin calls ``compress_raster``/``decompress_container`` without the CLI's checks."""
    from sarcodec.codec import pipeline
    from sarcodec.errors import UsageError

    before = small_scene.read_bytes()
    with pytest.raises(UsageError, match="own input"):
        pipeline.compress_raster(small_scene, small_scene, pipeline.CompressOptions(estimate_quality=False))
    assert small_scene.read_bytes() == before
    fifo = _fifo(tmp_path / "p.npz")
    with pytest.raises(destinations.InputFileError, match="not a regular file"):
        pipeline.compress_raster(small_scene, fifo, pipeline.CompressOptions(estimate_quality=False))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
