"""torchrun runs: the output does not depend on the rank count, and a dead rank leaves nothing behind."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarcodec.codec.pipeline import CompressOptions, DecompressOptions, compress_raster, decompress_container
from sarcodec.distributed import RankLogProgress, ShardFolder, is_distributed, remove_stale_shards, shard_ranges
from sarcodec.inputs import resolve_inputs

from ..conftest import speckled_scene
from .conftest import REPO, torchrun

OPTS = {"tile_size": 128, "overlap": 32, "device": "cpu"}


def gcp_list(ds) -> list[tuple]:
    points, crs = ds.gcps
    return [(g.row, g.col, g.x, g.y, g.z, g.id, crs.to_epsg()) for g in points]


def shards_left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".shards." in p.name or p.name.endswith(".part"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, safe_product, dist_model) -> dict:
    """One process, no torchrun: what the plain CLI writes."""
    out = tmp_path_factory.mktemp("ref")
    item = resolve_inputs(safe_product["folder"])[0]
    compress_raster(item.path, out / "scene.npz", CompressOptions(model_path=dist_model, **OPTS))
    decompress_container(out / "scene.npz", out / "scene.tif", DecompressOptions(model_path=dist_model, device="cpu"))
    return {"npz": (out / "scene.npz").read_bytes(), "tif": out / "scene.tif"}


@pytest.fixture(scope="module")
def ranked_runs(tmp_path_factory, safe_product, dist_model) -> dict[int, dict]:
    """Compress + decompress with 1, 2 and 3 ranks (the 3-rank run reads the zipped product)."""
    runs = {}
    for nproc, source in ((1, safe_product["folder"]), (2, safe_product["folder"]), (3, safe_product["zip"])):
        out = tmp_path_factory.mktemp(f"ranks{nproc}")
        proc = torchrun(nproc, "compress", str(source), str(out / "scene.npz"), "--model", str(dist_model),
                        "--decompress", str(out / "scene.tif"))
        runs[nproc] = {"proc": proc, "dir": out}
    return runs


def test_shard_ranges_are_contiguous_and_cover_everything():
    for n in range(0, 9):
        for world in range(1, 5):
            parts = shard_ranges(n, world)
            assert len(parts) == world and [i for r in parts for i in r] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_is_distributed_reads_the_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert not is_distributed()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert is_distributed()


def test_rank_log_progress_logs_quarters_and_warnings():
    buf = io.StringIO()
    p = RankLogProgress(2, stream=buf)
    p.start(8, "compress band 1/1: 8 tiles on CPU")
    for _ in range(8):
        p.advance(1)
    p.warn("tile 3: non-finite values\nin /data/two\nlines.tif")
    lines = buf.getvalue().splitlines()
    assert all(line.startswith("sarcodec: [rank 2] ") for line in lines), lines  # like every stderr line
    assert sum("%" in line for line in lines) == 4 and "warning: tile 3" in lines[-1], lines
    assert lines[-1].endswith("values\\nin /data/two\\nlines.tif"), lines  # one line, the name escaped


def test_stale_shard_folders_of_the_same_output_are_removed(tmp_path):
    dest = tmp_path / "scene.npz"
    stale = ShardFolder(dest, "deadbeef0000").path
    stale.mkdir()
    (stale / "rank-0.bin").write_bytes(b"x")
    other = ShardFolder(tmp_path / "other.npz", "deadbeef0000").path
    other.mkdir()
    assert remove_stale_shards(dest) == [stale]
    assert not stale.exists() and other.exists()


@pytest.mark.parametrize("nproc", [1, 2, 3])
def test_container_is_byte_identical_whatever_the_rank_count(ranked_runs, reference, nproc):
    run = ranked_runs[nproc]
    assert run["proc"].returncode == 0, run["proc"].stderr[-3000:]
    assert (run["dir"] / "scene.npz").read_bytes() == reference["npz"]
    assert f"x {nproc} ranks" in run["proc"].stdout


@pytest.mark.parametrize("nproc", [1, 2, 3])
def test_decompressed_raster_is_the_same_whatever_the_rank_count(ranked_runs, reference, nproc):
    run = ranked_runs[nproc]
    assert run["proc"].returncode == 0, run["proc"].stderr[-3000:]
    with rasterio.open(reference["tif"]) as a, rasterio.open(run["dir"] / "scene.tif") as b:
        assert np.array_equal(a.read(), b.read())
        assert b.profile == a.profile and b.descriptions == a.descriptions == ("VV", "VH")
        assert b.tags() == a.tags() and gcp_list(b) == gcp_list(a) and len(gcp_list(b)) == 9
    # rank 0 stitches band by band, rows in order, as one process writes: even the file bytes match
    assert (run["dir"] / "scene.tif").read_bytes() == reference["tif"].read_bytes()
    # only rank 0 wrote, and nothing but the outputs is left
    assert sorted(os.listdir(run["dir"])) == ["scene.npz", "scene.tif"]


def test_non_zero_ranks_log_progress_rank_zero_does_not(ranked_runs):
    err = ranked_runs[3]["proc"].stderr
    assert "sarcodec: [rank 1] compress band 1/2" in err and "sarcodec: [rank 2] decompress band 2/2" in err
    assert "[rank 0]" not in err
    ours = [line for line in err.splitlines() if "[rank " in line]
    assert ours and all(line.startswith("sarcodec: [rank ") for line in ours), ours


@pytest.mark.parametrize("dead_rank", [1, 0])
def test_a_killed_rank_fails_the_run_and_leaves_nothing(tmp_path, safe_product, dist_model, dead_rank):
    dest = tmp_path / "scene.npz"
    proc = torchrun(2, "compress", str(safe_product["folder"]), str(dest), "--model", str(dist_model),
                    env={"SARCODEC_TEST_CRASH": str(dead_rank)})
    assert proc.returncode != 0
    assert f"rank {dead_rank} dies now" in proc.stderr
    # torchrun names the rank that died (the survivor may be stopped by torchrun before it can say why)
    assert "Root Cause" in proc.stderr and f"rank      : {dead_rank}" in proc.stderr
    assert not dest.exists()
    assert shards_left(tmp_path) == [], proc.stderr[-4000:]


def test_shard_folder_removal_interrupted_by_sigterm_still_completes(tmp_path, monkeypatch):
    """torchrun's SIGTERM to the survivors can land in their cleanup: the folder must still go."""
    import shutil

    from sarcodec import distributed

    folder = ShardFolder(tmp_path / "scene.npz", "0123456789ab")
    folder.path.mkdir()
    for name in ("rank-0.bin", "rank-1.bin", "rank-1.json"):
        (folder.path / name).write_bytes(b"x")
    real, calls = shutil.rmtree, []

    def interrupted_once(path, ignore_errors=False):
        calls.append(path)
        if len(calls) == 1:  # SIGTERM after the first file: what the handler raises
            (folder.path / "rank-0.bin").unlink()
            raise KeyboardInterrupt("SIGTERM")
        real(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(distributed.shutil, "rmtree", interrupted_once)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        folder.remove()
    assert shards_left(tmp_path) == []


def test_rerun_after_a_crash_works_despite_a_stale_shard_folder(tmp_path, safe_product, dist_model, reference):
    dest = tmp_path / "scene.npz"
    stale = ShardFolder(dest, "0123456789ab").path  # what a SIGKILLed rank 0 leaves behind
    stale.mkdir()
    (stale / "rank-1.bin").write_bytes(b"partial")
    proc = torchrun(2, "compress", str(safe_product["folder"]), str(dest), "--model", str(dist_model))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert dest.read_bytes() == reference["npz"]
    assert shards_left(tmp_path) == []


def test_more_ranks_than_chunk_rows_idle_ranks_write_empty_shards(tmp_path, write_geotiff, dist_model):
    """300 rows are one chunk row: rank 1 has nothing to code or decode, the result is still identical."""
    scene = speckled_scene(300, 70, seed=5)
    scene[:20, :30] = 0
    src = write_geotiff(scene, "small.tif", nodata=0)
    ref = tmp_path / "ref"
    ref.mkdir()
    compress_raster(src, ref / "s.npz", CompressOptions(model_path=dist_model, **OPTS))
    decompress_container(ref / "s.npz", ref / "s.tif", DecompressOptions(model_path=dist_model, device="cpu"))
    out = tmp_path / "out"
    out.mkdir()
    proc = torchrun(2, "compress", str(src), str(out / "s.npz"), "--model", str(dist_model),
                    "--decompress", str(out / "s.tif"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "s.npz").read_bytes() == (ref / "s.npz").read_bytes()
    with rasterio.open(ref / "s.tif") as a, rasterio.open(out / "s.tif") as b:
        assert np.array_equal(a.read(), b.read()) and b.nodata == 0 and b.crs == a.crs
    assert sorted(os.listdir(out)) == ["s.npz", "s.tif"]


def test_a_rank_that_stops_answering_times_out_with_a_clear_error(tmp_path, safe_product, dist_model):
    dest = tmp_path / "scene.npz"
    proc = torchrun(2, "compress", str(safe_product["folder"]), str(dest), "--model", str(dist_model),
                    env={"SARCODEC_TEST_HANG": "1", "SARCODEC_DIST_TIMEOUT": "6"})
    assert proc.returncode != 0
    assert "rank 1 hangs now" in proc.stderr
    assert "rank 0: lost contact with the other ranks while encoding its shard" in proc.stderr
    assert "did not answer within 6 s" in proc.stderr and "Timed out" in proc.stderr
    assert not dest.exists() and shards_left(tmp_path) == []


def test_torchrun_m_sarcodec_compresses_a_zipped_product_and_decompresses_it(tmp_path, safe_product, dist_model,
                                                                             reference):
    common = ["--model", str(dist_model), "--device", "cpu"]
    proc = torchrun(2, "compress", str(safe_product["zip"]), "-o", f"{tmp_path}/", "--tile-size", "128",
                    "--overlap", "32", *common, module="sarcodec")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [npz] = list(tmp_path.glob("*.npz"))
    assert npz.read_bytes() == reference["npz"]
    assert proc.stdout.count("x 2 ranks") == 1  # one summary line, from rank 0
    proc = torchrun(2, "decompress", str(npz), "-o", str(tmp_path / "back.tif"), *common, module="sarcodec")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with rasterio.open(reference["tif"]) as a, rasterio.open(tmp_path / "back.tif") as b:
        assert np.array_equal(a.read(), b.read()) and b.descriptions == ("VV", "VH")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["back.tif", npz.name])


def test_torchrun_salvage_reports_what_one_process_reports(tmp_path, reference, dist_model):
    """Same warnings (the nodata the damaged chunks got included) and batch size as without torchrun."""
    from sarcodec.codec.container import ContainerReader

    npz = tmp_path / "scene.npz"
    npz.write_bytes(reference["npz"])
    with ContainerReader(npz) as reader:
        rec = reader.find(0, 1, 0, "latent")
        start = reader._payload_start + rec.offset  # noqa: SLF001 - locate the bytes to damage
    data = bytearray(npz.read_bytes())
    data[start + rec.length // 2] ^= 0x10
    npz.write_bytes(bytes(data))
    one = decompress_container(npz, tmp_path / "one.tif", DecompressOptions(model_path=dist_model, device="cpu",
                                                                            salvage=True))
    proc = torchrun(2, "decompress", str(npz), str(tmp_path / "two.tif"), "--model", str(dist_model), "--salvage")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout.strip().splitlines()[-1])
    assert one.damaged_chunks and two["damaged_chunks"] == one.damaged_chunks
    assert any("became the output's nodata" in w for w in one.warnings)
    assert two["warnings"] == one.warnings
    assert two["batch_size"] == one.batch_size > 0
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(tmp_path / "two.tif") as b:
        assert b.nodata == a.nodata is not None and np.array_equal(a.read(), b.read())


@pytest.mark.parametrize("nproc", [1, 3])
def test_torchrun_infer_writes_what_one_process_writes(tmp_path, write_geotiff, nproc):
    """The shipped x2 example over a scene with nodata: rows split over ranks, one identical GeoTIFF."""
    a = speckled_scene(150, 170, seed=5)
    a[:12, :20] = 0
    src = write_geotiff(a, nodata=0)
    model = REPO / "resources" / "models" / "examples" / "sr_x2.onnx"
    common = ["--tile-size", "64", "--overlap", "16", "--device", "cpu", "-q"]
    one = subprocess.run([sys.executable, "-m", "sarcodec", "infer", str(model), str(src), "-o",
                          str(tmp_path / "one.tif"), *common], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    proc = torchrun(nproc, "infer", str(model), str(src), "-o", str(tmp_path / "ranks.tif"), *common,
                    module="sarcodec")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with rasterio.open(tmp_path / "one.tif") as x, rasterio.open(tmp_path / "ranks.tif") as y:
        assert np.array_equal(x.read(), y.read()) and x.transform == y.transform and x.nodata == y.nodata
    assert shards_left(tmp_path) == []
