"""The tiny InternVL in plain PyTorch, computing what vLLM's InternVL code computes.

Written from vLLM's ``intern_vit.py`` and ``internvl.py``: InternViT (no final norm), the class
token dropped, pixel shuffle (``ps_version`` v2, ratio 0.5), ``mlp1``, transformers'
``Qwen2ForCausalLM``. ``state_dict()`` has the checkpoint's names, so it is what vLLM loads.
Weights start uninitialised: load ``build.random_weights`` or trained ones.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """InternViT self-attention: one ``qkv`` projection split in three, then ``proj``."""

    def __init__(self, width: int, heads: int) -> None:
        """Make the projections for ``heads`` heads of ``width // heads``."""
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the attention output for ``x`` of shape ``(tiles, tokens, width)``."""
        n, t, w = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, w))


class MLP(nn.Module):
    """InternViT feed-forward block: ``fc2(gelu(fc1(x)))``."""

    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, inner), nn.Linear(inner, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block's output for ``x``."""
        return self.fc2(F.gelu(self.fc1(x)))


class VisionLayer(nn.Module):
    """One InternViT encoder layer: pre-norm attention and MLP, each with a layer scale."""

    def __init__(self, width: int, inner: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.attn, self.mlp = Attention(width, heads), MLP(width, inner)
        self.ls1, self.ls2 = nn.Parameter(torch.empty(width)), nn.Parameter(torch.empty(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the layer's output for ``x`` of shape ``(tiles, tokens, width)``."""
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.mlp(self.norm2(x)) * self.ls2


class Embeddings(nn.Module):
    """InternViT input: a class token, then one token a 14 px patch, plus positions."""

    def __init__(self, width: int, patch: int, positions: int) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(1, 1, width))
        self.patch_embedding = nn.Conv2d(3, width, patch, stride=patch)
        self.position_embedding = nn.Parameter(torch.empty(1, positions, width))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return ``(tiles, 1 + patches, width)`` tokens for ``(tiles, 3, 448, 448)`` pixels."""
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        return (
            torch.cat([self.class_embedding.expand(len(x), 1, -1), x], 1) + self.position_embedding
        )


class VisionModel(nn.Module):
    """InternViT: embeddings and encoder layers (``vision_model.*`` in the checkpoint)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        """Make InternViT for a ``vision_config`` dict."""
        super().__init__()
        width, patch = cfg["hidden_size"], cfg["patch_size"]
        self.embeddings = Embeddings(width, patch, (cfg["image_size"] // patch) ** 2 + 1)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            VisionLayer(width, cfg["intermediate_size"], cfg["num_attention_heads"])
            for _ in range(cfg["num_hidden_layers"])
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return the last layer's ``(tiles, 1 + patches, width)`` output."""
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:  # type: ignore[union-attr]
            x = layer(x)
        return x


class TinyInternVL(nn.Module):
    """InternViT + ``mlp1`` + Qwen2, sized by a ``config.json`` dict."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        """Make the model for ``cfg`` (``config.model_config()``)."""
        from transformers import Qwen2Config, Qwen2ForCausalLM

        super().__init__()
        llm = {k: v for k, v in cfg["llm_config"].items() if k != "model_type"}
        self.vision_model = VisionModel(cfg["vision_config"])
        shuffled, hidden = cfg["vision_config"]["hidden_size"] * 4, llm["hidden_size"]
        self.mlp1 = nn.Sequential(  # 4 = (1 / downsample_ratio) ** 2 ViT tokens a token
            nn.LayerNorm(shuffled),
            nn.Linear(shuffled, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
        )
        self.language_model = Qwen2ForCausalLM(Qwen2Config(**llm))  # sdpa attention

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Return ``(tiles * 256, llm hidden)`` features for ``(tiles, 3, 448, 448)`` pixels."""
        x = self.vision_model(pixels)
        n, side = len(x), int((x.shape[1] - 1) ** 0.5)
        x = x[:, 1:].reshape(n, side, side, -1)
        # Pixel shuffle as InternVLChatModel.pixel_shuffle, ratio 0.5, ps_version v2.
        x = x.reshape(n, side, side // 2, -1).permute(0, 2, 1, 3)
        x = x.reshape(n, side // 2, side // 2, -1).permute(0, 2, 1, 3)
        return self.mlp1(x.reshape(n, -1, x.shape[-1])).reshape(-1, self.mlp1[-1].out_features)
