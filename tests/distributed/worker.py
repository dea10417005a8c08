"""What each torchrun rank runs in the tests: the distributed functions the CLI will call.

Usage (under ``python -m torch.distributed.run --standalone --nproc-per-node N``)::

    worker.py compress INPUT OUT.npz --model M [--decompress OUT.tif]
    worker.py decompress IN.npz OUT.tif --model M [--salvage]   (rank 0 prints the result as JSON)

``INPUT`` goes through ``resolve_inputs`` (so a SAFE folder or zip works as the CLI will use it).
``SARCODEC_TEST_CRASH=RANK`` makes that rank die abruptly (``os._exit``, no cleanup, like SIGKILL
or a segfault) after its first batch of tiles; ``SARCODEC_TEST_HANG=RANK`` (not 0) makes it stop
answering instead: the faults the tests inject.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from sarcodec import distributed
from sarcodec.codec.pipeline import CompressOptions, DecompressOptions
from sarcodec.inputs import resolve_inputs
from sarcodec.progress import NullProgress


class CrashingProgress(NullProgress):
    """Dies without any cleanup once the rank has done some work."""

    def advance(self, n: int = 1) -> None:
        sys.stderr.write(f"[test] rank {os.environ.get('RANK')} dies now\n")
        sys.stderr.flush()
        os._exit(17)


class CrashingRankLog(distributed.RankLogProgress):
    def advance(self, n: int = 1) -> None:
        CrashingProgress.advance(self, n)  # type: ignore[arg-type]


class HangingRankLog(distributed.RankLogProgress):
    """Stops answering (a stuck GPU, a dead NFS mount) without dying."""

    def advance(self, n: int = 1) -> None:
        sys.stderr.write(f"[test] rank {os.environ.get('RANK')} hangs now\n")
        sys.stderr.flush()
        time.sleep(60)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["compress", "decompress"])
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--model", required=True)
    p.add_argument("--decompress")
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--salvage", action="store_true")
    args = p.parse_args()
    crash = os.environ.get("SARCODEC_TEST_CRASH")
    rank = int(os.environ["RANK"])
    progress = NullProgress()
    if crash is not None and int(crash) == rank:
        if rank == 0:
            progress = CrashingProgress()
        else:
            distributed.RankLogProgress = CrashingRankLog  # type: ignore[misc]
    hang = os.environ.get("SARCODEC_TEST_HANG")
    if hang is not None and int(hang) == rank and rank:
        distributed.RankLogProgress = HangingRankLog  # type: ignore[misc]
    assert distributed.is_distributed()
    if args.command == "decompress":
        return decompress(args, rank, progress)
    item = resolve_inputs(args.input)[0]
    try:
        result = distributed.distributed_compress(
            item.path, args.output,
            CompressOptions(model_path=args.model, tile_size=args.tile_size, overlap=args.overlap, device="cpu"),
            progress)
        if rank == 0:
            print(f"compressed {result.output_bytes} bytes on {result.device}", flush=True)
        if args.decompress:
            result = distributed.distributed_decompress(
                args.output, args.decompress, DecompressOptions(model_path=args.model, device="cpu"), progress)
            if rank == 0:
                print(f"decompressed {result.width}x{result.height} on {result.device}", flush=True)
    except Exception as exc:  # noqa: BLE001 - shown as the CLI would: one line and its exit code
        sys.stderr.write(f"sarcodec: error: {exc}\n")
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        sys.stderr.write("sarcodec: error: interrupted; no partial output was left\n")
        return 130
    return 0


def decompress(args: argparse.Namespace, rank: int, progress: NullProgress) -> int:
    try:
        result = distributed.distributed_decompress(
            args.input, args.output, DecompressOptions(model_path=args.model, device="cpu", salvage=args.salvage),
            progress)
    except Exception as exc:  # noqa: BLE001 - shown as the CLI would: one line and its exit code
        sys.stderr.write(f"sarcodec: error: {exc}\n")
        return getattr(exc, "exit_code", 1)
    if rank == 0:
        print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
