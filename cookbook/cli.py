"""The cookbook's command line: ``python -m cookbook COMMAND`` (``--help`` on each).

Commands:
    demo           run notebooks/01_single_image.ipynb and print its answer
    run-notebooks  execute the notebooks for a profile and check what they produced
    check          check this machine for a model: device, versions, variables, cache, memory
    serve          a vLLM server for a model in the foreground, until Ctrl-C
    bench          the benchmarks (`cookbook.bench`)
    tiny           build, train or gate the tiny checkpoint (`cookbook.tiny`)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from cookbook import runner

    (report,) = runner.run_notebooks(args.profile, only=["01"], out_dir=args.out, model=args.model)
    if report.record:
        record = json.loads(open(report.record).read())
        answer = record["results"][0]
        print(f"\nquestion: {answer['question']}\nanswer:   {answer['text']}")
        print(
            f"tokens:   prompt {answer['prompt_tokens']} (image {answer['image_tokens']}), "
            f"output {answer['output_tokens']}, finish reason {answer['finish_reason']}"
        )
        if record.get("model") == "tiny":
            print("note:     the tiny model memorised a few answers about the sample photos and")
            print("          knows nothing else; the pipeline around it (vLLM) is real.")
    print(f"executed notebook: {report.executed}")
    return 0 if report.status == "passed" else 1


def _serve(args: argparse.Namespace) -> int:
    from cookbook import engine, prompts, server

    engine.set_device_env(engine.detect_device(args.device))
    overrides = json.loads(args.engine_args) if args.engine_args else {}
    args_ = engine.engine_args(args.model, args.device, **overrides)
    # The key, when set, is handed to the server in its environment, never on a command line.
    # The stop ids go to the server too, so clients that send none (curl, lm-eval) stop right.
    stop_ids = prompts.stop_token_ids_of(args_["model"])
    srv = server.Server(
        args_, port=args.port, api_key=os.environ.get("VLLM_API_KEY"), stop_token_ids=stop_ids
    )
    print("command:", shlex.join(srv.command), flush=True)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A job started in the background inherits SIGINT as ignored: Ctrl-C must still stop it.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        srv.start()
        print(f"ready:    {srv.base_url} in {srv.startup_seconds:.0f} s; log {srv.log_path}")
        key = "-H 'Authorization: Bearer $VLLM_API_KEY' " if srv.api_key else ""
        print(f"try:      curl {key}{srv.base_url}/models")
        print("press Ctrl-C to stop", flush=True)
        while srv.process is not None and srv.process.poll() is None:
            time.sleep(0.5)
        print("error: the server exited on its own; see", srv.log_path, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        srv.stop()
        print("stopped", flush=True)


#: Commands whose options and work live in their own module (``add_arguments``, ``run_from_args``).
DELEGATED = {
    "run-notebooks": ("cookbook.runner", "execute and check the notebooks"),
    "check": ("cookbook.envcheck", "check this machine for a model"),
    "bench": ("cookbook.bench", "the benchmarks"),
    "tiny": ("cookbook.tiny.__main__", "the tiny checkpoint: build, train, gate"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        module_name, about = DELEGATED[argv[0]]
        module = importlib.import_module(module_name)  # only the command's own module loads
        sub = argparse.ArgumentParser(prog=f"python -m cookbook {argv[0]}", description=about)
        module.add_arguments(sub)
        return int(module.run_from_args(sub.parse_args(argv[1:])))

    ap = argparse.ArgumentParser(prog="python -m cookbook", description=__doc__)
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    commands = ap.add_subparsers(dest="command", required=True)
    for name, (_, about) in DELEGATED.items():
        commands.add_parser(name, help=about, add_help=False)

    demo = commands.add_parser("demo", help="run notebook 01 and print its answer")
    demo.add_argument("--profile", default="cpu", help="profile of notebooks/manifest.toml")
    demo.add_argument("--model", default=None, help="support-matrix key, hub id or folder")
    demo.add_argument("--out", default="build/demo", help="folder for the executed notebook")
    demo.set_defaults(func=_demo)

    serve = commands.add_parser("serve", help="a vLLM server in the foreground until Ctrl-C")
    serve.add_argument("--model", default="tiny", help="support-matrix key, hub id or folder")
    serve.add_argument("--device", default="auto", help="auto, npu, cuda or cpu")
    serve.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1")
    serve.add_argument(
        "--engine-args", default="", help="JSON overrides, e.g. '{\"max_model_len\": 4096}'"
    )
    serve.set_defaults(func=_serve)

    args = ap.parse_args(argv)
    return int(args.func(args))
