"""Entropy coding of latent chunks with ``constriction`` (ANS), deterministic across devices.

Why it looks like this:

- A file compressed on a GPU must decode bit-exactly on a CPU. So the entropy-parameter path
  (``h_a``, ``h_s`` and the ``z`` prior) is a float64 copy of the model that always runs on CPU and
  never under AMP, whatever device ran the analysis transform.
- Tiny float differences between machines must not change the probability model. The Gaussian
  scale is therefore quantised to a fixed table of ``N_SCALES`` log-spaced scales, and the
  probability tables for every scale index and every ``z`` channel are computed once, in float64,
  when the coder is built. A last-ulp difference in ``h_s`` can only matter if a scale lies exactly
  on a table boundary; a difference in the mean only shifts the reconstruction by an ulp, because
  the coded symbol is ``q = round(y - mu)`` under a zero-mean model and ``y_hat = q + mu``.
- Chunks are independent (each carries its own ``z``), so they decode in parallel and a damaged
  chunk stays local.

Chunk bitstream (all little endian)::

    byte 0      format version (1)
    bytes 1..4  CRC-32 of the ANS words (rejects garbage before it can decode into nonsense)
    bytes 5..   ANS compressed data, uint32 words

Symbols: ``z`` is clipped to ``[-Z_RADIUS, Z_RADIUS]`` and ``q`` to ``[-Y_RADIUS, Y_RADIUS]``; the
outermost bins of every table carry the tail mass, so clipping is always encodable (it only
distorts latents beyond +-4095 quantisation steps, which the trained model does not produce).
Only the ``h x w`` latents of the chunk are coded; the padding to a multiple of ``hyper_stride``
(edge replication) only feeds ``h_a``.
"""

from __future__ import annotations

import copy
import math
import struct
import zlib

import constriction
import numpy as np
import torch

from sarcodec.codec.model import SCALE_BOUND, SarCodec
from sarcodec.errors import ContainerError

CHUNK_FORMAT = 1
N_SCALES = 64
SCALE_MIN = SCALE_BOUND
SCALE_MAX = 256.0
Y_RADIUS = 4095
Z_RADIUS = 127
_HEADER = struct.Struct("<BI")


