"""The tiny InternVL checkpoint: shipped files, cache, data, training, and the gate in vLLM."""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before torch or vllm load
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tomllib  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from cookbook import tiny  # noqa: E402
from cookbook.tiny import build, config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    return done.stdout.strip()


def test_import_and_build_load_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys, cookbook.tiny as t; p = t.checkpoint(); "
        "print(p); print([m for m in ('torch', 'vllm', 'transformers') if m in sys.modules])"
    )
    path, loaded = _run(code, COOKBOOK_CACHE=str(tmp_path)).splitlines()
    assert loaded == "[]"
    assert Path(path).parent == tmp_path / "tiny"


def test_checkpoint_has_the_files_and_is_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("COOKBOOK_CACHE", str(tmp_path))
    path = tiny.checkpoint()
    assert sorted(p.name for p in path.iterdir()) == sorted(build.FILES)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["InternVLChatModel"]
    assert cfg["llm_config"]["vocab_size"] == config.VOCAB_SIZE
    assert "knows nothing else" in (path / "README.md").read_text()
    template = json.loads((path / "tokenizer_config.json").read_text())["chat_template"]
    assert "<|im_start|>" in template
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert tiny.checkpoint() == path  # second call: the cached folder, not rebuilt
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "tiny").iterdir() if p.name.startswith(".")]


def test_config_loads_through_transformers(tmp_path: Path, monkeypatch) -> None:
    from transformers import AutoConfig, AutoTokenizer

    monkeypatch.setenv("COOKBOOK_CACHE", str(tmp_path))
    path = tiny.checkpoint()
    cfg = AutoConfig.from_pretrained(path, trust_remote_code=True)
    assert cfg.llm_config.model_type == "qwen2"
    assert cfg.vision_config.hidden_size == config.model_config()["vision_config"]["hidden_size"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == config.ids()["<|im_end|>"]
    assert len(tokenizer) == config.VOCAB_SIZE


def test_random_checkpoint_differs_from_the_trained_one(tmp_path: Path, monkeypatch) -> None:
    from safetensors.numpy import load_file

    monkeypatch.setenv("COOKBOOK_CACHE", str(tmp_path))
    trained, random = tiny.checkpoint(), tiny.checkpoint(trained=False)
    assert trained != random
    a, b = load_file(trained / "model.safetensors"), load_file(random / "model.safetensors")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert all(not (a[k] == b[k]).all() for k in a if k.endswith("proj.weight"))
    assert (random / "config.json").read_text() == (trained / "config.json").read_text()
    assert "random" in (random / "README.md").read_text()


def test_examples_cover_every_task_and_agree_with_the_sample_boxes() -> None:
    samples = tomllib.loads((REPO / "cookbook" / "samples.toml").read_text())
    examples = tiny.examples()
    assert len({e.id for e in examples}) == len(examples)
    assert {e.task for e in examples} >= {
        "describe", "count", "colors", "pair", "grounding", "ocr", "conversation", "json",
        "video",
    }  # fmt: skip
    grounded = set()
    for e in examples:
        if e.task != "grounding":
            continue
        image = e.messages[-1]["content"][0]["image_pil"]
        name = e.id.removeprefix("ground-")
        photo = next(s for s in samples.values() for o in s.get("objects", [])
                     if o["label"] == name)  # fmt: skip
        (x1, y1, x2, y2) = next(o["box"] for o in photo["objects"] if o["label"] == name)
        w, h = image.size
        box = [
            round(x1 / w * 1000),
            round(y1 / h * 1000),
            round(x2 / w * 1000),
            round(y2 / h * 1000),
        ]
        assert e.answer == f"<ref>the {name}</ref><box>[{box}]</box>"
        grounded.add(id(photo))
    # Every photo with a hand-checked box is grounded in at least one example.
    assert grounded == {id(s) for s in samples.values() if s.get("objects")}
    last = next(e for e in examples if e.id == "chat-4")
    assert [m["role"] for m in last.messages] == ["user", "assistant"] * 3 + ["user"]
    for e in examples:
        if e.task == "json":
            assert json.dumps(json.loads(e.answer)) == e.answer


def test_training_is_deterministic(tmp_path: Path) -> None:
    a = tiny.train(tmp_path / "a", steps=2, seed=0)
    b = tiny.train(tmp_path / "b", steps=2, seed=0)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "model.safetensors").read_bytes() != (
        build.WEIGHTS / "model.safetensors"
    ).read_bytes()


# --------------------------------------------------------------------------- through vLLM


@pytest.fixture(scope="module")
def llm():
    from cookbook.tiny.gating import open_engine

    engine = open_engine(tiny.checkpoint())
    yield engine
    del engine


@pytest.mark.vllm
def test_gate_passes_on_the_shipped_weights(llm) -> None:
    report = tiny.gate(llm)
    print(report)
    assert report.passed, str(report)
    assert len(report.rows) == len(tiny.examples()) + 2  # the JSON ones again, with a schema


@pytest.mark.vllm
def test_training_prompts_are_the_prompts_vllm_renders(llm) -> None:
    from tokenizers import Tokenizer
    from vllm import SamplingParams

    from cookbook.tiny.training import encode

    tokenizer = Tokenizer.from_file(str(build.WEIGHTS / "tokenizer.json"))
    chosen = {e.task: e for e in tiny.examples()}.values()  # one example a task
    outs = llm.chat([e.messages for e in chosen], SamplingParams(max_tokens=1), use_tqdm=False)
    for example, out in zip(chosen, outs, strict=True):
        encoded = encode(example, tokenizer)
        assert list(out.prompt_token_ids) == encoded["ids"][: encoded["answer_start"]], example.id


@pytest.mark.vllm
def test_grounding_markup_is_special_tokens(llm) -> None:
    from vllm import SamplingParams

    example = next(e for e in tiny.examples() if e.id == "ground-cat")
    params = [
        SamplingParams(temperature=0, max_tokens=40, skip_special_tokens=s) for s in (True, False)
    ]
    hidden, shown = (
        llm.chat(example.messages, p, use_tqdm=False)[0].outputs[0].text for p in params
    )
    assert shown == example.answer
    assert hidden == "the cat[[0, 0, 887, 1000]]"
