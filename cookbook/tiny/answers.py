"""The memorised examples: ``answers.toml`` turned into requests for ``LLM.chat``."""

from __future__ import annotations

import base64
import functools
import io
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANSWERS_FILE = Path(__file__).with_name("answers.toml")


@dataclass(frozen=True)
class Example:
    """One request the tiny checkpoint has memorised (``id`` and ``task`` of ``answers.toml``).

    ``messages`` for ``LLM.chat``: earlier turns with their answers, then this user turn (photos
    as ``image_pil``, the clip as ``video_url`` parts). ``answer`` is the exact text, special
    tokens included (``skip_special_tokens=False``), then ``<|im_end|>`` (finish reason stop).
    ``note`` says what the answer covers where that is not obvious, else ``""``.
    """

    id: str
    task: str
    messages: list[dict[str, Any]]
    answer: str
    note: str = ""


def examples() -> list[Example]:
    """Return the examples of ``answers.toml``, in order.

    Raises KeyError where an example ``follows`` an id that is not before it.
    """
    done: dict[str, Example] = {}
    for row in tomllib.loads(ANSWERS_FILE.read_text(encoding="utf-8"))["example"]:
        history = []
        if "follows" in row:
            before = done[row["follows"]]
            history = [*before.messages, {"role": "assistant", "content": before.answer}]
        content = [{"type": "image_pil", "image_pil": image(n)} for n in row.get("images", [])]
        if "video" in row:
            content.append({"type": "video_url", "video_url": {"url": clip_data_url()}})
        content.append({"type": "text", "text": row["question"]})
        done[row["id"]] = Example(
            id=row["id"],
            task=row["task"],
            messages=[*history, {"role": "user", "content": content}],
            answer=row["answer"],
            note=row.get("note", ""),
        )
    return list(done.values())


@functools.cache
def _clip() -> Any:
    from cookbook.images import sample_clip

    return sample_clip(8)


def image(name: str) -> Any:
    """Return a sample photo (``"cat"``, ...) or ``"clip/N"``, the clip's frame N, as PIL RGB."""
    from PIL import Image

    if name.startswith("clip/"):
        return Image.fromarray(_clip()[int(name[5:])])
    from cookbook.images import load_image

    return load_image(name)


@functools.cache
def clip_data_url() -> str:
    """Return the 8-frame sample clip as vLLM's ``data:video/jpeg`` URL (JPEG frames, commas)."""
    from PIL import Image

    frames = []
    for frame in _clip():
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
        frames.append(base64.b64encode(buffer.getvalue()).decode())
    return "data:video/jpeg;base64," + ",".join(frames)


def clip_as_sent() -> Any:
    """Return the frames of :func:`clip_data_url` decoded: uint8 array ``(8, H, W, 3)``."""
    import numpy as np
    from PIL import Image

    parts = clip_data_url().split(",")[1:]
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(p)))) for p in parts])
