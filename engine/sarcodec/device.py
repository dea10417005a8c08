"""Where and how a model runs: device, mixed precision and batch size.

One place decides, so the CLI, the plugin and torchrun ranks all behave alike: CUDA when present
(batch sized from the free memory NVML reports, fp16 autocast where tensor cores exist), the CPU
otherwise with a warning, and on CUDA out-of-memory the batch is halved until one tile per batch
also fails, which is a typed error rather than a crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .errors import UsageError

log = logging.getLogger(__name__)

CPU_BATCH = 4  # CPU convs gain little from big batches; small ones keep memory flat
MAX_BATCH = 64
MEMORY_HEADROOM = 0.6  # fraction of the free memory a batch may use


@dataclass
class DeviceChoice:
    device: torch.device
    amp: bool
    batch_size: int | None  # None: size it from a probe of one tile (CUDA, --batch-size auto)
    description: str
    warning: str | None = None


def nvml_free_memory(index: int) -> int | None:
    """Free bytes on GPU ``index`` as NVML sees it (other processes included), or None."""
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no device, permissions: fall back to torch's view
        return None


def batch_from_memory(free_bytes: int, bytes_per_tile: int, *, cap: int = MAX_BATCH) -> int:
    """Largest batch whose estimated footprint stays within the headroom of the free memory."""
    if bytes_per_tile <= 0:
        return cap
    return max(1, min(cap, int(free_bytes * MEMORY_HEADROOM // bytes_per_tile)))


def parse_batch_size(value: int | str | None) -> int | None:
    """``auto``/None lets the policy decide; otherwise a positive integer."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"batch size must be 'auto' or a positive integer, got {value!r}") from None
    if n < 1:
        raise UsageError(f"batch size must be a positive integer, got {n}")
    return n


class DevicePolicy:
    """Resolves ``auto|cpu|cuda[:i]`` plus batch size and AMP into a ``DeviceChoice``."""

    _cpu_fallback_warned = False

    def __init__(self, device: str = "auto", batch_size: int | str | None = "auto", amp: bool | None = None):
        self.requested = (device or "auto").strip().lower()
        self.batch_size = parse_batch_size(batch_size)
        self.amp = amp
        if self.requested not in ("auto", "cpu", "cuda") and not self.requested.startswith("cuda:"):
            raise UsageError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
        if self.requested.startswith("cuda:") and not self.requested[5:].isdigit():
            raise UsageError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")

    def resolve(self, *, amp_safe: bool = True) -> DeviceChoice:
        if self.requested == "cpu" or (self.requested == "auto" and not torch.cuda.is_available()):
            warning = None
            if self.requested == "auto" and not DevicePolicy._cpu_fallback_warned:
                DevicePolicy._cpu_fallback_warned = True  # once per process, not per band and file
                warning = "no CUDA GPU found: running on the CPU (slower)"
            return DeviceChoice(
                torch.device("cpu"), False, self.batch_size or CPU_BATCH,
                f"CPU ({torch.get_num_threads()} threads)", warning,
            )
        if not torch.cuda.is_available():
            raise UsageError(f"device {self.requested} requested but no CUDA GPU is available")
        index = int(self.requested[5:]) if ":" in self.requested else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise UsageError(f"device cuda:{index} does not exist ({torch.cuda.device_count()} GPU(s) found)")
        major, _minor = torch.cuda.get_device_capability(index)
        tensor_cores = major >= 7
        amp = tensor_cores and amp_safe if self.amp is None else (self.amp and amp_safe)
        name = torch.cuda.get_device_name(index)
        return DeviceChoice(
            torch.device(f"cuda:{index}"), amp, self.batch_size,
            f"{name} (cuda:{index}, {'fp16 AMP' if amp else 'fp32'})",
        )

    @staticmethod
    def free_memory(device: torch.device) -> int:
        """Free memory on a CUDA device: NVML first (sees other processes), torch otherwise."""
        free = nvml_free_memory(device.index or 0)
        if free is None:
            free, _total = torch.cuda.mem_get_info(device)
        return int(free)


def is_oom(exc: BaseException) -> bool:
    """CUDA out-of-memory, whichever way this torch version raises it."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
