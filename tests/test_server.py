"""A real vLLM server on the tiny checkpoint, started as a user would: ``python -m cookbook serve``.

One server (``conftest.served``) with an API key: the key stays out of every command line, log
and error; everything listens where it should; one client survives an error answer; every
call honours its timeout; refusals say what happened. The last test stops it with Ctrl-C.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import openai
import psutil
import pytest

from cookbook import engine, prompts, server

pytestmark = pytest.mark.server


def _family(pid):
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def _messages(question="Describe this image in detail.", photos=("cat",)):
    return [prompts.user_message(question, list(photos))]


def test_the_key_is_required_and_in_no_command_line_or_log(served):
    run = served()
    proc, url, out, key = run.proc, run.url, run.out, run.key
    assert httpx.get(f"{url}/models", timeout=10).status_code == 401
    assert server.models(url, key) == [engine.engine_args("tiny", "cpu")["model"]]
    for p in _family(proc.pid):
        assert key not in " ".join(p.cmdline())
    log_line = next(line for line in out.read_text().splitlines() if line.startswith("ready:"))
    log = open(log_line.split("log ")[-1]).read()
    assert key not in log and key not in out.read_text()


def test_a_failed_start_does_not_show_the_key(tmp_path):
    key = "failed-start-key-9d41"
    (tmp_path / "config.json").write_text("{}")  # no model here
    srv = server.Server(engine.engine_args(str(tmp_path), "cpu"), api_key=key, startup_timeout=120)
    assert key not in " ".join(srv.command) and key not in repr(srv)
    with pytest.raises(RuntimeError) as err:
        srv.start()
    assert "exited while starting" in str(err.value)
    assert key not in str(err.value) and key not in repr(err.value)
    assert key not in srv.log_path.read_text()


def test_what_listens_and_where(served):
    run = served()
    proc, url = run.proc, run.url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    listening = [
        (p.name(), c.laddr.ip, c.laddr.port)
        for p in _family(proc.pid)
        for c in p.net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    ]
    print("listeners of the server's processes:", listening)
    assert [ip for _, ip, p in listening if p == port] == ["127.0.0.1"]
    # torch.distributed's TCPStore, which vLLM's engine core starts for its gloo group, binds
    # every interface whatever host it is given (see README, "Security"): the only exception.
    wide = [entry for entry in listening if entry[1] not in ("127.0.0.1", "::1")]
    assert len(wide) <= 1 and all("EngineCor" in name for name, _, _ in wide), wide


def test_one_client_keeps_working_after_an_error_answer(served):
    run = served()
    url, key = run.url, run.key
    client = server.client(url, key, timeout=120)
    model = server.models(url, key)[0]
    for _ in range(3):
        with pytest.raises(openai.BadRequestError, match="At most 4 image"):
            client.chat.completions.create(
                model=model, messages=_messages(photos=["cat"] * 5), max_tokens=4
            )
        assert server.chat(client, model, _messages(), max_tokens=4).output_tokens >= 1


def test_the_stop_ids_end_the_answer_on_the_server(served):
    run = served()
    url, key = run.url, run.key
    client = server.client(url, key, timeout=120)
    model = server.models(url, key)[0]
    stop = prompts.stop_token_ids(
        __import__("vllm.tokenizers", fromlist=["x"]).get_tokenizer(model)
    )
    result = server.chat(
        client,
        model,
        _messages(),
        max_tokens=64,
        temperature=0,
        extra_body={"stop_token_ids": stop},
    )
    assert result.finish_reason == "stop" and result.output_tokens < 64


def test_a_model_whose_eos_is_not_the_turn_end_stops_on_the_servers_stop_ids(tmp_path):
    # InternVL2/2.5 under `vllm serve`: the tokenizer's eos is not <|im_end|>, so answers run
    # on (vLLM #7349, #7148). Here the tiny checkpoint gets an eos it never produces; only
    # the stop ids handed to Server (its --generation-config) can end the answer.
    import json
    import shutil

    from cookbook import tiny

    folder = tmp_path / "no-turn-end-eos"
    shutil.copytree(tiny.checkpoint(), folder)
    for name, key in (("generation_config.json", "eos_token_id"),
                      ("tokenizer_config.json", "eos_token")):  # fmt: skip
        config = json.loads((folder / name).read_text())
        config[key] = [tiny.config.ids()["<quad>"]] if key == "eos_token_id" else "<quad>"
        (folder / name).write_text(json.dumps(config))
    args = engine.engine_args(str(folder), "cpu")
    end = tiny.config.ids()["<|im_end|>"]
    with server.Server(args, stop_token_ids=[end], log_path=tmp_path / "server.log") as srv:
        completion = srv.client().chat.completions.create(
            model=srv.model, messages=_messages(), max_tokens=64, temperature=0
        )
    choice = completion.choices[0]  # no stop ids in the request: the server's own end it
    assert choice.finish_reason == "stop" and choice.stop_reason == end


@pytest.fixture
def silent_port():
    """A local socket that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    sock.close()


