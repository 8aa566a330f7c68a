"""Pictures for the notebooks: photos beside answers, the tile grid, the token budget, boxes, chats.

Each ``*_html`` or image function returns something a test can look at; `show` displays it
in a notebook cell (IPython is imported only there).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw

from cookbook import images, tiling

#: Longest side, in pixels, of a photo shown in a cell.
SHOWN_SIDE = 320
_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4")


def _img(img: Image.Image, side: int = SHOWN_SIDE) -> str:
    small = img.copy()
    small.thumbnail((side, side))
    return f'<img src="{images.to_data_url(small)}" style="max-width:{side}px;margin:4px">'


def answer_html(photos: Sequence[Any], result: Any, title: str = "") -> str:
    """Return HTML: the photos (PIL or sample names) beside a `Result`'s question and answer."""
    pics = "".join(_img(images.load_image(p)) for p in photos)
    answer = html.escape(result.error or result.text) or "<i>(empty answer)</i>"
    facts = (
        f"prompt tokens {result.prompt_tokens} · output tokens {result.output_tokens} · "
        f"finish reason {result.finish_reason} · {result.seconds:.2f} s"
    )
    return (
        f'<div style="display:flex;gap:16px;align-items:flex-start"><div>{pics}</div>'
        f'<div style="max-width:520px"><b>{html.escape(title or result.question)}</b>'
        f'<p style="white-space:pre-wrap">{answer}</p>'
        f'<p style="color:#666;font-size:90%">{facts}</p></div></div>'
    )


def tile_picture(img: Image.Image, max_patch: int = 12) -> Image.Image:
    """Return the photo resized to its tile grid (`cookbook.tiling.plan`), lines between tiles.

    The 448x448 thumbnail, when there is one, is beside it.
    """
    plan = tiling.plan(img.size, max_patch)
    cols, rows = plan.grid
    side = tiling.TILE_SIZE
    grid = img.resize((cols * side, rows * side))
    width = grid.width + (side + 32 if plan.thumbnail else 0)
    canvas = Image.new("RGB", (width, grid.height), "white")
    canvas.paste(grid)
    draw = ImageDraw.Draw(canvas)
    for c in range(cols + 1):
        draw.line([(c * side, 0), (c * side, grid.height)], fill="yellow", width=6)
    for r in range(rows + 1):
        draw.line([(0, r * side), (grid.width, r * side)], fill="yellow", width=6)
    if plan.thumbnail:
        canvas.paste(img.resize((side, side)), (grid.width + 32, 0))
        draw.rectangle([grid.width + 32, 0, width - 1, side - 1], outline="orange", width=6)
    return canvas


def frame_strip(frames: Any, height: int = 112) -> Image.Image:
    """Return a clip's frames (``(T, H, W, 3)`` uint8) side by side, each ``height`` pixels tall."""
    shown = [Image.fromarray(f) for f in frames]
    width = round(shown[0].width * height / shown[0].height)
    strip = Image.new("RGB", (width * len(shown) + 4 * (len(shown) - 1), height), "white")
    for i, frame in enumerate(shown):
        strip.paste(frame.resize((width, height)), (i * (width + 4), 0))
    return strip


def draw_boxes(img: Image.Image, boxes: Sequence[Mapping[str, Any]]) -> Image.Image:
    """Return a copy of ``img`` with each ``{"label", "box": [x1, y1, x2, y2]}`` (pixels) drawn.

    The copy drops an embedded ICC profile (skimage's rocket.jpg has one), so a viewer shows
    the box colours as drawn and the photo as the model's raw pixels.
    """
    out = img.copy()
    out.info.pop("icc_profile", None)
    draw = ImageDraw.Draw(out)
    for i, box in enumerate(boxes):
        color = _COLORS[i % len(_COLORS)]
        x1, y1, x2, y2 = box["box"]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=max(2, img.width // 150))
        draw.text((x1 + 4, y1 + 2), str(box["label"]), fill=color)
    return out


def token_budget(parts: Mapping[str, int], max_model_len: int) -> Any:
    """Return a matplotlib figure: a bar of the prompt's parts (tokens) and ``max_model_len``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 1.6))
    left = 0
    for i, (name, count) in enumerate(parts.items()):
        ax.barh(0, count, left=left, color=_COLORS[i % len(_COLORS)], label=f"{name}: {count}")
        left += count
    ax.axvline(max_model_len, color="black", linestyle="--", label=f"max_model_len {max_model_len}")
    ax.set_xlim(0, max(max_model_len, left) * 1.05)
    ax.set_yticks([])
    ax.set_xlabel("tokens")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=4, frameon=False)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


def transcript_html(messages: Sequence[Mapping[str, Any]]) -> str:
    """Return a chat transcript as HTML: each turn's role, its images and its text."""
    rows = []
    for message in messages:
        content = message["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        body = "".join(
            _img(images.load_image(p["image_url"]["url"]), 160)
            if p["type"] == "image_url"
            else f'<span style="white-space:pre-wrap">{html.escape(p.get("text", ""))}</span>'
            for p in parts
        )
        shade = "#eef4ff" if message["role"] == "user" else "#f4f4f4"
        rows.append(
            f'<div style="background:{shade};padding:6px 10px;margin:4px 0;border-radius:6px">'
            f"<b>{message['role']}</b>: {body}</div>"
        )
    return "".join(rows)


def table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """Return a list of dicts as an HTML table, columns in the first row's order."""
    columns = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def show(item: Any) -> None:
    """Display HTML text, a PIL image or a matplotlib figure in the notebook cell."""
    from IPython.display import HTML, display

    display(HTML(item) if isinstance(item, str) else item)
