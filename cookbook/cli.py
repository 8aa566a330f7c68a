"""The cookbook's command line: ``python -m cookbook COMMAND``.

Commands:
    demo           run notebooks/01_single_image.ipynb and print the answer
    run-notebooks  execute notebooks for a profile and check them (`cookbook.runner`)
    build-tiny     build (or find) the tiny random-weight InternVL checkpoint
    info           the device vLLM would use and the stack's versions
    serve          start a vLLM OpenAI-compatible server in the foreground until Ctrl-C
    bench          measure the cookbook's overhead, batching, concurrency (`cookbook.bench`)
"""

from __future__ import annotations

import argparse
import json
import os
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


#: The image the vllm-ascend tutorial's curl example sends by URL (the server fetches it,
#: so it needs internet access; offline, send a data URL instead).
EXAMPLE_IMAGE_URL = "https://modelscope.oss-cn-beijing.aliyuncs.com/resource/qwen.png"

#: Environment variables the server and the printed commands take an API key from.
API_KEY_ENV = ("VLLM_API_KEY", "OPENAI_API_KEY")


def _port(text: str) -> int:
    """Return a TCP port number parsed from the command line (0 means any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be an integer, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0 (any free port) to 65535, got {port}")
    return port


def _serve_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="tiny", help="model key, hub id or path (default: tiny)")
    ap.add_argument("--device", default="auto", help="auto, npu, cuda or cpu")
    ap.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    ap.add_argument("--port", type=_port, default=8000, help="TCP port; 0 picks a free one")
    ap.add_argument(
        "--max-model-len", type=int, default=None, help="context length in tokens (model's default)"
    )
    ap.add_argument(
        "--limit-images",
        type=int,
        default=None,
        help="images per prompt, --limit-mm-per-prompt (model's default)",
    )
    ap.add_argument("--log", default=None, help="file for the server's output (default: temp)")
    ap.add_argument(
        "--startup-timeout", type=float, default=600.0, help="seconds to wait until ready"
    )
    ap.add_argument(
        "extra",
        nargs="*",
        metavar="-- VLLM_FLAG",
        help="more `vllm serve` flags after `--`, e.g. -- --max-num-seqs 4",
    )


def _serve(args: argparse.Namespace) -> int:
    """Start a vLLM server, print how to reach it, and block until Ctrl-C or SIGTERM."""
    import signal
    import threading
    import time

    from cookbook.display import curl_command
    from cookbook.server import VLLMServer

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    overrides = {
        k: v
        for k, v in (("max_model_len", args.max_model_len), ("limit_images", args.limit_images))
        if v is not None
    }
    try:
        server = VLLMServer(
            args.model,
            host=args.host,
            port=args.port or None,
            extra_args=args.extra,
            log_path=args.log,
            startup_timeout=args.startup_timeout,
            device=args.device,
            **overrides,
        )
    except (ValueError, TypeError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if in_main_thread else None
    # A process started in the background by a non-interactive shell inherits SIGINT as
    # ignored, and Python then never raises KeyboardInterrupt: Ctrl-C (or `kill -INT`)
    # must still stop the server, so the handler is installed explicitly.
    previous_sigint = signal.signal(signal.SIGINT, interrupt) if in_main_thread else None
    ready = False
    try:
        print(f"command:  {server.command_line}", flush=True)
        print(f"starting (up to {args.startup_timeout:g} s)...", flush=True)
        try:
            server.start()
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 1
        ready = True
        key_env = next((name for name in API_KEY_ENV if os.environ.get(name)), None)
        body = server.request_body("What is in this image?", [EXAMPLE_IMAGE_URL])
        print(f"ready:    {server.base_url} (started in {server.startup_seconds:.1f} s)")
        print(f"model:    {server.served_model}")
        print(f"log:      {server.log_path}")
        print("query it (the server fetches the image URL; offline, send a data URL):")
        print(curl_command(f"{server.base_url}/chat/completions", body, auth_env=key_env))
        print("press Ctrl-C to stop the server", flush=True)
        while server.running:
            time.sleep(0.5)
        code = server.process.poll() if server.process is not None else None
        print(f"error: the server exited on its own (exit code {code}); last lines of its log:")
        print(server.log_tail(), flush=True)
        return 1
    except KeyboardInterrupt:
        print("stopping the server...", flush=True)
        return 0 if ready else 130
    finally:
        # A second Ctrl-C while stopping must not cut the stop short (orphans).
        if in_main_thread:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            if in_main_thread:
                signal.signal(signal.SIGINT, previous_sigint)
                signal.signal(signal.SIGTERM, previous)
        if ready:
            print("stopped", flush=True)


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

    serve = sub.add_parser(
        "serve",
        help="start a vLLM server in the foreground until Ctrl-C",
        description="Start a vLLM OpenAI-compatible server with the model's recommended "
        "flags, print its URL and a curl command, and stop it (and every process it "
        "started) on Ctrl-C or SIGTERM. The server requires an API key when VLLM_API_KEY "
        "is set in the environment.",
    )
    _serve_arguments(serve)
    serve.set_defaults(func=_serve)

    from cookbook import bench

    bench_cmd = sub.add_parser("bench", help="benchmarks: overhead, batching, concurrency")
    bench.add_arguments(bench_cmd)
    bench_cmd.set_defaults(func=bench.run_from_args)

    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
