"""Build the tiny random-weight InternVL checkpoint that the CPU path runs through vLLM.

The checkpoint has the layout of the published OpenGVLab InternVL3 checkpoints: a
``config.json`` with ``architectures: ["InternVLChatModel"]`` and ``model_type:
"internvl_chat"``, the config class as remote code (``configuration_internvl_chat.py``,
loaded with ``trust_remote_code=True``), an InternViT vision encoder, a two-layer MLP
projector (``mlp1``) and a Qwen2 language model, with weights in ``model.safetensors``
under the names vLLM's loader expects. Its tokenizer is a byte-level BPE trained here on a
small fixed corpus, with the special tokens of InternVL3 (``<|im_start|>``, ``<|im_end|>``,
``<img>``, ``</img>``, ``<IMG_CONTEXT>``, ...) and a ChatML chat template.

vLLM therefore runs its real InternVL code on it: dynamic tiling into 448 px tiles (up to
``max_dynamic_patch`` plus a thumbnail), 256 placeholder tokens a tile, the vision encoder,
pixel shuffle and the language model. Only the weights are random, so the generated text is
noise: check structure and token counts, never the text.

Build it once and reuse it::

    from cookbook.tiny import ensure_tiny_checkpoint
    path = ensure_tiny_checkpoint()   # cached; built on the first call (a few seconds)

or from a shell: ``python -m cookbook.tiny`` prints the path.

Building needs ``numpy``, ``safetensors`` and ``tokenizers`` (all installed with vLLM or
transformers); it needs neither torch nor transformers.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np

__all__ = [
    "BUILDER_VERSION",
    "CHAT_TEMPLATE",
    "DEFAULT_SYSTEM_MESSAGE",
    "SPECIAL_TOKENS",
    "TINY_SPEC",
    "TinySpec",
    "build_tiny_checkpoint",
    "checkpoint_files",
    "default_cache_dir",
    "ensure_tiny_checkpoint",
]

#: Bump when the builder's output changes in a way the source hash would not show.
BUILDER_VERSION = "1"

_REMOTE_CODE_DIR = Path(__file__).resolve().parent / "tiny_remote_code"
_CONFIG_MODULE = "configuration_internvl_chat.py"


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny checkpoint.

    Image geometry (``image_size`` 448, ``patch_size`` 14, ``downsample_ratio`` 0.5,
    ``max_dynamic_patch`` 12, thumbnail on) is that of InternVL2/2.5/3-8B (their
    ``config.json``), so tiling and placeholder counts match the real models:
    ``(448 // 14) ** 2 * 0.5 ** 2 = 256`` tokens a tile (vLLM
    ``InternVLProcessingInfo.get_hf_processor``). Everything else is shrunk.

    Attention head sizes are 64 because vLLM's CPU attention rejects some head sizes
    (``head_dim=16`` fails with "Unsupported CPU attention configuration").

    Attributes:
        image_size: Tile side in pixels.
        patch_size: ViT patch side in pixels.
        downsample_ratio: Pixel-shuffle ratio between ViT patches and LLM tokens.
        min_dynamic_patch: Fewest tiles an image is cut into.
        max_dynamic_patch: Most tiles an image is cut into (thumbnail not counted).
        use_thumbnail: Whether a 448 px thumbnail tile is added when there are 2+ tiles.
        vision_hidden_size: ViT width.
        vision_intermediate_size: ViT MLP width.
        vision_num_heads: ViT attention heads (head size ``vision_hidden_size / heads``).
        vision_num_layers: ViT layers.
        llm_hidden_size: Qwen2 width.
        llm_intermediate_size: Qwen2 MLP width.
        llm_num_layers: Qwen2 layers.
        llm_num_heads: Qwen2 query heads (head size ``llm_hidden_size / heads``).
        llm_num_kv_heads: Qwen2 key/value heads (grouped-query attention).
        vocab_size: Tokenizer size, special tokens included, and embedding rows (a
            multiple of 64; no unused rows, so every sampled id decodes).
        max_position_embeddings: Longest context the config allows (tokens).
        rope_theta: RoPE base, as in Qwen2.5-7B.
        init_std: Standard deviation of the random normal weights.

    """

    image_size: int = 448
    patch_size: int = 14
    downsample_ratio: float = 0.5
    min_dynamic_patch: int = 1
    max_dynamic_patch: int = 12
    use_thumbnail: bool = True
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 256
    vision_num_heads: int = 1
    vision_num_layers: int = 2
    llm_hidden_size: int = 256
    llm_intermediate_size: int = 512
    llm_num_layers: int = 2
    llm_num_heads: int = 4
    llm_num_kv_heads: int = 2
    vocab_size: int = 384
    max_position_embeddings: int = 32768
    rope_theta: float = 1000000.0
    init_std: float = 0.02

    @property
    def tokens_per_tile(self) -> int:
        """Placeholder tokens one tile becomes: ``(image_size // patch_size)**2 * ratio**2``."""
        return int((self.image_size // self.patch_size) ** 2 * self.downsample_ratio**2)


#: The sizes used by :func:`build_tiny_checkpoint` and :func:`ensure_tiny_checkpoint`.
TINY_SPEC = TinySpec()

#: Special tokens, in id order after the BPE vocabulary (as Qwen2.5 + InternVL3 order them).
#: ``<|video_pad|>`` is the token vLLM uses for video frames of Qwen2-based InternVL.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|video_pad|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
)

#: InternVL2.5/InternVL3's default system message (their chat template and
#: ``conv_template`` "internvl2_5").
DEFAULT_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
    "多模态大语言模型。"
)

