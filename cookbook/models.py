"""The support matrix: which InternVL models, in which format, and what is known about each.

One row per model. Facts come from each model's card and ``config.json`` on the Hugging
Face hub (cited in ``sources``) and from vLLM's InternVL code; stop tokens are not listed
here because they are read from each model's tokenizer at run time
(`cookbook.prompts.stop_token_ids`).

What upstream says, plainly: the vllm-ascend tutorial these notebooks started from
("Single NPU (InternVL Series)", vllm-ascend PR #3664) was never merged; vllm-ascend's
supported-models table marks InternVL2/2.5/3 as not supported (issue #2064) and its CI
tests only InternVL3.5-8B-hf on NPUs. The recommended settings below
(``max_model_len=8192``, bfloat16, at most 4 images a prompt) are that tutorial's; this
cookbook's CPU runs check the code paths, and its NPU workflow is how to check a model on
a card.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

#: Recommended context length (tokens): prompt, image tokens and answer together.
MAX_MODEL_LEN = 8192
#: Recommended images a prompt (``limit_mm_per_prompt={"image": 4}``).
LIMIT_IMAGES = 4
#: ``max_dynamic_patch`` in the config.json of every model below: at most 12 tiles an
#: image, plus a thumbnail when there are several.
MAX_DYNAMIC_PATCH = 12

_UPSTREAM_OLD = "vllm-ascend: listed as not supported (#2064); not in its CI"
_UPSTREAM_35 = "vllm-ascend: not in its CI; its -HF twin is"


@dataclass(frozen=True)
class ModelSpec:
    """One row of the support matrix.

    Attributes:
        key: Short name used by the notebooks, e.g. ``"internvl3-8b"``.
        hub_id: Hugging Face / ModelScope id (the same on both), or a local directory.
        llm: The language model inside, as the model card names it.
        llm_family: ``"internlm2"``, ``"qwen2"`` or ``"qwen3"``: decides the tokenizer.
        hf_format: True for the transformers-native ``-hf`` layout
            (``InternVLForConditionalGeneration``, placeholder ``<IMG_CONTEXT>``); False for
            OpenGVLab's original layout (``InternVLChatModel``, remote code, ``<image>``).
        video: Whether vLLM takes ``<video>`` input for it (Qwen-based LLMs only).
        dtype: Recommended ``dtype``.
        params_b: Parameters in billions (for memory estimates).
        layers, kv_heads, head_dim: The LLM's KV-cache shape (for memory estimates).
        upstream: What upstream vllm-ascend says about the model.
        sources: Where the facts come from.
    """

    key: str
    hub_id: str
    llm: str
    llm_family: str
    hf_format: bool = False
    video: bool = False
    dtype: str = "bfloat16"
    params_b: float = 0.0
    layers: int = 0
    kv_heads: int = 0
    head_dim: int = 128
    upstream: str = _UPSTREAM_OLD
    sources: tuple[str, ...] = ()

    @property
    def image_placeholder(self) -> str:
        """Return the text vLLM replaces by an image: ``<image>`` or ``<IMG_CONTEXT>`` (-hf)."""
        return "<IMG_CONTEXT>" if self.hf_format else "<image>"

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Return the KV-cache bytes of a token: 2 (K, V) x layers x KV heads x head_dim x bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def _card(hub_id: str) -> str:
    return f"https://huggingface.co/{hub_id} (model card, config.json)"


_INTERNLM: dict[str, Any] = dict(
    llm="internlm2_5-7b-chat", llm_family="internlm2", layers=32, kv_heads=8
)
_QWEN25: dict[str, Any] = dict(
    llm="Qwen2.5-7B", llm_family="qwen2", video=True, layers=28, kv_heads=4
)
_QWEN3: dict[str, Any] = dict(llm="Qwen3-8B", llm_family="qwen3", video=True, layers=36, kv_heads=8)

SUPPORT_MATRIX: dict[str, ModelSpec] = {
    spec.key: spec
    for spec in (
        ModelSpec(
            "internvl2-8b",
            "OpenGVLab/InternVL2-8B",
            params_b=8.08,
            **_INTERNLM,
            sources=(_card("OpenGVLab/InternVL2-8B"),),
        ),
        ModelSpec(
            "internvl2.5-8b",
            "OpenGVLab/InternVL2_5-8B",
            params_b=8.08,
            **_INTERNLM,
            sources=(_card("OpenGVLab/InternVL2_5-8B"),),
        ),
        ModelSpec(
            "internvl3-8b",
            "OpenGVLab/InternVL3-8B",
            params_b=7.94,
            **_QWEN25,
            sources=(_card("OpenGVLab/InternVL3-8B"),),
        ),
        ModelSpec(
            "internvl3-8b-hf",
            "OpenGVLab/InternVL3-8B-hf",
            params_b=7.94,
            hf_format=True,
            **_QWEN25,
            sources=(_card("OpenGVLab/InternVL3-8B-hf"), "vLLM issue #30313"),
        ),
        ModelSpec(
            "internvl3.5-8b",
            "OpenGVLab/InternVL3_5-8B",
            params_b=8.53,
            **_QWEN3,
            upstream=_UPSTREAM_35,
            sources=(
                _card("OpenGVLab/InternVL3_5-8B"),
                "vLLM recipe: docs.vllm.ai/projects/recipes (InternVL3.5)",
            ),
        ),
        ModelSpec(
            "internvl3.5-8b-hf",
            "OpenGVLab/InternVL3_5-8B-HF",
            params_b=8.53,
            hf_format=True,
            **_QWEN3,
            upstream="vllm-ascend: tested in its NPU CI (mmmu_val accuracy)",
            sources=(
                _card("OpenGVLab/InternVL3_5-8B-HF"),
                "vllm-ascend tests/e2e/models/configs/InternVL3_5-8B-hf.yaml",
            ),
        ),
        ModelSpec(
            "tiny",
            "",
            llm="2-layer Qwen2 (trained here)",
            llm_family="qwen2",
            video=True,
            dtype="float32",
            upstream="built by this cookbook for CPU runs; not a real model",
            sources=("cookbook/tiny: memorised answers about the sample photos",),
        ),
        ModelSpec(
            "tiny-hf",
            "",
            llm="2-layer Qwen2 (trained here)",
            llm_family="qwen2",
            hf_format=True,
            video=True,
            dtype="float32",
            upstream="built by this cookbook for CPU runs: the tiny weights in the -hf layout",
            sources=("cookbook/tiny/hf.py: the same weights, renamed as transformers does",),
        ),
    )
}


def resolve(model: str) -> ModelSpec:
    """Return the support-matrix row for a key, a hub id, or a local checkpoint directory.

    ``"InternVL3-8B"``, ``"OpenGVLab/InternVL3-8B"`` and ``"internvl3-8b"`` name the same
    row: a key is the hub name lower-cased, ``2_5`` written ``2.5``. For ``"tiny"`` and
    ``"tiny-hf"`` (its ``-hf`` build) the checkpoint is built on first use
    (`cookbook.tiny.checkpoint`, about a second) and ``hub_id`` is its folder. A
    directory's row is read from its ``config.json``; another ``org/name`` hub id gets the
    recommended settings, unverified.

    Raises:
        ValueError: Neither a known name nor a directory with a ``config.json``; the
            message lists the known keys.
    """
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return _from_config(path.resolve(), json.loads((path / "config.json").read_text()))
    key = re.sub(r"(?<=\d)_(?=\d)", ".", model.strip().lower().split("/")[-1])
    if key not in SUPPORT_MATRIX and re.fullmatch(r"[\w.-]+/[\w.-]+", model.strip()):
        return ModelSpec(
            key,
            model.strip(),
            llm="unknown",
            llm_family="unknown",
            upstream="not in the support matrix: recommended settings, unverified",
        )
    if key not in SUPPORT_MATRIX:
        raise ValueError(
            f"unknown model {model!r}: use a key of the support matrix {sorted(SUPPORT_MATRIX)}, "
            f"its hub id (e.g. 'OpenGVLab/InternVL3-8B'), or a checkpoint directory"
        )
    if key in ("tiny", "tiny-hf"):
        from cookbook import tiny

        layout = "hf" if key == "tiny-hf" else "original"
        return replace(SUPPORT_MATRIX[key], hub_id=str(tiny.checkpoint(layout=layout)))
    return SUPPORT_MATRIX[key]


def _from_config(path: Path, config: dict) -> ModelSpec:
    """Return a row for a local InternVL checkpoint, facts read from its config.json."""
    text = config.get("llm_config") or config.get("text_config") or {}
    kind = str(text.get("model_type", "")).lower()
    family = next((f for f in ("internlm2", "qwen3", "qwen2") if kind.startswith(f)), kind)
    heads = int(text.get("num_attention_heads", 1))
    return ModelSpec(
        key=path.name.lower(),
        hub_id=str(path),
        llm=str((text.get("architectures") or [kind])[0]),
        llm_family=family,
        hf_format="InternVLForConditionalGeneration" in config.get("architectures", []),
        video=family in ("qwen2", "qwen3"),
        dtype=str(config.get("torch_dtype", "bfloat16")),
        layers=int(text.get("num_hidden_layers", 0)),
        kv_heads=int(text.get("num_key_value_heads", heads)),
        head_dim=int(text.get("head_dim") or int(text.get("hidden_size", 0)) // heads),
        upstream="a local checkpoint: not in the support matrix",
        sources=(str(path / "config.json"),),
    )
