"""SarCodec transforms, quality gains and safe checkpoint loading (small random models, fast)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from sarcodec.codec.model import (
    DEFAULT_QUALITY,
    SarCodec,
    checkpoint_sha256,
    load_checkpoint,
    save_checkpoint,
)
from sarcodec.errors import ModelError


def small_model(seed: int = 0, **kw) -> SarCodec:
    torch.manual_seed(seed)
    cfg = dict(n_channels=16, latent_channels=16, hyper_channels=8, n_qualities=4)
    cfg.update(kw)
    return SarCodec(**cfg).eval()


def test_default_quality_is_valid():
    assert 1 <= DEFAULT_QUALITY <= SarCodec().n_qualities


@pytest.mark.parametrize("quality", [1, 2, 3, 4])
def test_analysis_synthesis_shapes_every_quality(quality):
    m = small_model()
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        y = m.analysis(x, quality)
        assert y.shape == (2, m.latent_channels, 4, 6)
        x_hat = m.synthesis(torch.round(y), quality)
    assert x_hat.shape == x.shape
    assert torch.isfinite(x_hat).all()


def test_bad_quality_rejected():
    m = small_model()
    with pytest.raises(ValueError):
        m.analysis(torch.zeros(1, 1, 16, 16), 0)
    with pytest.raises(ValueError):
        m.analysis(torch.zeros(1, 1, 16, 16), m.n_qualities + 1)


def test_forward_training_outputs():
    m = small_model().train()
    x = torch.randn(2, 1, 64, 64) * 0.5
    out = m(x, 2)
    assert out["x_hat"].shape == x.shape
    assert out["bpp"].ndim == 0 and float(out["bpp"].detach()) > 0
    out["bpp"].backward()  # differentiable
    assert m.log_gain.grad is not None


def test_higher_quality_costs_more_bits():
    m = small_model()
    x = torch.randn(1, 1, 128, 128) * 30.0  # random weights give tiny latents; spread them
    with torch.no_grad():
        bpp = [float(m(x, q)["bpp"]) for q in range(1, m.n_qualities + 1)]
    assert all(a < b for a, b in zip(bpp, bpp[1:], strict=False)), bpp


def test_checkpoint_round_trip(tmp_path):
    m = small_model(seed=3)
    path = tmp_path / "m.pt"
    save_checkpoint(m, path, metadata={"model_id": "test"})
    loaded = load_checkpoint(path)
    assert loaded.config == m.config
    assert loaded.metadata["model_id"] == "test"
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.analysis(x, 2), loaded.analysis(x, 2))
    assert checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    # weights_only loading works on the raw file: no custom classes inside.
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "sarcodec-checkpoint" and payload["version"] == 1


def test_missing_checkpoint_names_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(ModelError, match="nope.pt"):
        load_checkpoint(path)


def test_corrupt_checkpoint_names_file(tmp_path):
    m = small_model()
    path = tmp_path / "corrupt.pt"
    save_checkpoint(m, path, metadata={})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="corrupt.pt"):
        load_checkpoint(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="corrupt.pt"):
        load_checkpoint(path)


def test_other_architecture_rejected(tmp_path):
    path = tmp_path / "other.pt"
    # A plain state dict of some other network.
    torch.save(torch.nn.Linear(3, 4).state_dict(), path)
    with pytest.raises(ModelError, match="other.pt.*not a sarcodec v1 checkpoint"):
        load_checkpoint(path)
    # Our envelope, but config and weights disagree.
    small = small_model()
    payload = {"format": "sarcodec-checkpoint", "version": 1,
               "config": dict(small.config, latent_channels=24), "metadata": {},
               "state_dict": small.state_dict()}
    torch.save(payload, path)
    with pytest.raises(ModelError, match="not a sarcodec v1 checkpoint"):
        load_checkpoint(path)
    payload["version"] = 99
    torch.save(payload, path)
    with pytest.raises(ModelError, match="not a sarcodec v1 checkpoint"):
        load_checkpoint(path)


class _Evil:
    """Unpickling this would create a marker file: the loader must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "sarcodec-checkpoint", "payload": _Evil(marker)}, path, pickle_protocol=2)
    assert not marker.exists()
    with pytest.raises(ModelError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()
    # Sanity: the file really is a working exploit for an unsafe loader.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_linear_bypass_is_an_orthogonal_block_transform():
    """With the GDN branches at their zero init, synthesis(analysis(x)) is the PCA projection."""
    m = small_model()
    basis = torch.linalg.qr(torch.randn(256, m.latent_channels))[0].T.contiguous()
    m.set_linear_basis(basis, 4.0)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        x_hat = m.synthesis(m.analysis(x, 2), 2)
    blocks = x.reshape(2, 16, 2, 16).permute(0, 2, 1, 3).reshape(4, 256)
    proj = blocks @ basis.T @ basis
    expected = proj.reshape(2, 2, 16, 16).permute(0, 2, 1, 3).reshape(1, 1, 32, 32)
    assert torch.allclose(x_hat, expected, atol=1e-4)


@pytest.mark.shared_data
def test_training_smoke(tmp_path):
    """Three training steps on the real data write a loadable checkpoint and a log."""
    from sarcodec.training.train import load_config, train

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs/train_default.toml")
    root = Path(cfg["data"]["root"])
    if not (root if root.is_absolute() else repo / root).is_dir():
        pytest.skip("shared training data not available")
    cfg["model"].update(n_channels=16, latent_channels=256, hyper_channels=8)
    cfg["train"].update(steps=3, log_every=1, val_every=3, warmup_steps=1, batch_size=5)
    cfg["output"].update(checkpoint=str(tmp_path / "m.pt"), log=str(tmp_path / "log.csv"))
    ckpt = train(cfg, repo)
    model = load_checkpoint(ckpt)
    assert model.metadata["steps"] == 3
    assert "val" in (tmp_path / "log.csv").read_text()
