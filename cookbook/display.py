"""Notebook display helpers: images beside answers, small tables. IPython imported lazily."""

from __future__ import annotations

import html
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
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
        result: a `cookbook.recipes.GenerationResult`, or a `cookbook.server.ChatResult`
            (which has no tiles; a streamed one adds its time to first token).
        title: optional caption above the answer.
    """
    pics = "".join(_img_tag(im) for im in images)
    text = html.escape(result.text) if result.text else "<i>(empty answer)</i>"
    parts = [
        f"prompt tokens {result.prompt_tokens}",
        f"output tokens {result.output_tokens}",
        f"finish reason {result.finish_reason}",
    ]
    if getattr(result, "tiles", None) is not None:
        parts.append(f"tiles {result.tiles}")
    if getattr(result, "ttft_seconds", None) is not None:
        parts.append(f"first token after {result.ttft_seconds * 1000:.0f} ms")
    parts.append(f"{result.seconds:.2f} s")
    facts = " · ".join(parts)
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


def shorten_data_urls(value: Any, keep: int = 48) -> Any:
    """Return a copy of a JSON-like value with every data URL cut short, for display.

    A photo sent as a data URL is hundreds of kilobytes of base64; a request body is
    readable only without it. Each string starting with ``data:`` longer than ``keep``
    characters becomes its first ``keep`` characters plus ``...(N characters)``. Dicts,
    lists and tuples are copied; other values are returned as they are.

    Args:
        value: e.g. the JSON body of a chat request
            (`cookbook.server.ServerClient.request_body`).
        keep: characters of each data URL to keep.
    """
    if isinstance(value, str):
        if value.startswith("data:") and len(value) > keep:
            return f"{value[:keep]}...({len(value):,} characters)"
        return value
    if isinstance(value, Mapping):
        return {k: shorten_data_urls(v, keep) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shorten_data_urls(v, keep) for v in value]
    return value


def curl_command(url: str, data: Mapping[str, Any] | str, *, auth_env: str | None = None) -> str:
    """Return a copyable ``curl`` command, over several lines, that POSTs JSON to ``url``.

    The layout of the vllm-ascend tutorial's example: the URL, a ``Content-Type`` header,
    then the body with ``-d``.

    Args:
        url: e.g. ``"http://127.0.0.1:8000/v1/chat/completions"``.
        data: the JSON body as a dict (printed indented and shell-quoted), or ``"@FILE"``
            (curl reads the body from FILE; use it for bodies holding data URLs, which
            can exceed the 128 KiB a single command-line argument may have on Linux).
        auth_env: name of an environment variable holding the API key, e.g.
            ``"VLLM_API_KEY"``; the command then sends ``Authorization: Bearer $NAME``,
            which the shell expands, so the key itself is never printed.

    Raises:
        TypeError: ``data`` is neither a mapping nor a string.
        ValueError: ``auth_env`` is not an environment variable name.
    """
    if auth_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", auth_env):
        raise ValueError(f"auth_env must be an environment variable name, got {auth_env!r}")
    if isinstance(data, Mapping):
        body = shlex.quote(json.dumps(dict(data), indent=4))
    elif isinstance(data, str):
        body = shlex.quote(data)
    else:
        raise TypeError(f"data must be a dict or '@FILE', got {type(data).__name__}")
    lines = [f"curl {shlex.quote(url)}", '    -H "Content-Type: application/json"']
    if auth_env:
        lines.append(f'    -H "Authorization: Bearer ${auth_env}"')
    lines.append(f"    -d {body}")
    return " \\\n".join(lines)
