"""Sphinx extension: the parts of the docs site that MyST-NB does not make by itself.

At ``builder-inited`` it writes ``notebooks/`` into the docs source: each notebook of
``notebooks/manifest.toml``, in order, copied from the executed notebooks in
``build/notebooks/`` (``COOKBOOK_DOCS_EXECUTED_DIR``), with a note on what produced the
outputs, a "What this page shows" block from its results file, MyST-NB tags that hide the
input of bookkeeping cells, and the run's absolute paths shortened. With
``COOKBOOK_DOCS_REQUIRE_EXECUTED=1`` a missing, out-of-date, incomplete or failed run fails
the build. It also writes the support matrix, the API pages, and into the HTML output
``_cookbook/notebook_pages.json``: what the browser tests look for on each notebook page.
"""

from __future__ import annotations

import ast
import copy
import html
import json
import os
import pkgutil
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any

from PIL import Image
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
#: A code cell is bookkeeping when each statement is an import or one of these calls.
BOOKKEEPING = re.compile(r"\b(detect_device|set_device_env|results\.write|shutdown)\(|\.stop\(\)")
WIDGET = "application/vnd.jupyter.widget-view+json"  # tqdm's progress bars: no use on a page
SHOWN = ("executed", "failed")  # the statuses whose page shows the run's outputs


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless ``path`` holds it already (Sphinx re-reads changed files only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def source(cell: dict[str, Any]) -> str:
    """Return a cell's source as one string."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def signature(nb: Any) -> list[tuple[str, str]]:
    """Return (type, source) of each cell but papermill's injected one: equal when up to date."""
    tagged = [(c, c.get("metadata", {}).get("tags", [])) for c in nb.cells]
    return [(c.cell_type, source(c).strip()) for c, t in tagged if "injected-parameters" not in t]


def is_bookkeeping(cell: dict[str, Any]) -> bool:
    """Return True for a code cell that only imports, sets up, writes results or shuts down."""
    text = source(cell)
    try:
        body = ast.parse(text).body
    except SyntaxError:  # IPython syntax (``!curl ...``) is never bookkeeping
        return False
    imports = ast.Import | ast.ImportFrom
    work = [ast.get_source_segment(text, s) or "" for s in body if not isinstance(s, imports)]
    return bool(work) and all(BOOKKEEPING.search(w) for w in work)


def examine(name: str, skip: str | None, folder: Path, reports: dict[str, Any]) -> dict[str, Any]:
    """Return the page's plan: ``status``, ``reason``, ``nb`` (to copy), ``record``, ``params``.

    ``status`` is ``executed``, ``failed`` (executed; the run failed), ``missing``,
    ``out-of-date``, ``incomplete`` or ``skipped`` (the manifest skips it on the CPU).
    """
    import nbformat

    committed = nbformat.read(str(REPO / "notebooks" / f"{name}.ipynb"), as_version=4)
    plan: dict[str, Any] = {"nb": committed, "record": None, "params": {}, "reason": skip or ""}
    path = folder / f"{name}.ipynb"
    if not path.exists():
        return plan | (
            {"status": "skipped"} if skip else {"status": "missing", "reason": "no copy"}
        )
    executed = nbformat.read(str(path), as_version=4)
    pm = executed.metadata.get("papermill", {})
    if signature(executed) != signature(committed):
        return plan | {"status": "out-of-date", "reason": "cells differ from the committed ones"}
    if not pm.get("end_time"):
        return plan | {"status": "incomplete", "reason": "its run did not finish"}
    report = reports.get(name, {})
    failures = report.get("failures", []) if report.get("status") == "failed" else []
    if pm.get("exception") and not failures:
        failures = ["a cell raised an exception (see its error output)"]
    record = folder / f"{name}.json"
    return plan | {
        "status": "failed" if failures else "executed",
        "reason": textwrap.shorten("; ".join(failures[:2]), 300, placeholder=" ..."),
        "nb": executed,
        "record": json.loads(record.read_text()) if record.exists() else None,
        "params": dict(pm.get("parameters", {})),
        "when": f"{pm['end_time'][:16].replace('T', ' ')} UTC, {pm.get('duration') or 0:.0f} s",
    }


def tidy(cell: Any, folder: Path) -> None:
    """Tag bookkeeping cells for MyST-NB, drop progress bars, shorten the run's absolute paths."""
    tags = cell.metadata.setdefault("tags", [])
    if "injected-parameters" in tags:  # papermill's copy of the parameters: CI paths, no lesson
        tags.append("remove-cell")
    if cell.cell_type != "code":
        return
    if is_bookkeeping(cell):  # results.write returns the CI path of the results file
        tags += ["hide-input"] + ["remove-output"] * ("results.write" in source(cell))
    cell.outputs = [o for o in cell.outputs if WIDGET not in o.get("data", {})]
    for out in cell.outputs:
        data = out.get("data", {})
        for owner, key in [(out, "text"), (data, "text/plain"), (data, "text/html")]:
            if isinstance(owner.get(key), str):
                owner[key] = short_paths(owner[key], folder)


def short_paths(text: str, folder: Path) -> str:
    """Return ``text`` with the run's absolute paths shortened (results/, repo-relative, ~/)."""
    # A path counts only where no base64 character comes before it: images stay intact.
    for old, new in [(f"{folder}/", "results/"), (f"{REPO}/", ""), (f"{Path.home()}/", "~/")]:
        text = re.sub(r"(?<![\w+/])" + re.escape(old), new, text)
    return text


def note(name: str, plan: dict[str, Any]) -> str:
    """Return the admonition under a notebook page's title: what produced its outputs."""
    status, model = plan["status"], str(plan["params"].get("model", ""))
    rerun = f"Run `make notebooks` (or `run-notebooks --only {name}`), then `make docs`."
    if status == "skipped":
        return f":::{{note}}\nThis notebook is not run on the CPU: {plan['reason']}.\n:::\n"
    if status not in SHOWN:
        return (
            f":::{{warning}}\nThis notebook was not executed for this build ({status}: "
            f"{plan['reason']}); the page shows it without outputs. "
            f"{rerun}\n:::\n"
        )
    what = f"model `{model}` on device `{plan['params'].get('device')}`"
    if model == "tiny" or "/tiny/" in model:
        what = (
            "vLLM's CPU build running the project's **tiny InternVL checkpoint**, which "
            "memorised a few answers about the bundled photos and knows nothing else. Tiling, "
            "token counts and engine settings are vLLM's real ones; the timings are a busy "
            "CPU's and say nothing about an NPU"
        )
    if status == "failed":
        failed = f"**This run failed**: {plan['reason']}. Outputs from {what}. {rerun}"
        return f":::{{warning}}\n{failed}\n:::\n"
    return f":::{{note}}\nOutputs from the notebook runner ({plan['when']}): {what}.\n:::\n"


def result_block(record: dict[str, Any] | None, folder: Path) -> str:
    """Return the "What this page shows" block: the first result's photos, question and answer."""
    from cookbook import display, images

    record = record or {"checks": []}
    found = record.get("results") or []
    if not found:  # notebook 00 records checks, not answers
        checks = [f"{c['status']:<4}  {c['name']}: {c['detail']}" for c in record.get("checks", [])]
        shown = html.escape(short_paths("\n".join(checks), folder))
        body = f'<pre class="cookbook-answer">{shown}</pre>' if shown else "No answer recorded."
        return f'**What this page shows**\n\n<div class="cookbook-result">{body}</div>\n'
    first, pictures = found[0], ""
    photos = [  # notebook 09 records its generated clip as "clip": show its middle frame
        Image.fromarray(images.sample_clip()[4]) if n == "clip" else images.load_image(n)
        for n in first.get("images", [])[:2]
    ]
    same = [r for r in found if r.get("images") == first.get("images")]
    boxes = [b for r in same for b in r.get("extra", {}).get("boxes", [])]
    for photo in [display.draw_boxes(photos[0], boxes)] if boxes and photos else photos:
        photo.thumbnail((300, 300))  # grounding: the boxes of every result about the photo
        pictures += (
            f'<img src="{images.to_data_url(photo, "JPEG")}" alt="photo" width="{photo.width}">'
        )
    answer = short_paths(str(first.get("error") or first.get("text") or "(empty answer)"), folder)
    facts = " · ".join(
        f"{k.replace('_', ' ')} {first.get(k)}"
        for k in ("prompt_tokens", "output_tokens", "finish_reason")
    )
    about = f" about {', '.join(first['images'])}" if first.get("images") else ""
    return (
        f"**What this page shows**: the answer to *{html.escape(first.get('question', ''))}*"
        f"{about} ({len(found)} answer(s) recorded, all on the page).\n\n"
        f'<div class="cookbook-result"><div>{pictures}</div><div><p class="cookbook-answer">'
        f"{html.escape(answer[:400] + ' …' * (len(answer) > 400))}</p>"
        f'<p class="cookbook-facts">{facts}</p></div></div>\n'
    )


def page_of(name: str, plan: dict[str, Any], folder: Path) -> Any:
    """Return the page's notebook: the copy, tidied, with the note and result under the title."""
    import nbformat

    nb = copy.deepcopy(plan["nb"])
    nb.metadata.setdefault("language_info", {})["pygments_lexer"] = "ipython3"  # `!curl ...`
    for cell in nb.cells:
        tidy(cell, folder)
    added = [note(name, plan)] + [result_block(plan["record"], folder)] * (plan["status"] in SHOWN)
    title, _, rest = source(nb.cells[0]).partition("\n")
    if nb.cells[0].cell_type == "markdown" and title.startswith("# "):
        nb.cells[0].source = rest.strip("\n")
        added.insert(0, title)
    nb.cells[0:0] = [nbformat.v4.new_markdown_cell(text) for text in added]
    for i in range(len(added)):
        nb.cells[i]["id"] = f"cookbook-docs-{i}"
    nb.cells = [c for c in nb.cells if c.cell_type != "markdown" or source(c).strip()]
    return nb


def expectations(nb: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """Return what the browser tests look for on a page: images shown, boxes, a result block."""
    hidden = {"remove-cell", "remove-output"}
    outputs = [
        o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code" and not hidden & set(c.metadata.get("tags", []))
        for o in c.outputs
    ]
    in_html = [len(re.findall(r"<img\b", d.get("text/html", ""))) for d in outputs]
    images = [
        n or any(k.startswith("image/") for k in d) for n, d in zip(in_html, outputs, strict=True)
    ]
    added = "".join(source(c) for c in nb.cells if c.get("id", "").startswith("cookbook-docs-"))
    results = (plan["record"] or {}).get("results", [])
    return {
        "images": sum(images),
        "result": plan["status"] in SHOWN,
        "result_images": added.count("<img "),
        "box_photos": len({r["images"][0] for r in results if r.get("extra", {}).get("boxes")}),
    }


def write_notebook_pages(app: Sphinx) -> None:
    """Write ``notebooks/``; keep each page's expectations for ``notebook_pages.json``."""
    import nbformat

    from cookbook.runner import MANIFEST

    default = REPO / "build" / "notebooks"
    folder = Path(os.environ.get("COOKBOOK_DOCS_EXECUTED_DIR", default)).resolve()
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    reports = {r["name"]: r for r in run.get("reports", [])}
    out, pages = Path(app.srcdir) / "notebooks", []
    for entry in tomllib.loads(MANIFEST.read_text())["notebooks"]:
        name = entry["name"]
        plan = examine(name, entry.get("skip", {}).get("cpu"), folder, reports)
        nb = page_of(name, plan, folder)
        write_if_changed(out / f"{name}.ipynb", nbformat.writes(nb) + "\n")
        title = source(nb.cells[0]).removeprefix("# ").strip()
        info = {"name": name, "title": title, "status": plan["status"], "reason": plan["reason"]}
        pages.append(info | {"page": f"notebooks/{name}.html"} | expectations(nb, plan))
        logger.info(f"[cookbook] notebook page {name}: {plan['status']} {plan['reason']}")
    rows = "\n".join(f"| [{p['title']}]({p['name']}.ipynb) | {p['status']} |" for p in pages)
    toc = "\n".join(p["name"] for p in pages)
    write_if_changed(out / "index.md", NOTEBOOKS_INDEX.format(rows=rows, toc=toc))
    for stale in set(out.glob("*.ipynb")) - {out / f"{p['name']}.ipynb" for p in pages}:
        stale.unlink()
    path = Path(app.outdir) / "_cookbook" / "notebook_pages.json"  # for the browser tests
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"notebooks": pages}, indent=2) + "\n")
    good = ("executed", "skipped")
    bad = "\n".join(
        f"  {p['name']}: {p['status']} {p['reason']}" for p in pages if p["status"] not in good
    )
    if bad and os.environ.get("COOKBOOK_DOCS_REQUIRE_EXECUTED", "") not in ("", "0"):
        logger.error(
            "COOKBOOK_DOCS_REQUIRE_EXECUTED=1, and these pages would not show a successful run "
            f"(executed copies from {folder}):\n{bad}\nRun `make notebooks`, then `make docs`."
        )
        app.statuscode = 1


