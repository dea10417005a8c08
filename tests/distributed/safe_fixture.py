"""A tiny synthetic Sentinel-1 GRD product (.SAFE folder and its .zip) for input-resolution tests.

Real products are gigabytes; what the resolver relies on is only their layout: ``manifest.safe``
(XFDU, namespaced), ``annotation/<measurement stem>.xml`` and ``measurement/*.tiff`` (uint16, GCPs
in EPSG:4326, one file per polarisation, named as ESA names them). This builds exactly that.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..conftest import speckled_scene

PRODUCT = "S1A_IW_GRDH_1SDV_20230105T061523_20230105T061548_046650_05977A_1C2B.SAFE"
START, STOP = "2023-01-05T06:15:23.123456", "2023-01-05T06:15:48.122345"

MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" xmlns:safe="http://www.esa.int/safe/sentinel-1.0"
  xmlns:s1="http://www.esa.int/safe/sentinel-1.0/sentinel-1"
  xmlns:s1sarl1="http://www.esa.int/safe/sentinel-1.0/sentinel-1/sar/level-1" version="esa/safe/sentinel-1.0">
  <metadataSection>
    <metadataObject ID="platform"><metadataWrap><xmlData>
      <safe:platform>
        <safe:nssdcIdentifier>2014-016A</safe:nssdcIdentifier>
        <safe:familyName>SENTINEL-1</safe:familyName><safe:number>A</safe:number>
        <safe:instrument><safe:familyName abbreviation="SAR">Synthetic Aperture Radar</safe:familyName>
          <safe:extension><s1sarl1:instrumentMode><s1sarl1:mode>IW</s1sarl1:mode>
          </s1sarl1:instrumentMode></safe:extension></safe:instrument>
      </safe:platform></xmlData></metadataWrap></metadataObject>
    <metadataObject ID="generalProductInformation"><metadataWrap><xmlData>
      <s1sarl1:standAloneProductInformation>
        <s1sarl1:transmitterReceiverPolarisation>VV</s1sarl1:transmitterReceiverPolarisation>
        <s1sarl1:transmitterReceiverPolarisation>VH</s1sarl1:transmitterReceiverPolarisation>
        <s1sarl1:productType>GRD</s1sarl1:productType>
      </s1sarl1:standAloneProductInformation></xmlData></metadataWrap></metadataObject>
    <metadataObject ID="acquisitionPeriod"><metadataWrap><xmlData>
      <safe:acquisitionPeriod><safe:startTime>{start}</safe:startTime><safe:stopTime>{stop}</safe:stopTime>
      </safe:acquisitionPeriod></xmlData></metadataWrap></metadataObject>
    <metadataObject ID="measurementOrbitReference"><metadataWrap><xmlData>
      <safe:orbitReference>
        <safe:orbitNumber type="start">46650</safe:orbitNumber><safe:orbitNumber type="stop">46650</safe:orbitNumber>
        <safe:relativeOrbitNumber type="start">139</safe:relativeOrbitNumber>
        <safe:extension><s1:orbitProperties><s1:pass>DESCENDING</s1:pass></s1:orbitProperties></safe:extension>
      </safe:orbitReference></xmlData></metadataWrap></metadataObject>
  </metadataSection>
</xfdu:XFDU>
"""

ANNOTATION = """<?xml version="1.0" encoding="UTF-8"?>
<product><adsHeader><missionId>S1A</missionId><productType>GRD</productType><polarisation>{pol}</polarisation>
<mode>IW</mode><swath>IW</swath><startTime>{start}</startTime><stopTime>{stop}</stopTime>
<absoluteOrbitNumber>46650</absoluteOrbitNumber></adsHeader>
<generalAnnotation><productInformation><pass>Descending</pass></productInformation></generalAnnotation></product>
"""


def measurement_name(pol: str) -> str:
    return f"s1a-iw-grd-{pol.lower()}-20230105t061523-20230105t061548-046650-05977a-00{1 if pol == 'VV' else 2}"


def gcps_for(height: int, width: int) -> list:
    """A 3x3 lattice of GCPs in lon/lat (a descending pass over the Alps, roughly)."""
    from rasterio.control import GroundControlPoint

    points = []
    for i, r in enumerate(np.linspace(0, height, 3)):
        for j, c in enumerate(np.linspace(0, width, 3)):
            points.append(GroundControlPoint(row=float(r), col=float(c), x=8.0 + 0.001 * c - 0.0002 * r,
                                             y=46.5 - 0.0009 * r, z=0.0, id=str(3 * i + j + 1)))
    return points


def build_safe(root: Path, height: int = 1100, width: int = 80, *, zeros: bool = True) -> dict[str, np.ndarray]:
    """Write the product under ``root``; returns the measurement arrays by polarisation."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import NotGeoreferencedWarning

    safe = root / PRODUCT
    for sub in ("annotation", "measurement"):
        (safe / sub).mkdir(parents=True, exist_ok=True)
    (safe / "manifest.safe").write_text(MANIFEST.format(start=START, stop=STOP))
    arrays = {}
    for k, pol in enumerate(("VV", "VH")):
        data = speckled_scene(height, width, seed=11 + k)
        if pol == "VH":
            data = (data // 3 + 1).astype(np.uint16)
        if zeros:
            data[5:9, 3:20] = 0  # GRD border noise removal leaves DN 0: stored losslessly
        arrays[pol] = data
        stem = measurement_name(pol)
        (safe / "annotation" / f"{stem}.xml").write_text(ANNOTATION.format(pol=pol, start=START, stop=STOP))
        profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint16")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the GCPs are set right below
            with rasterio.open(safe / "measurement" / f"{stem}.tiff", "w", **profile) as ds:
                ds.write(data, 1)
                ds.gcps = (gcps_for(height, width), CRS.from_epsg(4326))
    return arrays


def zip_safe(root: Path) -> Path:
    """Zip the product as ESA's hub delivers it (the .SAFE folder at the archive's top level)."""
    safe = root / PRODUCT
    out = root / (PRODUCT.removesuffix(".SAFE") + ".zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, f.relative_to(root).as_posix())
    return out
