"""Train the two example models of ``sarcodec infer``: x2 super-resolution and self-supervised despeckling.

``python -m sarcodec.training.examples --which sr|despeckle [--minutes M]`` (``make examples``).

They are examples of the workflow (a small network, trained here on ``../shared/data/sar-train``,
exported to ONNX with its scale and value convention in the metadata, run over whole scenes by the
engine), not products; their cards (``resources/models/examples/*.md``) say what they are good for,
measured against bicubic upsampling and a Lee filter.

- **sr_x2**: input ``L = 10*log10(intensity)`` dB at half resolution, output at full resolution: a
  bilinear upsample plus a learned correction (3 convolutions and a pixel shuffle, ~12 k weights).
  Pairs: the training bands (full resolution) and their 2x2 intensity means (half resolution), so
  the network learns how resampled SAR looks, not an interpolation kernel. Loss: MSE in dB.
- **despeckle**: same-size, in dB. Self-supervised (no clean SAR exists): Neighbor2Neighbor-style,
  two sub-images are drawn from each 2 x 2 cell of a speckled crop, and the network maps one to the
  other, so it learns the scene but not the speckle, which differs between them. A final constant
  restores the mean intensity (a log-domain estimate under-estimates it, about -1 dB at 4.4 looks).

Resuming: the state (weights, optimiser, step, elapsed time) is saved next to the output every 50
steps; a rerun continues it until ``--minutes`` of training are done in total.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sarcodec.training.data import load_split

REPO = Path(__file__).resolve().parents[3]
OUT_DIR = REPO / "resources" / "models" / "examples"
HELD_OUT_DATES = ["20150823", "20160518"]
SOURCES = ["s1_grd_dn_chips", "s1_grd_db"]
CROP = 48


class SuperResolutionX2(nn.Module):
    """Bilinear x2 upsampling of dB plus a learned residual (3 convolutions, pixel shuffle)."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(width, 4, 3, padding=1))
        self.shuffle = nn.PixelShuffle(2)
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return up + self.shuffle(self.body(x - mean))