NOTEBOOKS_INDEX = """# Notebooks

The notebooks of the repository's `notebooks/` folder, with the outputs of their latest
run on the CPU by the notebook runner (`python -m cookbook run-notebooks --profile cpu`).
Each page opens with what its run showed. Run them yourself with `make lab`.

| Notebook | The run this build shows |
|---|---|
{rows}

```{{toctree}}
:hidden:

{toc}
```
"""


def support_matrix() -> str:
    """Return the support matrix as a markdown table, one row per model, and its shared settings."""
    from cookbook import models, tiling

    def cell(text: str) -> str:
        text = text.replace("|", "\\|").replace("<", "\\<")
        return re.sub(r"https://([^/\s]+)\S*", lambda m: f"[{m[1]}]({m[0]})", text)

    head = ["Key", "Hub id", "LLM", "Format", "Video", "What upstream says", "Sources"]
    rows = [head, ["---"] * len(head)]
    for spec in models.SUPPORT_MATRIX.values():
        layout = "`-hf` (transformers)" if spec.hf_format else "original (remote code)"
        rows.append(
            [f"`{spec.key}`", cell(spec.hub_id or "built locally").replace("/", "/<wbr>")]
            + [cell(spec.llm).replace("_", "_<wbr>")]
            + [f"{layout}, `{spec.image_placeholder}`", "yes" if spec.video else "no"]
            + [cell(spec.upstream), "; ".join(map(cell, spec.sources))]
        )
    tiles, per_tile = models.MAX_DYNAMIC_PATCH + 1, tiling.TOKENS_PER_TILE
    limit = f'{{"image": {models.LIMIT_IMAGES}}}'
    return "\n".join("| " + " | ".join(r) + " |" for r in rows) + (
        "\n\nEvery row gets the same recommended settings (`cookbook.engine.engine_args`): "
        f"`max_model_len={models.MAX_MODEL_LEN}`, `limit_mm_per_prompt={limit}` and "
        f"`max_dynamic_patch={models.MAX_DYNAMIC_PATCH}`, so one image takes at most {tiles} "
        f"tiles (the grid and a thumbnail) x {per_tile} = {tiles * per_tile} tokens.\n"
    )


