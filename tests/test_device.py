"""Device policy: option parsing, CPU fallback with a warning, batch sizing from free memory."""

from __future__ import annotations

import pytest
import torch

from sarcodec.device import DevicePolicy, batch_from_memory, nvml_free_memory
from sarcodec.errors import UsageError


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu:0"])
def test_bad_device_names_are_usage_errors(bad):
    with pytest.raises(UsageError):
        DevicePolicy(bad)


@pytest.mark.parametrize("bad", ["0", "-3", "lots"])
def test_bad_batch_sizes_are_usage_errors(bad):
    with pytest.raises(UsageError):
        DevicePolicy("cpu", batch_size=bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of a machine without a GPU")
def test_auto_falls_back_to_cpu_with_a_warning_and_cuda_is_refused():
    DevicePolicy._cpu_fallback_warned = False
    choice = DevicePolicy("auto").resolve()
    assert choice.device.type == "cpu" and not choice.amp and choice.batch_size >= 1
    assert "CPU" in choice.warning
    assert DevicePolicy("auto").resolve().warning is None  # said once per process, not per band
    with pytest.raises(UsageError, match="no CUDA"):
        DevicePolicy("cuda:0").resolve()
    assert nvml_free_memory(0) is None


def test_batch_from_memory_keeps_headroom_and_bounds():
    gib = 2**30
    assert batch_from_memory(10 * gib, gib) == 6
    assert batch_from_memory(gib, 4 * gib) == 1
    assert batch_from_memory(1000 * gib, 2**20) == 64
