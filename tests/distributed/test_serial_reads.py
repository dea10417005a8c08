"""A GDAL dataset is never read by two threads at once (issue 10, item 15).

Compression reads each band on two threads: the engine's read-ahead thread loads tiles while the
main thread reads each finished chunk row's raw pixels. Both used one rasterio handle, and on a
busy machine a zipped Sentinel-1 product then failed with "IReadBlock failed ...
TIFFReadEncodedStrip() failed" (the torchrun zip test failed in 2 of 3 full runs) or crashed.
These tests force the two threads to meet instead of waiting for an unlucky schedule.
"""

from __future__ import annotations

import threading

import rasterio
import rasterio.io

from sarcodec.codec.pipeline import CompressOptions, compress_raster
from sarcodec.inputs import resolve_inputs
from sarcodec.serial_reads import SerialReads

READER = "sarcodec-read"  # the name prefix of the engine's read-ahead thread (runner.py)


class OverlapProbe:
    """Wraps ``DatasetReader.read``: counts threads inside a read of the same handle at the same time.

    A read-ahead read stays inside for a while (until a main-thread read of the same handle arrives,
    at most ``hold_s``): without serialization the two then overlap for certain whenever the main
    thread reads during a read-ahead; with it, the main thread waits outside and nothing overlaps.
    """

    def __init__(self, original, hold_s: float) -> None:
        self.original, self.hold_s = original, hold_s
        self.lock, self.gdal = threading.Lock(), threading.Lock()
        self.inside: dict[int, set[str]] = {}
        self.arrived: dict[int, threading.Event] = {}
        self.overlaps: list[tuple[str, ...]] = []
        self.threads: set[str] = set()

    def __call__(self, ds, *args, **kwargs):
        me = threading.current_thread().name
        key = id(ds)
        with self.lock:
            here = self.inside.setdefault(key, set())
            if here:
                self.overlaps.append(tuple(sorted(here | {me})))
            here.add(me)
            self.threads.add(me.split("_")[0])
            arrived = self.arrived.setdefault(key, threading.Event())
            if me.startswith(READER):
                arrived.clear()
            else:
                arrived.set()
        try:
            if me.startswith(READER):
                arrived.wait(self.hold_s)
            with self.gdal:  # the overlap is recorded; GDAL itself must not see it (it may crash)
                return self.original(ds, *args, **kwargs)
        finally:
            with self.lock:
                here.discard(me)


def test_serial_reads_lets_one_thread_at_a_time_into_the_dataset():
    inside, most = [0], [0]
    guard = threading.Lock()
    a_in, b_in = threading.Event(), threading.Event()

    class Dataset:
        height = 7

        def read(self, who: str) -> str:
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            (a_in if who == "a" else b_in).set()
            if who == "a":
                b_in.wait(1.0)  # unserialized, "b" gets in while "a" is still here
            with guard:
                inside[0] -= 1
            return who

    ds = SerialReads(Dataset())
    results = []
    a = threading.Thread(target=lambda: results.append(ds.read("a")))
    a.start()
    assert a_in.wait(30)
    b = threading.Thread(target=lambda: results.append(ds.read("b")))
    b.start()
    a.join(30)
    b.join(30)
    assert sorted(results) == ["a", "b"] and most[0] == 1
    assert ds.height == 7 and SerialReads(ds) is ds


def test_compressing_a_zipped_product_never_reads_one_handle_from_two_threads(
        monkeypatch, safe_product, dist_model, tmp_path):
    probe = OverlapProbe(rasterio.io.DatasetReader.read, hold_s=0.05)
    monkeypatch.setattr(rasterio.io.DatasetReader, "read", lambda ds, *a, **k: probe(ds, *a, **k))
    item = resolve_inputs(safe_product["zip"])[0]
    try:
        res = compress_raster(item.path, tmp_path / "scene.npz",
                              CompressOptions(model_path=dist_model, tile_size=128, overlap=32, device="cpu"))
    finally:
        item.release()
    monkeypatch.undo()
    # both threads did read the product (else this test would prove nothing), never at the same time
    assert {"MainThread", READER} <= probe.threads, probe.threads
    assert probe.overlaps == []
    assert res.bands == 2 and (tmp_path / "scene.npz").stat().st_size == res.output_bytes
