"""Configuration classes for the tiny InternVL checkpoint (original OpenGVLab layout).

Copied next to the checkpoint's ``config.json`` and loaded with ``trust_remote_code=True``
through its ``auto_map`` entry, as the published InternVL checkpoints load theirs. Every
field vLLM reads (``internvl.py``, ``intern_vit.py``) is written in ``config.json``;
``PretrainedConfig`` keeps each one as an attribute. Works with transformers 4.x and 5.x.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

#: InternViT fields that ``config.json`` may leave out (InternViT-300M-448px's values).
VISION_DEFAULTS = {"dropout": 0.0, "drop_path_rate": 0.0, "attention_dropout": 0.0,
                   "initializer_range": 0.02}  # fmt: skip


class InternVisionConfig(PretrainedConfig):
    """The InternViT vision encoder's sizes, as ``config.json``'s ``vision_config`` gives them."""

    model_type = "intern_vit_6b"

    def __init__(self, **kwargs: Any) -> None:
        """Keep every field of ``vision_config``, with ``VISION_DEFAULTS`` for missing ones."""
        super().__init__(**{**VISION_DEFAULTS, **kwargs})


class InternVLChatConfig(PretrainedConfig):
    """An InternVL chat model: ``vision_config``, ``llm_config`` (e.g. Qwen2) and glue fields."""

    model_type = "internvl_chat"

    def __init__(
        self,
        vision_config: dict[str, Any] | None = None,
        llm_config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Build the nested configs from the dicts of ``config.json``."""
        vision = vision_config or {}
        self.vision_config = (
            vision if isinstance(vision, PretrainedConfig) else InternVisionConfig(**vision)
        )
        self.llm_config: PretrainedConfig
        if isinstance(llm_config, PretrainedConfig):
            self.llm_config = llm_config
        else:
            llm = dict(llm_config or {"model_type": "qwen2"})
            self.llm_config = AutoConfig.for_model(llm.pop("model_type"), **llm)
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a dict, the nested configs as dicts."""
        output = super().to_dict()
        output["vision_config"] = self.vision_config.to_dict()
        output["llm_config"] = self.llm_config.to_dict()
        output.pop("text_config", None)
        output["model_type"] = self.model_type
        return output