@pytest.mark.parametrize("timeout", [0.5, 1.5])
def test_every_call_honours_its_timeout(silent_port, timeout):
    url = f"http://127.0.0.1:{silent_port}/v1"
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        server.models(url, timeout=timeout)
    assert time.monotonic() - started < 2 * timeout + 1
    client = server.client(url, timeout=timeout, max_retries=1)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=_messages("Hi", []), max_tokens=1)
    # Two tries of `timeout` each, plus the client's back-off between them (under 1 s).
    assert time.monotonic() - started < 2 * timeout + 2


def test_a_remote_image_that_cannot_be_fetched_is_named(served):
    run = served()
    url, key = run.url, run.key
    client = server.client(url, key, timeout=60, max_retries=0)
    missing = f"http://127.0.0.1:{server.free_port()}/cat.png"
    with pytest.raises(RuntimeError, match="cat.png") as err:
        server.chat(client, server.models(url, key)[0], _messages(photos=[missing]), max_tokens=4)
    assert "data URL" in str(err.value)


def test_a_file_url_without_allowed_local_media_path_is_a_server_error(served):  # C07
    run = served()
    url, key = run.url, run.key
    client = server.client(url, key, timeout=60, max_retries=0)
    message = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/hostname"}},
            {"type": "text", "text": "What is this?"},
        ],
    }
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model=server.models(url, key)[0], messages=[message], max_tokens=4
        )
    # vLLM 0.23 answers 500 (its connector raises RuntimeError): see docs/troubleshooting.md.
    assert err.value.status_code == 500


def test_vllm_bench_serve_runs_inside_a_running_event_loop(served, monkeypatch):
    """Notebook 05 calls `bench.serve_bench` from a Jupyter kernel, whose event loop runs."""
    import asyncio
    from types import SimpleNamespace

    from cookbook import bench

    run = served()
    monkeypatch.setenv("OPENAI_API_KEY", run.key)
    target = SimpleNamespace(base_url=run.url, model=server.models(run.url, run.key)[0])

    async def in_a_kernel():
        return bench.serve_bench(target, clients=(1, 2), tokens=8)

    found = asyncio.run(in_a_kernel())
    assert sorted(found["levels"]) == [1, 2]
    assert all(level["request_throughput"] > 0 for level in found["levels"].values())
    assert list(found["ratios"]) == ["serve.clients.2"]
    assert found["prometheus"]["vllm:e2e_request_latency_seconds"] > 0


def test_ctrl_c_stops_the_server_and_every_process_it_started(served):
    run = served()
    proc, url, out = run.proc, run.url, run.out
    family = _family(proc.pid)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert alive == [], alive
    with socket.socket() as sock:  # nothing listens on the port any more (TIME_WAIT may stay)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    assert "stopped" in out.read_text()
