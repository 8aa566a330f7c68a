"""Notebook display helpers: images beside answers, small tables. IPython imported lazily."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

THUMB_SIDE = 320  # pixels: the longest side of an image shown in a notebook cell


def _img_tag(image: Any, side: int = THUMB_SIDE) -> str:
    from cookbook.images import to_data_url

    url = to_data_url(image, fmt="JPEG", max_side=side)
    return f'<img src="{url}" style="max-width:{side}px;max-height:{side}px;margin:4px">'


def answer_html(images: Sequence[Any], result: Any, *, title: str = "") -> str:
    """Return HTML showing the images beside the answer and its token counts.

    Args:
        images: PIL images (shown at most `THUMB_SIDE` pixels a side, as JPEG data URLs).
        result: a `cookbook.recipes.GenerationResult`.
        title: optional caption above the answer.
    """
    pics = "".join(_img_tag(im) for im in images)
    text = html.escape(result.text) if result.text else "<i>(empty answer)</i>"
    facts = (
        f"prompt tokens {result.prompt_tokens} · output tokens {result.output_tokens} · "
        f"finish reason {result.finish_reason} · tiles {result.tiles} · "
        f"{result.seconds:.2f} s"
    )
    cap = f"<b>{html.escape(title)}</b><br>" if title else ""
    return (
        '<div style="display:flex;gap:16px;align-items:flex-start">'
        f"<div>{pics}</div>"
        f'<div style="max-width:560px">{cap}<p style="white-space:pre-wrap">{text}</p>'
        f'<p style="color:#666;font-size:90%">{facts}</p></div></div>'
    )


def show_answer(images: Sequence[Any], result: Any, *, title: str = "") -> None:
    """Display the images beside the answer in a notebook cell (`answer_html`)."""
    from IPython.display import HTML, display

    display(HTML(answer_html(images, result, title=title)))


def show_images(images: Sequence[Any], captions: Sequence[str] = ()) -> None:
    """Display images in a row with optional captions."""
    from IPython.display import HTML, display

    cells = []
    for i, im in enumerate(images):
        cap = html.escape(captions[i]) if i < len(captions) else ""
        cells.append(
            f'<figure style="margin:4px">{_img_tag(im, 240)}<figcaption>{cap}</figcaption></figure>'
        )
    display(HTML('<div style="display:flex;flex-wrap:wrap">' + "".join(cells) + "</div>"))


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Display a list of dicts as an HTML table (and plain text for non-HTML front ends)."""
    from IPython.display import HTML, display

    rows = list(rows)
    cols = list(columns or (rows[0].keys() if rows else []))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    display(HTML(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"))