class Despeckler(nn.Module):
    """A 6-layer dB-domain denoiser predicting the speckle-free log mean, plus a mean-intensity offset."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for dilation in (1, 2, 3, 2):
            layers += [nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.register_buffer("offset_db", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        return x + self.body((x - mean) / 10.0) * 10.0 + self.offset_db


def _bands(held_out: bool, min_side: int = CROP) -> list[np.ndarray]:
    root = os.environ.get("SARCODEC_DATA") or str(REPO.parent / "shared" / "data" / "sar-train")
    train, val = load_split(root, HELD_OUT_DATES, "br", SOURCES)
    chosen = val if held_out else train
    return [np.where(b.valid, b.db, np.median(b.db[b.valid])).astype(np.float32) for b in chosen
            if min(b.db.shape) >= min_side and b.valid.mean() > 0.95]


def _crops(bands: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    out = np.empty((n, 1, size, size), np.float32)
    for i in range(n):
        b = bands[rng.integers(len(bands))]
        r, c = rng.integers(0, b.shape[0] - size + 1), rng.integers(0, b.shape[1] - size + 1)
        crop = b[r : r + size, c : c + size]
        crop = np.rot90(crop, rng.integers(4))
        out[i, 0] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return torch.from_numpy(out)


def downsample_db(x: torch.Tensor) -> torch.Tensor:
    """2x2 intensity mean of dB images (what a half-resolution product holds)."""
    return 10.0 * torch.log10(F.avg_pool2d(10.0 ** (x / 10.0), 2))


def _neighbour_pair(x: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two half-size sub-images taking different pixels of every 2 x 2 cell (Neighbor2Neighbor)."""
    n, _, h, w = x.shape
    cells = x.reshape(n, 1, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, 1, h // 2, w // 2, 4)
    a = torch.from_numpy(rng.integers(0, 4, (n, 1, h // 2, w // 2)))
    b = (a + torch.from_numpy(rng.integers(1, 4, (n, 1, h // 2, w // 2)))) % 4
    return cells.gather(-1, a[..., None]).squeeze(-1), cells.gather(-1, b[..., None]).squeeze(-1)


def train(which: str, minutes: float, seed: int = 20261205, out_dir: Path = OUT_DIR, log=print) -> Path:
    """Train (or continue training) one example and export it to ONNX; returns the ONNX path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model: nn.Module = SuperResolutionX2() if which == "sr" else Despeckler()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    state_path = out_dir / f"{_name(which)}.state.pt"
    step, elapsed = 0, 0.0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        log(f"resuming {which} at step {step} ({elapsed / 60:.1f} of {minutes} minutes done)")
    crop = CROP if which == "sr" else 64
    bands = _bands(held_out=False, min_side=max(crop, 96))
    rng = np.random.default_rng(seed + step)
    t0 = time.monotonic() - elapsed
    while time.monotonic() - t0 < minutes * 60:
        x = _crops(bands, 16, crop, rng)
        if which == "sr":
            loss = F.mse_loss(model(downsample_db(x)), x)
        else:
            a, b = _neighbour_pair(x, rng)
            loss = F.mse_loss(model(a), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "elapsed": time.monotonic() - t0}, state_path)
            log(f"{which} step {step}: loss {loss.item():.4f} dB^2 ({(time.monotonic() - t0) / 60:.1f} min)")
    if which == "despeckle":
        _calibrate_intensity(model, bands)
    return export(model, which, out_dir)


def _calibrate_intensity(model: nn.Module, bands: list[np.ndarray]) -> None:
    """Set the offset so that a typical whole training band keeps its mean intensity.

    The median of per-band ratios, not one ratio over pooled crops: a pooled mean is ruled by the
    few bright urban crops, where smoothing in dB loses the most intensity, and over-corrects the
    rest of the scene by about 10 %.
    """
    with torch.no_grad():
        model.offset_db.zero_()
        ratios = []
        for b in bands[:80]:
            y = model(torch.from_numpy(b)[None, None])[0, 0].numpy()
            ratios.append(float((10.0 ** (b / 10.0)).mean() / (10.0 ** (y / 10.0)).mean()))
        model.offset_db.fill_(float(10.0 * np.log10(np.median(ratios))))


def _name(which: str) -> str:
    return "sr_x2" if which == "sr" else "despeckle"


def export(model: nn.Module, which: str, out_dir: Path = OUT_DIR) -> Path:
    """ONNX with dynamic height and width, and the metadata ``sarcodec infer`` reads."""
    import onnx

    path = out_dir / f"{_name(which)}.onnx"
    model.eval()
    tmp = path.with_name(path.name + ".part")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(model, torch.zeros(1, 1, 64, 64), str(tmp), input_names=["db"], output_names=["db_out"],
                          dynamic_axes={"db": {0: "n", 2: "h", 3: "w"}, "db_out": {0: "n", 2: "h2", 3: "w2"}},
                          opset_version=17, dynamo=False)
    proto = onnx.load(str(tmp))
    meta = {"sarcodec.scale": "2" if which == "sr" else "1", "sarcodec.convention": "log_db",
            "sarcodec.example": "true", "sarcodec.card": f"{_name(which)}.md"}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def evaluate(which: str, out_dir: Path = OUT_DIR) -> dict:
    """The card's numbers on held-out bands (never trained on): against bicubic or a Lee filter."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out_dir / f"{_name(which)}.onnx"), providers=["CPUExecutionProvider"])
    bands = _bands(held_out=True)
    if which == "sr":
        se_m = se_b = se_l = n = 0.0
        for b in bands:
            h, w = (b.shape[0] // 2) * 2, (b.shape[1] // 2) * 2
            x = torch.from_numpy(b[:h, :w])[None, None]
            lr = downsample_db(x)
            y = torch.from_numpy(sess.run(None, {"db": lr.numpy()})[0])
            bic = F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False)
            bil = F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)
            se_m += float(((y - x) ** 2).sum())
            se_b += float(((bic - x) ** 2).sum())
            se_l += float(((bil - x) ** 2).sum())
            n += x.numel()
        return {"bands": len(bands), "rmse_db_model": math.sqrt(se_m / n), "rmse_db_bicubic": math.sqrt(se_b / n),
                "rmse_db_bilinear": math.sqrt(se_l / n)}
    enl = {"input": [], "model": [], "lee": []}
    mean_ratio = {"model": [], "lee": []}
    for b in bands:
        y = sess.run(None, {"db": b[None, None]})[0][0, 0]
        lee = lee_filter_db(b)
        i0 = 10.0 ** (b / 10.0)
        for name, img in (("input", b), ("model", y), ("lee", lee)):
            enl[name].append(_enl(10.0 ** (img / 10.0), i0))
        mean_ratio["model"].append(float((10.0 ** (y / 10.0)).mean() / i0.mean()))
        mean_ratio["lee"].append(float((10.0 ** (lee / 10.0)).mean() / i0.mean()))
    med = {k: float(np.median(v)) for k, v in enl.items()}
    return {"bands": len(bands), "enl_input": med["input"], "enl_model": med["model"], "enl_lee": med["lee"],
            "mean_intensity_ratio_model": float(np.mean(mean_ratio["model"])),
            "mean_intensity_ratio_lee": float(np.mean(mean_ratio["lee"]))}


def lee_filter_db(db: np.ndarray, size: int = 7, looks: float = 4.4) -> np.ndarray:
    """The classic Lee filter on intensity (the baseline analysts use), returned in dB."""
    from scipy.ndimage import uniform_filter

    i = 10.0 ** (db.astype(np.float64) / 10.0)
    m = uniform_filter(i, size)
    v = np.maximum(uniform_filter(i * i, size) - m * m, 0.0)
    cu2 = 1.0 / looks
    ci2 = v / np.maximum(m * m, 1e-30)
    w = np.clip((ci2 - cu2) / np.maximum(ci2 * (1 + cu2), 1e-30), 0.0, 1.0)
    return (10.0 * np.log10(np.maximum(m + w * (i - m), 1e-30))).astype(np.float32)


def _enl(intensity: np.ndarray, reference: np.ndarray, w: int = 11) -> float:
    """ENL (mean^2 / variance) over the most homogeneous fifth of w x w windows of the reference."""
    cand = []
    for r in range(0, reference.shape[0] - w + 1, w):
        for c in range(0, reference.shape[1] - w + 1, w):
            win = reference[r : r + w, c : c + w]
            cand.append((win.mean() ** 2 / max(win.var(), 1e-12), r, c))
    cand.sort(reverse=True)
    vals = [intensity[r : r + w, c : c + w] for _, r, c in cand[: max(1, len(cand) // 5)]]
    return float(np.median([v.mean() ** 2 / max(v.var(), 1e-12) for v in vals])) if vals else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sarcodec.training.examples", description=__doc__.splitlines()[0])
    ap.add_argument("--which", choices=("sr", "despeckle"), required=True)
    ap.add_argument("--minutes", type=float, default=10.0, help="total training time (a rerun continues)")
    ap.add_argument("--evaluate-only", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    if not args.evaluate_only:
        path = train(args.which, args.minutes)
        print(f"wrote {path}")
    res = evaluate(args.which)
    (OUT_DIR / f"{_name(args.which)}.eval.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
