"""The accuracy step (cookbook/accuracy.py): lm-eval's command line, its local task, a real run.

The command is parsed by lm-eval's own parser and its model arguments build lm-eval's own
client, so a flag lm-eval does not know fails here. The local dataset is loaded by
lm-eval. The last test serves the tiny checkpoint with vLLM on the CPU and scores it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cookbook import accuracy, models

REPO = Path(__file__).resolve().parents[1]


def parse(cmd: list[str]):
    from lm_eval._cli.harness import HarnessCLI

    assert cmd[:3] == [sys.executable, "-m", "lm_eval"]
    return HarnessCLI()._parser.parse_args(cmd[3:])


def test_the_command_parses_with_lm_evals_own_parser(tmp_path):
    cmd = accuracy.lm_eval_command(
        "http://127.0.0.1:8000/v1", "OpenGVLab/InternVL3-8B", "mmmu_val", 5, tmp_path
    )
    args = parse(cmd)
    assert args.command == "run"
    assert args.model == "local-chat-completions"
    assert args.tasks == ["mmmu_val"]
    assert float(args.limit) == 5
    assert args.apply_chat_template  # the chat client needs messages, not a flat prompt
    assert args.output_path == str(tmp_path) and args.log_samples
    assert args.include_path is None


def test_the_model_args_build_lm_evals_chat_client():
    from lm_eval.models.openai_completions import LocalChatCompletion
    from lm_eval.utils import simple_parse_args_string

    cmd = accuracy.lm_eval_command(
        "http://127.0.0.1:8000/v1", "OpenGVLab/InternVL3-8B", "mmmu_val", None, "out"
    )
    assert "--limit" not in cmd
    model_args = simple_parse_args_string(cmd[cmd.index("--model_args") + 1])
    client = LocalChatCompletion(**model_args)
    assert client.base_url == "http://127.0.0.1:8000/v1/chat/completions"
    assert client.model == "OpenGVLab/InternVL3-8B"
    assert client.MULTIMODAL  # lm-eval sends the images of multimodal tasks
    # MMMU questions have up to 7 images; the server takes models.LIMIT_IMAGES.
    assert client.max_images == models.LIMIT_IMAGES


@pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")
def test_the_photos_task_is_the_tiny_models_memorised_answers(tmp_path):
    from lm_eval.tasks import TaskManager, get_task_dict

    folder = accuracy.make_photos_task(tmp_path)
    tasks = get_task_dict(
        [accuracy.PHOTOS], TaskManager(include_path=str(folder), include_defaults=False)
    )
    task = tasks[accuracy.PHOTOS]
    docs = list(task.eval_docs)
    memorised = {
        (e["question"], e["answer"]) for e in tomllib.loads(accuracy.ANSWERS.read_text())["example"]
    }
    assert len(docs) == 5
    for doc in docs:
        assert (task.doc_to_text(doc), task.doc_to_target(doc)) in memorised
        (image,) = task.doc_to_image(doc)
        assert image.size[0] > 300  # a sample photo, decoded by the datasets library
    assert task.config.generation_kwargs["until"] == []  # the model's own stop tokens end it


def test_prefetch_reads_the_local_task_offline(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "cookbook.accuracy",
        "--prefetch",
        "--task",
        accuracy.PHOTOS,
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "task" / "data" / "metadata.jsonl").is_file()


@pytest.mark.server
@pytest.mark.vllm
def test_lm_eval_scores_the_tiny_checkpoint_served_by_vllm(tmp_path, served):
    """The whole step on the CPU: vLLM's server (the tests' shared one), lm-eval's client."""
    run = served()
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLLM_API_KEY": run.key}
    cmd = [sys.executable, "-m", "cookbook.accuracy", "--model", "tiny", "--base-url", run.url]
    cmd += ["--task", accuracy.PHOTOS, "--limit", "2", "--out", str(tmp_path), "--min-score", "1.0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log = (tmp_path / "lm_eval.log").read_text() if (tmp_path / "lm_eval.log").exists() else ""
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + log[-2000:]
    record = json.loads((tmp_path / "accuracy.json").read_text())
    # The tiny checkpoint answers its memorised questions exactly: 1.0 means each request
    # reached vLLM with its photo and the model's chat template, and came back whole.
    assert record["metrics"][accuracy.PHOTOS]["exact_match,none"] == 1.0
    assert record["command"][:3] == ["-m", "lm_eval", "run"]
    samples = list((tmp_path / "lm_eval").rglob(f"samples_{accuracy.PHOTOS}_*.jsonl"))
    assert len(samples) == 1 and len(samples[0].read_text().splitlines()) == 2
