"""A user's model file, loaded and checked: ONNX (the safe default) or TorchScript (trusted files only).

Why two formats, and why ONNX first: an ONNX file is a graph of known operators that
``onnxruntime`` executes, it cannot run arbitrary Python, so it is safe to run a model received from
elsewhere. A TorchScript file is a zip holding code that ``torch.jit.load`` executes: it is only
accepted with ``trust_torchscript`` (``--trust-torchscript``), for models you made yourself.

What the engine must know about a model, and where it comes from (given flags win, then the ONNX
file's metadata, then a probe run):

- scale factor (1 for despeckling, 2 for x2 super-resolution, 1/2 ...): ``sarcodec.scale`` metadata,
  ``--scale``, or measured by the probe (output size / input size);
- input and output channels: the model's declared shapes, else the number of bands given, checked by
  the probe;
- value convention: ``raw`` pixel values, ``log_db`` (``10*log10(intensity)``, what SAR networks are
  usually trained on) or ``range:LO:HI`` (values mapped to [0, 1]): ``sarcodec.convention`` metadata,
  ``--log-domain`` / ``--in-range``, default ``raw``;
- a fixed input size (a model that is not fully convolutional): refused unless ``--tile-size`` equals it.

The probe runs two tiles of different sizes and checks that the output is finite and that its size
scales with the input: a model that returns NaN or the wrong size is refused before any output exists.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sarcodec.errors import ModelError, UsageError

CONVENTIONS = ("raw", "log_db", "range")
PROBE_SIZES = (64, 96)


@dataclass(frozen=True)
class Convention:
    """How pixel values become model inputs and model outputs become pixel values."""

    kind: str = "raw"
    low: float = 0.0
    high: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Convention:
        parts = str(text).strip().split(":")
        if parts[0] == "range" and len(parts) == 3:
            try:
                lo, hi = float(parts[1]), float(parts[2])
            except ValueError:
                lo = hi = float("nan")
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise UsageError(f"a value range is LO:HI with LO < HI, got {text!r}")
            return cls("range", lo, hi)
        if parts[0] in ("raw", "log_db") and len(parts) == 1:
            return cls(parts[0])
        raise UsageError(f"value convention must be raw, log_db or range:LO:HI, got {text!r}")

    def __str__(self) -> str:
        return f"range:{self.low:g}:{self.high:g}" if self.kind == "range" else self.kind


@dataclass
class UserModel:
    """A loaded model: ``run(batch)`` maps float32 (N, C, H, W) to float32 (N, C', H*s, W*s)."""

    path: Path
    kind: str  # "onnx" or "torchscript"
    run: Callable[[np.ndarray], np.ndarray]
    in_channels: int | None = None  # None: any (decided by the bands)
    out_channels: int | None = None
    fixed_size: tuple[int, int] | None = None  # (H, W) the model requires, if not fully convolutional
    metadata: dict[str, str] = field(default_factory=dict)
    module: Any = None  # the torch module (TorchScript) for device moves
    providers: tuple[str, ...] = ()

    @property
    def declared_scale(self) -> Fraction | None:
        value = self.metadata.get("sarcodec.scale")
        if value is None:
            return None
        try:
            s = Fraction(value).limit_denominator(64)
        except (ValueError, ZeroDivisionError):
            raise ModelError(f"{self.path}: its metadata sarcodec.scale={value!r} is not a number") from None
        if s <= 0:
            raise ModelError(f"{self.path}: its metadata sarcodec.scale={value!r} is not positive")
        return s

    @property
    def declared_convention(self) -> Convention | None:
        value = self.metadata.get("sarcodec.convention")
        if value is None:
            return None
        try:
            return Convention.parse(value)
        except UsageError as exc:
            raise ModelError(f"{self.path}: its metadata sarcodec.convention is unusable ({exc})") from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") or n.endswith("/code/__torch__.py") or "/code/" in n for n in names)


def load_user_model(path: str | Path, *, trust_torchscript: bool = False, cuda: bool = False) -> UserModel:
    """Load an ONNX or (trusted) TorchScript model; anything else is a ``ModelError`` (exit 2)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model {p} does not exist")
    if _is_torchscript(p):
        if not trust_torchscript:
            raise ModelError(f"{p} is a TorchScript file, which runs code when loaded: pass --trust-torchscript if "
                             "you made it yourself, or export it to ONNX")
        return _load_torchscript(p)
    return _load_onnx(p, cuda=cuda)


#: onnxruntime's intra-op threads wait for work by spinning, by default: they keep the cores busy
#: after a batch, while the engine blends and writes it, and beside its read-ahead thread
#: (``runner``). Measured on 2 shared cores, the small x2 network of ``bench/infer.py`` alone ran at
#: 53-59 ns per tile output pixel without spinning, 63-72 with it (the medium one 270-282 against
#: 300-310), so the bare model is faster without it too.
ORT_SPINNING = False


def session_options() -> Any:
    """The onnxruntime options ``sarcodec infer`` runs models with (``bench/infer.py`` times the raw model so too)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not ORT_SPINNING:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _load_onnx(p: Path, *, cuda: bool) -> UserModel:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError("ONNX models need onnxruntime (make setup installs it; or pip install onnxruntime)") from None
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(p), sess_options=session_options(), providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own classes for foreign files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelError(f"{p} is neither an ONNX model nor a TorchScript file ({first})") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise ModelError(f"{p}: the model must take one image input (it takes {len(inputs)})")
    shape = inputs[0].shape
    if len(shape) != 4:
        raise ModelError(f"{p}: the model's input must be (batch, channels, height, width), got {shape}")
    in_ch = shape[1] if isinstance(shape[1], int) else None
    out_shape = outputs[0].shape
    out_ch = out_shape[1] if len(out_shape) == 4 and isinstance(out_shape[1], int) else None
    fixed = (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
    name = inputs[0].name
    meta = dict(session.get_modelmeta().custom_metadata_map or {})

    per_call = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None  # a model with a fixed batch

    def run(batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if per_call is None or x.shape[0] == per_call:
            return np.asarray(session.run(None, {name: x})[0], dtype=np.float32)
        parts = [session.run(None, {name: x[i : i + per_call]})[0] for i in range(0, x.shape[0], per_call)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    return UserModel(p, "onnx", run, in_ch, out_ch, fixed, meta, providers=tuple(session.get_providers()))


def _load_torchscript(p: Path) -> UserModel:
    import torch

    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelError(f"{p} is not a loadable TorchScript model ({first})") from None
    module.eval()
    meta: dict[str, str] = {}
    extra = getattr(module, "sarcodec_metadata", None)
    if isinstance(extra, str):
        try:
            meta = {str(k): str(v) for k, v in json.loads(extra).items()}
        except (ValueError, AttributeError):
            meta = {}

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().cpu().numpy()

    return UserModel(p, "torchscript", run, None, None, None, meta, module=module)


@dataclass(frozen=True)
class ProbeResult:
    """What two probe tiles showed: the model's scale and output channels."""

    scale: Fraction
    out_channels: int
    seconds: float


def probe(model: UserModel, in_channels: int, *, size: int | None = None,
          scale: Fraction | None = None) -> ProbeResult:
    """Run the model on two small tiles of different sizes (or its fixed size) and check what it returns."""
    import time

    sizes = (size,) if size else PROBE_SIZES
    if model.fixed_size is not None:
        if size is None or (size, size) != tuple(model.fixed_size):
            fh, fw = model.fixed_size
            raise UsageError(f"{model.path.name} is not fully convolutional: it needs {fh} x {fw} tiles"
                             + (f"; run it with --tile-size {fh} --overlap 0" if fh == fw else
                                " (only square tiles are supported)"))
        sizes = (size,)
    if model.in_channels is not None and model.in_channels != in_channels:
        raise UsageError(f"{model.path.name} expects {model.in_channels} input channel(s), but {in_channels} band(s) "
                         "are given (choose them with --bands)")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    found: Fraction | None = None
    out_ch = 0
    for s in sizes:
        x = rng.uniform(0.25, 0.75, (1, in_channels, s, s)).astype(np.float32)
        try:
            y = model.run(x)
        except Exception as exc:  # noqa: BLE001 - whatever the model raises, it cannot take this input
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelError(f"{model.path.name} failed on a {in_channels} x {s} x {s} probe tile: {first}") from None
        if y.ndim != 4 or y.shape[0] != 1:
            raise ModelError(f"{model.path.name} returned shape {tuple(y.shape)} for one tile; expected (1, C, H, W)")
        if not np.isfinite(y).all():
            raise ModelError(f"{model.path.name} returned NaN or Inf on a probe tile")
        sh, sw = Fraction(y.shape[2], s), Fraction(y.shape[3], s)
        if sh != sw:
            raise ModelError(f"{model.path.name} scales height by {sh} but width by {sw}: not supported")
        if found is not None and sh != found:
            raise ModelError(f"{model.path.name}'s output size does not grow with its input ({found} then {sh}): it "
                             "is not fully convolutional")
        found, out_ch = sh, int(y.shape[1])
    assert found is not None
    wanted = scale if scale is not None else model.declared_scale
    if wanted is not None and wanted != found:
        raise ModelError(f"{model.path.name} outputs {found}x its input, but its scale is declared as {wanted}")
    if model.out_channels is not None and model.out_channels != out_ch:
        raise ModelError(f"{model.path.name} declares {model.out_channels} output channels but returned {out_ch}")
    return ProbeResult(found, out_ch, time.perf_counter() - t0)