#: ChatML chat template of the same form as InternVL2.5/InternVL3's ``tokenizer_config.json``:
#: a default system turn when the conversation has none, string message contents.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_MESSAGE + "<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2's pre-tokenizer split (transformers ``models/qwen2/tokenization_qwen2.py``).
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Fixed training text for the BPE. Changing it changes the tokenizer (and the cache key).
_CORPUS: tuple[str, ...] = (
    "<|im_start|>system\n" + DEFAULT_SYSTEM_MESSAGE + "<|im_end|>\n",
    "<|im_start|>user\n<image>\nDescribe the image in detail.<|im_end|>\n",
    "<|im_start|>assistant\nThe image shows a cat sitting on a wooden table.<|im_end|>\n",
    "<|im_start|>user\nImage-1: <image>\nImage-2: <image>\n"
    "What are the similarities and differences between these two images?<|im_end|>\n",
    "<|im_start|>user\nFrame1: <image>\nFrame2: <image>\nWhat happens in this video?<|im_end|>\n",
    "Please describe the image shortly. What is in the picture?",
    "There is a person in the photo. The photo was taken outdoors on a sunny day.",
    "The astronaut is wearing a white space suit, and the flag is in the background.",
    "A cup of coffee on a saucer, seen from above. The coffee has a leaf pattern.",
    "The rocket stands on the launch pad; smoke rises at its base.",
    "Read the text in the image and answer the question. The answer is 42.",
    "How many objects are there in the image? There are 3 objects: a red ball, "
    "a blue box and a green cone.",
    "The chart shows the numbers 10, 20, 30, 40 and 50 for the years 2021 to 2025.",
    "<ref>the cat</ref><box>[[120, 340, 560, 780]]</box>",
    "<quad>(1,2),(3,4),(5,6),(7,8)</quad>",
    "InternVL is a multimodal large language model. It answers questions about images.",
    "The quick brown fox jumps over the lazy dog. The dog does not move.",
    "This is a test of the tokenizer: numbers 0123456789, punctuation .,;:!?'\"()[]{}",
    "Hello! How can I help you today? I can describe images, read text and count things.",
    "这是一张图片。请描述这张图片。图片中有一只猫。",
)


def _source_digest() -> str:
    """Return a sha256 hex digest of this module and the remote config code.

    Any edit to either changes the cache key, so a cached checkpoint never lags the code.
    """
    digest = hashlib.sha256()
    digest.update(Path(__file__).read_bytes())
    digest.update((_REMOTE_CODE_DIR / _CONFIG_MODULE).read_bytes())
    return digest.hexdigest()


