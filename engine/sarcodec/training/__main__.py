"""``python -m sarcodec.training --config configs/train_v2.toml`` (or ``train_default.toml`` for v1).

The config's top-level ``arch`` picks what is trained: ``sarcodec-dct`` (codec v2, the default
model) or, without it, the v1 hyperprior network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sarcodec.training.train import load_config


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and train; relative paths in the config resolve against ``--root``."""
    ap = argparse.ArgumentParser(prog="python -m sarcodec.training", description=__doc__)
    ap.add_argument("--config", required=True, help="training TOML config")
    ap.add_argument("--root", default=".", help="repository root (default: current directory)")
    ap.add_argument("--steps", type=int, default=None, help="override train.steps (smoke tests)")
    ap.add_argument("--max-minutes", type=float, default=None, help="override train.max_minutes")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if cfg.get("arch") == "sarcodec-dct":
        from sarcodec.training.dct_prior import train_dct

        train_dct(cfg, Path(args.root).resolve())
        return 0
    from sarcodec.training.train import train

    if args.steps is not None:
        cfg["train"]["steps"] = args.steps
    if args.max_minutes is not None:
        cfg["train"]["max_minutes"] = args.max_minutes
    train(cfg, Path(args.root).resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
