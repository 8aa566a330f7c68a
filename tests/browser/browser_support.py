"""Helpers of the browser tests: Chromium's location and flags, screenshots, a docs server.

Chromium is the system browser (``/usr/bin/chromium``, installed by
``env/install-browser.sh``; ``COOKBOOK_CHROMIUM`` points elsewhere), never a browser
downloaded by ``playwright install``. When it is missing the tests fail and say how to
install it; they are never skipped.
"""

from __future__ import annotations

import functools
import io
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS_HTML = REPO / "build" / "docs" / "html"
SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = os.environ.get("COOKBOOK_CHROMIUM", "/usr/bin/chromium")
# The flags a root user on a machine without outbound network needs: without the
# background-networking ones Chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
# Chromium captures at most 16,384 px in one piece; taller pages are taken in parts of
# this height and put together, so no screenshot is cut off.
SCREENSHOT_PART = 8000
# The facts line of cookbook.display.answer_html ("prompt tokens 1833 · output tokens 24 ·
# finish reason length · ..."); the answer block is the flex box around it, with the images.
ANSWER_FACTS_JS = r"/prompt tokens \d+ · output tokens \d+ · finish reason \w+/"


def chromium_path() -> str:
    """Return the Chromium executable; fail the test (never skip) when it is missing."""
    path = shutil.which(CHROMIUM) or CHROMIUM
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run `bash env/install-browser.sh` "
            "(`make browser-test` runs it first), or set COOKBOOK_CHROMIUM to a Chromium "
            "executable.",
            pytrace=False,
        )
    return path


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot of the whole page, however tall (in parts when needed); return its path."""
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}.png"
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    width = int(page.viewport_size["width"])
    if height <= SCREENSHOT_PART:
        page.screenshot(path=str(path), full_page=True)
        return path
    whole = Image.new("RGB", (width, height), "white")
    for top in range(0, height, SCREENSHOT_PART):
        clip = {"x": 0, "y": top, "width": width, "height": min(SCREENSHOT_PART, height - top)}
        part = Image.open(io.BytesIO(page.screenshot(full_page=True, clip=clip)))
        whole.paste(part.convert("RGB"), (0, top))
    whole.save(path)
    return path


class _DocsHandler(SimpleHTTPRequestHandler):
    """Serve files quietly and record every request's status code."""

    log_statuses: list[tuple[str, int]]

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self.log_statuses.append((self.path, int(getattr(code, "value", code))))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class DocsSite:
    """The built docs served on 127.0.0.1: ``url`` and the (path, status) of each request."""

    def __init__(self, root: Path) -> None:
        self.statuses: list[tuple[str, int]] = []
        handler = type("Handler", (_DocsHandler,), {"log_statuses": self.statuses})
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> DocsSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
