"""How many tiles, and so how many tokens, an image becomes: vLLM's own InternVL rule.

InternVL resizes an image to the grid of 448-pixel tiles whose aspect ratio is closest to
the image's, with at most ``max_dynamic_patch`` tiles, adds a thumbnail of the whole image
when the grid has more than one tile, and turns each tile into 256 tokens. The functions
here call vLLM's implementation (``vllm.transformers_utils.processors.internvl``), which
they import when called: vLLM must be installed where they run.
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
    """The tiles one image becomes.

    Attributes:
        grid: ``(columns, rows)`` of 448-pixel tiles the image is resized to.
        thumbnail: Whether a 448x448 thumbnail of the whole image is added.
        tiles: Tiles in all (grid plus thumbnail).
        tokens: Image tokens in the prompt: ``tiles * 256`` placeholders (vLLM adds
            ``<img>`` and ``</img>`` around them).
    """

    grid: tuple[int, int]
    thumbnail: bool
    tiles: int
    tokens: int


def max_dynamic_patch(args: dict[str, Any]) -> int:
    """Return the ``max_dynamic_patch`` engine arguments give (`engine.engine_args`), else 12.

    The ``-hf`` format's processor calls it ``max_patches``.
    """
    for where in ("mm_processor_kwargs", "hf_overrides"):
        for key in ("max_dynamic_patch", "max_patches"):
            if key in (args.get(where) or {}):
                return int(args[where][key])
    return models.MAX_DYNAMIC_PATCH


def plan(
    size: tuple[int, int] | Image.Image, max_patch: int = models.MAX_DYNAMIC_PATCH
) -> TilePlan:
    """Return the `TilePlan` of an image of ``size = (width, height)`` pixels (or a PIL image).

    A picture smaller than a tile still costs a tile: a 1x1 image is scaled up to one
    448x448 tile, 256 tokens, and a 1x300 strip is stretched to a 1x12 grid plus a
    thumbnail, 13 tiles, 3328 tokens: the shape decides the tiles, not the pixel count.
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

    InternVL resizes every image to its grid (e.g. a 4000x3000 photo to 4x3 tiles of 448
    pixels, 1792x1344) before the vision encoder sees it. Shrinking it first, on the
    client, to the grid's size keeps the same grid (checked) and so the same tokens,
    while the request carries a fraction of the bytes and the server a fraction of the
    resize work. The pixels differ slightly from resizing the original once; send the
    original where exact pixels matter.
    """
    before = plan(img.size, max_patch)
    cols, rows = before.grid
    scale = max(cols * TILE_SIZE / img.width, rows * TILE_SIZE / img.height)
    if scale >= 1:
        return img
    smaller = img.resize(
        (round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC
    )
    return smaller if plan(smaller.size, max_patch).grid == before.grid else img