def _cache_key(spec: TinySpec, seed: int) -> str:
    """Return the cache folder name for ``spec`` and ``seed``: ``v<version>-<12 hex>``."""
    payload = json.dumps(
        {
            "builder_version": BUILDER_VERSION,
            "spec": dataclasses.asdict(spec),
            "seed": seed,
            "source": _source_digest(),
        },
        sort_keys=True,
    )
    return f"v{BUILDER_VERSION}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def default_cache_dir() -> Path:
    """Return the cache root: ``$COOKBOOK_CACHE`` or ``~/.cache/internvl-cookbook``.

    The tiny checkpoints live in ``<root>/tiny/<key>``.
    """
    root = os.environ.get("COOKBOOK_CACHE") or "~/.cache/internvl-cookbook"
    return Path(root).expanduser()


def checkpoint_files() -> tuple[str, ...]:
    """Return the names of the files every built checkpoint folder holds."""
    return (
        "README.md",
        "config.json",
        _CONFIG_MODULE,
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    )


def _check_seed(seed: object) -> int:
    """Return ``seed`` if it is a non-negative int.

    Raises:
        TypeError: ``seed`` is not an int (bools are refused too).
        ValueError: ``seed`` is negative.

    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return seed


# --------------------------------------------------------------------------- tokenizer


def _train_tokenizer(spec: TinySpec) -> Any:
    """Return a ``tokenizers.Tokenizer``: byte-level BPE of ``spec.vocab_size`` ids.

    The pipeline is Qwen2's (NFC, Qwen2 regex split, byte-level); the BPE is trained on
    ``_CORPUS`` with ``vocab_size - len(SPECIAL_TOKENS)`` entries and the special tokens
    are appended after it, so ``<|endoftext|>`` has the first id after the BPE, as in Qwen2.

    Raises:
        RuntimeError: The corpus was too small to reach the requested vocabulary size.

    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    base_size = spec.vocab_size - len(SPECIAL_TOKENS)
    trainer = BpeTrainer(
        vocab_size=base_size,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    # Specials are removed from the training text so that no merge spans them.
    corpus = []
    for line in _CORPUS:
        for token in SPECIAL_TOKENS:
            line = line.replace(token, "\n")
        corpus.append(line)
    tokenizer.train_from_iterator(corpus * 4, trainer=trainer, length=len(corpus) * 4)
    if tokenizer.get_vocab_size() != base_size:
        raise RuntimeError(
            f"BPE training reached {tokenizer.get_vocab_size()} ids, wanted {base_size}: "
            "lengthen _CORPUS or lower TinySpec.vocab_size"
        )
    from tokenizers import AddedToken

    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
            for t in SPECIAL_TOKENS
        ]
    )
    return tokenizer


def _tokenizer_config(tokenizer: Any, spec: TinySpec) -> dict[str, Any]:
    """Return ``tokenizer_config.json`` contents in the form Qwen2.5/InternVL3 ship it."""
    added = {}
    for token in SPECIAL_TOKENS:
        added[str(tokenizer.token_to_id(token))] = {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": spec.max_position_embeddings,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


# --------------------------------------------------------------------------- config


def _model_config(spec: TinySpec, ids: dict[str, int]) -> dict[str, Any]:
    """Return ``config.json`` contents: InternVLChatConfig with an InternViT and a Qwen2."""
    vision_config = {
        "architectures": ["InternVisionModel"],
        "model_type": "intern_vit_6b",
        "num_channels": 3,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_attention_heads": spec.vision_num_heads,
        "num_hidden_layers": spec.vision_num_layers,
        "qkv_bias": True,
        "qk_normalization": False,
        "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "use_flash_attn": False,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "initializer_range": spec.init_std,
        "initializer_factor": 0.1,
        "torch_dtype": "float32",
    }
    llm_config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.llm_hidden_size,
        "intermediate_size": spec.llm_intermediate_size,
        "num_hidden_layers": spec.llm_num_layers,
        "num_attention_heads": spec.llm_num_heads,
        "num_key_value_heads": spec.llm_num_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "max_window_layers": spec.llm_num_layers,
        "rms_norm_eps": 1e-6,
        "rope_theta": spec.rope_theta,
        "rope_scaling": None,
        "sliding_window": spec.max_position_embeddings,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "attention_dropout": 0.0,
        "initializer_range": spec.init_std,
        "use_cache": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "torch_dtype": "float32",
    }
    return {
        "_name_or_path": "internvl-cookbook/tiny-internvl3",
        "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"},
        "model_type": "internvl_chat",
        "downsample_ratio": spec.downsample_ratio,
        "dynamic_image_size": True,
        "force_image_size": spec.image_size,
        "max_dynamic_patch": spec.max_dynamic_patch,
        "min_dynamic_patch": spec.min_dynamic_patch,
        "ps_version": "v2",
        "select_layer": -1,
        "template": "internvl2_5",
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": spec.use_thumbnail,
        "torch_dtype": "float32",
        "vision_config": vision_config,
        "llm_config": llm_config,
    }


