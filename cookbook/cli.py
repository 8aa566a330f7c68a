"""The cookbook's command line: ``python -m cookbook COMMAND``.

Commands:
    demo           run notebooks/01_single_image.ipynb and print the answer
    run-notebooks  execute notebooks for a profile and check them (`cookbook.runner`)
    build-tiny     build (or find) the tiny random-weight InternVL checkpoint
    info           the device vLLM would use and the stack's versions
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from cookbook.records import read_record
    from cookbook.runner import run_notebooks

    overrides = {"model": args.model} if args.model else {}
    if args.image:
        overrides["image"] = args.image
    if args.question:
        overrides["question"] = args.question
    reports = run_notebooks(
        args.profile, only=["01_single_image"], out_dir=args.out, overrides=overrides
    )
    rep = reports[0]
    if rep.record:
        record = read_record(rep.record)
        res = record["results"][0]
        print()
        print(f"model:    {record['engine']['model_id']} on {record['engine']['device']}")
        print(f"question: {res['question']}")
        print(f"answer:   {res['text']!r}")
        print(
            f"tokens:   prompt {res['prompt_tokens']} (image {res['image_tokens']}, "
            f"tiles {res['tiles']}), output {res['output_tokens']}, "
            f"finish reason {res['finish_reason']}, {res['seconds']:.2f} s"
        )
        if record["engine"]["model"] == "tiny":
            print("note:     the tiny checkpoint has random weights: the text is meaningless,")
            print("          the pipeline (vLLM, InternVL tiling, chat template) is real.")
    print(f"executed notebook: {rep.executed}")
    return 0 if rep.status == "passed" else 1


def _build_tiny(args: argparse.Namespace) -> int:
    from cookbook.tiny import build_tiny_checkpoint, ensure_tiny_checkpoint

    path = build_tiny_checkpoint(args.out) if args.out else ensure_tiny_checkpoint()
    print(path)
    return 0


def _info(args: argparse.Namespace) -> int:
    from cookbook.engine import detect_device
    from cookbook.records import stack_versions

    print(json.dumps({"device": detect_device(), "versions": stack_versions()}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    from cookbook import runner

    ap = argparse.ArgumentParser(prog="python -m cookbook", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the single-image notebook and print the answer")
    demo.add_argument("--profile", default="cpu", help="profile in notebooks/manifest.toml")
    demo.add_argument("--model", default=None, help="model key, hub id or path")
    demo.add_argument("--image", default=None, help="sample name, path or URL")
    demo.add_argument("--question", default=None)
    demo.add_argument("--out", default="build/demo")
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run-notebooks", help="execute and check notebooks")
    runner.add_arguments(run)
    run.set_defaults(func=runner.run_from_args)

    tiny = sub.add_parser("build-tiny", help="build the tiny InternVL checkpoint")
    tiny.add_argument("--out", default=None, help="folder (default: the cache)")
    tiny.set_defaults(func=_build_tiny)

    info = sub.add_parser("info", help="device and versions")
    info.set_defaults(func=_info)

    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
