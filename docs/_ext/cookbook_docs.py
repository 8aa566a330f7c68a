"""Sphinx extension that writes the generated parts of the cookbook's documentation.

At the start of every build (``builder-inited``) it writes, into the docs source:

* ``notebooks/``: one page per notebook of ``notebooks/manifest.toml``, in manifest order.
  Each page is a *copy* of the latest executed notebook (``build/notebooks/NAME.ipynb``,
  written by ``python -m cookbook run-notebooks --profile cpu``) with a note added at the
  top that says what produced the outputs. Without an up-to-date, complete executed copy
  the committed notebook (no outputs) is copied instead and the note says it was not
  executed. The committed notebooks are never modified.
* ``_generated/support_matrix.csv`` and ``_generated/support_matrix_notes.md``: the
  support matrix, read from ``cookbook.models.SUPPORT_MATRIX``.
* ``_generated/troubleshooting.md``: every error of ``troubleshooting.CASES``, triggered
  for real and quoted (see ``troubleshooting.py``).
* ``api/``: one API page per module of the ``cookbook`` package.

Environment variables:
    COOKBOOK_DOCS_EXECUTED_DIR: where the executed notebooks are (default
        ``build/notebooks`` in the repository).
    COOKBOOK_DOCS_REQUIRE_EXECUTED: ``1`` makes the build fail (exit status 1) when a
        notebook page would show a notebook that was not executed (missing, incomplete or
        out-of-date copy) or whose run failed. Notebooks the manifest skips on the CPU are
        exempt.

After the build, ``_cookbook/notebook_pages.json`` in the HTML output lists each notebook
page, its status and what it must show; the browser tests read it.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parent.parent
REPO = DOCS.parent
PAGES_JSON = "_cookbook/notebook_pages.json"
# Cell tag that marks the note this extension adds to each notebook page.
NOTE_TAG = "cookbook-docs-note"
# The facts line that only the answer block of cookbook.display.answer_html contains.
ANSWER_RE = re.compile(r"prompt tokens \d+ · output tokens \d+ · finish reason")


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds it; return True when written.

    Leaving unchanged files alone keeps their modification times, so Sphinx re-reads only
    the pages whose generated content changed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def remove_others(folder: Path, keep: set[Path]) -> None:
    """Delete the files under ``folder`` that are not in ``keep`` (stale generated pages)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file() and path not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def truthy(name: str) -> bool:
    """Return True when the environment variable ``name`` is set to a true value."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------
# Notebook pages
# --------------------------------------------------------------------------------------


def cell_text(cell: dict[str, Any]) -> str:
    """Return a cell's source as one string (nbformat allows a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: dict[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def cell_signature(nb: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (cell type, source) of every cell except papermill's injected parameters."""
    return [
        (c["cell_type"], cell_text(c).strip())
        for c in nb.get("cells", [])
        if "injected-parameters" not in _tags(c)
    ]


def notebook_title(nb: dict[str, Any], default: str) -> str:
    """Return the text of the notebook's first H1 heading, or ``default``."""
    for cell in nb.get("cells", []):
        if cell["cell_type"] != "markdown":
            continue
        for line in cell_text(cell).splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return default


def count_outputs(nb: dict[str, Any]) -> dict[str, int | bool]:
    """Return what the rendered page of an executed notebook must show.

    Returns:
        ``{"output_cells", "images", "answers"}``: code cells with at least one output,
        images in the outputs (``<img`` tags in HTML outputs, or image/* outputs without
        HTML) and answer blocks of ``cookbook.display.answer_html``.
    """
    output_cells = images = answers = 0
    for cell in nb.get("cells", []):
        if cell["cell_type"] != "code" or not cell.get("outputs"):
            continue
        output_cells += 1
        for out in cell["outputs"]:
            data = out.get("data", {})
            html = data.get("text/html")
            if html is not None:
                html = "".join(html) if isinstance(html, list) else str(html)
                images += len(re.findall(r"<img\b", html))
                answers += len(ANSWER_RE.findall(html))
            elif any(k.startswith("image/") for k in data):
                images += 1
    return {"output_cells": output_cells, "images": images, "answers": answers}


