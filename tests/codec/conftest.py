"""A small randomly initialised codec checkpoint: the pipeline's plumbing does not need trained weights."""

from __future__ import annotations

import pytest

from tests.conftest import random_checkpoint


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("models") / "small.pt", latent_channels=32,
                             hyper_channels=16, model_id="test-small")
