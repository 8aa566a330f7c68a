"""Checks that refuse a request before the engine or server sees it, with the fix in the message.

Read from the engine arguments that built either (`cookbook.engine.engine_args`): typed
``<image>`` placeholders that do not match the images (vLLM would silently add the missing
ones in front), other models' markers, InternVL's image tokens typed as text; the
``limit_mm_per_prompt``; image tokens plus ``max_tokens`` against ``max_model_len``. A
library's own clear error (Pillow on a broken file, vLLM on a bad argument) passes through.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image

from cookbook import prompts, tiling

#: Image markers and turn formats of other model families, as people paste them.
FOREIGN = {
    r"<\|image\|>|<\|image_pad\|>|<\|vision_start\|>": "a Qwen-VL/Llama-3.2 image marker",
    r"\[IMG\]|<image_placeholder>|<start_of_image>": "another model's image marker",
    r"(?im)^\s*(USER|ASSISTANT)\s*:": "a LLaVA-style 'USER: ... ASSISTANT:' turn",
    r"\[INST\]|<\|start_header_id\|>|<start_of_turn>": "another model's turn markers",
}
#: InternVL's own image tokens, which vLLM writes around and for each image.
RESERVED = ("<img>", "</img>", "<IMG_CONTEXT>")


def image_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the image and video content parts of one chat message, in order."""
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [p for p in content if p.get("type") in ("image_url", "image_pil", "video_url")]


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if p.get("type") == "text")


def check_placeholders(messages: Sequence[dict[str, Any]], placeholder: str = "<image>") -> None:
    """Refuse typed placeholders that do not match the message's images, and foreign markers.

    Raises ValueError naming the counts, or the marker or reserved token, and what to write.
    """
    for turn, message in enumerate(messages, 1):
        text = _text(message)
        for pattern, what in FOREIGN.items():
            if re.search(pattern, text):
                raise ValueError(
                    f"message {turn} contains {what}, not InternVL's format: write only the "
                    f"text and let the chat template and {placeholder} placeholders do the rest "
                    "(cookbook.prompts.user_message)"
                )
        reserved = [t for t in RESERVED if t in text and t != placeholder]
        if reserved:
            raise ValueError(
                f"message {turn} types InternVL's image token(s) {reserved} as text; vLLM writes "
                f"these itself for each image. Add images as content parts instead"
            )
        images = sum(p.get("type") != "video_url" for p in image_parts(message))
        typed = text.count(placeholder)
        if typed and typed != images:
            raise ValueError(
                f"message {turn} has {typed} {placeholder} placeholder(s) but {images} image(s): "
                f"type one {placeholder} per image, in order, or none (vLLM then puts one per "
                "image before the text)"
            )


def _size(part: dict[str, Any]) -> tuple[int, int] | None:
    """Return an image part's (width, height) from its header, or None for remote URLs."""
    if part.get("type") == "image_pil":
        return part["image_pil"].size
    url = part.get("image_url", {}).get("url", "")
    if not url.startswith("data:"):
        return None
    data = base64.b64decode(url.split(",", 1)[1])
    with Image.open(io.BytesIO(data)) as img:  # reads the header only
        return img.size


def placeholder_of(args: dict[str, Any]) -> str:
    """Return the image placeholder of the model ``args`` serve (`ModelSpec.image_placeholder`)."""
    from cookbook import models

    return models.resolve(str(args["model"])).image_placeholder


def _frames(part: dict[str, Any]) -> int:
    """Return the frames of a ``video_url`` part (`cookbook.images.video_part`), 0 if unknown."""
    url = part.get("video_url", {}).get("url", "")
    return url.count(",") if url.startswith("data:video/jpeg;base64,") else 0


def check_request(messages: Sequence[dict[str, Any]], args: dict[str, Any], max_tokens: int) -> int:
    """Check one conversation against the engine (or server) built from ``args``.

    Returns the image and video tokens it will take, remote URLs not counted (their size is
    unknown until fetched); a video frame is one tile, 256 tokens (``InternVLVideoProcessor``).
    Raises ValueError, naming numbers and remedies: `check_placeholders` fails, video for a
    model vLLM takes none for, more than ``limit_mm_per_prompt``, or image tokens plus
    ``max_tokens`` above ``max_model_len``.
    """
    from cookbook import models

    spec = models.resolve(str(args["model"]))
    check_placeholders(messages, spec.image_placeholder)
    parts = [p for m in messages for p in image_parts(m)]
    videos = [p for p in parts if p["type"] == "video_url"]
    pictures = [p for p in parts if p["type"] != "video_url"]
    if videos and not spec.video:
        raise ValueError(
            f"{spec.key} takes no video in vLLM: its {spec.llm} LLM has no video token, so "
            "vLLM's InternVL code is image-only for it. Send the frames as images instead, "
            "labelled Frame1: <image> ... (cookbook.prompts.user_message(..., label='Frame'))"
        )
    limits = args.get("limit_mm_per_prompt") or {}
    for kind, found in (("image", pictures), ("video", videos)):
        limit = int(limits.get(kind, 999))
        if len(found) > limit:
            raise ValueError(
                f"{len(found)} {kind}s in one conversation, but the engine allows {limit} "
                f"(limit_mm_per_prompt={{'{kind}': {limit}}}; --limit-mm-per-prompt on a "
                "server). Send fewer, or start the engine with a larger limit"
            )
    patch = tiling.max_dynamic_patch(args)
    sizes = [s for s in map(_size, pictures) if s is not None]
    frames = sum(map(_frames, videos))
    tokens = sum(tiling.plan(s, patch).tokens for s in sizes) + frames * tiling.TOKENS_PER_TILE
    budget = int(args["max_model_len"])
    if tokens + max_tokens > budget:
        several_tiles = tokens > tiling.TOKENS_PER_TILE * (len(sizes) + frames)
        fewer_tiles = f"lower max_dynamic_patch (now {patch}; 1 makes each image 256 tokens), "
        what = f"{len(sizes)} image(s)" + (f" and {frames} video frame(s)" if frames else "")
        raise ValueError(
            f"{what} take {tokens} tokens; with "
            f"max_tokens={max_tokens} that is {tokens + max_tokens} > max_model_len={budget}, "
            f"before any text. Send fewer images or frames, {fewer_tiles if several_tiles else ''}"
            "lower max_tokens, or raise max_model_len"
        )
    return tokens


def prepare_batch(
    items: Sequence[Any], args: dict[str, Any], max_tokens: int
) -> tuple[list[list[dict[str, Any]] | None], list[str | None]]:
    """Build and check each ``(images, question)`` item of a batch on its own.

    Returns ``(conversations, errors)``, in item order: a conversation for ``LLM.chat`` and
    None, or None and the error (named by index), so a bad item does not sink the batch.
    """
    conversations: list[list[dict[str, Any]] | None] = []
    errors: list[str | None] = []
    placeholder = placeholder_of(args)
    for index, item in enumerate(items):
        try:
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise TypeError(f"expected an (images, question) pair, got {item!r:.80}")
            images, question = item
            conversation = [prompts.user_message(question, images, placeholder=placeholder)]
            check_request(conversation, args, max_tokens)
        except (OSError, ValueError, TypeError) as err:
            conversations.append(None)
            errors.append(f"item {index}: {type(err).__name__}: {err}")
        else:
            conversations.append(conversation)
            errors.append(None)
    return conversations, errors
