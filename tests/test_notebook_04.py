"""Notebook 04 (server query): what it documents, what it records, and that no server outlives it.

The notebook tests execute it on the CPU with the tiny checkpoint, through the same runner
as CI, and check the record's structure (never the random model's text) and the process
table afterwards. The other tests need no server.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import threading
import time
from pathlib import Path

import pytest

from cookbook.display import curl_command, shorten_data_urls

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "04_server_query.ipynb"
API_SERVER = "vllm.entrypoints.openai.api_server"

needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="needs the CPU stack with vLLM (env/setup_cpu_stack.py)",
)


def _cells(kind: str) -> list[str]:
    nb = json.loads(NOTEBOOK.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind]


# --------------------------------------------------------------------------- no server


def test_documented_npu_command_is_the_one_the_code_builds():
    """The markdown's `vllm serve` line for InternVL3-8B on an NPU is what VLLMServer runs."""
    from cookbook.models import resolve_model
    from cookbook.server import build_serve_command

    built = build_serve_command(
        resolve_model("internvl3-8b"), device="npu", use_cli=True, port=8000
    )
    expected = shlex.join(["vllm", *built[1:]])
    markdown = "\n".join(_cells("markdown"))
    found = re.search(r"^vllm serve OpenGVLab/InternVL3-8B.*?(?=\n```)", markdown, re.M | re.S)
    assert found, "the notebook no longer shows the NPU command"
    documented = " ".join(found.group(0).replace("\\\n", " ").split())
    assert documented == expected
    # The seed tutorial's flags are all there.
    for flag in ("--max-model-len 8192", "--dtype bfloat16", "--trust-remote-code"):
        assert flag in documented
    assert "--limit-mm-per-prompt '{\"image\":4}'" in documented


def test_api_key_comes_from_the_environment_only():
    code = "\n".join(_cells("code"))
    assert 'for name in ("VLLM_API_KEY", "OPENAI_API_KEY") if os.environ.get(name)' in code
    assert not re.search(r"api_key\s*=\s*['\"]", code), "a literal API key in the notebook"
    # The server started here never gets the key on its command line (ps would show it).
    start = code[code.index("servers.VLLMServer(") :]
    assert "api_key" not in start[: start.index(")")]


def test_curl_command_layout_and_auth_placeholder():
    body = {"model": "tiny", "messages": [{"role": "user", "content": "it's"}]}
    text = curl_command("http://127.0.0.1:8000/v1/chat/completions", body, auth_env="VLLM_API_KEY")
    lines = text.split(" \\\n")
    assert lines[0] == "curl http://127.0.0.1:8000/v1/chat/completions"
    assert lines[1] == '    -H "Content-Type: application/json"'
    assert lines[2] == '    -H "Authorization: Bearer $VLLM_API_KEY"'
    # The body survives the shell: split it back as a shell would.
    argv = shlex.split(text.replace(" \\\n", " "))
    assert json.loads(argv[argv.index("-d") + 1]) == body
    assert curl_command("http://h/v1/chat/completions", "@/tmp/a b.json").endswith(
        "-d '@/tmp/a b.json'"
    )
    with pytest.raises(ValueError, match="environment variable name"):
        curl_command("http://h", body, auth_env="$(rm -rf /)")
    with pytest.raises(TypeError, match="dict or '@FILE'"):
        curl_command("http://h", [1, 2])


def test_shorten_data_urls_keeps_everything_else():
    url = "data:image/png;base64," + "A" * 1000
    body = {"a": [{"url": url}, ("x", 1)], "b": "data:short", "c": None}
    short = shorten_data_urls(body, keep=30)
    assert short["a"][0]["url"] == url[:30] + f"...({len(url):,} characters)"
    assert short["a"][1] == ["x", 1] and short["b"] == "data:short" and short["c"] is None
    assert body["a"][0]["url"] == url  # a copy: the request itself is untouched


# --------------------------------------------------------------------------- executed


