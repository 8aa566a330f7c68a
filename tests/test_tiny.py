"""The tiny random InternVL checkpoint: deterministic, cached, loadable, and run by vLLM."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cookbook import tiny

REPO = Path(__file__).resolve().parents[1]

# Tokens one 448 px tile becomes: (448 // 14) ** 2 * 0.5 ** 2 (vLLM InternVLProcessingInfo).
TOKENS_PER_TILE = 256


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


# --------------------------------------------------------------------------- build + cache


def test_same_seed_gives_identical_bytes_in_every_file(tmp_path: Path) -> None:
    a = tiny.build_tiny_checkpoint(tmp_path / "a", seed=0)
    b = tiny.build_tiny_checkpoint(tmp_path / "b", seed=0)
    digests_a, digests_b = _digests(a), _digests(b)
    assert sorted(digests_a) == sorted(tiny.checkpoint_files())
    assert digests_a == digests_b


def test_build_in_a_fresh_process_gives_the_same_bytes(tmp_path: Path) -> None:
    here = tiny.build_tiny_checkpoint(tmp_path / "here", seed=0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "cookbook.tiny", "--out", str(tmp_path / "there")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout.strip() == str(tmp_path / "there")
    assert _digests(here) == _digests(tmp_path / "there")


def test_other_seed_changes_the_weights_only(tmp_path: Path) -> None:
    zero = _digests(tiny.build_tiny_checkpoint(tmp_path / "s0", seed=0))
    one = _digests(tiny.build_tiny_checkpoint(tmp_path / "s1", seed=1))
    assert zero["model.safetensors"] != one["model.safetensors"]
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        assert zero[name] == one[name]


def test_weights_have_the_names_and_shapes_vllm_loads(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    path = tiny.build_tiny_checkpoint(tmp_path / "w")
    tensors = load_file(str(path / "model.safetensors"))
    expected = tiny._weight_shapes(tiny.TINY_SPEC)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == expected
    assert all(str(v.dtype) == "float32" for v in tensors.values())
    assert (tensors["language_model.model.norm.weight"] == 1).all()
    assert (tensors["vision_model.encoder.layers.0.norm1.bias"] == 0).all()
    embed = tensors["language_model.model.embed_tokens.weight"]
    assert 0.015 < float(embed.std()) < 0.025  # normal(0, 0.02)
    assert embed.shape[0] == tiny.TINY_SPEC.vocab_size
    assert len([k for k in tensors if k.startswith("vision_model.encoder.layers.")]) == 14 * 2


def test_build_refuses_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        tiny.build_tiny_checkpoint(tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    with pytest.raises(TypeError, match="seed must be an int"):
        tiny.build_tiny_checkpoint(tmp_path / "x", seed="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be >= 0"):
        tiny.build_tiny_checkpoint(tmp_path / "x", seed=-1)
    assert not (tmp_path / "x").exists()


def test_ensure_builds_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tiny.ensure_tiny_checkpoint(cache_dir=tmp_path)
    assert first.parent == tmp_path / "tiny"
    assert first.name.startswith(f"v{tiny.BUILDER_VERSION}-")
    before = _digests(first)
    inode = first.stat().st_ino

    def no_rebuild(*args: object, **kwargs: object) -> Path:
        raise AssertionError("ensure_tiny_checkpoint rebuilt a cached checkpoint")

    monkeypatch.setattr(tiny, "build_tiny_checkpoint", no_rebuild)
    started = time.perf_counter()
    second = tiny.ensure_tiny_checkpoint(cache_dir=tmp_path)
    assert time.perf_counter() - started < 1.0
    assert second == first
    assert second.stat().st_ino == inode
    assert _digests(second) == before
    # Only the finished checkpoint is left in the cache: no temporary folders.
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == [first.name]


def test_ensure_reads_cookbook_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COOKBOOK_CACHE", str(tmp_path / "root"))
    assert tiny.default_cache_dir() == tmp_path / "root"
    path = tiny.ensure_tiny_checkpoint()
    assert path.parent == tmp_path / "root" / "tiny"
    assert (path / "config.json").is_file()


def test_failed_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = tiny.build_tiny_checkpoint

    def half_build(out_dir: Path, seed: int = 0) -> Path:
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(tiny, "build_tiny_checkpoint", half_build)
    with pytest.raises(OSError, match="disk full"):
        tiny.ensure_tiny_checkpoint(cache_dir=tmp_path)
    assert list((tmp_path / "tiny").iterdir()) == []

    monkeypatch.setattr(tiny, "build_tiny_checkpoint", real_build)
    path = tiny.ensure_tiny_checkpoint(cache_dir=tmp_path)
    assert sorted(p.name for p in path.iterdir()) == sorted(tiny.checkpoint_files())


def test_ensure_keeps_the_winner_of_a_concurrent_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = tiny.build_tiny_checkpoint
    target = tmp_path / "tiny" / tiny._cache_key(tiny.TINY_SPEC, 0)

    def build_while_another_process_finishes(out_dir: Path, seed: int = 0) -> Path:
        real_build(target, seed=seed)  # the other process renames its build into place first
        (target / "winner.txt").write_text("other process")
        return real_build(out_dir, seed=seed)

    monkeypatch.setattr(tiny, "build_tiny_checkpoint", build_while_another_process_finishes)
    path = tiny.ensure_tiny_checkpoint(cache_dir=tmp_path)
    assert path == target
    assert (path / "winner.txt").read_text() == "other process"
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == [target.name]


def test_ensure_replaces_an_incomplete_folder(tmp_path: Path) -> None:
    target = tiny.ensure_tiny_checkpoint(cache_dir=tmp_path)
    (target / "model.safetensors").unlink()
    again = tiny.ensure_tiny_checkpoint(cache_dir=tmp_path)
    assert again == target
    assert (again / "model.safetensors").is_file()


def test_module_imports_without_heavy_packages() -> None:
    code = (
        "import sys, cookbook.tiny\n"
        "heavy = {'torch', 'vllm', 'transformers', 'numpy', 'tokenizers', 'safetensors'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_spec_matches_the_real_models_tiling() -> None:
    spec = tiny.TINY_SPEC
    assert spec.tokens_per_tile == TOKENS_PER_TILE
    assert spec.llm_hidden_size // spec.llm_num_heads == 64
    assert spec.vision_hidden_size // spec.vision_num_heads == 64
    assert spec.vocab_size % 64 == 0


# --------------------------------------------------------------------------- transformers


def test_transformers_loads_the_config(tiny_checkpoint: Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    assert type(config).__name__ == "InternVLChatConfig"
    assert config.architectures == ["InternVLChatModel"]
    assert config.model_type == "internvl_chat"
    assert (config.force_image_size, config.downsample_ratio, config.ps_version) == (448, 0.5, "v2")
    assert (config.min_dynamic_patch, config.max_dynamic_patch) == (1, 12)
    assert config.dynamic_image_size is True and config.use_thumbnail is True
    assert config.select_layer == -1
    assert config.template == "internvl2_5"
    vision = config.vision_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size) == (448, 14, 64)
    assert (vision.qkv_bias, vision.qk_normalization, vision.norm_type) == (
        True,
        False,
        "layer_norm",
    )
    llm = config.llm_config
    assert type(llm).__name__ == "Qwen2Config"
    assert llm.architectures == ["Qwen2ForCausalLM"]
    assert (llm.hidden_size, llm.num_hidden_layers, llm.num_attention_heads) == (256, 2, 4)
    assert llm.num_key_value_heads == 2
    assert llm.vocab_size == 384
    # The config round-trips through its own dict (vLLM serialises configs).
    again = type(config)(**config.to_dict())
    assert again.llm_config.hidden_size == 256
    assert again.vision_config.hidden_size == 64


def test_tokenizer_special_tokens_are_single_ids(tiny_checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert len(tok) == config["llm_config"]["vocab_size"] == 384
    ids = {t: tok.convert_tokens_to_ids(t) for t in tiny.SPECIAL_TOKENS}
    # Special tokens follow the BPE vocabulary in order, as in Qwen2.5.
    assert list(ids.values()) == list(range(384 - len(tiny.SPECIAL_TOKENS), 384))
    for token, token_id in ids.items():
        assert tok(token, add_special_tokens=False)["input_ids"] == [token_id], token
    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token == "<|endoftext|>"
    assert tok.bos_token is None
    text = "Image-1: <image>\nWhat is in the picture? 这是一张图片。"
    assert tok.decode(tok(text)["input_ids"]) == text
    marked = tok("<img><IMG_CONTEXT><IMG_CONTEXT></img>", add_special_tokens=False)["input_ids"]
    assert marked == [ids["<img>"], ids["<IMG_CONTEXT>"], ids["<IMG_CONTEXT>"], ids["</img>"]]
    generation = json.loads((tiny_checkpoint / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [ids["<|im_end|>"], ids["<|endoftext|>"]]


def test_chat_template_produces_chatml(tiny_checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    user = [{"role": "user", "content": "<image>\nDescribe the image."}]
    prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert prompt == (
        f"<|im_start|>system\n{tiny.DEFAULT_SYSTEM_MESSAGE}<|im_end|>\n"
        "<|im_start|>user\n<image>\nDescribe the image.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *user]
    prompt = tok.apply_chat_template(with_system, tokenize=False, add_generation_prompt=False)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<image>\nDescribe the image.<|im_end|>\n"
    )


# --------------------------------------------------------------------------- vLLM (CPU)

# The engine arguments that run the tiny checkpoint on the CPU backend.
ENGINE_KWARGS = {
    "trust_remote_code": True,
    "max_model_len": 4096,
    "limit_mm_per_prompt": {"image": 2},
    "enforce_eager": True,
    "dtype": "float32",
}


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        mp.setenv("VLLM_LOGGING_LEVEL", "WARNING")
        from vllm import LLM

        llm = LLM(model=str(tiny_checkpoint), **ENGINE_KWARGS)
        try:
            yield llm
        finally:
            llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()


def _image(width: int, height: int):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3))
    return Image.fromarray(pixels.astype("uint8"))


def _generate(llm, question: str, images: list):
    from vllm import SamplingParams

    tok = llm.get_tokenizer()
    messages = [{"role": "user", "content": question}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    request = {"prompt": prompt, "multi_modal_data": {"image": images}}
    params = SamplingParams(max_tokens=4, ignore_eos=True, temperature=0.0)
    (output,) = llm.generate([request], params, use_tqdm=False)
    # The same prompt with each image reduced to its <img></img> markers: text tokens only.
    text_ids = tok(prompt.replace("<image>", "<img></img>"))["input_ids"]
    return output, tok, text_ids


@pytest.mark.vllm
def test_vllm_resolves_internvl_chat_model(engine) -> None:
    assert engine.llm_engine.model_config.architecture == "InternVLChatModel"
    assert engine.llm_engine.model_config.max_model_len == 4096


@pytest.mark.vllm
@pytest.mark.parametrize(
    ("size", "tiles"),
    [
        # 4:3 matches the 4x3 grid exactly (12 tiles <= max_dynamic_patch 12) + thumbnail.
        ((800, 600), 13),
        # 3.6:1 is closest to 4x1 (7x2 would be 14 tiles, over the limit) + thumbnail.
        ((1600, 448), 5),
        # 1:3 is the 1x3 grid + thumbnail.
        ((448, 1344), 4),
        # A square image is one tile, and one tile gets no thumbnail.
        ((512, 512), 1),
    ],
)
def test_vllm_prompt_tokens_follow_internvl_tiling(engine, size, tiles) -> None:
    output, tok, text_ids = _generate(engine, "<image>\nDescribe the image.", [_image(*size)])
    ids = list(output.prompt_token_ids)
    assert ids.count(tok.convert_tokens_to_ids("<IMG_CONTEXT>")) == tiles * TOKENS_PER_TILE
    assert ids.count(tok.convert_tokens_to_ids("<img>")) == 1
    assert ids.count(tok.convert_tokens_to_ids("</img>")) == 1
    assert len(ids) == len(text_ids) + tiles * TOKENS_PER_TILE
    completion = output.outputs[0]
    assert len(completion.token_ids) == 4
    assert completion.finish_reason == "length"


@pytest.mark.vllm
def test_vllm_two_images_in_one_prompt(engine) -> None:
    question = "Image-1: <image>\nImage-2: <image>\nWhat differs?"
    output, tok, text_ids = _generate(engine, question, [_image(800, 600), _image(512, 512)])
    ids = list(output.prompt_token_ids)
    assert ids.count(tok.convert_tokens_to_ids("<img>")) == 2
    assert ids.count(tok.convert_tokens_to_ids("<IMG_CONTEXT>")) == (13 + 1) * TOKENS_PER_TILE
    assert len(ids) == len(text_ids) + (13 + 1) * TOKENS_PER_TILE
    assert len(output.outputs[0].token_ids) == 4
