"""How far decoded values are from the original: per-chunk error samples and the band summary.

Both codecs measure chunks (v1 a few sampled ones, v2 every chunk from its own reconstruction) and
reduce them, in chunk order, to the intensity gain the header stores and the RMSE/PSNR the user is
told; torchrun ranks send their samples to rank 0, which reduces them the same way. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class QualitySample:
    """Errors of one decoded chunk against its original, in dB; summed in chunk order later.

    Kept per chunk (not as running sums) so the totals do not depend on which process coded which
    chunk: a container made by 1, 2 or 3 torchrun ranks gets the same gain and estimates.
    """

    err_sum: float = 0.0
    sq_err_sum: float = 0.0
    count: int = 0
    intensity_orig: float = 0.0
    intensity_coded: float = 0.0
    l_min: float = math.inf
    l_max: float = -math.inf

    def to_list(self) -> list[float]:
        return [self.err_sum, self.sq_err_sum, self.count, self.intensity_orig, self.intensity_coded,
                self.l_min, self.l_max]

    @classmethod
    def from_list(cls, v: list[float]) -> QualitySample:
        return cls(v[0], v[1], int(v[2]), v[3], v[4], v[5], v[6])


@dataclass
class BandSummary:
    """What the header stores about a coded band and what the user is told about its quality."""

    gain_db: float
    rmse_db: float | None
    count: int
    l_range: float


def quality_sample(l_orig: np.ndarray, l_hat: np.ndarray) -> QualitySample:
    """Errors and intensity sums of decoded values ``l_hat`` against ``l_orig`` (L_dB, valid pixels only)."""
    s = QualitySample()
    if not l_orig.size:
        return s
    err = l_hat - l_orig
    ref = float(l_orig.max())  # intensities relative to a reference keep 10**x in range
    s.err_sum = float(np.sum(err))
    s.sq_err_sum = float(np.sum(err**2))
    s.count = int(l_orig.size)
    s.intensity_orig = float(np.sum(10.0 ** ((l_orig - ref) / 10.0))) * 10.0 ** (ref / 10.0)
    s.intensity_coded = float(np.sum(10.0 ** ((l_hat - ref) / 10.0))) * 10.0 ** (ref / 10.0)
    s.l_min, s.l_max = float(l_orig.min()), float(l_orig.max())
    return s


def summarize_samples(samples: dict[tuple[int, int], QualitySample]) -> BandSummary:
    """Intensity gain (dB) cancelling the log-domain bias, and RMSE (dB) once it is applied."""
    total = QualitySample()
    for key in sorted(samples):
        s = samples[key]
        total.err_sum += s.err_sum
        total.sq_err_sum += s.sq_err_sum
        total.count += s.count
        total.intensity_orig += s.intensity_orig
        total.intensity_coded += s.intensity_coded
        total.l_min, total.l_max = min(total.l_min, s.l_min), max(total.l_max, s.l_max)
    if total.count == 0 or total.intensity_coded <= 0 or total.intensity_orig <= 0:
        return BandSummary(0.0, None, 0, 0.0)
    gain = round(10.0 * math.log10(total.intensity_orig / total.intensity_coded), 6)
    # the gain shifts every decoded value by ``gain`` dB: the mean error moves, the spread does not
    mse = (total.sq_err_sum + 2 * gain * total.err_sum) / total.count + gain**2
    return BandSummary(gain, math.sqrt(max(mse, 0.0)), total.count, total.l_max - total.l_min)
