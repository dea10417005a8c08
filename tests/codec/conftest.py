"""A small randomly initialised codec checkpoint: the pipeline's plumbing does not need trained weights."""

from __future__ import annotations

import pytest
import torch

from sarcodec.codec.model import SarCodec, save_checkpoint


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    torch.manual_seed(0)
    model = SarCodec(n_channels=16, latent_channels=32, hyper_channels=16, n_qualities=5)
    path = tmp_path_factory.mktemp("models") / "small.pt"
    save_checkpoint(model, path, metadata={"model_id": "test-small"})
    return path
