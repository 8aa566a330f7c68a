"""The built documentation site, checked in headless Chromium.

Needs ``make docs`` first (the site in ``build/docs/html``) and Chromium
(``env/install-browser.sh``); ``make browser-test`` does both checks. Screenshots of every
page go to ``build/screenshots/``.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

import pytest
from browser_support import ANSWER_FACTS_JS, DOCS_HTML, screenshot

pytestmark = pytest.mark.browser

# For each answer block (cookbook.display.answer_html) of the page: does its box hold a
# decoded image? Answers are found by their facts line, inside the notebook's output cells.
ANSWERS_JS = f"""() => {{
  const facts = {ANSWER_FACTS_JS};
  return [...document.querySelectorAll('.cell_output p')]
    .filter(p => facts.test(p.textContent))
    .map(p => {{
      const box = p.closest('div[style*="display:flex"], div[style*="display: flex"]');
      const imgs = box ? [...box.querySelectorAll('img')] : [];
      return {{facts: p.textContent.trim(), images: imgs.length,
               decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length}};
    }});
}}"""

IMAGES_JS = """() => [...document.querySelectorAll('article img')].map(i => ({
  src: (i.getAttribute('src') || '').slice(0, 40),
  width: i.naturalWidth, complete: i.complete}))"""

LINKS_JS = """() => ({
  anchors: [...document.querySelectorAll('a[href]')].map(a => a.href),
  resources: [
    ...[...document.querySelectorAll('link[href]')].map(e => e.href),
    ...[...document.querySelectorAll('script[src]')].map(e => e.src),
    ...[...document.querySelectorAll('img[src]')].map(e => e.src),
  ],
})"""

TARGET_EXISTS_JS = """(frag) => !!(document.getElementById(frag)
  || document.getElementsByName(frag).length)"""


def notebook_pages() -> list[dict[str, Any]]:
    """Return the notebook pages the docs build recorded (``_cookbook/notebook_pages.json``)."""
    path = DOCS_HTML / "_cookbook" / "notebook_pages.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: rebuild the docs with `make docs`", pytrace=False)
    pages = json.loads(path.read_text())["notebooks"]
    assert pages, "the docs build recorded no notebook page; notebooks/manifest.toml lists none"
    return pages


def test_notebook_pages_show_images_and_outputs(docs_site, browser_context):
    problems: list[str] = []
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    for nb in notebook_pages():
        name = nb["name"]
        response = page.goto(docs_site.url + nb["page"], wait_until="load")
        assert response is not None and response.status == 200, f"{nb['page']}: not served"
        shot = screenshot(page, f"docs-notebook-{name}")
        text = page.inner_text("article")
        if nb["status"] == "skipped":
            if "is not run on the CPU" not in text:
                problems.append(f"{name}: skipped on the CPU, but the page does not say so")
            continue
        if nb["status"] != "executed":
            problems.append(
                f"{name}: the page shows a notebook that was not executed ({nb['status']}: "
                f"{nb['reason']}); run `make notebooks`, then `make docs`"
            )
            continue
        expect = nb["expect"]
        if "The outputs below come from a CPU run with random weights" not in text:
            problems.append(f"{name}: the note saying where the outputs come from is missing")

        outputs = page.locator("article .cell_output").count()
        if outputs != expect["output_cells"]:
            problems.append(
                f"{name}: {outputs} output cells on the page, the executed notebook has "
                f"{expect['output_cells']} ({shot})"
            )
        images = page.evaluate(IMAGES_JS)
        if len(images) < expect["images"]:
            problems.append(f"{name}: {len(images)} images, expected {expect['images']}")
        broken = [im for im in images if not (im["complete"] and im["width"] > 0)]
        if broken:
            problems.append(f"{name}: images that did not load: {broken}")
        answers = page.evaluate(ANSWERS_JS)
        if len(answers) < expect["answers"]:
            problems.append(f"{name}: {len(answers)} answer blocks, expected {expect['answers']}")
        for answer in answers:
            if answer["decoded"] < 1 or answer["decoded"] != answer["images"]:
                problems.append(f"{name}: an answer block without its decoded image: {answer}")
    if errors:
        problems.append(f"JavaScript errors: {errors}")
    page.close()
    assert not problems, "\n".join(problems)


def test_every_internal_link_resolves(docs_site, browser_context):
    """Crawl the site from index.html: every same-origin link answers 200, anchors exist."""
    origin = urlparse(docs_site.url).netloc
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def internal(url: str) -> bool:
        parsed = urlparse(url)
        return parsed.scheme in ("http", "https") and parsed.netloc == origin

    def is_page(url: str) -> bool:
        path = urlparse(url).path
        return path.endswith((".html", "/"))

    start = docs_site.url + "index.html"
    queue: deque[str] = deque([start])
    seen_pages: set[str] = {start}
    resources: set[str] = set()
    fragments: dict[str, set[tuple[str, str]]] = {}  # page -> {(fragment, linked from)}
    broken: list[str] = []
    while queue:
        url = queue.popleft()
        response = page.goto(url, wait_until="load")
        status = response.status if response is not None else None
        if status != 200:
            broken.append(f"{url}: HTTP {status}")
            continue
        path = urlparse(url).path.strip("/") or "index.html"
        screenshot(page, "docs-" + path.removesuffix(".html").replace("/", "-"))
        links = page.evaluate(LINKS_JS)
        for href in links["anchors"]:
            if not internal(href):
                continue
            target, frag = urldefrag(href)
            if frag:
                fragments.setdefault(target, set()).add((unquote(frag), url))
            if is_page(target):
                if target not in seen_pages:
                    seen_pages.add(target)
                    queue.append(target)
            else:
                resources.add(target)
        resources.update(r for r in links["resources"] if internal(r))

    for url in sorted(resources - seen_pages):
        status = browser_context.request.get(url).status
        if status != 200:
            broken.append(f"{url}: HTTP {status}")
    for target, frags in sorted(fragments.items()):
        if target not in seen_pages:
            continue
        page.goto(target, wait_until="load")
        for frag, source in sorted(frags):
            if not page.evaluate(TARGET_EXISTS_JS, frag):
                broken.append(f"{target}#{frag} (linked from {source}): no such anchor")
    page.close()

    # Browsers ask for /favicon.ico by themselves; no page links to it.
    not_found = sorted({p for p, code in docs_site.statuses if code >= 400 and p != "/favicon.ico"})
    assert len(seen_pages) >= 5, f"the crawl found only {sorted(seen_pages)}"
    assert not broken, "\n".join(broken)
    assert not not_found, f"the server answered 4xx/5xx for {not_found}"
    assert not errors, f"JavaScript errors: {errors}"
