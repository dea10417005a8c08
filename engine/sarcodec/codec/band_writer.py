"""Decoded rows of one band -> the output's pixel values, with everything stored losslessly put back.

Both codecs decode to normalised log values and hand them here, whatever the output (a GeoTIFF, a
torchrun rank's shard, the array of ``sarcodec.open(...).read``): the inverse normalisation and the
intensity gain, the nodata mask, the original values of pixels the codec could not code, salvage
marks over damaged chunks, and the window's columns. One writer, so every decode path writes the
same pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import ContainerError
from .container import decode_fallback_block, decode_mask
from .domains import Domain, denormalise, from_log

if TYPE_CHECKING:
    from ..raster_io import GeoTiffSink
    from .container import ContainerReader
    from .dct_v2 import ChunkRowDecoder
    from .hyperprior_v1 import LatentSource


class BandWriter:
    """Turns decoded rows of one band back into pixel values and writes them into the output.

    Applies the inverse log normalisation and the stored intensity gain, then re-applies exactly
    what was stored losslessly: the nodata mask, the original values of uncodable pixels, and
    nodata over chunks that were damaged (salvage mode).
    """

    def __init__(self, out: GeoTiffSink, reader: ContainerReader, index: int, header: dict,
                 source: LatentSource | ChunkRowDecoder, out_dtype: np.dtype,
                 nodata: float | None | list[float | None], *, damage_value: float | None = None,
                 window: tuple[int, int, int, int] | None = None) -> None:
        self.out, self.reader, self.index = out, reader, index
        if isinstance(nodata, (list, tuple)):  # per band (DecodePlan.nodata); a scalar applies to every band
            nodata = nodata[index]
        # what damaged chunks become when the file has no nodata value of its own (salvage); decoded
        # pixels are moved off this value too, so that a damaged-chunk mark never hits valid data
        self.damage_value = nodata if nodata is not None else damage_value
        band = header["bands"][index]
        self.offset = float(band["stats"]["offset_db"])
        self.gain = float(band.get("gain_db", 0.0))
        self.domain = Domain(header["domain"])
        self.width = header["shape"][2]
        self.height = header["shape"][1]
        self.px_chunk = header["grid"]["chunk"] * header["grid"]["stride"]
        self.source = source
        self.out_dtype = out_dtype
        self.nodata = nodata
        # (row0, col0, height, width) of the raster written; output row 0 is the window's first row
        self.window = window if window is not None else (0, 0, self.height, self.width)
        wc0, ww = self.window[1], self.window[3]
        self._cols = range(wc0 // self.px_chunk, (wc0 + ww - 1) // self.px_chunk + 1)  # chunk columns needed
        self._side: dict[int, tuple[np.ndarray | None, list]] = {}

    def _chunk_row_side(self, cr: int) -> tuple[np.ndarray | None, list]:
        """Nodata mask (rows of this chunk row) and fallback blocks, decoded once per chunk row."""
        if cr in self._side:
            return self._side[cr]
        self._side = {k: v for k, v in self._side.items() if k >= cr - 1}
        r0 = cr * self.px_chunk
        h = min(self.px_chunk, self.height - r0)
        mask = None
        fallbacks = []
        for cc in self._cols:
            c0 = cc * self.px_chunk
            w = min(self.px_chunk, self.width - c0)
            for kind in ("mask", "fallback"):
                record = self.reader.find(self.index, cr, cc, kind)
                if record is None:
                    continue
                try:
                    data = self.reader.read_record(record)
                    if kind == "mask":
                        m = decode_mask(data, (h, w))
                        if mask is None:
                            mask = np.zeros((h, self.width), bool)
                        mask[:, c0 : c0 + w] = m
                    else:
                        fallbacks.append(decode_fallback_block(data))
                except ContainerError as exc:
                    at = (cr * self.px_chunk // (self.source.chunk * self.source.stride), cc)
                    self.source.damage.handle(cr, cc, record, exc, kind=kind, at=at)
        self._side[cr] = (mask, fallbacks)
        return self._side[cr]

    def write_rows(self, row0: int, block: np.ndarray, valid: np.ndarray | None = None, *, col0: int = 0) -> None:
        """Decoded rows ``(1, n, w)`` starting at raster row ``row0`` and column ``col0``; the part inside the
        window is converted, patched and written (rows past the raster or outside the window are dropped)."""
        wr0, wc0, wh, ww = self.window
        a, b = max(row0, wr0), min(row0 + block.shape[1], wr0 + wh, self.height)
        if a >= b:
            return
        ca, cb = wc0, wc0 + ww
        if col0 > ca or col0 + block.shape[2] < cb:
            raise ValueError(f"decoded columns {col0}..{col0 + block.shape[2]} do not cover the window {ca}..{cb}")
        n = b - a
        l_db = denormalise(block[0, a - row0 : b - row0, ca - col0 : cb - col0], self.offset) + np.float32(self.gain)
        values = from_log(l_db, self.domain, self.out_dtype, self.damage_value)
        invalid = np.zeros((n, ww), bool)
        pc = self.px_chunk
        for cr in range(a // pc, (b - 1) // pc + 1):
            mask, fallbacks = self._chunk_row_side(cr)
            ya, yb = max(a, cr * pc), min(b, (cr + 1) * pc)
            if mask is not None:
                invalid[ya - a : yb - a] |= mask[ya - cr * pc : yb - cr * pc, ca:cb]
            for fb in fallbacks:
                fa, fb_end = max(ya, fb.row0), min(yb, fb.row0 + fb.mask.shape[0])
                xa, xb = max(ca, fb.col0), min(cb, fb.col0 + fb.mask.shape[1])
                if fa >= fb_end or xa >= xb:
                    continue
                sub_mask = fb.mask[fa - fb.row0 : fb_end - fb.row0, xa - fb.col0 : xb - fb.col0]
                sub_vals = fb.values[fa - fb.row0 : fb_end - fb.row0, xa - fb.col0 : xb - fb.col0]
                target = values[fa - a : fb_end - a, xa - ca : xb - ca]
                with np.errstate(all="ignore"):
                    target[sub_mask] = sub_vals[sub_mask].astype(self.out_dtype)
        c = self.source.chunk * self.source.stride
        for cr, cc in self.source.damaged_chunks:
            ya, yb = max(a, cr * c), min(b, (cr + 1) * c)
            xa, xb = max(ca, cc * c), min(cb, (cc + 1) * c)
            if ya < yb and xa < xb:
                invalid[ya - a : yb - a, xa - ca : xb - ca] = True
        if self.damage_value is not None and invalid.any():
            values[invalid] = np.asarray(self.damage_value).astype(self.out_dtype)
        self.out.write_rows(a - wr0, values[None], None, indexes=[self.index + 1])

    def close(self) -> None:
        """The output file is shared by all bands: whoever decodes the bands closes it after the last one."""

    def abort(self) -> None:
        self.out.abort()
