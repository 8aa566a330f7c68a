"""The support matrix: which InternVL models, in which format, and what is known about each.

Facts come from each model's card and ``config.json`` (cited in ``sources``) and vLLM's
InternVL code; stop tokens are read from each tokenizer (`cookbook.prompts`). Upstream, the
vllm-ascend tutorial these settings come from (PR #3664) was never merged, its models table
marks InternVL2/2.5/3 as not supported (#2064), and its CI tests only InternVL3.5-8B-hf.
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

    ``hf_format``: transformers' ``-hf`` layout (``InternVLForConditionalGeneration``,
    placeholder ``<IMG_CONTEXT>``), else OpenGVLab's (remote code, ``<image>``). ``video``:
    vLLM takes video for it (Qwen LLMs). ``params_b`` (billions), ``layers``, ``kv_heads``,
    ``head_dim``: for memory estimates. ``upstream``: what vllm-ascend says about it.
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


# fmt: off
_INTERNLM: dict[str, Any] = dict(llm="internlm2_5-7b-chat", llm_family="internlm2", layers=32,
                                 kv_heads=8)
_QWEN25: dict[str, Any] = dict(llm="Qwen2.5-7B", llm_family="qwen2", video=True, layers=28,
                               kv_heads=4)
_QWEN3: dict[str, Any] = dict(llm="Qwen3-8B", llm_family="qwen3", video=True, layers=36, kv_heads=8)
_TINY: dict[str, Any] = dict(llm="2-layer Qwen2 (trained here)", llm_family="qwen2", video=True,
                             dtype="float32")
# fmt: on


def _row(key: str, hub_id: str, params_b: float, llm: dict, *sources: str, **kw: Any) -> ModelSpec:
    """Return a hub model's row; its first source is its model card and config.json."""
    card = f"https://huggingface.co/{hub_id} (model card, config.json)"
    return ModelSpec(key, hub_id, params_b=params_b, **llm, **kw, sources=(card, *sources))


# fmt: off
SUPPORT_MATRIX: dict[str, ModelSpec] = {spec.key: spec for spec in (
    _row("internvl2-8b", "OpenGVLab/InternVL2-8B", 8.08, _INTERNLM),
    _row("internvl2.5-8b", "OpenGVLab/InternVL2_5-8B", 8.08, _INTERNLM),
    _row("internvl3-8b", "OpenGVLab/InternVL3-8B", 7.94, _QWEN25),
    _row("internvl3-8b-hf", "OpenGVLab/InternVL3-8B-hf", 7.94, _QWEN25, "vLLM issue #30313",
         hf_format=True),
    _row("internvl3.5-8b", "OpenGVLab/InternVL3_5-8B", 8.53, _QWEN3,
         "vLLM recipe: docs.vllm.ai/projects/recipes (InternVL3.5)", upstream=_UPSTREAM_35),
    _row("internvl3.5-8b-hf", "OpenGVLab/InternVL3_5-8B-HF", 8.53, _QWEN3,
         "vllm-ascend tests/e2e/models/configs/InternVL3_5-8B-hf.yaml", hf_format=True,
         upstream="vllm-ascend: tested in its NPU CI (mmmu_val accuracy)"),
    ModelSpec("tiny", "", **_TINY, upstream="built by this cookbook for CPU runs; not a real model",
              sources=("cookbook/tiny: memorised answers about the sample photos",)),
    ModelSpec("tiny-hf", "", **_TINY, hf_format=True,
              upstream="built by this cookbook for CPU runs: the tiny weights in the -hf layout",
              sources=("cookbook/tiny/hf.py: the same weights, renamed as transformers does",)),
)}
# fmt: on


def resolve(model: str) -> ModelSpec:
    """Return the row for a key, a hub id (``OpenGVLab/InternVL3_5-8B``) or a checkpoint folder.

    Keys are hub names lower-cased, ``2_5`` written ``2.5``. ``tiny``/``tiny-hf`` build the
    checkpoint on first use (``hub_id`` is its folder); a folder's row comes from its
    ``config.json``; another ``org/name`` gets the recommended settings, unverified.

    Raises:
        ValueError: Not a known name nor a folder with ``config.json`` (lists the keys).
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
