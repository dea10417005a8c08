"""What a user may point the tool at, resolved into rasters the codec can open.

Users hand us whatever their archive holds: a GeoTIFF, a Sentinel-1 product as the ``.SAFE``
folder ESA delivers or the ``.zip`` it is downloaded as, or a folder full of GeoTIFFs. The codec
itself only knows "a raster GDAL can open", so this module turns each of those into one or more
``InputItem``s whose ``path`` ``rasterio.open``, ``inspect_raster`` and ``compress_raster`` accept.

A SAFE product becomes one virtual raster (GDAL VRT, kept in ``/vsimem/``, nothing written to
disk) with one band per polarisation, read straight from the measurement TIFFs (through
``/vsizip/`` for a zip: the product is never unpacked). The VRT carries what a SAR user needs to
keep: the measurement TIFF's GCPs (or its map CRS and transform) and nodata, the polarisation as
band description, and the product's key annotations (mission, product type, mode, start/stop time,
polarisations, orbit, pass) as dataset tags, which the container stores with the rest of the
geospatial metadata. Products whose measurements differ in size (SLC: one TIFF per swath) give one
item per swath.
"""

from __future__ import annotations

import os
import re
import threading
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from .errors import InputFileError

GEOTIFF_SUFFIXES = (".tif", ".tiff")
MANIFEST = "manifest.safe"
#: The most bytes read from one text member of a product (manifest, annotation XML). ESA's are 20 KB to
#: ~20 MB (an SLC swath's annotation); a small zip can inflate to gigabytes (a zip bomb), and without a
#: bound that went to memory before failing with an internal error.
MAX_MEMBER_BYTES = 64 << 20
#: S1 measurement names: mission-mode/swath-product-polarisation-start-stop-orbit-datatake-image.
_MEASUREMENT_NAME = re.compile(
    r"^(?P<mission>s1[a-d])-(?P<swath>[a-z0-9]+)-(?P<product>[a-z]+)-(?P<pol>hh|hv|vv|vh)-", re.IGNORECASE)
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64", "complex_int16": "CInt16",
               "complex64": "CFloat32", "complex128": "CFloat64"}


@dataclass
class InputItem:
    """One raster to compress: where GDAL opens it, and what to call it.

    ``path`` is a file path or a GDAL virtual path (``/vsimem/...vrt`` for SAFE products); ``name``
    is a human file stem for output naming (``<name>.npz``) and messages, since a ``/vsimem/``
    path says nothing to a user. ``origin`` is what the user gave. The in-memory VRT of a SAFE
    product lives as long as this item (or until ``release``).
    """

    path: str
    name: str
    kind: str  # "geotiff" | "safe" | "safe-zip" | "folder"
    origin: str
    tags: dict[str, str] = field(default_factory=dict)
    _memfile: Any = field(default=None, repr=False, compare=False)

    def output_path(self, suffix: str) -> str:
        """Default output next to the input: ``scene.tif`` -> ``scene.npz``; a product -> ``<name>.npz`` beside it.

        A SAFE product's output goes next to the ``.SAFE`` folder or ``.zip`` (never inside the
        product, never under ``/vsimem/``).
        """
        if self.kind in ("geotiff", "folder"):
            return str(Path(self.path).with_suffix(suffix))
        origin = Path(self.origin)
        beside = origin.parent.parent if origin.name.lower() == MANIFEST else origin.parent
        return str(beside / f"{self.name}{suffix}")

    def release(self) -> None:
        """Free the in-memory VRT (a few KB); the item's path is unusable afterwards."""
        if self._memfile is not None:
            self._memfile.close()
            self._memfile = None


def resolve_inputs(path: str | os.PathLike[str]) -> list[InputItem]:
    """The rasters behind a user's input: a GeoTIFF, a Sentinel-1 SAFE folder or zip, a folder of GeoTIFFs.

    Raises ``InputFileError`` for a missing path, an empty folder or a SAFE product without
    measurement rasters. Any other file is passed through as one item: whether GDAL can read it is
    ``inspect_raster``'s call, with its one clear message.
    """
    name = os.fspath(path)
    if name.startswith("/vsi"):
        return [InputItem(name, Path(name).stem, "geotiff", name)]
    p = Path(name)
    if not p.exists():
        raise InputFileError(f"{name}: no such file or folder")
    if p.is_dir():
        if (p / MANIFEST).is_file():
            return _safe_items(_FolderProduct(p), name)
        return _folder_items(p)
    if p.name.lower() == MANIFEST:
        return _safe_items(_FolderProduct(p.parent), name)
    if p.suffix.lower() == ".zip":
        return _safe_items(_ZipProduct(p), name)
    return [InputItem(name, p.stem, "geotiff", name)]