def _generation_config(ids: dict[str, int]) -> dict[str, Any]:
    """Return ``generation_config.json``: stop on ``<|im_end|>`` or ``<|endoftext|>``."""
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
    }


# --------------------------------------------------------------------------- weights


def _weight_shapes(spec: TinySpec) -> dict[str, tuple[int, ...]]:
    """Return every tensor name of the checkpoint with its shape.

    Names follow the OpenGVLab checkpoints, as loaded by vLLM's ``InternVLChatModel``
    (``vision_model.*`` by ``InternVisionModel``, ``mlp1.{0,1,3}``, and
    ``language_model.*`` by ``Qwen2ForCausalLM.load_weights``).
    """
    v, vi = spec.vision_hidden_size, spec.vision_intermediate_size
    h, hi = spec.llm_hidden_size, spec.llm_intermediate_size
    head_dim = spec.llm_hidden_size // spec.llm_num_heads
    q_dim, kv_dim = spec.llm_num_heads * head_dim, spec.llm_num_kv_heads * head_dim
    positions = (spec.image_size // spec.patch_size) ** 2 + 1
    shuffled = v * int(1 / spec.downsample_ratio) ** 2

    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (1, 1, v),
        "vision_model.embeddings.patch_embedding.weight": (v, 3, spec.patch_size, spec.patch_size),
        "vision_model.embeddings.patch_embedding.bias": (v,),
        "vision_model.embeddings.position_embedding": (1, positions, v),
    }
    for i in range(spec.vision_num_layers):
        p = f"vision_model.encoder.layers.{i}."
        shapes.update(
            {
                p + "attn.qkv.weight": (3 * v, v),
                p + "attn.qkv.bias": (3 * v,),
                p + "attn.proj.weight": (v, v),
                p + "attn.proj.bias": (v,),
                p + "mlp.fc1.weight": (vi, v),
                p + "mlp.fc1.bias": (vi,),
                p + "mlp.fc2.weight": (v, vi),
                p + "mlp.fc2.bias": (v,),
                p + "norm1.weight": (v,),
                p + "norm1.bias": (v,),
                p + "norm2.weight": (v,),
                p + "norm2.bias": (v,),
                p + "ls1": (v,),
                p + "ls2": (v,),
            }
        )
    shapes.update(
        {
            "mlp1.0.weight": (shuffled,),
            "mlp1.0.bias": (shuffled,),
            "mlp1.1.weight": (h, shuffled),
            "mlp1.1.bias": (h,),
            "mlp1.3.weight": (h, h),
            "mlp1.3.bias": (h,),
            "language_model.model.embed_tokens.weight": (spec.vocab_size, h),
            "language_model.model.norm.weight": (h,),
            "language_model.lm_head.weight": (spec.vocab_size, h),
        }
    )
    for i in range(spec.llm_num_layers):
        p = f"language_model.model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (q_dim, h),
                p + "self_attn.q_proj.bias": (q_dim,),
                p + "self_attn.k_proj.weight": (kv_dim, h),
                p + "self_attn.k_proj.bias": (kv_dim,),
                p + "self_attn.v_proj.weight": (kv_dim, h),
                p + "self_attn.v_proj.bias": (kv_dim,),
                p + "self_attn.o_proj.weight": (h, q_dim),
                p + "mlp.gate_proj.weight": (hi, h),
                p + "mlp.up_proj.weight": (hi, h),
                p + "mlp.down_proj.weight": (h, hi),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        )
    return shapes


