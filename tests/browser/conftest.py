"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and a docs server.

Chromium is the system browser (``/usr/bin/chromium``, installed by
``env/install-browser.sh``; ``COOKBOOK_CHROMIUM`` points elsewhere), never a browser
downloaded by ``playwright install``. When it is missing the tests fail and say how to
install it; they are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import CHROMIUM_ARGS, DOCS_HTML, VIEWPORT, DocsSite, chromium_path


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Yield a Playwright browser context of headless Chromium with a fresh profile."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the Python package playwright is missing; run the browser tests inside the "
            "stack: `make browser-test` (env/with-stack python -m pytest -m browser ...)",
            pytrace=False,
        )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def docs_site() -> Iterator[DocsSite]:
    """Serve ``build/docs/html`` from a local HTTP server on a free port, in a thread."""
    if not (DOCS_HTML / "index.html").is_file():
        pytest.fail(f"no docs site at {DOCS_HTML}: build it first with `make docs`", pytrace=False)
    with DocsSite(DOCS_HTML) as site:
        yield site