def scale_table() -> np.ndarray:
    """The fixed log-spaced Gaussian scales (float64), part of the bitstream definition."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), N_SCALES))


def gaussian_pmf_table(scales: np.ndarray, radius: int) -> np.ndarray:
    """(len(scales), 2*radius+1) float64 probabilities of integers under N(0, s^2), tails folded in."""
    s = torch.from_numpy(np.asarray(scales, dtype=np.float64)).reshape(-1, 1)
    k = torch.arange(-radius, radius + 1, dtype=torch.float64).reshape(1, -1)
    c = -1.0 / math.sqrt(2.0)
    upper = 0.5 * torch.erfc(c * (k + 0.5) / s)
    lower = 0.5 * torch.erfc(c * (k - 0.5) / s)
    pmf = upper - lower
    pmf[:, 0] += (0.5 * torch.erfc(c * (-radius - 0.5) / s))[:, 0]
    pmf[:, -1] += (1.0 - 0.5 * torch.erfc(c * (radius + 0.5) / s))[:, 0]
    return pmf.numpy()


class LatentCoder:
    """Encode/decode one chunk of latents ``y`` (M, h, w) with its own hyper-latents ``z``."""

    def __init__(self, model: SarCodec) -> None:
        self.latent_channels = int(model.latent_channels)
        self.hyper_stride = int(model.hyper_stride)
        # Float64 CPU copies of the entropy-parameter path, independent of where the model lives.
        with torch.no_grad():
            self.h_a = copy.deepcopy(model.h_a).to("cpu", torch.float64).eval()
            self.h_s = copy.deepcopy(model.h_s).to("cpu", torch.float64).eval()
            z_prior = copy.deepcopy(model.z_prior).to("cpu", torch.float64).eval()
            z_pmf = z_prior.pmf_table(Z_RADIUS).numpy()
        self.hyper_channels = z_pmf.shape[0]
        self._log_scales = np.log(scale_table())
        self._log_step = self._log_scales[1] - self._log_scales[0]
        y_pmf = gaussian_pmf_table(scale_table(), Y_RADIUS)
        cat = constriction.stream.model.Categorical
        self._y_models = [cat(p, perfect=False) for p in y_pmf]
        self._z_models = [cat(p, perfect=False) for p in z_pmf]

    # ------------------------------------------------------------------ shared parameter path
    def _scale_index(self, scale: np.ndarray) -> np.ndarray:
        """Nearest table entry in the log domain (int32); deterministic for equal inputs."""
        s = np.maximum(scale, SCALE_MIN)
        idx = np.rint((np.log(s) - self._log_scales[0]) / self._log_step)
        return np.clip(idx, 0, N_SCALES - 1).astype(np.int32)

    @torch.no_grad()
    def _params(self, z_sym: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean (float64) and scale index (int32) of every latent, cropped to (M, h, w)."""
        zt = torch.from_numpy(z_sym.astype(np.float64))[None]
        mu, scale = self.h_s(zt).chunk(2, dim=1)
        mu = mu[0, :, :h, :w].numpy()
        scale = scale[0, :, :h, :w].numpy()
        return mu, self._scale_index(scale)

    def _grid(self, h: int, w: int) -> tuple[int, int]:
        s = self.hyper_stride
        return -(-h // s), -(-w // s)

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode_chunk(self, y: np.ndarray) -> tuple[bytes, np.ndarray]:
        """Entropy-code latents ``y`` (float32 (M, h, w)); returns (bitstream, y_hat float32)."""
        y = np.asarray(y)
        if y.ndim != 3 or y.shape[0] != self.latent_channels or y.shape[1] < 1 or y.shape[2] < 1:
            raise ValueError(f"expected latents of shape ({self.latent_channels}, h, w), got {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("latents contain non-finite values")
        m, h, w = y.shape
        hz, wz = self._grid(h, w)
        s = self.hyper_stride
        y64 = y.astype(np.float64)
        ypad = np.pad(y64, ((0, 0), (0, hz * s - h), (0, wz * s - w)), mode="edge")
        z = self.h_a(torch.from_numpy(ypad)[None])[0].numpy()
        z_sym = np.clip(np.rint(z), -Z_RADIUS, Z_RADIUS).astype(np.int32)
        mu, idx = self._params(z_sym, h, w)
        q = np.clip(np.rint(y64 - mu), -Y_RADIUS, Y_RADIUS).astype(np.int32)
        y_hat = (q + mu).astype(np.float32)

        coder = constriction.stream.stack.AnsCoder()
        # ANS is a stack: encode in the reverse of the decoding order (z first, then y by scale).
        flat_idx = idx.ravel()
        order = np.argsort(flat_idx, kind="stable")
        sorted_idx = flat_idx[order]
        sym = (q.ravel() + Y_RADIUS)[order]
        bounds = np.searchsorted(sorted_idx, np.arange(N_SCALES + 1))
        for k in range(N_SCALES - 1, -1, -1):
            a, b = bounds[k], bounds[k + 1]
            if b > a:
                coder.encode_reverse(sym[a:b], self._y_models[k])
        zs = z_sym.reshape(self.hyper_channels, -1) + Z_RADIUS
        for c in range(self.hyper_channels - 1, -1, -1):
            coder.encode_reverse(zs[c], self._z_models[c])
        words = coder.get_compressed().astype("<u4", copy=False)
        payload = words.tobytes()
        return _HEADER.pack(CHUNK_FORMAT, zlib.crc32(payload)) + payload, y_hat

    @torch.no_grad()
    def decode_chunk(self, data: bytes, height: int, width: int) -> np.ndarray:
        """Decode a chunk of ``height x width`` latents; damaged data raises ``ContainerError``."""
        if height < 1 or width < 1:
            raise ValueError(f"chunk size must be positive, got {height}x{width}")
        data = bytes(data)
        if len(data) < _HEADER.size or (len(data) - _HEADER.size) % 4:
            raise ContainerError(f"latent chunk is truncated ({len(data)} bytes)")
        version, crc = _HEADER.unpack_from(data)
        if version != CHUNK_FORMAT:
            raise ContainerError(f"latent chunk has unknown format {version}")
        payload = data[_HEADER.size:]
        if zlib.crc32(payload) != crc:
            raise ContainerError("latent chunk checksum mismatch (damaged or truncated)")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        hz, wz = self._grid(height, width)
        m = self.latent_channels
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            z_sym = np.empty((self.hyper_channels, hz * wz), dtype=np.int32)
            for c in range(self.hyper_channels):
                z_sym[c] = coder.decode(self._z_models[c], hz * wz)
            z_sym = z_sym.reshape(self.hyper_channels, hz, wz) - Z_RADIUS
            mu, idx = self._params(z_sym, height, width)
            flat_idx = idx.ravel()
            order = np.argsort(flat_idx, kind="stable")
            bounds = np.searchsorted(flat_idx[order], np.arange(N_SCALES + 1))
            sym = np.empty(flat_idx.size, dtype=np.int32)
            for k in range(N_SCALES):
                a, b = bounds[k], bounds[k + 1]
                if b > a:
                    sym[order[a:b]] = coder.decode(self._y_models[k], int(b - a))
            if not coder.is_empty():
                raise ContainerError("latent chunk has trailing data (wrong size or damaged)")
        except ContainerError:
            raise
        except Exception as exc:  # noqa: BLE001 - constriction raises plain errors on bad streams
            raise ContainerError(f"latent chunk does not decode: {type(exc).__name__}: {exc}") from exc
        q = sym.reshape(m, height, width) - Y_RADIUS
        return (q + mu).astype(np.float32)
