"""The built documentation site, checked in headless Chromium.

Needs ``make docs`` first (the site in ``build/docs/html``) and Chromium
(``env/install-browser.sh``); ``make browser-test`` does both. Every page the crawl reaches
gets one full-page screenshot in ``build/screenshots/``.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

import pytest
from browser_support import DOCS_HTML, REPO, VIEWPORT, screenshot

from cookbook.display import _COLORS as BOX_COLORS

pytestmark = pytest.mark.browser

# Paths of the CI run that no page may show: the clone, the executed notebooks' folder,
# and any absolute path into a build/notebooks/ folder (`$PWD/build/notebooks/` is advice).
EXECUTED = Path(os.environ.get("COOKBOOK_DOCS_EXECUTED_DIR", REPO / "build" / "notebooks"))
CI_PATHS = re.compile(
    "|".join(
        [
            re.escape(f"{REPO}/"),
            re.escape(f"{EXECUTED.resolve()}/"),
            r"(?<![\w$}])(/[\w.-]+)+/build/notebooks/",
        ]
    )
)

# Every image of the article, decoded into a canvas: its size, the share of its most common
# colour (1.0 for a blank picture), and how many pixels have one of the box colours
# `cookbook.display.draw_boxes` draws with (exact RGB: the notebook's PNG outputs are lossless).
IMAGES_JS = """(boxColors) => {
  const box = new Set(boxColors);
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  return [...document.querySelectorAll('article img')].map(img => {
    const entry = {src: (img.getAttribute('src') || '').slice(0, 60), complete: img.complete,
                   width: img.naturalWidth, height: img.naturalHeight,
                   output: !!img.closest('.cell_output'),
                   result: !!img.closest('.cookbook-result')};
    if (!(img.complete && img.naturalWidth > 0 && img.naturalHeight > 0)) return entry;
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const counts = new Map();
    let boxPixels = 0, top = 0;
    for (let i = 0; i < d.length; i += 4) {
      const rgb = d[i + 3] === 0 ? -1 : (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
      const n = (counts.get(rgb) || 0) + 1;
      counts.set(rgb, n);
      if (n > top) top = n;
      if (box.has(rgb)) boxPixels++;
    }
    entry.dominant = top / (d.length / 4);
    entry.boxPixels = boxPixels;
    return entry;
  });
}"""

# Where the "What this page shows" block sits, in page coordinates.
RESULT_JS = """() => {
  const block = document.querySelector('article div.cookbook-result');
  const height = document.documentElement.scrollHeight;
  if (!block) return {found: false, height};
  const r = block.getBoundingClientRect();
  return {found: true, top: r.top + window.scrollY, height, text: block.innerText.slice(0, 200)};
}"""

WIDTH_JS = "() => document.documentElement.scrollWidth"
NOTE_JS = "() => document.querySelector('article .admonition')?.innerText || ''"

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

# A picture is blank when one colour covers more than this share of it.
BLANK_SHARE = 0.995
# Fewest pixels of a box colour in a photo with boxes drawn (a box of 2 px line is far more).
MIN_BOX_PIXELS = 200


def notebook_pages() -> list[dict[str, Any]]:
    """Return the notebook pages the docs build recorded (``_cookbook/notebook_pages.json``)."""
    path = DOCS_HTML / "_cookbook" / "notebook_pages.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: rebuild the docs with `make docs`", pytrace=False)
    pages = json.loads(path.read_text())["notebooks"]
    assert pages, "the docs build recorded no notebook page; notebooks/manifest.toml lists none"
    return pages


def rgb(color: str) -> int:
    """Return ``#rrggbb`` as the integer the page's script compares with."""
    return int(color.lstrip("#"), 16)


def check_notebook_page(page: Any, nb: dict[str, Any]) -> list[str]:
    """Return what is wrong with one notebook page, already loaded in ``page``."""
    name, problems = nb["name"], []
    if nb["status"] == "skipped":
        text = page.inner_text("article")
        return (
            []
            if "not run on the CPU" in text
            else [f"{name}: skipped, and the page does not say so"]
        )
    if nb["status"] != "executed":
        problems.append(f"{name}: the page shows a run that is {nb['status']}: {nb['reason']}")
    if not nb["result"]:
        return problems
    if nb["status"] == "executed" and "Outputs from" not in page.evaluate(NOTE_JS):
        problems.append(f"{name}: no note saying what produced the outputs")

    result = page.evaluate(RESULT_JS)
    near_top = max(VIEWPORT["height"], 0.25 * result["height"])
    if not result["found"]:
        problems.append(f"{name}: no 'What this page shows' block")
    elif result["top"] > near_top:
        problems.append(
            f"{name}: the result block starts at {result['top']:.0f} px of {result['height']} px "
            f"(it must start within {near_top:.0f} px)"
        )

    pictures = page.evaluate(IMAGES_JS, [rgb(c) for c in BOX_COLORS])
    for pic in pictures:
        if not (pic["complete"] and pic["width"] > 0):
            problems.append(f"{name}: an image that did not load: {pic}")
        elif pic["dominant"] > BLANK_SHARE:
            problems.append(f"{name}: a blank picture ({pic['dominant']:.1%} one colour): {pic}")
    outputs = [p for p in pictures if p["output"]]
    if len(outputs) < nb["images"]:
        problems.append(
            f"{name}: {len(outputs)} images in the outputs, the notebook has {nb['images']}"
        )
    shown = sum(p["result"] for p in pictures)
    if shown != nb["result_images"]:
        problems.append(
            f"{name}: {shown} photos in the result block, the build put {nb['result_images']}"
        )
    boxed = [p for p in outputs if p.get("boxPixels", 0) >= MIN_BOX_PIXELS]
    if len(boxed) < nb["box_photos"]:
        problems.append(
            f"{name}: {nb['box_photos']} photo(s) should show boxes, {len(boxed)} output image(s) "
            f"have them (pixels of a box colour: {[p.get('boxPixels') for p in outputs]})"
        )
    return problems


def test_notebook_pages_lead_with_their_result_and_show_their_pictures(docs_site, browser_context):
    problems: list[str] = []
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    for nb in notebook_pages():
        response = page.goto(docs_site.url + nb["page"], wait_until="load")
        assert response is not None and response.status == 200, f"{nb['page']}: not served"
        problems += check_notebook_page(page, nb)
    page.close()
    assert not errors, f"JavaScript errors: {errors}"
    assert not problems, "\n".join(problems)


def test_every_page_answers_shows_no_ci_path_and_links_resolve(docs_site, browser_context):
    """Crawl the site from index.html: links answer 200, anchors exist, no CI path shows."""
    origin = urlparse(docs_site.url).netloc
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def internal(url: str) -> bool:
        parsed = urlparse(url)
        return parsed.scheme in ("http", "https") and parsed.netloc == origin

    start = docs_site.url + "index.html"
    queue: deque[str] = deque([start])
    seen: set[str] = {start}
    resources: set[str] = set()
    fragments: dict[str, set[tuple[str, str]]] = {}  # page -> {(fragment, linked from)}
    broken: list[str] = []
    while queue:
        url = queue.popleft()
        response = page.goto(url, wait_until="load")
        if response is None or response.status != 200:
            broken.append(f"{url}: HTTP {response.status if response else None}")
            continue
        path = urlparse(url).path.strip("/") or "index.html"
        text = page.inner_text("body")
        broken += [f"{path} shows a path of the CI run: {m[0]!r}" for m in CI_PATHS.finditer(text)]
        if (width := page.evaluate(WIDTH_JS)) > VIEWPORT["width"]:
            broken.append(f"{path} is {width} px wide: something does not wrap")
        screenshot(page, "docs-" + path.removesuffix(".html").replace("/", "-"))
        links = page.evaluate(LINKS_JS)
        for href in links["anchors"]:
            if not internal(href):
                continue
            target, frag = urldefrag(href)
            if frag:
                fragments.setdefault(target, set()).add((unquote(frag), url))
            if urlparse(target).path.endswith((".html", "/")):
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
            else:
                resources.add(target)
        resources.update(r for r in links["resources"] if internal(r))

    for url in sorted(resources - seen):
        status = browser_context.request.get(url).status
        if status != 200:
            broken.append(f"{url}: HTTP {status}")
    for target, frags in sorted(fragments.items()):
        if target in seen:
            page.goto(target, wait_until="load")
            for frag, source in sorted(frags):
                if not page.evaluate(TARGET_EXISTS_JS, frag):
                    broken.append(f"{target}#{frag} (linked from {source}): no such anchor")
    page.close()

    # Browsers ask for /favicon.ico by themselves; no page links to it.
    not_found = sorted({p for p, code in docs_site.statuses if code >= 400 and p != "/favicon.ico"})
    pages = {urlparse(u).path.lstrip("/") for u in seen}
    missing = [nb["page"] for nb in notebook_pages() if nb["page"] not in pages]
    assert not missing, f"the crawl from index.html never reached {missing}"
    assert not broken, "\n".join(broken)
    assert not not_found, f"the server answered 4xx/5xx for {not_found}"
    assert not errors, f"JavaScript errors: {errors}"