def has_outputs(nb: dict[str, Any]) -> bool:
    """Return True when any code cell of ``nb`` has an output."""
    return any(c["cell_type"] == "code" and c.get("outputs") for c in nb.get("cells", []))


def run_reports(executed_dir: Path) -> dict[str, dict[str, Any]]:
    """Return the runner's reports (``run.json``) by notebook name; empty when absent."""
    path = executed_dir / "run.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {r["name"]: r | {"profile": data.get("profile")} for r in data.get("reports", [])}


def describe_run(params: dict[str, Any]) -> str:
    """Return the words that say which model and device produced the outputs."""
    model = params.get("model", "?")
    device = params.get("device", "?")
    if model == "tiny":
        where = "the CPU" if device == "cpu" else f"device `{device}`"
        return (
            f"the cookbook's **tiny random-weight InternVL checkpoint** on {where}, with "
            "vLLM's CPU build. Its answers are meaningless text; the image tiling, token "
            "counts, finish reasons and engine settings are the real ones, and the timings "
            "say nothing about an NPU"
        )
    return f"model `{model}` on device `{device}`"


def format_params(params: dict[str, Any]) -> str:
    """Return the injected parameters as inline code, results_path left out."""
    shown = {k: v for k, v in params.items() if k != "results_path"}
    return ", ".join(f"`{k} = {v!r}`" for k, v in shown.items()) or "none"


