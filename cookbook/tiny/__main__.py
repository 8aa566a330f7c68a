"""``python -m cookbook.tiny [path|gate|train]``: build, check or retrain the tiny checkpoint."""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cookbook.tiny import build, gating
from cookbook.tiny.training import STEPS, train

#: Set before torch and vLLM load: a fast in-process CPU engine, quiet logs.
ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TORCHDYNAMO_DISABLE": "1",
       "VLLM_LOGGING_LEVEL": "ERROR"}  # fmt: skip


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Add this command's options to ``ap`` (also used by ``python -m cookbook tiny``)."""
    ap.add_argument(
        "command",
        nargs="?",
        default="path",
        choices=["path", "gate", "train"],
        help="path: build and print the checkpoint folder; gate: check it "
        "through vLLM; train: retrain, gate, then replace the shipped weights",
    )
    ap.add_argument("--random", action="store_true", help="path: the random-weight checkpoint")
    ap.add_argument("--steps", type=int, default=STEPS, help="train: optimizer steps")
    ap.add_argument("--seed", type=int, default=0, help="train: seed")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the command; return the exit status (1 when the gate fails)."""
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    if args.command == "path":
        print(build.checkpoint(trained=not args.random))
        return 0
    if args.command == "gate":
        report = gating.gate(gating.open_engine())
        print(report)
        return 0 if report.passed else 1
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        weights = train(Path(tmp) / "weights", steps=args.steps, seed=args.seed)
        print(f"trained in {time.time() - started:.0f} s", flush=True)
        folder = Path(tmp) / "checkpoint"
        folder.mkdir()
        build.write(folder, trained=True, weights=weights)
        report = gating.gate(gating.open_engine(folder))
        print(report)
        if not report.passed:
            print("refused: the shipped weights are unchanged", file=sys.stderr)
            return 1
        for name in ("model.safetensors", "tokenizer.json"):
            shutil.copyfile(weights / name, build.WEIGHTS / name)
    print(f"wrote {build.WEIGHTS} ({time.time() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m cookbook.tiny", description=__doc__)
    add_arguments(parser)
    sys.exit(run_from_args(parser.parse_args()))
