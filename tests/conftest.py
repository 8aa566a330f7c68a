from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """Path of the tiny random InternVL checkpoint (built once, cached)."""
    from cookbook.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint()


@pytest.fixture(scope="session")
def tiny_engine():
    """One real vLLM engine on the tiny checkpoint for the whole test session.

    ``max_dynamic_patch=6`` (instead of the config's 12) so an 800x600 photo gives 6 tiles
    + a thumbnail, and so every test shows the per-engine setting takes effect.
    """
    from cookbook.engine import create_engine

    engine = create_engine("tiny", "cpu", max_model_len=4096, max_dynamic_patch=6, limit_images=4)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_checkpoint):
    """The tiny checkpoint's tokenizer, loaded by transformers (no engine)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoint), trust_remote_code=True)


@pytest.fixture(scope="session")
def executed_notebook(tmp_path_factory):
    """Return ``get(name) -> (NotebookReport, record dict | None)`` for the cpu profile.

    When ``COOKBOOK_EXECUTED_NOTEBOOKS`` names a folder where the runner has just executed
    the notebooks (``make test`` runs ``python -m cookbook run-notebooks`` first), its
    ``run.json`` and records are read, so each notebook runs once per CI run. Otherwise
    the notebook is executed now, through the same runner.
    """
    import json
    import os

    from cookbook.runner import NotebookReport, run_notebooks

    done: dict = {}
    pre = os.environ.get("COOKBOOK_EXECUTED_NOTEBOOKS")
    previous = {}
    if pre and (Path(pre) / "run.json").exists():
        run = json.loads((Path(pre) / "run.json").read_text())
        if run.get("profile") == "cpu":
            previous = {r["name"]: NotebookReport(**r) for r in run["reports"]}

    def get(name: str):
        if name not in done:
            report = previous.get(name)
            if report is None or report.status == "skipped":
                out = tmp_path_factory.mktemp(name)
                (report,) = run_notebooks("cpu", only=[name], out_dir=out, log=print)
            record = json.loads(Path(report.record).read_text()) if report.record else None
            done[name] = (report, record)
        return done[name]

    return get