def _folder_items(folder: Path) -> list[InputItem]:
    """One item per GeoTIFF directly in ``folder`` (sorted, so ranks and reruns agree on the order)."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in GEOTIFF_SUFFIXES
                   and not f.name.startswith("."))
    if not files:
        raise InputFileError(f"{folder}: the folder holds no GeoTIFF (.tif/.tiff) and is not a .SAFE product")
    return [InputItem(str(f), f.stem, "folder", str(folder)) for f in files]


# -------------------------------------------------------------------------------------- products


class _FolderProduct:
    """An unpacked SAFE folder: files are read from disk, rasters opened by their path."""

    kind = "safe"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.name = self.root.name

    def files(self) -> list[str]:
        return sorted(str(f.relative_to(self.root)).replace(os.sep, "/") for f in self.root.rglob("*") if f.is_file())

    def read(self, rel: str) -> bytes:
        try:
            with open(self.root / rel, "rb") as fh:
                return _bounded_read(fh, f"{self.name}/{rel}")
        except OSError as exc:
            raise InputFileError(f"{self.name}/{rel}: cannot read: {exc.strerror or exc}") from None

    def gdal_path(self, rel: str) -> str:
        return str(self.root / rel)


class _ZipProduct:
    """A zipped SAFE product: text members read with ``zipfile``, rasters through ``/vsizip/``."""

    kind = "safe-zip"

    def __init__(self, archive: Path) -> None:
        self.archive = archive.resolve()
        try:
            with zipfile.ZipFile(self.archive) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputFileError(f"{archive}: not a readable zip archive ({exc})") from None
        manifests = [n for n in names if n.rsplit("/", 1)[-1].lower() == MANIFEST]
        if not manifests:
            raise InputFileError(f"{archive}: the zip holds no {MANIFEST}: not a Sentinel-1 SAFE product")
        manifest = min(manifests, key=len)
        self.prefix = manifest[: -len(MANIFEST)]  # "S1A_...SAFE/" or "" for a flat zip
        self.name = self.prefix.rstrip("/").rsplit("/", 1)[-1] or archive.stem
        self._names = [n[len(self.prefix):] for n in names if n.startswith(self.prefix)]

    def files(self) -> list[str]:
        return sorted(self._names)

    def read(self, rel: str) -> bytes:
        """A member's bytes, never more than ``MAX_MEMBER_BYTES`` of them, whatever the zip claims."""
        shown = f"{self.archive.name}/{self.prefix}{rel}"
        try:
            with zipfile.ZipFile(self.archive) as zf:
                info = zf.getinfo(self.prefix + rel)
                if info.file_size > MAX_MEMBER_BYTES:
                    raise InputFileError(_too_large(shown))
                with zf.open(info) as fh:
                    return _bounded_read(fh, shown)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, NotImplementedError,
                RuntimeError) as exc:
            raise InputFileError(f"{shown}: cannot read it from the zip archive ({exc})") from None

    def gdal_path(self, rel: str) -> str:
        return f"/vsizip/{self.archive}/{self.prefix}{rel}"


def _too_large(shown: str) -> str:
    return (f"{shown}: larger than {MAX_MEMBER_BYTES >> 20} MiB, which no Sentinel-1 manifest or annotation is "
            "(a damaged product or a zip bomb)")


def _bounded_read(fh: Any, shown: str) -> bytes:
    """All of ``fh``, or ``InputFileError`` once it passes ``MAX_MEMBER_BYTES`` (only that much is read)."""
    data = fh.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        raise InputFileError(_too_large(shown))
    return data


# -------------------------------------------------------------------------------------- annotations


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(data: bytes, what: str) -> ET.Element:
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputFileError(f"{what}: not valid XML ({exc})") from None


def _first(root: ET.Element, name: str, where: Callable[[ET.Element], bool] | None = None) -> str | None:
    """Text of the first element with local name ``name`` (namespaces vary between IPF versions)."""
    for el in root.iter():
        if _local(el.tag) == name and (where is None or where(el)) and el.text and el.text.strip():
            return el.text.strip()
    return None


def _all(root: ET.Element, name: str) -> list[str]:
    return [el.text.strip() for el in root.iter() if _local(el.tag) == name and el.text and el.text.strip()]


