"""Score a served model with lm-eval, the way vllm-ascend's CI gates models: the accuracy step.

Serves the model as notebook 04 does, runs lm-eval's ``local-chat-completions`` client on it
(images as data URLs), writes ``OUT/accuracy.json`` (server log: ``$COOKBOOK_LOG_DIR``, else
OUT). Task ``cookbook_photos`` is local: five sample photos with the answers the tiny model
memorised (``tiny/answers.toml``), so a CPU run works offline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cookbook import engine, images, models, prompts, server

PHOTOS = "cookbook_photos"
ANSWERS = Path(__file__).resolve().parent / "tiny" / "answers.toml"
TASK_YAML = """task: {task}
dataset_path: imagefolder
dataset_kwargs: {{data_dir: "{data}"}}
test_split: train
output_type: generate_until
doc_to_image: [image]
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{until: [], max_gen_toks: 64, temperature: 0}}
metric_list: [{{metric: exact_match, ignore_case: true, ignore_punctuation: true}}]
metadata: {{version: 1}}
"""


def make_photos_task(folder: str | Path) -> Path:
    """Write the ``cookbook_photos`` task (data and YAML); return its lm-eval include path."""
    root, examples = Path(folder), tomllib.loads(ANSWERS.read_text())["example"]
    (root / "data").mkdir(parents=True, exist_ok=True)
    rows = []
    for ex in (e for e in examples if e["id"].endswith("-describe") and len(e["images"]) == 1):
        source = images.sample_path(ex["images"][0])
        shutil.copy(source, root / "data" / source.name)
        rows.append({"file_name": source.name, "question": ex["question"], "answer": ex["answer"]})
    (root / "data" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / f"{PHOTOS}.yaml").write_text(TASK_YAML.format(task=PHOTOS, data=root / "data"))
    return root


def lm_eval_command(base_url: str, served: str, task: str, limit: int | None, out: str | Path,
                    include_path: str | Path | None = None) -> list[str]:  # fmt: skip
    """Return the ``lm_eval run`` command that scores the server at ``base_url`` (``.../v1``).

    At most `models.LIMIT_IMAGES` images a question (MMMU has up to 7; the server takes 4).
    """
    model_args = f"model={served},base_url={base_url}/chat/completions,num_concurrent=1,"
    model_args += f"max_retries=3,tokenized_requests=False,max_images={models.LIMIT_IMAGES}"
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "local-chat-completions"]
    cmd += ["--model_args", model_args, "--tasks", task, "--apply_chat_template"]
    cmd += ["--batch_size", "1", "--output_path", str(out), "--log_samples"]
    cmd += ["--limit", str(limit)] if limit else []
    return cmd + (["--include_path", str(include_path)] if include_path else [])


def prefetch(task: str, include_path: str | Path | None = None) -> None:
    """Load the task's dataset into the datasets cache, as lm-eval will read it; no server."""
    from lm_eval.tasks import TaskManager, get_task_dict

    get_task_dict([task], TaskManager(include_path=str(include_path) if include_path else None))


def run(model: str, device: str, task: str, limit: int | None, out: str | Path,
        base_url: str | None = None, **engine_overrides: Any) -> dict:  # fmt: skip
    """Serve ``model``, score it on ``task``, write ``out/accuracy.json``; return what it holds.

    With ``base_url`` (``http://host:port/v1``, key ``$VLLM_API_KEY``) that server is scored
    and none started. ``engine_overrides`` go to `engine.engine_args`: ``max_model_len=32768``
    holds an MMMU question's 4 worst-case images (4 x 3328 tokens), the default 8192 does not.
    Raises RuntimeError: the server did not start, or lm-eval failed (its log is named).
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    include = make_photos_task(out / "task") if task == PHOTOS else None
    engine.set_device_env(engine.detect_device(device))
    logs = Path(os.environ.get("COOKBOOK_LOG_DIR") or out)
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OPENAI_API_KEY": os.environ.get("VLLM_API_KEY", "")}  # lm-eval reads it
    if base_url:
        cmd = lm_eval_command(
            base_url, server.models(base_url)[0], task, limit, out / "lm_eval", include
        )
        with open(out / "lm_eval.log", "w") as log:
            done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    else:
        args = engine.engine_args(model, device, **engine_overrides)
        stop = prompts.stop_token_ids_of(args["model"])  # lm-eval sends none itself
        with server.Server(args, log_path=logs / "server.log", stop_token_ids=stop) as srv:
            cmd = lm_eval_command(srv.base_url, srv.model, task, limit, out / "lm_eval", include)
            with open(out / "lm_eval.log", "w") as log:
                done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"lm-eval exited with {done.returncode}; see {out / 'lm_eval.log'}")
    found = sorted((out / "lm_eval").rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    results = json.loads(found[-1].read_text())
    record = {"model": model, "task": task, "limit": limit, "metrics": results["results"],
              "command": cmd[1:], "results_file": str(found[-1])}  # fmt: skip
    (out / "accuracy.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Run the accuracy step from the command line; return 1 below ``--min-score``."""
    ap = argparse.ArgumentParser(
        prog="python -m cookbook.accuracy", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--model", default="tiny", help="support-matrix key, hub id or folder")
    ap.add_argument("--device", default="auto", help="auto, npu, cuda or cpu")
    ap.add_argument("--task", default="mmmu_val", help=f"an lm-eval task, or {PHOTOS}")
    ap.add_argument("--limit", type=int, default=5, help="questions per (sub)task; 0: all")
    ap.add_argument("--out", default="build/accuracy", help="folder for the results")
    ap.add_argument("--max-model-len", type=int, default=0, help="0: the model's recommended")
    ap.add_argument("--min-score", type=float, default=None, help="fail below this score")
    ap.add_argument("--prefetch", action="store_true", help="only download the task's data")
    ap.add_argument("--base-url", default=None, help="score this running server instead")
    args = ap.parse_args(argv)
    if args.prefetch:
        include = make_photos_task(Path(args.out) / "task") if args.task == PHOTOS else None
        prefetch(args.task, include)
        return 0
    more = {"max_model_len": args.max_model_len} if args.max_model_len else {}
    record = run(
        args.model, args.device, args.task, args.limit or None, args.out, args.base_url, **more
    )
    metrics = record["metrics"].get(args.task, {}).items()
    scores = {k: v for k, v in metrics if isinstance(v, float) and "stderr" not in k}
    print(f"{args.task}: {json.dumps(scores)} ({args.out}/accuracy.json)")
    low = args.min_score is not None and min(scores.values(), default=0.0) < args.min_score
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
