"""Shared fixtures: one vLLM engine for the whole session, and the notebooks' executed outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def engine_args():
    """Engine arguments of the tiny checkpoint on the CPU (the recommended settings)."""
    from cookbook import engine

    engine.set_device_env("cpu")
    return engine.engine_args("tiny", "cpu")


@pytest.fixture(scope="session")
def llm(engine_args):
    """One real vLLM engine on the tiny checkpoint, shared by every test that needs one."""
    from vllm import LLM

    llm = LLM(**engine_args)
    yield llm
    llm.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Return ``get(name) -> (report, record)`` for a notebook run on the cpu profile.

    ``make test`` runs the notebooks first and sets ``COOKBOOK_EXECUTED_NOTEBOOKS`` to
    their folder; its ``run.json`` and results files are read then, so each notebook runs
    once per CI run. Otherwise the notebook is executed now, through the same runner.
    """
    from cookbook.runner import Report, run_notebooks

    done: dict = {}
    folder = os.environ.get("COOKBOOK_EXECUTED_NOTEBOOKS")
    previous = {}
    if folder and (Path(folder) / "run.json").exists():
        run = json.loads((Path(folder) / "run.json").read_text())
        if run["profile"] == "cpu":
            previous = {r["name"]: Report(**r) for r in run["reports"]}

    def get(name: str):
        if name not in done:
            report = previous.get(name)
            if report is None:
                (report,) = run_notebooks("cpu", only=[name], out_dir=tmp_path_factory.mktemp(name))
            record = json.loads(Path(report.record).read_text()) if report.record else None
            done[name] = (report, record)
        return done[name]

    return get


#: The API key the shared test server requires.
SERVER_KEY = "test-key-5f2b9c1e"


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """Return ``get()``: the running ``python -m cookbook serve``.

    ``get()`` gives its process ``proc``, base URL ``url``, output file ``out`` and ``key``.

    One server for the session, started as a user starts it, with ``VLLM_API_KEY`` set;
    ``get()`` starts it again if a test stopped it (the Ctrl-C test does).
    """
    from cookbook import server

    state: dict = {}

    def get():
        if state and state["proc"].poll() is None:
            return SimpleNamespace(**state)
        port = server.free_port()
        out = tmp_path_factory.mktemp("serve") / "cli.out"
        env = {**os.environ, "VLLM_API_KEY": SERVER_KEY}
        command = [
            sys.executable,
            "-m",
            "cookbook",
            "serve",
            "--model",
            "tiny",
            "--port",
            str(port),
        ]
        with out.open("w") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while (
            "ready:" not in out.read_text() and proc.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert "ready:" in out.read_text(), out.read_text()[-3000:]
        state.update(proc=proc, url=f"http://127.0.0.1:{port}/v1", out=out, key=SERVER_KEY)
        return SimpleNamespace(**state)

    yield get
    if state and state["proc"].poll() is None:
        state["proc"].kill()