def product_annotations(manifest: bytes, annotation: bytes | None = None) -> dict[str, str]:
    """The product's key annotations as ``S1_*`` tags, from manifest.safe and one annotation XML.

    The manifest is authoritative (it describes the whole product); the annotation file fills
    what an older manifest lacks. Values are kept as the product spells them (times in UTC ISO).
    """
    m = _parse_xml(manifest, MANIFEST)
    a = _parse_xml(annotation, "annotation XML") if annotation else None
    family = _first(m, "familyName", lambda e: "abbreviation" not in e.attrib)
    number = _first(m, "number")
    tags: dict[str, str | None] = {
        "S1_MISSION": (f"{family}{number}" if family and number else None) or (a is not None and
                                                                              _first(a, "missionId")) or None,
        "S1_PRODUCT_TYPE": _first(m, "productType") or (_first(a, "productType") if a is not None else None),
        "S1_MODE": _first(m, "mode") or (_first(a, "mode") if a is not None else None),
        "S1_START_TIME": _first(m, "startTime") or (_first(a, "startTime") if a is not None else None),
        "S1_STOP_TIME": _first(m, "stopTime") or (_first(a, "stopTime") if a is not None else None),
        "S1_POLARISATIONS": ",".join(_all(m, "transmitterReceiverPolarisation")) or None,
        "S1_ABSOLUTE_ORBIT": _first(m, "orbitNumber", lambda e: e.attrib.get("type", "start") == "start")
        or (_first(a, "absoluteOrbitNumber") if a is not None else None),
        "S1_RELATIVE_ORBIT": _first(m, "relativeOrbitNumber", lambda e: e.attrib.get("type", "start") == "start"),
        "S1_PASS": _first(m, "pass") or (_first(a, "pass") if a is not None else None),
    }
    out = {k: str(v) for k, v in tags.items() if v}
    if "S1_PASS" in out:
        out["S1_PASS"] = out["S1_PASS"].upper()
    return out


# -------------------------------------------------------------------------------------- SAFE -> VRT


@dataclass
class _Measurement:
    rel: str
    pol: str
    swath: str


def _measurements(files: Iterable[str]) -> list[_Measurement]:
    out = []
    for rel in files:
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] != "measurement" or not parts[1].lower().endswith(GEOTIFF_SUFFIXES):
            continue
        m = _MEASUREMENT_NAME.match(parts[1])
        pol = m.group("pol").upper() if m else Path(parts[1]).stem.upper()
        swath = m.group("swath").upper() if m else ""
        out.append(_Measurement(rel, pol, swath))
    return out


_POL_ORDER = {"HH": 0, "VV": 1, "HV": 2, "VH": 3}
_vrt_lock = threading.Lock()


def _safe_items(product: _FolderProduct | _ZipProduct, origin: str) -> list[InputItem]:
    """One VRT per swath (GRD: one), bands ordered co-pol first (HH/VV, then HV/VH)."""
    import rasterio

    files = product.files()
    if MANIFEST not in files:
        raise InputFileError(f"{origin}: no {MANIFEST}: not a Sentinel-1 SAFE product")
    measurements = _measurements(files)
    if not measurements:
        raise InputFileError(f"{origin}: the SAFE product has no measurement rasters (measurement/*.tiff)")
    manifest = product.read(MANIFEST)
    swaths: dict[str, list[_Measurement]] = {}
    for m in measurements:
        swaths.setdefault(m.swath, []).append(m)
    items = []
    for swath, group in sorted(swaths.items()):
        group.sort(key=lambda m: (_POL_ORDER.get(m.pol, 9), m.pol))
        annotation = _annotation_for(product, files, group[0])
        tags = product_annotations(manifest, annotation)
        tags["S1_PRODUCT_NAME"] = product.name
        bands = []
        for m in group:
            gpath = product.gdal_path(m.rel)
            try:
                with rasterio.open(gpath) as ds:
                    bands.append((m, gpath, ds.width, ds.height, ds.dtypes[0], ds.block_shapes[0], ds.gcps,
                                  _map_georef(ds)))
            except Exception as exc:  # rasterio raises several classes for unreadable files
                raise InputFileError(f"{origin}: cannot read {m.rel}: {str(exc).splitlines()[0]}") from None
        sizes = {(b[2], b[3], b[4]) for b in bands}
        if len(sizes) != 1:
            raise InputFileError(f"{origin}: the {swath or 'product'} measurement rasters differ in size or type")
        name = product.name.removesuffix(".SAFE") + (f"_{swath.lower()}" if len(swaths) > 1 else "")
        xml = _vrt_xml(bands, tags)
        with _vrt_lock:
            from rasterio.io import MemoryFile

            memfile = MemoryFile(xml.encode("utf-8"), filename=f"{name}.vrt")
        items.append(InputItem(memfile.name, name, product.kind, origin, tags, memfile))
    return items


