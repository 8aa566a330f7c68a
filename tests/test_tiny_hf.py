"""The tiny checkpoint's -hf build: the same weights through vLLM's -hf code path.

vLLM issue #30313 reports an ``-hf`` InternVL checkpoint misbehaving where the original
works. This module runs both builds of the tiny weights through vLLM 0.23 and holds it to
what was measured (vLLM 0.23.0 CPU, transformers 5.5.4, every memorised example):

- The tile plan and the image tokens are the same: ``prompt_token_ids`` were identical
  for all 46 image examples.
- The pixel values are not, by default. For ``-hf`` vLLM uses transformers'
  ``GotOcr2ImageProcessor`` (torchvision backend), whose bicubic resize differs from the
  original's PIL resize by up to 2 of 255 levels (0.035 after normalisation) on 0.2-0.4%
  of the values of every photo it resizes; the 448 x 448 clip frames, not resized, differ
  by float rounding only (2.4e-7). No file in the folder changes that (an
  ``image_processor_type`` of ``GotOcr2ImageProcessorPil`` or ``"use_fast": false`` are
  ignored, ``"backend": "pil"`` raises AttributeError); the engine setting
  ``mm_processor_kwargs={"use_fast": False}`` (PIL backend) makes them bit-identical.
- A video's prompt differs: the -hf processor joins the frames' placeholders with
  ``"\\n"``, vLLM's original InternVL processor with ``""`` (7 tokens more for 8 frames).
- The answers were the same anyway: all 49 gate rows gave the same text and finish reason
  in both builds, with either image backend (the weights shipped on 2026-12-01).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cookbook import engine, models, tiny
from cookbook.tiny import build, hf

#: Photos whose pixels are compared; the clip frame is not resized.
PHOTOS = ("cat", "astronaut", "text", "clip/0")
#: Examples run through both engines: each photo, typed placeholders (a pair), a
#: conversation turn, grounding, OCR, and the clip as a video (at most 4 images each).
EXAMPLES = ("cat-describe", "astronaut-describe", "rocket-colors", "coffee-count",
            "motorcycle-describe", "pair-cat-coffee", "chat-2", "ground-cup", "ocr-page",
            "video-clip")  # fmt: skip
LEVEL = 1 / 255 / 0.224  # one uint8 level after normalisation (the smallest std, ImageNet's)


def test_hf_build_holds_the_same_weights_renamed(tmp_path: Path, monkeypatch) -> None:
    import numpy as np
    from safetensors.numpy import load_file

    monkeypatch.setenv("COOKBOOK_CACHE", str(tmp_path))
    path = tiny.checkpoint(layout="hf")
    assert path.parent == tmp_path / "tiny-hf"
    assert sorted(p.name for p in path.iterdir()) == sorted(hf.FILES)
    assert tiny.checkpoint(layout="hf") == path  # cached
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["InternVLForConditionalGeneration"]
    assert cfg["vision_config"]["model_type"] == "internvl_vision"
    old, new = load_file(build.WEIGHTS / "model.safetensors"), load_file(path / "model.safetensors")
    assert sum(v.size for v in old.values()) == sum(v.size for v in new.values())
    for name, value in old.items():
        parts = [hf.rename(name).replace(".qkv.", f".{p}_proj.") for p in "qkv"]
        got = np.concatenate([new[p] for p in parts]) if ".qkv." in name else new[hf.rename(name)]
        assert (value == got).all(), name
    with pytest.raises(ValueError, match="layout"):
        tiny.checkpoint(layout="HF")


def test_transformers_reads_the_folder_as_its_own_layout() -> None:
    transformers = pytest.importorskip("transformers")
    path = tiny.checkpoint(layout="hf")
    processor = transformers.AutoProcessor.from_pretrained(path)
    assert type(processor).__name__ == "InternVLProcessor"
    tok = processor.tokenizer
    names = (tok.start_image_token, tok.end_image_token, tok.context_image_token, tok.video_token)
    assert names == ("<img>", "</img>", "<IMG_CONTEXT>", "<video>")
    assert len(tok.encode("<video>", add_special_tokens=False)) == 1
    model_cls = transformers.InternVLForConditionalGeneration
    _, info = model_cls.from_pretrained(path, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights


def test_engine_args_tiny_hf() -> None:
    args = engine.engine_args("tiny-hf", "cpu")
    assert args["model"] == str(tiny.checkpoint(layout="hf"))
    assert args["dtype"] == "float32"
    spec = models.resolve("tiny-hf")
    assert spec.hf_format and spec.video and spec.image_placeholder == "<IMG_CONTEXT>"
    assert models.resolve(args["model"]).hf_format  # the folder read back as -hf


def _processor(model: str, **kwargs):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    folder = engine.engine_args(model, "cpu")["model"]
    config = ModelConfig(model=folder, trust_remote_code=True, dtype="float32", **kwargs)
    return MULTIMODAL_REGISTRY.create_processor(config)


@pytest.mark.vllm
def test_pixels_same_tiles_and_how_far_apart() -> None:
    """vLLM's own processors of both builds on the same photos (no engine)."""
    engine.set_device_env("cpu")
    from cookbook.tiny.answers import image

    builds = {
        "original": (_processor("tiny"), "<image>"),
        "hf": (_processor("tiny-hf"), "<IMG_CONTEXT>"),
        "hf-pil": (_processor("tiny-hf", mm_processor_kwargs={"use_fast": False}), "<IMG_CONTEXT>"),
    }
    for name in PHOTOS:
        out = {}
        for key, (proc, placeholder) in builds.items():
            got = proc._call_hf_processor(placeholder, {"images": [image(name)]}, {}, {})
            pixels = got["pixel_values_flat"] if key == "original" else got["pixel_values"]
            out[key] = (got["input_ids"].tolist(), pixels)
        ids, ref = out["original"]
        assert out["hf"][0] == out["hf-pil"][0] == ids, name  # the same tile plan and tokens
        assert out["hf"][1].shape == ref.shape, name
        gap = float((out["hf"][1] - ref).abs().max())
        assert gap <= (1e-6 if name.startswith("clip/") else 2 * LEVEL + 1e-6), (name, gap)
        assert (out["hf-pil"][1] == ref).all(), name  # the PIL backend: bit-identical


