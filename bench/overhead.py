"""Per-file overhead of the container, format version 1 against version 2 (issue 11, ``make eval``).

Overhead is what a file costs beyond its coded data: file bytes minus the payload (every record's
bytes). It is the same codec output in both columns: each case is compressed once by the product
(``compress_raster``, default model and quality, so format version 2) and rewritten in format
version 1 by ``container.convert``, the layout sarcodec 0.1.0 wrote; both decode to the same pixels.

Cases: a 64 x 64 single-band uint16 chip in EPSG:32630 (the issue's target: at most 256 bytes), a
512 x 512 scene in EPSG:32630, and a 512 x 512 scene georeferenced by 200 GCPs in EPSG:4326; then,
where ``../shared/data`` has them, the median over real chips (2-band 77 x 77 GRD DN chips without a
CRS, 2-band 120 x 120 float32 dB patches in EPSG:32633). Version 2's overhead is also split into
where its bytes go: the zip (one local header, one directory entry, the end record), the ``.npy``
header, the 16-byte prefix and its length field, the index, and the compact header.

Writes ``bench/results/overhead.json`` and ``overhead.md``.
Usage: python bench/overhead.py [--out bench/results] [--real N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "engine"))
SHARED = REPO.parent / "shared" / "data" / "sar-train"

TARGET = 256  # bytes of overhead for a single-band chip with an EPSG CRS (issue 11)


def speckle(height: int, width: int, seed: int) -> np.ndarray:
    """GRD-like uint16 DN: a smooth reflectivity field times 4-look gamma speckle (as tests/conftest.py)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = 1.0 + 0.6 * np.sin(xx / 37.0 + rng.uniform(0, 6)) + 0.4 * np.cos(yy / 23.0 + rng.uniform(0, 6))
    intensity = np.exp(1.2 * field) * rng.gamma(4.4, 1 / 4.4, size=(height, width))
    return np.clip(np.rint(np.sqrt(intensity) * 120.0), 1, 65535).astype(np.uint16)


