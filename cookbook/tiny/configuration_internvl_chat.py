"""Configuration classes for the tiny InternVL checkpoint (original OpenGVLab layout).

This file is copied next to ``config.json`` of the checkpoint that ``cookbook.tiny`` builds
and is loaded with ``trust_remote_code=True`` through the ``auto_map`` entry
``{"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"}``, the same way the
published InternVL checkpoints load theirs. It was written for this project: it keeps the
field names that vLLM reads (``vllm/model_executor/models/internvl.py`` and
``intern_vit.py``) and the OpenGVLab ``config.json`` layout (a ``vision_config`` and an
``llm_config``), and works with transformers 4.x and 5.x.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig


class InternVisionConfig(PretrainedConfig):
    """Holds the sizes of the InternViT vision encoder.

    Defaults are those of InternViT-300M-448px (the vision encoder of InternVL2/2.5/3-8B);
    the tiny checkpoint overrides the sizes in its ``config.json``.
    """

    model_type = "intern_vit_6b"

    def __init__(
        self,
        num_channels: int = 3,
        patch_size: int = 14,
        image_size: int = 448,
        qkv_bias: bool = True,
        hidden_size: int = 1024,
        num_attention_heads: int = 16,
        intermediate_size: int = 4096,
        qk_normalization: bool = False,
        num_hidden_layers: int = 24,
        use_flash_attn: bool = False,
        hidden_act: str = "gelu",
        norm_type: str = "layer_norm",
        layer_norm_eps: float = 1e-6,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 0.1,
        **kwargs: Any,
    ) -> None:
        """Store the vision encoder sizes; unknown keys are kept as attributes."""
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
        super().__init__(**kwargs)


def _build_llm_config(llm_config: dict[str, Any] | PretrainedConfig | None) -> PretrainedConfig:
    """Return the language model config object for an ``llm_config`` dict.

    The class is chosen by ``model_type`` (falling back to the first entry of
    ``architectures``), through transformers' ``AutoConfig.for_model``.

    Raises:
        ValueError: The dict names neither a ``model_type`` nor a known architecture.

    """
    if isinstance(llm_config, PretrainedConfig):
        return llm_config
    values = dict(llm_config or {"architectures": ["Qwen2ForCausalLM"]})
    model_type = values.pop("model_type", None)
    if model_type is None:
        architectures = values.get("architectures") or []
        by_architecture = {
            "Qwen2ForCausalLM": "qwen2",
            "LlamaForCausalLM": "llama",
            "Qwen3ForCausalLM": "qwen3",
        }
        model_type = by_architecture.get(architectures[0] if architectures else "")
    if model_type is None:
        raise ValueError(
            f"llm_config needs a 'model_type' (e.g. 'qwen2'); got keys {sorted(values)}"
        )
    return AutoConfig.for_model(model_type, **values)


class InternVLChatConfig(PretrainedConfig):
    """Holds an InternVL chat model: a vision config, an LLM config and the glue fields.

    Top-level fields are those of the OpenGVLab checkpoints; vLLM reads ``force_image_size``,
    ``downsample_ratio``, ``ps_version``, ``select_layer``, ``dynamic_image_size``,
    ``min_dynamic_patch``, ``max_dynamic_patch`` and ``use_thumbnail``, and uses
    ``llm_config`` as the text config.
    """

    model_type = "internvl_chat"

    def __init__(
        self,
        vision_config: dict[str, Any] | PretrainedConfig | None = None,
        llm_config: dict[str, Any] | PretrainedConfig | None = None,
        use_backbone_lora: int = 0,
        use_llm_lora: int = 0,
        select_layer: int = -1,
        force_image_size: int | None = None,
        downsample_ratio: float = 0.5,
        template: str | None = None,
        dynamic_image_size: bool = False,
        use_thumbnail: bool = False,
        ps_version: str = "v1",
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 6,
        **kwargs: Any,
    ) -> None:
        """Build the nested configs from dicts (as read from ``config.json``) or objects."""
        if isinstance(vision_config, PretrainedConfig):
            self.vision_config = vision_config
        else:
            self.vision_config = InternVisionConfig(**(vision_config or {}))
        self.llm_config = _build_llm_config(llm_config)
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a dict with the nested configs serialised as dicts."""
        output = super().to_dict()
        output["vision_config"] = self.vision_config.to_dict()
        output["llm_config"] = self.llm_config.to_dict()
        output.pop("text_config", None)
        output["model_type"] = self.model_type
        return output
