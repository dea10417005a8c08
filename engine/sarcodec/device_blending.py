"""Blending on the device that ran the model: tile outputs never travel to the host, finished rows do.

On a GPU the host path (``blending.RowBandAccumulator``) costs three things per batch: a device to
host copy of every tile's full output, overlap included ((256 / 192)^2 = 1.78x the pixels a scene
needs at the default tile 256 and overlap 64), a synchronising copy from pageable memory, and the
weighted sums in numpy on the CPU that also feeds the GPU. ``DeviceRowBandAccumulator`` keeps the
weighted sums in device memory and copies each finished row band to the host once, through pinned
memory.

It does the host accumulator's arithmetic in the same order, one float32 operation at a time
(``sum += output * weight``, ``weight_sum += weight``, one division per pixel when a row is final),
with the same window weights (computed by ``CosineWindow`` in numpy and uploaded once per tile
shape), so on the CPU its rows are bit-identical to the numpy ones; the tests check exactly that.
GPU float32 multiply, add and divide are IEEE-rounded too (PyTorch does not build with fast math),
so the blending itself adds no difference there either; AMP outputs differ from the CPU anyway.
"""

from __future__ import annotations

import numpy as np
import torch

from .blending import CosineWindow, output_span
from .tiling import Tile, TileGrid


class DeviceRowBandAccumulator:
    """``RowBandAccumulator`` with its weighted sums on ``device``; ``pop_rows`` returns host arrays.

    The rows it returns are freshly allocated (pinned on CUDA, from torch's caching host allocator,
    which hands the same pinned blocks out again once a sink has dropped the rows): sinks may keep
    them, as the codec's latent sink does until a chunk row is complete. ``weight_rows=False`` skips
    copying the weight sum back when nobody writes a weight map (for a one-band decoder the weights
    would double the bytes that cross the bus).
    """

    def __init__(self, grid: TileGrid, channels: int, window: CosineWindow, device: torch.device | str, *,
                 weight_rows: bool = True, pin_memory: bool | None = None) -> None:
        self.grid = grid
        self.window = window
        self.channels = channels
        self.width = grid.out_width
        self.device = torch.device(device)
        self.weight_rows = weight_rows
        self.pin_memory = self.device.type == "cuda" if pin_memory is None else pin_memory
        self.row0 = 0  # first output row held
        rows = grid.max_band_rows()
        self._sum = torch.zeros((channels, rows, self.width), dtype=torch.float32, device=self.device)
        self._weight = torch.zeros((rows, self.width), dtype=torch.float32, device=self.device)
        self._tile_weights: dict[tuple[int, bool, bool, int, bool, bool], torch.Tensor] = {}

    def _weights(self, tile: Tile) -> torch.Tensor:
        """The tile's window on the device; a grid has a handful of distinct tile shapes, uploaded once each."""
        r, c = tile.row, tile.col
        key = (r.out_size, r.lead_border, r.trail_border, c.out_size, c.lead_border, c.trail_border)
        w = self._tile_weights.get(key)
        if w is None:
            w = self._tile_weights[key] = torch.tensor(self.window.weights(tile), device=self.device)
        return w

    def _ensure(self, row_end: int) -> None:
        need = row_end - self.row0
        if need > self._weight.shape[0]:
            grow = need - self._weight.shape[0]
            self._sum = torch.cat([self._sum, self._sum.new_zeros((self.channels, grow, self.width))], dim=1)
            self._weight = torch.cat([self._weight, self._weight.new_zeros((grow, self.width))], dim=0)

    @torch.inference_mode()
    def add(self, tile: Tile, output: torch.Tensor | np.ndarray) -> None:
        """Add one tile's output (C, out_h, out_w), a device tensor or a host array (a fallback's)."""
        oy0, oy1, ox0, ox1 = output_span(self.grid, tile, self.row0)
        self._ensure(oy1)
        out = torch.as_tensor(output, device=self.device)
        w = self._weights(tile)[: oy1 - oy0, : ox1 - ox0]
        r0, r1 = oy0 - self.row0, oy1 - self.row0
        # Two separate float32 operations, as numpy does them (a fused multiply-add would round once).
        self._sum[:, r0:r1, ox0:ox1] += out[:, : oy1 - oy0, : ox1 - ox0] * w
        self._weight[r0:r1, ox0:ox1] += w

    @torch.inference_mode()
    def pop_rows(self, row_end: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        """Finish rows up to ``row_end``: (first row, blended (C, n, W), weight sum (n, W) or None).

        One copy per row band crosses to the host, blended values and (if wanted) weights together;
        it is complete when this returns.
        """
        n = row_end - self.row0
        start = self.row0
        if n <= 0:
            empty = np.zeros((self.channels, 0, self.width), np.float32)
            return start, empty, np.zeros((0, self.width), np.float32) if self.weight_rows else None
        weight = self._weight[:n]
        blended = self._sum[:, :n] / torch.where(weight > 0, weight, 1.0)[None]
        host = torch.empty((self.channels + self.weight_rows, n, self.width), dtype=torch.float32,
                           pin_memory=self.pin_memory)
        cuda = self.device.type == "cuda"
        host[: self.channels].copy_(blended, non_blocking=cuda)
        if self.weight_rows:
            host[self.channels].copy_(weight, non_blocking=cuda)
        # Shift the band up (the copies above are queued first on the same stream, so they read the
        # old rows); the freed rows at the bottom start from zero again. Only the rows that stay are
        # copied (a quarter of the band at the default geometry): no band-sized temporary on the GPU.
        rest = max(self._weight.shape[0] - n, 0)
        if rest > 0:
            self._sum[:, :rest] = self._sum[:, n:].clone()
            self._weight[:rest] = self._weight[n:].clone()
        self._sum[:, rest:] = 0
        self._weight[rest:] = 0
        self.row0 = row_end
        if cuda:
            torch.cuda.current_stream(self.device).synchronize()  # the sink reads the rows next
        rows = host.numpy()
        return start, rows[: self.channels], rows[self.channels] if self.weight_rows else None
