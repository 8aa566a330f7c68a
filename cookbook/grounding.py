"""InternVL's grounding: ask where a thing is, read ``<ref>...</ref><box>[[x1, y1, x2, y2]]</box>``.

Box corners are on a 0-1000 scale of the image's width and height (InternVL's model cards).
``<ref>``, ``<box>`` and their ends are special tokens of its tokenizers, so they reach the
answer only with ``SamplingParams(skip_special_tokens=False)``.
"""

from __future__ import annotations

import re
from typing import Any

#: InternVL's own grounding prompt; ``{label}`` is what to find, e.g. "the cat".
QUESTION = (
    "Please provide the bounding box coordinate of the region this sentence describes: "
    "<ref>{label}</ref>"
)
#: The scale of InternVL's box coordinates.
SCALE = 1000

_REF_BOX = re.compile(r"<ref>(?P<label>.*?)</ref>\s*<box>(?P<boxes>.*?)</box>", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def question(label: str) -> str:
    """Return InternVL's question asking for the box of ``label`` (e.g. "the cup")."""
    return QUESTION.format(label=label)


def parse_boxes(answer: str, size: tuple[int, int]) -> list[dict[str, Any]]:
    """Return the boxes of a grounding answer in pixels of an image of ``size = (width, height)``.

    One ``{"label": str, "box": [x1, y1, x2, y2]}`` per box (x right, y down), in answer order.
    Raises ValueError: no ``<ref>...</ref><box>...</box>`` (check skip_special_tokens=False), or
    a box not four numbers within 0-1000, its first corner above and left of its second.
    """
    found = list(_REF_BOX.finditer(answer))
    if not found:
        raise ValueError(
            f"no <ref>...</ref><box>[[x1, y1, x2, y2]]</box> in the answer {answer[:120]!r}; "
            "InternVL writes them as special tokens, so sample with skip_special_tokens=False"
        )
    width, height = size
    boxes = []
    for match in found:
        for group in re.findall(r"\[([^\[\]]*)\]", match["boxes"]) or [match["boxes"]]:
            numbers = [float(n) for n in _NUMBER.findall(group)]
            if len(numbers) != 4:
                raise ValueError(
                    f"box {group!r} for {match['label']!r} is not four numbers x1, y1, x2, y2"
                )
            x1, y1, x2, y2 = numbers
            if not (0 <= x1 < x2 <= SCALE and 0 <= y1 < y2 <= SCALE):
                raise ValueError(
                    f"box {numbers} for {match['label']!r} is outside InternVL's 0-{SCALE} scale "
                    "or its corners are swapped; it cannot be drawn"
                )
            scaled = [x1 * width / SCALE, y1 * height / SCALE]
            scaled += [x2 * width / SCALE, y2 * height / SCALE]
            boxes.append({"label": match["label"].strip(), "box": [round(v) for v in scaled]})
    return boxes