def _init_tensor(name: str, shape: tuple[int, ...], spec: TinySpec, seed: int) -> np.ndarray:
    """Return the float32 initial value of tensor ``name``.

    Norm weights are 1, biases 0, InternViT layer scales (``ls1``/``ls2``) 0.1 (InternViT's
    ``initializer_factor``), everything else normal(0, ``spec.init_std``) drawn from a
    generator seeded by ``(seed, crc32(name))``, so each tensor is independent of the others.
    """
    import numpy as np

    leaf = name.rsplit(".", 1)[-1]
    is_norm = any(k in name for k in ("norm", "mlp1.0."))
    if leaf in ("ls1", "ls2"):
        return np.full(shape, 0.1, dtype=np.float32)
    if is_norm and leaf == "weight":
        return np.ones(shape, dtype=np.float32)
    if leaf == "bias":
        return np.zeros(shape, dtype=np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    values = rng.standard_normal(shape, dtype=np.float32) * np.float32(spec.init_std)
    return np.ascontiguousarray(values, dtype=np.float32)


def _unreadable_ids(tokenizer: Any) -> list[int]:
    """Return ids of tokens that decode to no readable text on their own.

    These are the byte-level tokens of bytes that are not whole UTF-8 characters (vLLM's
    detokenizer holds them back, so an answer of them prints as ``''``), whitespace-only
    tokens, and the special tokens other than ``<|im_end|>``/``<|endoftext|>``.
    """
    keep_special = {"<|im_end|>", "<|endoftext|>"}
    ids = []
    for token, idx in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if token in SPECIAL_TOKENS:
            if token not in keep_special:
                ids.append(idx)
            continue
        text = tokenizer.decode([idx])
        if not text.strip() or "\ufffd" in text or not text.isprintable():
            ids.append(idx)
    return ids


def _write_weights(path: Path, spec: TinySpec, seed: int, quiet_ids: list[int]) -> int:
    """Write ``model.safetensors`` to ``path`` and return the parameter count.

    The LM head's rows for ``quiet_ids`` (`_unreadable_ids`) are zero, so their logits are
    0 while readable tokens' logits are random: greedy decoding of the random model then
    prints (meaningless) words instead of bytes that decode to nothing.
    """
    from safetensors.numpy import save_file

    tensors = {
        name: _init_tensor(name, shape, spec, seed)
        for name, shape in sorted(_weight_shapes(spec).items())
    }
    tensors["language_model.lm_head.weight"][quiet_ids] = 0.0
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sum(int(t.size) for t in tensors.values())


# --------------------------------------------------------------------------- build


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented UTF-8 JSON with a trailing newline (stable bytes)."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _readme(spec: TinySpec, seed: int, num_params: int) -> str:
    """Return the checkpoint's README.md (a short model card)."""
    return (
        "# Tiny random InternVL (test checkpoint)\n\n"
        "Built by `cookbook.tiny` of the InternVL cookbook. Random weights: its output is\n"
        "noise. It exists to run vLLM's real InternVL code (tiling, placeholders, vision\n"
        "encoder, Qwen2 LLM) on a CPU in seconds. Load it with `trust_remote_code=True`.\n\n"
        f"- builder version: {BUILDER_VERSION}, seed: {seed}, parameters: {num_params}\n"
        f"- tiles: {spec.image_size} px, {spec.tokens_per_tile} tokens a tile, "
        f"max_dynamic_patch {spec.max_dynamic_patch}, thumbnail {spec.use_thumbnail}\n"
        f"- vision: hidden {spec.vision_hidden_size}, {spec.vision_num_layers} layers; "
        f"LLM (Qwen2): hidden {spec.llm_hidden_size}, {spec.llm_num_layers} layers, "
        f"vocab {spec.vocab_size}\n"
    )


def build_tiny_checkpoint(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Return the folder ``out_dir`` after writing a tiny InternVL checkpoint into it.

    Files: ``config.json``, ``configuration_internvl_chat.py``, ``model.safetensors``
    (float32, 1,714,240 parameters, 6.9 MB), ``tokenizer.json``,
    ``tokenizer_config.json``, ``generation_config.json`` and ``README.md`` (see
    :func:`checkpoint_files`). The same ``seed`` gives the same bytes in every file.
    Sizes are :data:`TINY_SPEC`.

    Args:
        out_dir: Folder to create; it must not exist or be empty.
        seed: Seed of the random weights (the tokenizer does not depend on it).

    Returns:
        ``Path(out_dir)``.

    Raises:
        TypeError: ``seed`` is not an int.
        ValueError: ``seed`` is negative, or ``out_dir`` is a file or a non-empty folder.
        ImportError: ``numpy``, ``safetensors`` or ``tokenizers`` is not installed.

    """
    seed = _check_seed(seed)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"out_dir {str(out)!r} exists and is not an empty folder; "
            "pass a new path or remove it first"
        )
    spec = TINY_SPEC
    tokenizer = _train_tokenizer(spec)
    ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}

    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", _tokenizer_config(tokenizer, spec))
    _write_json(out / "config.json", _model_config(spec, ids))
    _write_json(out / "generation_config.json", _generation_config(ids))
    shutil.copyfile(_REMOTE_CODE_DIR / _CONFIG_MODULE, out / _CONFIG_MODULE)
    num_params = _write_weights(out / "model.safetensors", spec, seed, _unreadable_ids(tokenizer))
    (out / "README.md").write_text(_readme(spec, seed, num_params), encoding="utf-8")
    for name in checkpoint_files():
        (out / name).chmod(0o644)  # safetensors writes 0600; keep the cache shareable
    return out


def _is_complete(path: Path) -> bool:
    """Return whether ``path`` is a folder holding every file of a checkpoint."""
    return path.is_dir() and all((path / name).is_file() for name in checkpoint_files())


def ensure_tiny_checkpoint(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of the cached tiny checkpoint (seed 0), building it if missing.

    The checkpoint lives in ``<cache root>/tiny/<key>``, where the cache root is
    ``cache_dir``, else ``$COOKBOOK_CACHE``, else ``~/.cache/internvl-cookbook``, and
    ``<key>`` is ``v<BUILDER_VERSION>-<hash>`` of the builder version, :data:`TINY_SPEC`,
    the seed and the builder's source, so a changed builder never reuses a stale build.
    It is built in a temporary folder beside the target and renamed into place, so a
    failed or concurrent build never leaves a partial checkpoint behind; a second call
    returns at once.

    Args:
        cache_dir: Cache root to use instead of ``$COOKBOOK_CACHE``.

    Returns:
        The checkpoint folder, to pass as ``model=`` to vLLM (with ``trust_remote_code``).

    Raises:
        ImportError: ``numpy``, ``safetensors`` or ``tokenizers`` is missing (first build).
        OSError: The cache folder cannot be written.

    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    parent = root / "tiny"
    target = parent / _cache_key(TINY_SPEC, 0)
    if _is_complete(target):
        return target
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        build_tiny_checkpoint(tmp / "checkpoint", seed=0)
        if target.exists() and not _is_complete(target):
            # A folder left by hand or by an older, non-atomic build: move it aside.
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp / "checkpoint", target)
        except OSError:
            # Another process finished first; its build is identical.
            if not _is_complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> int:
    """Build (or find) the tiny checkpoint, print its path and return the exit status 0."""
    parser = argparse.ArgumentParser(
        prog="python -m cookbook.tiny",
        description="Build the tiny random-weight InternVL checkpoint and print its path.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="build into this new folder instead of the cache",
    )
    parser.add_argument("--seed", type=int, default=0, help="weight seed (only with --out)")
    args = parser.parse_args(argv)
    if args.out is not None:
        path = build_tiny_checkpoint(args.out, seed=args.seed)
    else:
        if args.seed != 0:
            parser.error("--seed needs --out (the cache holds the seed-0 build)")
        path = ensure_tiny_checkpoint()
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