def _annotation_for(product: _FolderProduct | _ZipProduct, files: list[str], m: _Measurement) -> bytes | None:
    """The annotation XML of a measurement (same file stem), when the product has one."""
    rel = "annotation/" + Path(m.rel).stem + ".xml"
    return product.read(rel) if rel in files else None


def _map_georef(ds: Any) -> dict[str, Any]:
    """A measurement's map georeference and nodata, for products delivered map-projected (or re-projected).

    ESA's GRD measurements carry only GCPs, but products processed into a map CRS (and test or
    third-party products) carry a CRS, a geotransform and a nodata value: the VRT must keep all three.
    An identity transform without CRS is GDAL's "no geotransform" and is left out, as in ``geometa``.
    """
    try:
        crs = ds.crs
        wkt = crs.to_wkt() if crs is not None else None
    except Exception:  # noqa: BLE001 - a broken SRS is no CRS (the --crs option can set one)
        wkt = None
    transform = ds.transform
    try:
        has_gcps = bool(ds.gcps[0])
    except Exception:  # noqa: BLE001
        has_gcps = False
    georef = not (transform.is_identity and wkt is None) and not (has_gcps and transform.is_identity)
    return {"crs": wkt or None, "transform": transform.to_gdal() if georef else None, "nodata": ds.nodata}


def _vrt_xml(bands: list[tuple], tags: dict[str, str]) -> str:
    """A VRT stacking the measurement rasters, with georeference (GCPs or map), nodata, descriptions and tags."""
    _, _, width, height, dtype, _, (gcps, gcp_crs), georef = bands[0]
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if georef["transform"] is not None:
        if georef["crs"]:
            lines.append(f"  <SRS>{escape(georef['crs'])}</SRS>")
        lines.append(f"  <GeoTransform>{', '.join(repr(float(v)) for v in georef['transform'])}</GeoTransform>")
    if tags:
        lines.append("  <Metadata>")
        lines += [f"    <MDI key={quoteattr(k)}>{escape(v)}</MDI>" for k, v in sorted(tags.items())]
        lines.append("  </Metadata>")
    if gcps:
        proj = gcp_crs.to_wkt() if gcp_crs is not None else ""
        lines.append(f"  <GCPList Projection={quoteattr(proj)}>")
        for g in gcps:
            z = g.z if g.z is not None else 0.0
            lines.append(f"    <GCP Id={quoteattr(g.id or '')} Info={quoteattr(g.info or '')} Pixel=\"{g.col!r}\" "
                         f"Line=\"{g.row!r}\" X=\"{g.x!r}\" Y=\"{g.y!r}\" Z=\"{z!r}\"/>")
        lines.append("  </GCPList>")
    gdal_type = _GDAL_TYPES.get(dtype, "Float32")
    for i, (m, gpath, w, h, _dt, block, _, band_georef) in enumerate(bands, start=1):
        by, bx = block
        nodata = band_georef["nodata"]
        lines += [
            f'  <VRTRasterBand dataType="{gdal_type}" band="{i}">',
            *([f"    <NoDataValue>{float(nodata)!r}</NoDataValue>"] if nodata is not None else []),
            f"    <Description>{escape(m.pol)}</Description>",
            "    <Metadata>",
            f'      <MDI key="POLARISATION">{escape(m.pol)}</MDI>',
            *([f'      <MDI key="SWATH">{escape(m.swath)}</MDI>'] if m.swath else []),
            "    </Metadata>",
            "    <SimpleSource>",
            f'      <SourceFilename relativeToVRT="0">{escape(gpath)}</SourceFilename>',
            "      <SourceBand>1</SourceBand>",
            f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="{gdal_type}" '
            f'BlockXSize="{bx}" BlockYSize="{by}"/>',
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
            f'      <DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
            "    </SimpleSource>",
            "  </VRTRasterBand>",
        ]
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


__all__ = ["InputItem", "product_annotations", "resolve_inputs"]