def write_api_pages(app: Sphinx) -> None:
    """Write ``api/index.md`` and one autodoc page per module (and subpackage) of ``cookbook``."""
    import cookbook

    out = Path(app.srcdir) / "api"
    found = pkgutil.iter_modules(cookbook.__path__)
    names = sorted(f"cookbook.{m.name}" for m in found if not m.name.startswith("_"))
    for name in names:
        page = f"# `{name}`\n\n```{{automodule}} {name}\n:members:\n```\n"
        write_if_changed(out / f"{name}.md", page)
    toc = "\n".join(names)
    index = "# API reference\n\nThe `cookbook` package, from its docstrings.\n\n"
    write_if_changed(
        out / "index.md",
        f"{index}```{{automodule}} cookbook\n```\n\n```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n",
    )
    for stale in set(out.glob("*.md")) - {out / f"{n}.md" for n in [*names, "index"]}:
        stale.unlink()


def generate(app: Sphinx) -> None:
    """Write every generated source file (``builder-inited``)."""
    write_if_changed(Path(app.srcdir) / "_generated" / "support_matrix.md", support_matrix())
    write_api_pages(app)
    write_notebook_pages(app)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the generation steps and the troubleshooting page's directive."""
    from troubleshooting import RunDirective

    app.add_directive("cookbook-run", RunDirective)
    app.connect("builder-inited", generate)
    return {"version": "2", "parallel_read_safe": True, "parallel_write_safe": True}