def _server_processes(model_dir: str, port: int, since: float) -> list:
    """Live API-server processes of the tiny model on ``port`` started after ``since``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "create_time", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.info["create_time"] < since:
                continue
            joined = " ".join(cmd)
            if API_SERVER in joined and model_dir in joined and f"--port {port}" in joined:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _group(pgid: int) -> list:
    from cookbook.server import _group_members

    return _group_members(pgid)


@pytest.mark.notebook
@pytest.mark.server
@pytest.mark.timeout(1200)
@needs_vllm
def test_notebook_runs_on_cpu_and_stops_its_server(tmp_path, tiny_checkpoint):
    from cookbook.records import read_record
    from cookbook.runner import run_notebooks

    began = time.time() - 1
    (rep,) = run_notebooks("cpu", only=["04"], out_dir=tmp_path, log=lambda line: None)
    assert rep.status == "passed", rep.failures
    record = read_record(rep.record)
    assert record["parameters"]["min_tokens"] == 8 and record["parameters"]["base_url"] == ""

    results = {r["label"]: r for r in record["results"]}
    assert [r["index"] for r in record["results"]] == list(range(len(record["results"])))
    single, several = results["one image"], results["several images"]
    assert single["num_images"] == 1 and len(single["tiles"]) == 1
    assert several["num_images"] == 2 and len(several["tiles"]) == 2
    for res in (single, several, results["one image, with curl"]):
        assert res["output_tokens"] >= 1  # min_tokens reached the server
        assert res["prompt_tokens"] > res["image_tokens"] > 256 * res["num_images"]
    # Two images cost the tokens of both, and the same image costs the same every time.
    assert several["prompt_tokens"] - single["prompt_tokens"] >= several["image_tokens"] // 2

    streamed = results["one image, streamed"]
    assert streamed["ttft_seconds"] > 0 and streamed["chunks"] >= streamed["output_tokens"] >= 1
    assert streamed["prompt_tokens"] == single["prompt_tokens"]
    assert record["ttft_seconds"] == streamed["ttft_seconds"] > 0
    assert record["tokens_per_second"] > 0

    assert record["curl_status"] == 200
    assert record["curl_usage"]["prompt_tokens"] == single["prompt_tokens"]
    curl = results["one image, with curl"]
    assert curl["measured_image_tokens"] == curl["image_tokens"] == single["image_tokens"]

    refused = results["too many images (C03), refused before sending"]
    assert refused["expected_error"] and refused["sent"] is False
    assert refused["num_images"] == record["server"]["image_limit"] + 1 == 5
    assert "--limit-mm-per-prompt" in refused["error"] and "at most 4" in refused["error"]
    assert record["c03_refusal"] == refused["error"]
    by_server = results["too many images (C03), sent anyway"]
    assert by_server["status"] == 400 and "At most 4 image(s)" in by_server["error"]

    server = record["server"]
    assert server["started_here"] and server["startup_seconds"] > 0
    assert API_SERVER in server["command"] and "--limit-mm-per-prompt" in server["command"]
    port = int(server["command"][server["command"].index("--port") + 1])
    assert server["base_url"] == f"http://127.0.0.1:{port}/v1"

    # Nothing is left: no API server of this run, and no process of its group.
    assert _server_processes(str(tiny_checkpoint), port, began) == []
    assert _group(server["pid"]) == []


@pytest.mark.notebook
@pytest.mark.server
@pytest.mark.timeout(1200)
@needs_vllm
def test_a_failing_cell_after_start_leaves_no_server(tmp_path, tiny_checkpoint):
    """A cell fails while the server runs: the kernel's exit must take the server with it."""
    import papermill
    import psutil
    from papermill.exceptions import PapermillExecutionError

    from cookbook.server import find_free_port

    port = find_free_port()
    began = time.time() - 1
    seen: dict[int, psutil.Process] = {}
    done = threading.Event()

    def watch() -> None:  # note the server and every process it starts while it runs
        while not done.is_set():
            for proc in _server_processes(str(tiny_checkpoint), port, began):
                seen[proc.pid] = proc
                try:
                    seen.update({c.pid: c for c in proc.children(recursive=True)})
                except psutil.Error:
                    pass
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(PapermillExecutionError) as info:
            papermill.execute_notebook(
                str(NOTEBOOK),
                str(tmp_path / "out.ipynb"),
                parameters={
                    "model": "tiny",
                    "device": "cpu",
                    "port": port,
                    "max_tokens": -1,  # the server refuses it: the curl cell raises
                    "results_path": str(tmp_path / "r.json"),
                },
                kernel_name="python3",
                cwd=str(NOTEBOOK.parent),
                progress_bar=False,
            )
    finally:
        done.set()
        watcher.join()
    assert info.value.ename == "RuntimeError" and "HTTP 400" in info.value.evalue
    executed = (tmp_path / "out.ipynb").read_text()
    assert "ready in" in executed, "the failure should come after the server started"
    assert len(seen) >= 2, "the watcher should have seen the server and its engine"
    gone, alive = psutil.wait_procs(list(seen.values()), timeout=60)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"
    assert _server_processes(str(tiny_checkpoint), port, began) == []