@pytest.fixture(scope="module")
def hf_llm():
    """One vLLM engine on the -hf build, with the cookbook's CPU settings."""
    engine.set_device_env("cpu")
    from vllm import LLM

    llm = LLM(**engine.engine_args("tiny-hf", "cpu"))
    yield llm
    llm.llm_engine.engine_core.shutdown()


@pytest.mark.vllm
def test_hf_build_loads_as_interns1(hf_llm) -> None:
    assert hf_llm.apply_model(lambda model: type(model).__name__) == [
        "InternS1ForConditionalGeneration"
    ]


@pytest.mark.vllm
def test_same_image_tokens_and_answers_as_the_original(llm, hf_llm) -> None:
    from vllm import SamplingParams

    original = [e for e in tiny.examples() if e.id in EXAMPLES]
    renamed = hf.examples(original)
    assert len(original) == len(EXAMPLES)
    once = SamplingParams(max_tokens=1, temperature=0)
    before = llm.chat([e.messages for e in original], once, use_tqdm=False)
    after = hf_llm.chat([e.messages for e in renamed], once, use_tqdm=False)
    newline = llm.get_tokenizer().encode("\n", add_special_tokens=False)
    for example, a, b in zip(original, before, after, strict=True):
        a_ids, b_ids = list(a.prompt_token_ids), list(b.prompt_token_ids)
        if example.task != "video":
            assert b_ids == a_ids, example.id
        else:  # "Frame1: ...</img>\nFrame2: ..." in -hf, "...</img>Frame2: ..." in the original
            assert len(b_ids) - len(a_ids) == 7 and len(newline) == 1
            assert [t for t in b_ids if t != newline[0]] == [t for t in a_ids if t != newline[0]]
    rows = tiny.gate(llm, todo=original).rows, tiny.gate(hf_llm, todo=renamed).rows
    assert [r[2:4] for r in rows[1]] == [r[2:4] for r in rows[0]]  # same text, same finish
