"""How many tiles, and so how many tokens, an image becomes: vLLM's own InternVL rule.

InternVL resizes an image to the grid of at most ``max_dynamic_patch`` 448-pixel tiles closest
to its aspect ratio, adds a thumbnail when the grid has more than one tile, and makes each tile
256 tokens. The functions import vLLM's code when called, so vLLM must be installed where they
run (``vllm.transformers_utils.processors.internvl``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from cookbook import models

#: Tokens one 448-pixel tile becomes: (448 / 14 patches)^2, pixel-shuffled by 0.5 per side.
TOKENS_PER_TILE = 256
TILE_SIZE = 448


@dataclass(frozen=True)
class TilePlan:
    """The tiles one image becomes: ``grid`` (columns, rows), ``thumbnail``, ``tiles`` in all.

    ``tokens`` are its ``tiles * 256`` placeholders in the prompt (plus ``<img>``, ``</img>``).
    """

    grid: tuple[int, int]
    thumbnail: bool
    tiles: int
    tokens: int


def max_dynamic_patch(args: dict[str, Any]) -> int:
    """Return the ``max_dynamic_patch`` (``-hf``: ``max_patches``) of engine arguments, else 12."""
    for where in ("mm_processor_kwargs", "hf_overrides"):
        for key in ("max_dynamic_patch", "max_patches"):
            if key in (args.get(where) or {}):
                return int(args[where][key])
    return models.MAX_DYNAMIC_PATCH


def plan(
    size: tuple[int, int] | Image.Image, max_patch: int = models.MAX_DYNAMIC_PATCH
) -> TilePlan:
    """Return the `TilePlan` of an image of ``size = (width, height)`` pixels (or a PIL image).

    The shape decides, not the pixel count: a 1x1 image is one tile, 256 tokens; a 1x300 strip
    a 1x12 grid plus thumbnail, 3328 tokens.
    """
    from vllm.transformers_utils.processors.internvl import (
        calculate_internvl_targets,
        get_internvl_target_ratios,
    )

    width, height = size.size if isinstance(size, Image.Image) else size
    blocks, target_w, target_h = calculate_internvl_targets(
        orig_width=width,
        orig_height=height,
        target_ratios=get_internvl_target_ratios(1, max_patch),
        image_size=TILE_SIZE,
        use_thumbnail=True,
    )
    grid = (target_w // TILE_SIZE, target_h // TILE_SIZE)
    return TilePlan(grid, blocks > grid[0] * grid[1], blocks, blocks * TOKENS_PER_TILE)


def fit_to_grid(img: Image.Image, max_patch: int = models.MAX_DYNAMIC_PATCH) -> Image.Image:
    """Return ``img`` shrunk to its tile grid's size when it is larger, else ``img`` itself.

    InternVL resizes to the grid anyway (a 4000x3000 photo to 4x3 tiles, 1792x1344); the grid,
    and so the tokens, stay the same (checked) for a fraction of the bytes. The pixels differ
    slightly from one resize of the original; send that where exact pixels matter.
    """
    before = plan(img.size, max_patch)
    cols, rows = before.grid
    scale = max(cols * TILE_SIZE / img.width, rows * TILE_SIZE / img.height)
    if scale >= 1:
        return img
    size = (round(img.width * scale), round(img.height * scale))
    smaller = img.resize(size, Image.Resampling.BICUBIC)
    return smaller if plan(smaller.size, max_patch).grid == before.grid else img
