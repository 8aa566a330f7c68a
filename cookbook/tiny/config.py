"""The tiny checkpoint's configuration files, from ``checkpoint.toml`` plus the token ids.

The special tokens take the ids after the BPE ids, in ``special_tokens`` order, as in
Qwen2.5; their ids are written into the configs here.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

_TOML = tomllib.loads(Path(__file__).with_name("checkpoint.toml").read_text(encoding="utf-8"))
SPECIAL_TOKENS: tuple[str, ...] = tuple(_TOML["special_tokens"])
VOCAB_SIZE: int = _TOML["config"]["llm_config"]["vocab_size"]
CHAT_TEMPLATE: str = _TOML["tokenizer_config"]["chat_template"]


def ids() -> dict[str, int]:
    """Return each special token's id."""
    first = VOCAB_SIZE - len(SPECIAL_TOKENS)
    return {token: first + i for i, token in enumerate(SPECIAL_TOKENS)}


def model_config() -> dict[str, Any]:
    """Return ``config.json``: OpenGVLab's InternVLChatModel layout, InternViT + Qwen2."""
    cfg = copy.deepcopy(_TOML["config"])
    pad, eos = ids()["<|endoftext|>"], ids()["<|im_end|>"]
    cfg["llm_config"].update(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    return cfg


def generation_config() -> dict[str, Any]:
    """Return ``generation_config.json``: stop on ``<|im_end|>`` or ``<|endoftext|>``."""
    return {"eos_token_id": [ids()["<|im_end|>"], ids()["<|endoftext|>"]],
            "pad_token_id": ids()["<|endoftext|>"]}  # fmt: skip


def tokenizer_config() -> dict[str, Any]:
    """Return ``tokenizer_config.json``, with every special token in ``added_tokens_decoder``."""
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    added = {str(i): {"content": t, **flags, "special": True} for t, i in ids().items()}
    extra = list(SPECIAL_TOKENS[1:])
    return {"added_tokens_decoder": added, "additional_special_tokens": extra,
            **_TOML["tokenizer_config"]}  # fmt: skip