def write_tif(path: Path, data: np.ndarray, *, crs: str | None = "EPSG:32630", gcps: int = 0) -> Path:
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=1, dtype=data.dtype)
    if not gcps:
        profile.update(crs=crs, transform=from_origin(423410.0, 4612370.0, 10.0, 10.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning while the GCPs are not yet set
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data, 1)
            if gcps:
                cols = 20
                points = [GroundControlPoint(row=(i // cols) * (h - 1) / (gcps // cols - 1),
                                             col=(i % cols) * (w - 1) / (cols - 1),
                                             x=-3.71 + 0.0013 * (i % cols) + 0.0002 * (i // cols),
                                             y=40.42 - 0.0009 * (i // cols) + 0.0001 * (i % cols),
                                             z=650.0 + i % 7, id=str(i + 1)) for i in range(gcps)]
                ds.gcps = (points, CRS.from_epsg(4326))
    return path


def v2_breakdown(path: Path) -> dict[str, int]:
    """Where a version-2 file's overhead goes, in bytes."""
    from sarcodec.codec.compact_header import read_varint
    from sarcodec.codec.container import PREFIX, ContainerReader, pack_index

    with zipfile.ZipFile(path) as zf:
        (info,) = zf.infolist()
    file_bytes = path.stat().st_size
    data_start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw = path.read_bytes()
    npy = raw.index(b"SARCODEC", data_start) - data_start
    size, pos = read_varint(raw[data_start + npy:data_start + npy + 32], PREFIX.size)
    with ContainerReader(path) as r:
        index = len(pack_index(r.index))
        payload_end = r._payload_start + r.payload_bytes
    return {"zip": data_start + file_bytes - payload_end, "npy_header": npy, "prefix": pos,
            "index": index, "compact_header": size - index}


def measure(name: str, tif: Path, work: Path) -> dict:
    from sarcodec.codec.container import ContainerReader, convert
    from sarcodec.codec.pipeline import CompressOptions, compress_raster

    v2, v1 = work / f"{tif.stem}.npz", work / f"{tif.stem}.v1.npz"
    compress_raster(tif, v2, CompressOptions(estimate_quality=False))
    convert(v2, v1, format_version=1)
    row: dict = {"case": name}
    with ContainerReader(v2) as r:
        bands, height, width = r.header["shape"]
        row.update(pixels=bands * height * width, payload_bytes=r.payload_bytes)
    for version, path in ((1, v1), (2, v2)):
        with ContainerReader(path) as r:
            assert r.version == version and r.payload_bytes == row["payload_bytes"]
            size = r.file_size
        row[f"v{version}_file_bytes"] = size
        row[f"v{version}_overhead_bytes"] = size - row["payload_bytes"]
        row[f"v{version}_overhead_bpp"] = 8.0 * (size - row["payload_bytes"]) / row["pixels"]
    row["v2_breakdown"] = v2_breakdown(v2)
    return row


def real_rows(work: Path, n: int) -> list[dict]:
    """Median overhead over up to ``n`` real files of each group (skipped when the data is absent)."""
    groups = [("real GRD DN chips (2 x 77 x 77, no CRS)", "s1_grd_dn_chips"),
              ("real dB patches (2 x 120 x 120 float32, EPSG:32633)", "s1_grd_db_patches")]
    out = []
    for label, folder in groups:
        files = sorted((SHARED / folder).glob("*.tif"))[:n]
        if not files:
            continue
        rows = [measure(label, f, work) for f in files]
        med = {"case": f"{label}, median of {len(rows)}"}
        for key in ("pixels", "payload_bytes", "v1_file_bytes", "v1_overhead_bytes", "v1_overhead_bpp",
                    "v2_file_bytes", "v2_overhead_bytes", "v2_overhead_bpp"):
            med[key] = statistics.median(r[key] for r in rows)
        med["v2_breakdown"] = {k: statistics.median(r["v2_breakdown"][k] for r in rows)
                               for k in rows[0]["v2_breakdown"]}
        out.append(med)
    return out


def markdown(rows: list[dict]) -> str:
    md = ["# Container overhead: format version 1 against version 2 (`make eval`, bench/overhead.py)", "",
          "Overhead = file bytes - payload bytes (the coded records). The same coded data in both versions: "
          "compressed once (default model and quality, format version 2), rewritten as version 1 "
          "(`container.convert`). "
          f"Target (issue 11): at most {TARGET} bytes for a single-band chip with an EPSG CRS.", "",
          "| case | pixels | payload bytes | v1 overhead bytes | v1 bpp | v2 overhead bytes | v2 bpp | v2/v1 |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['case']} | {r['pixels']:.0f} | {r['payload_bytes']:.0f} | {r['v1_overhead_bytes']:.0f} | "
                  f"{r['v1_overhead_bpp']:.3f} | {r['v2_overhead_bytes']:.0f} | {r['v2_overhead_bpp']:.3f} | "
                  f"{r['v2_overhead_bytes'] / r['v1_overhead_bytes']:.2f} |")
    md += ["", "Where version 2's overhead goes (bytes): zip = local header + directory entry + end record of the "
           "one member; prefix = magic, version, CRC-32 and the header's length field; compact header = the "
           "header dict, deflated with the format's dictionary (`compact_header.py`).", "",
           "| case | zip | .npy header | prefix | index | compact header |", "|---|---|---|---|---|---|"]
    for r in rows:
        b = r["v2_breakdown"]
        md.append(f"| {r['case']} | {b['zip']:.0f} | {b['npy_header']:.0f} | {b['prefix']:.0f} | {b['index']:.0f} | "
                  f"{b['compact_header']:.0f} |")
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--real", type=int, default=20, help="real files per group (0: none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [
            measure("64 x 64 chip, uint16, EPSG:32630", write_tif(work / "chip.tif", speckle(64, 64, 1)), work),
            measure("512 x 512 scene, uint16, EPSG:32630", write_tif(work / "scene.tif", speckle(512, 512, 2)), work),
            measure("512 x 512 scene, 200 GCPs in EPSG:4326",
                    write_tif(work / "gcps.tif", speckle(512, 512, 3), gcps=200), work),
        ]
        if args.real:
            rows += real_rows(work, args.real)
    text = markdown(rows)
    print(text, end="")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.md").write_text(text)
    (args.out / "overhead.json").write_text(json.dumps(rows, indent=1) + "\n")
    chip = rows[0]["v2_overhead_bytes"]
    if chip > TARGET:
        print(f"overhead.py: the 64 x 64 chip costs {chip} bytes of overhead, more than the {TARGET} targeted",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
