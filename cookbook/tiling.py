"""InternVL's dynamic tiling rule and the token budget of a request, in pure Python.

InternVL cuts an image into ``image_size`` x ``image_size`` tiles on the grid whose aspect
ratio is closest to the image's (at most ``max_dynamic_patch`` tiles), and adds a
thumbnail tile when there is more than one. Each tile costs ``tokens_per_tile`` tokens
(256 for 448 px tiles, 14 px patches and pixel shuffle 0.5) and each image two more for the
``<img>``/``</img>`` markers. The functions below reproduce vLLM 0.23.0 exactly
(vllm/transformers_utils/processors/internvl.py: ``get_internvl_target_ratios``,
``find_closest_aspect_ratio``, ``calculate_internvl_targets``,
``resolve_internvl_min_max_num``, ``InternVLProcessor.get_num_image_tokens`` and
``get_image_repl``), so a request can be checked against ``max_model_len`` before it is
sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "IMAGE_WRAPPER_TOKENS",
    "TILING_KEYS",
    "ImagePlan",
    "check_budget",
    "check_image_limit",
    "count_tiles",
    "image_token_count",
    "image_tokens",
    "plan_images",
    "target_ratios",
    "tile_grid",
    "tiling_from_config",
    "tokens_per_tile",
]

#: ``<img>`` and ``</img>`` around each image's context tokens (``get_image_repl``).
IMAGE_WRAPPER_TOKENS = 2

#: Keys of a tiling dict (``tiling_from_config``), accepted by ``image_token_count``,
#: ``plan_images`` and ``check_budget``.
TILING_KEYS = (
    "min_dynamic_patch",
    "max_dynamic_patch",
    "use_thumbnail",
    "dynamic_image_size",
    "image_size",
    "patch_size",
    "downsample_ratio",
)

# Arguments of vLLM's InternVLImageProcessor, which receives the engine's
# mm_processor_kwargs (InternVLProcessingInfo.get_image_processor).
_PROCESSOR_KEYS = (
    "min_dynamic_patch",
    "max_dynamic_patch",
    "dynamic_image_size",
    "use_thumbnail",
    "image_size",
)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def target_ratios(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """Return the (columns, rows) grids with ``min_num <= cols*rows <= max_num``.

    Sorted by tile count; the order among equal counts is that of vLLM's
    ``get_internvl_target_ratios`` (same set, same sort), which matters for ties.
    """
    ratios = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return sorted(ratios, key=lambda x: x[0] * x[1])


def _closest_aspect_ratio(
    aspect_ratio: float,
    ratios: list[tuple[int, int]],
    *,
    width: int,
    height: int,
    image_size: int,
) -> tuple[int, int]:
    # vLLM's find_closest_aspect_ratio: a later grid with the same aspect difference wins
    # only when the image has more than half the pixels of that grid.
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def tile_grid(
    width: int,
    height: int,
    *,
    min_dynamic_patch: int = 1,
    max_dynamic_patch: int = 12,
    image_size: int = 448,
    dynamic_image_size: bool = True,
) -> tuple[int, int]:
    """Return the (columns, rows) grid an image of ``width`` x ``height`` pixels is cut into.

    Raises:
        TypeError: If a size or setting is not an int.
        ValueError: If a size is < 1 or ``min_dynamic_patch > max_dynamic_patch``.

    """
    _check_int("width", width)
    _check_int("height", height)
    _check_int("image_size", image_size)
    lo = _check_int("min_dynamic_patch", min_dynamic_patch)
    hi = _check_int("max_dynamic_patch", max_dynamic_patch)
    if lo > hi:
        raise ValueError(f"min_dynamic_patch ({lo}) must not exceed max_dynamic_patch ({hi})")
    if not dynamic_image_size:  # resolve_internvl_min_max_num
        lo, hi = 1, 1
    return _closest_aspect_ratio(
        width / height,
        target_ratios(lo, hi),
        width=width,
        height=height,
        image_size=image_size,
    )


def count_tiles(
    width: int,
    height: int,
    *,
    min_dynamic_patch: int = 1,
    max_dynamic_patch: int = 12,
    use_thumbnail: bool = True,
    image_size: int = 448,
    dynamic_image_size: bool = True,
) -> int:
    """Return how many tiles (incl. the thumbnail) InternVL makes of one image.

    ``cols * rows`` of ``tile_grid`` plus one thumbnail tile when ``use_thumbnail`` and the
    grid has more than one tile (vLLM's ``calculate_internvl_targets``). The default
    settings are those of InternVL2/2.5/3-8B's config.json, so the result is 1..13.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        min_dynamic_patch: Fewest tiles of the grid.
        max_dynamic_patch: Most tiles of the grid (the thumbnail comes on top).
        use_thumbnail: Add a whole-image thumbnail tile to multi-tile grids.
        image_size: Tile side in pixels.
        dynamic_image_size: False disables tiling (one tile per image).

    Raises:
        TypeError: If a size or setting is not an int.
        ValueError: If a size is < 1 or ``min_dynamic_patch > max_dynamic_patch``.

    """
    cols, rows = tile_grid(
        width,
        height,
        min_dynamic_patch=min_dynamic_patch,
        max_dynamic_patch=max_dynamic_patch,
        image_size=image_size,
        dynamic_image_size=dynamic_image_size,
    )
    blocks = cols * rows
    if use_thumbnail and blocks != 1:
        blocks += 1
    return blocks


def tokens_per_tile(
    image_size: int = 448, patch_size: int = 14, downsample_ratio: float = 0.5
) -> int:
    """Return the LLM tokens one tile becomes: ``(image_size // patch_size)**2 * ratio**2``.

    256 for InternVL2/2.5/3-8B (448 px tiles, 14 px patches, pixel shuffle 0.5), as vLLM's
    ``InternVLProcessingInfo.get_hf_processor`` computes ``image_seq_length``.
    """
    _check_int("image_size", image_size)
    _check_int("patch_size", patch_size)
    if not 0 < downsample_ratio <= 1:
        raise ValueError(f"downsample_ratio must be in (0, 1], got {downsample_ratio}")
    return int((image_size // patch_size) ** 2 * (downsample_ratio**2))


def image_token_count(
    width: int,
    height: int,
    *,
    min_dynamic_patch: int = 1,
    max_dynamic_patch: int = 12,
    use_thumbnail: bool = True,
    image_size: int = 448,
    dynamic_image_size: bool = True,
    patch_size: int = 14,
    downsample_ratio: float = 0.5,
) -> int:
    """Return the prompt tokens one image takes: tiles * tokens_per_tile + 2.

    vLLM replaces the image's ``<image>`` with ``<img>`` + ``<IMG_CONTEXT>`` * (tiles *
    tokens_per_tile) + ``</img>`` (``InternVLProcessor.get_image_repl``); the ``<image>``
    text itself disappears. A 13-tile image costs 13 * 256 + 2 = 3330 tokens.

    Args:
        width: Image width in pixels.
        height: Image height in pixels.
        min_dynamic_patch: As for ``count_tiles``.
        max_dynamic_patch: As for ``count_tiles``.
        use_thumbnail: As for ``count_tiles``.
        image_size: As for ``count_tiles``.
        dynamic_image_size: As for ``count_tiles``.
        patch_size: Vision patch side in pixels.
        downsample_ratio: Pixel-shuffle ratio of the projector.

    """
    tiles = count_tiles(
        width,
        height,
        min_dynamic_patch=min_dynamic_patch,
        max_dynamic_patch=max_dynamic_patch,
        use_thumbnail=use_thumbnail,
        image_size=image_size,
        dynamic_image_size=dynamic_image_size,
    )
    return tiles * tokens_per_tile(image_size, patch_size, downsample_ratio) + IMAGE_WRAPPER_TOKENS


#: Same as ``image_token_count``.
image_tokens = image_token_count


@dataclass(frozen=True)
class ImagePlan:
    """How one image will be tiled and what it costs in prompt tokens.

    Attributes:
        index: Position of the image in the request (0-based).
        width: Image width in pixels.
        height: Image height in pixels.
        grid: (columns, rows) of the tile grid.
        tiles: Tiles sent to the vision encoder, thumbnail included.
        thumbnail: Whether a thumbnail tile was added.
        tokens: Prompt tokens of the image, ``<img>``/``</img>`` included.

    """

    index: int
    width: int
    height: int
    grid: tuple[int, int]
    tiles: int
    thumbnail: bool
    tokens: int


def _size_of(item: Any, index: int) -> tuple[int, int]:
    size = getattr(item, "size", item)  # PIL.Image.size is (width, height)
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise TypeError(
        f"image {index}: expected a (width, height) pair or an image with .size, "
        f"got {type(item).__name__}"
    )


def plan_images(sizes: Iterable[Any], **tiling: Any) -> list[ImagePlan]:
    """Return one ``ImagePlan`` per image, in order.

    Args:
        sizes: ``(width, height)`` pairs or images with a ``.size`` (PIL images).
        **tiling: Keys of ``TILING_KEYS`` (e.g. the dict of ``tiling_from_config``).

    Raises:
        TypeError: On an item that has no size, or an unknown tiling key.
        ValueError: On a non-positive size or inconsistent settings.

    """
    unknown = set(tiling) - set(TILING_KEYS)
    if unknown:
        raise TypeError(f"unknown tiling setting(s) {sorted(unknown)}; use {list(TILING_KEYS)}")
    grid_keys = ("min_dynamic_patch", "max_dynamic_patch", "image_size", "dynamic_image_size")
    grid_kwargs = {k: tiling[k] for k in grid_keys if k in tiling}
    per_tile = tokens_per_tile(
        tiling.get("image_size", 448),
        tiling.get("patch_size", 14),
        tiling.get("downsample_ratio", 0.5),
    )
    use_thumbnail = tiling.get("use_thumbnail", True)
    plans = []
    for index, item in enumerate(sizes):
        width, height = _size_of(item, index)
        try:
            cols, rows = tile_grid(width, height, **grid_kwargs)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"image {index}: {exc}") from exc
        thumbnail = bool(use_thumbnail) and cols * rows != 1
        tiles = cols * rows + int(thumbnail)
        plans.append(
            ImagePlan(
                index=index,
                width=width,
                height=height,
                grid=(cols, rows),
                tiles=tiles,
                thumbnail=thumbnail,
                tokens=tiles * per_tile + IMAGE_WRAPPER_TOKENS,
            )
        )
    return plans


def check_image_limit(num_images: int, limit: int | None, *, where: str = "engine") -> None:
    """Check ``num_images`` against the per-prompt image limit; returns None.

    vLLM refuses a prompt with more images than ``limit_mm_per_prompt`` allows (the server
    answers 400 "At most N image(s) may be provided in one prompt."); this says so before
    the request is sent, with the setting that raises the limit.

    Args:
        num_images: Images in one prompt.
        limit: The engine's or server's image limit; None when unknown (no check).
        where: ``"engine"`` (``vllm.LLM``) or ``"server"`` (``vllm serve``), for the remedy.

    Raises:
        ValueError: If ``num_images > limit``, naming both and the setting to change.

    """
    _check_int("num_images", num_images, minimum=0)
    if where not in ("engine", "server"):
        raise ValueError(f"where must be 'engine' or 'server', got {where!r}")
    if limit is None:
        return
    _check_int("limit", limit, minimum=0)
    if num_images <= limit:
        return
    if where == "engine":
        setting = f'limit_mm_per_prompt={{"image": {num_images}}} when creating the engine'
    else:
        flag = json.dumps({"image": num_images}, separators=(",", ":"))
        setting = f"--limit-mm-per-prompt '{flag}' when starting the server"
    raise ValueError(
        f"{num_images} images in one prompt, but the {where} allows at most {limit} "
        f"(limit_mm_per_prompt image limit). Send at most {limit} images per prompt, or "
        f"restart the {where} with {setting} (more images also need more max_model_len)."
    )


def check_budget(
    image_tokens: int | Sequence[int],
    text_tokens: int,
    max_tokens: int | None,
    max_model_len: int,
    max_dynamic_patch: int,
    *,
    image_sizes: Sequence[Any] | None = None,
    **tiling: Any,
) -> int:
    """Check that images + text + answer fit ``max_model_len``; returns the tokens needed.

    Call it before sending: vLLM rejects a prompt longer than ``max_model_len`` and the
    server also rejects prompt + ``max_tokens`` beyond it.

    Args:
        image_tokens: Prompt tokens of each image (e.g. ``[p.tokens for p in plans]``) or
            their total.
        text_tokens: Prompt tokens that are not image tokens (template + question),
            as ``cookbook.prompts.text_token_count`` counts them.
        max_tokens: Most tokens to generate (None counts as 0).
        max_model_len: The engine's context length.
        max_dynamic_patch: The tiling setting the image tokens were counted with.
        image_sizes: ``(width, height)`` pairs or images, to name the largest
            ``max_dynamic_patch`` that would fit; without them a value that fits any image
            size is named.
        **tiling: Other tiling settings (``TILING_KEYS``) used with ``image_sizes``.

    Returns:
        Total tokens needed (images + text + ``max_tokens``).

    Raises:
        TypeError: If a count is not an int.
        ValueError: If the total exceeds ``max_model_len``; the message states the count,
            the budget and only the remedies that can help: a lower ``max_tokens`` (the
            largest that fits) when the prompt itself fits, fewer images (how many fit)
            and a lower ``max_dynamic_patch`` (which value fits, never below
            ``min_dynamic_patch``) when there are images and room for some of them, a
            shorter prompt when its text alone is too long, and always a larger
            ``max_model_len``.

    """
    if isinstance(image_tokens, int):  # a bool is refused by _check_int
        per_image: list[int] | None = None
        total_images = _check_int("image_tokens", image_tokens, minimum=0)
    else:
        per_image = [_check_int("image_tokens item", t, minimum=0) for t in image_tokens]
        total_images = sum(per_image)
    _check_int("text_tokens", text_tokens, minimum=0)
    answer = 0 if max_tokens is None else _check_int("max_tokens", max_tokens, minimum=0)
    _check_int("max_model_len", max_model_len)
    _check_int("max_dynamic_patch", max_dynamic_patch)
    needed = total_images + text_tokens + answer
    if needed <= max_model_len:
        return needed

    num_images = len(per_image) if per_image is not None else None
    if image_sizes is not None:
        num_images = len(image_sizes)
    head = (
        f"request needs {needed} tokens ({total_images} image tokens"
        + (f" for {num_images} image(s)" if num_images is not None else "")
        + f" + {text_tokens} text tokens + {answer} max_tokens) but max_model_len is "
        f"{max_model_len} ({needed - max_model_len} over)."
    )
    remedies: list[str] = []
    prompt_tokens = total_images + text_tokens
    room = max_model_len - text_tokens - answer  # left for images at this max_tokens
    if answer and prompt_tokens < max_model_len:
        # The prompt fits: a smaller answer budget alone is enough.
        remedies.append(
            f"lower max_tokens from {answer} to at most {max_model_len - prompt_tokens} "
            f"(the prompt itself takes {prompt_tokens} tokens)"
        )
    elif text_tokens >= max_model_len:
        remedies.append(f"shorten the prompt: its text alone takes {text_tokens} tokens")
    elif room <= 0:
        # Neither a smaller answer nor fewer images helps alone.
        remedies.append(
            f"lower max_tokens and send fewer or smaller images: the text and max_tokens "
            f"alone need {text_tokens + answer} tokens"
        )
    if total_images and room > 0:
        if per_image is not None:
            fit, acc = 0, 0
            for t in per_image:
                if acc + t > room:
                    break
                acc, fit = acc + t, fit + 1
            if fit:
                remedies.append(f"send fewer images: the first {fit} of {len(per_image)} fit")
        else:
            remedies.append("send fewer images")
        remedies.append(_patch_remedy(max_dynamic_patch, room, num_images, image_sizes, tiling))
    remedies.append(
        f"raise max_model_len to at least {needed} (engine max_model_len / server "
        f"--max-model-len; needs more KV cache memory)"
    )
    raise ValueError(head + " Remedies: " + "; ".join(remedies) + ".")


def _patch_remedy(
    current: int,
    room: int,
    num_images: int | None,
    image_sizes: Sequence[Any] | None,
    tiling: Mapping[str, Any],
) -> str:
    # engine_args/create_engine pick the vLLM setting (mm_processor_kwargs or hf_overrides).
    # Candidates stop at min_dynamic_patch: vLLM refuses a max below the min.
    setting = "max_dynamic_patch={n} in cookbook's engine_args or create_engine"
    lowest = max(1, int(tiling.get("min_dynamic_patch", 1)))
    if current <= lowest:
        if lowest == 1:
            return "max_dynamic_patch is already 1 (one tile per image)"
        return f"max_dynamic_patch ({current}) is already at min_dynamic_patch ({lowest})"
    candidates = range(current - 1, lowest - 1, -1)
    if image_sizes is not None:
        extra = {k: v for k, v in tiling.items() if k != "max_dynamic_patch"}
        total = 0
        for candidate in candidates:
            plans = plan_images(image_sizes, max_dynamic_patch=candidate, **extra)
            total = sum(p.tokens for p in plans)
            if total <= room:
                return (
                    f"lower max_dynamic_patch from {current} to {candidate} "
                    f"({setting.format(n=candidate)}): these images then take {total} tokens"
                )
        return (
            f"no max_dynamic_patch fits these images (even {lowest} gives {total} tokens "
            f"for {room} left)"
        )
    if num_images:
        per_tile = tokens_per_tile(
            tiling.get("image_size", 448),
            tiling.get("patch_size", 14),
            tiling.get("downsample_ratio", 0.5),
        )
        thumb = bool(tiling.get("use_thumbnail", True))
        for candidate in candidates:
            worst_tiles = candidate + int(thumb and candidate > 1)
            worst = num_images * (worst_tiles * per_tile + IMAGE_WRAPPER_TOKENS)
            if worst <= room:
                return (
                    f"lower max_dynamic_patch from {current} to {candidate} "
                    f"({setting.format(n=candidate)}): at most {worst} tokens for "
                    f"{num_images} image(s) of any size"
                )
        return f"no max_dynamic_patch fits {num_images} image(s) of any size"
    return (
        f"lower max_dynamic_patch (now {current}; "
        f"{setting.format(n='N')}): each tile costs tokens_per_tile() tokens"
    )


def tiling_from_config(
    config: Any, mm_processor_kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the tiling settings of an InternVL config, as a dict of ``TILING_KEYS``.

    Reads the top-level ``min_dynamic_patch``, ``max_dynamic_patch``, ``use_thumbnail``,
    ``dynamic_image_size``, ``downsample_ratio`` and the vision config's ``image_size`` and
    ``patch_size`` (``force_image_size`` when the vision config has no ``image_size``), as
    vLLM's ``InternVLProcessingInfo.get_image_processor``/``get_hf_processor`` do; then
    applies ``mm_processor_kwargs`` the way vLLM merges them.

    Args:
        config: ``config.json`` as a dict, or a Hugging Face config object (e.g.
            ``llm.llm_engine.model_config.hf_config``).
        mm_processor_kwargs: The engine's ``mm_processor_kwargs``, if any.

    Returns:
        The dict; missing fields take InternVL2/2.5/3-8B's values.

    Raises:
        ValueError: If ``mm_processor_kwargs`` holds a key that is not a tiling setting.

    """

    def get(obj: Any, name: str, default: Any = None) -> Any:
        if isinstance(obj, Mapping):
            value = obj.get(name, default)
        else:
            value = getattr(obj, name, default)
        return default if value is None else value

    vision = get(config, "vision_config", {})
    image_size = get(vision, "image_size", None) or get(config, "force_image_size", 448)
    if isinstance(image_size, list | tuple):
        image_size = image_size[0]
    result: dict[str, Any] = {
        "min_dynamic_patch": int(get(config, "min_dynamic_patch", 1)),
        "max_dynamic_patch": int(get(config, "max_dynamic_patch", 12)),
        "use_thumbnail": bool(get(config, "use_thumbnail", True)),
        "dynamic_image_size": bool(get(config, "dynamic_image_size", True)),
        "image_size": int(image_size),
        "patch_size": int(get(vision, "patch_size", 14)),
        "downsample_ratio": float(get(config, "downsample_ratio", 0.5)),
    }
    if mm_processor_kwargs:
        unknown = set(mm_processor_kwargs) - set(_PROCESSOR_KEYS)
        if unknown:
            raise ValueError(
                f"mm_processor_kwargs {sorted(unknown)} are not settings of vLLM's InternVL "
                f"image processor; known: {list(_PROCESSOR_KEYS)}"
            )
        result.update(mm_processor_kwargs)
    return result