def plan_notebook(
    name: str,
    entry: dict[str, Any],
    executed_dir: Path,
    reports: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Decide what the page of one notebook shows.

    Returns:
        ``{"name", "status", "reason", "source", "nb"}``; ``status`` is ``"executed"``,
        ``"failed"`` (executed, but the run failed), ``"not-executed"`` or ``"skipped"``
        (the manifest skips it on the CPU); ``nb`` is the notebook to copy (a dict).
    """
    import nbformat

    committed_path = REPO / "notebooks" / f"{name}.ipynb"
    committed = nbformat.read(str(committed_path), as_version=4)
    executed_path = executed_dir / f"{name}.ipynb"
    skip = entry.get("skip", {}).get("cpu")
    plan: dict[str, Any] = {
        "name": name,
        "status": "not-executed",
        "reason": "",
        "source": str(committed_path.relative_to(REPO)),
        "nb": committed,
    }
    if not executed_path.exists():
        if skip:
            plan.update(status="skipped", reason=str(skip))
        else:
            plan["reason"] = f"there is no executed copy at `{_show(executed_path)}`"
        return plan
    try:
        executed = nbformat.read(str(executed_path), as_version=4)
    except Exception as exc:  # nbformat raises several kinds on a broken file
        plan["reason"] = f"the executed copy `{_show(executed_path)}` is unreadable ({exc})"
        return plan
    pm = executed.get("metadata", {}).get("papermill", {})
    if cell_signature(executed) != cell_signature(committed):
        plan["reason"] = (
            f"the executed copy `{_show(executed_path)}` was made from an older version of "
            "the notebook (its cells differ from the committed ones)"
        )
        return plan
    if not pm.get("end_time"):
        plan["reason"] = (
            f"the executed copy `{_show(executed_path)}` is incomplete (its run had not finished)"
        )
        return plan
    if not has_outputs(executed):
        plan["reason"] = f"the executed copy `{_show(executed_path)}` has no outputs"
        return plan
    report = reports.get(name)
    failed = bool(pm.get("exception")) or (report is not None and report["status"] == "failed")
    plan.update(
        status="failed" if failed else "executed",
        reason=(report or {}).get("reason", "") if failed else "",
        source=_show(executed_path),
        nb=executed,
        params=dict(pm.get("parameters", {})),
        end_time=str(pm.get("end_time", ""))[:19].replace("T", " "),
        duration=pm.get("duration"),
        profile=(report or {}).get("profile") or "cpu",
    )
    if failed and not plan["reason"]:
        plan["reason"] = "a cell raised an exception (see the error output below)"
    return plan


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def note_markdown(plan: dict[str, Any]) -> str:
    """Return the note put at the top of a notebook page, as MyST markdown."""
    name = plan["name"]
    rerun = (
        f"Run `make notebooks` (or `env/with-stack python -m cookbook run-notebooks "
        f"--profile cpu --only {name}`), then `make docs`."
    )
    status = plan["status"]
    if status == "executed":
        when = f" on {plan['end_time']} UTC" if plan.get("end_time") else ""
        took = f" in {plan['duration']:.0f} s" if plan.get("duration") else ""
        if plan["params"].get("model") == "tiny":
            head = "The outputs below come from a CPU run with random weights."
        else:
            head = "The outputs below come from a run with a real model."
        return (
            "```{note}\n"
            f"**{head}** They are those "
            f"of the latest run of this notebook by the cookbook's runner "
            f"(`python -m cookbook run-notebooks --profile {plan['profile']}`){when}{took}: "
            f"{describe_run(plan['params'])}. Parameters injected by papermill: "
            f"{format_params(plan['params'])}.\n"
            "```\n"
        )
    if status == "failed":
        return (
            "```{warning}\n"
            f"**The latest run of this notebook failed**: {plan['reason']}. The outputs "
            f"below are from that run ({describe_run(plan['params'])}). {rerun}\n"
            "```\n"
        )
    if status == "skipped":
        return (
            "```{note}\n"
            f"**This notebook is not run on the CPU**: {plan['reason']}. The page shows "
            "the notebook without outputs.\n"
            "```\n"
        )
    return (
        "```{warning}\n"
        f"**This notebook was not executed for this build**: {plan['reason']}, so the page "
        f"shows the committed notebook without outputs. {rerun}\n"
        "```\n"
    )


def labelled_copy(plan: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of the plan's notebook with the note cell placed under its title."""
    import nbformat

    nb = copy.deepcopy(plan["nb"])
    note = nbformat.v4.new_markdown_cell(note_markdown(plan))
    note.metadata["tags"] = [NOTE_TAG]
    note["id"] = NOTE_TAG
    cells = nb.cells
    first = cells[0] if cells else None
    if first is not None and first.cell_type == "markdown":
        text = cell_text(first)
        lines = text.splitlines(keepends=True)
        if lines and lines[0].startswith("# "):
            # Split "# Title\n<intro>" so the note sits right under the title.
            title = nbformat.v4.new_markdown_cell(lines[0].rstrip("\n"))
            title["id"] = f"{NOTE_TAG}-title"
            rest = "".join(lines[1:]).strip("\n")
            first.source = rest
            cells[0:1] = [title, note] + ([first] if rest else [])
            return nb
    cells.insert(0, note)
    return nb


def write_notebook_pages(app: Sphinx) -> list[dict[str, Any]]:
    """Write ``notebooks/`` (one page per manifest notebook and an index); return the plans.

    With ``COOKBOOK_DOCS_REQUIRE_EXECUTED=1``, a page that would show a notebook that was
    not executed, or whose run failed, is logged as an error and the build fails (exit
    status 1), after writing every page.
    """
    import nbformat

    from cookbook.runner import load_manifest

    executed_dir = Path(
        os.environ.get("COOKBOOK_DOCS_EXECUTED_DIR", REPO / "build" / "notebooks")
    ).resolve()
    manifest = load_manifest(REPO / "notebooks" / "manifest.toml")
    reports = run_reports(executed_dir)
    out = Path(app.srcdir) / "notebooks"
    keep: set[Path] = set()
    plans = []
    for entry in manifest.get("notebooks", []):
        plan = plan_notebook(entry["name"], entry, executed_dir, reports)
        nb = labelled_copy(plan)
        path = out / f"{plan['name']}.ipynb"
        write_if_changed(path, nbformat.writes(nb) + "\n")
        keep.add(path)
        plan["title"] = notebook_title(plan["nb"], plan["name"])
        plan["expect"] = count_outputs(plan["nb"]) if plan["status"] != "not-executed" else {}
        plans.append(plan)
        level = "executed" if plan["status"] == "executed" else plan["status"].upper()
        logger.info(f"[cookbook] notebook page {plan['name']}: {level} ({plan['source']})")

    index = out / "index.md"
    write_if_changed(index, notebooks_index(plans, executed_dir))
    keep.add(index)
    remove_others(out, keep)

    bad = [p for p in plans if p["status"] in ("not-executed", "failed")]
    if bad and truthy("COOKBOOK_DOCS_REQUIRE_EXECUTED"):
        lines = "\n".join(f"  {p['name']}: {p['status']}: {p['reason']}" for p in bad)
        logger.error(
            "COOKBOOK_DOCS_REQUIRE_EXECUTED=1 and these notebook pages would not show the "
            f"outputs of a successful run:\n{lines}\nRun `make notebooks` (executed copies "
            f"go to {_show(executed_dir)}), then `make docs` again."
        )
        app.statuscode = 1  # fails the build even without -W
    return plans


def notebooks_index(plans: list[dict[str, Any]], executed_dir: Path) -> str:
    """Return the notebooks index page: what the pages show, a status table and a toctree."""
    words = {
        "executed": "outputs of the latest CPU run",
        "failed": "outputs of a **failed** run",
        "not-executed": "**not executed** (no outputs)",
        "skipped": "not run on the CPU",
    }
    rows = "\n".join(
        f"| [{p['title']}]({p['name']}.ipynb) | `notebooks/{p['name']}.ipynb` | "
        f"{words[p['status']]} |"
        for p in plans
    )
    toc = "\n".join(p["name"] for p in plans)
    return f"""# Notebooks

Each page below is one notebook of the repository's `notebooks/` folder, in the order of
`notebooks/manifest.toml`. The outputs are those of the latest run of the notebook runner on
the CPU (`python -m cookbook run-notebooks --profile cpu`, which writes the executed copies
to `{_show(executed_dir)}/`), with the **tiny random-weight checkpoint**: the answers are
meaningless text, while tiling, token counts, finish reasons and the engine settings are
real. The documentation build does not execute anything; a note at the top of each page says
where its outputs come from.

To run a notebook yourself, open it in JupyterLab with `make lab`, or run it with papermill
as each page shows at its end.

| Notebook | File | This build shows |
|---|---|---|
{rows}

```{{toctree}}
:maxdepth: 1
:hidden:

{toc}
```
"""


# --------------------------------------------------------------------------------------
# Support matrix
# --------------------------------------------------------------------------------------


def md_escape(text: str) -> str:
    """Return ``text`` with markdown's special characters escaped (``</s>`` stays text)."""
    return re.sub(r"([\\`*_{}\[\]<>#|~$!])", r"\\\1", text)


def support_matrix_table() -> list[list[str]]:
    """Return the support matrix as a table of markdown strings, one column per model.

    Row 0 is the header (``""`` then the ``SUPPORT_MATRIX`` keys, in order); each other
    row is one property (its name first). Models as columns keep the table narrow.
    """
    from cookbook.models import SUPPORT_MATRIX, memory_estimate_gib
    from cookbook.tiling import tokens_per_tile

    columns = []
    for key, spec in SUPPORT_MATRIX.items():
        if spec.is_tiny:
            # The tiny checkpoint's tile size lives in its config.json (built at run time).
            tokens = "set by its config.json"
        else:
            per_tile = tokens_per_tile()
            tiles = spec.max_dynamic_patch + 1  # the grid plus the thumbnail
            tokens = f"{tiles * per_tile} ({tiles} tiles x {per_tile})"
        try:
            mem = memory_estimate_gib(spec)
            memory = (
                f"{mem['total_gib']:.1f} GiB ({mem['weights_gib']:.1f} weights + "
                f"{mem['kv_cache_gib']:.1f} KV cache)"
            )
        except ValueError:
            memory = "n/a"
        columns.append(
            {
                "": f"**{md_escape(key)}**",
                "Hub id": md_escape(spec.hub_id or "(built locally)"),
                "LLM": md_escape(spec.llm),
                "Vision encoder": md_escape(spec.vision),
                "LLM family (`llm_family`)": f"`{spec.llm_family}`",
                "Parameters": f"{spec.params_b:g} B" if spec.params_b else "n/a",
                "`max_model_len`": str(spec.max_model_len),
                "`dtype`": f"`{spec.dtype}`",
                "Images per prompt (`limit_mm_per_prompt`)": str(spec.limit_images),
                "`max_dynamic_patch`": str(spec.max_dynamic_patch),
                "Most image tokens per image": tokens,
                "Video input": "yes" if spec.supports_video else "no",
                "Memory estimate": memory,
            }
        )
    names = list(columns[0])
    return [[name] + [col[name] for col in columns] for name in names]


def write_support_matrix(app: Sphinx) -> None:
    """Write the support matrix (CSV) and the per-model notes into ``_generated/``."""
    from cookbook.models import SUPPORT_MATRIX

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(support_matrix_table())
    gen = Path(app.srcdir) / "_generated"
    write_if_changed(gen / "support_matrix.csv", buf.getvalue())
    notes = [
        f"`{key}`\n: {md_escape(spec.notes)}\n\n  *Source:* {md_escape(spec.source)}\n"
        for key, spec in SUPPORT_MATRIX.items()
    ]
    write_if_changed(gen / "support_matrix_notes.md", "\n".join(notes))


# --------------------------------------------------------------------------------------
# API reference
# --------------------------------------------------------------------------------------


def cookbook_modules() -> list[str]:
    """Return the public modules of the ``cookbook`` package, sorted."""
    import cookbook

    return sorted(
        f"cookbook.{m.name}"
        for m in pkgutil.iter_modules(cookbook.__path__)
        if not m.ispkg and not m.name.startswith("_")
    )


def write_api_pages(app: Sphinx) -> None:
    """Write ``api/index.md`` and one autodoc page per module of the ``cookbook`` package."""
    out = Path(app.srcdir) / "api"
    keep = set()
    modules = cookbook_modules()
    for mod in modules:
        page = out / f"{mod}.md"
        write_if_changed(
            page,
            f"# `{mod}`\n\n```{{automodule}} {mod}\n:members:\n:show-inheritance:\n```\n",
        )
        keep.add(page)
    toc = "\n".join(modules)
    index = out / "index.md"
    write_if_changed(
        index,
        "# API reference\n\n"
        "Generated from the docstrings of the `cookbook` package (Google style). Importing\n"
        "`cookbook` loads neither torch nor vLLM: the functions that need them import them\n"
        "when called.\n\n"
        "```{automodule} cookbook\n```\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n",
    )
    keep.add(index)
    remove_others(out, keep)


# --------------------------------------------------------------------------------------
# Wiring
# --------------------------------------------------------------------------------------


def generate(app: Sphinx) -> None:
    """Write every generated source file (``builder-inited``)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from troubleshooting import write_troubleshooting

    gen = Path(app.srcdir) / "_generated"
    write_support_matrix(app)
    write_api_pages(app)
    write_troubleshooting(gen / "troubleshooting.md")
    names = ("support_matrix.csv", "support_matrix_notes.md", "troubleshooting.md")
    remove_others(gen, {gen / name for name in names})
    app.cookbook_notebook_plans = [  # type: ignore[attr-defined]
        {k: v for k, v in p.items() if k != "nb"} for p in write_notebook_pages(app)
    ]


def write_pages_json(app: Sphinx, exception: Exception | None) -> None:
    """Write ``_cookbook/notebook_pages.json`` into the HTML output (``build-finished``)."""
    if exception is not None or app.builder.format != "html":
        return
    plans = getattr(app, "cookbook_notebook_plans", [])
    pages = [
        {
            "name": p["name"],
            "title": p["title"],
            "page": f"notebooks/{p['name']}.html",
            "status": p["status"],
            "reason": p["reason"],
            "source": p["source"],
            "expect": p["expect"],
        }
        for p in plans
    ]
    path = Path(app.outdir) / PAGES_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"notebooks": pages}, indent=2) + "\n")


def check_no_heavy_imports(app: Sphinx, exception: Exception | None) -> None:
    """Warn when building the docs imported torch, vLLM or transformers (it must not)."""
    if exception is not None:
        return
    heavy = sorted(m for m in ("torch", "vllm", "transformers") if m in sys.modules)
    if heavy:
        logger.warning(
            f"importing the cookbook for the docs loaded {heavy}; cookbook modules must "
            "import them inside the functions that need them"
        )


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the generation steps with Sphinx."""
    app.connect("builder-inited", generate)
    app.connect("build-finished", write_pages_json)
    app.connect("build-finished", check_no_heavy_imports)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
