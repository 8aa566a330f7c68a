"""``python -m cookbook serve``: argument parsing, the start/stop plumbing, and one real server.

The unit tests replace `cookbook.server.VLLMServer` with a fake that records how it was
built and simulates Ctrl-C, SIGTERM, a crash and a failed start. The server test runs the
real command in a subprocess, queries it, presses Ctrl-C (SIGINT) and checks that nothing
is left: no process, no bound port.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cookbook.server
from cookbook.cli import main

REPO = Path(__file__).resolve().parent.parent


class FakeServer:
    """Stands in for `VLLMServer`: no process; ``running`` runs a per-test hook."""

    instances: list[FakeServer] = []
    on_poll = None  # called by `running`; may raise or send a signal
    start_error: BaseException | None = None
    alive = True

    def __init__(self, model, **kwargs):
        self.model = model
        self.kwargs = kwargs
        port = kwargs.get("port") or 5555
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.command_line = f"vllm serve {model} --port {port}"
        self.served_model = "tiny"
        self.startup_seconds = 1.5
        self.log_path = Path("/tmp/fake-vllm.log")
        self.process = None
        self.started = False
        self.stopped = 0
        FakeServer.instances.append(self)

    def start(self):
        if FakeServer.start_error is not None:
            raise FakeServer.start_error
        self.started = True
        return self

    @property
    def running(self):
        if FakeServer.on_poll is not None:
            FakeServer.on_poll()
        return FakeServer.alive

    def request_body(self, question, images=(), *, max_tokens=128):
        content = [{"type": "image_url", "image_url": {"url": u}} for u in images]
        content.append({"type": "text", "text": question})
        return {
            "model": self.served_model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens,
        }

    def log_tail(self, lines=40):
        return "RuntimeError: the engine core died"

    def stop(self, timeout=20.0):
        self.stopped += 1


def _interrupt():
    raise KeyboardInterrupt


@pytest.fixture
def fake(monkeypatch):
    FakeServer.instances = []
    FakeServer.on_poll = staticmethod(_interrupt)
    FakeServer.start_error = None
    FakeServer.alive = True
    monkeypatch.setattr(cookbook.server, "VLLMServer", FakeServer)
    for name in ("VLLM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return FakeServer


def test_flags_reach_the_server_and_ctrl_c_stops_it(fake, capsys):
    code = main(
        [
            "serve",
            "--model",
            "internvl3-8b",
            "--host",
            "0.0.0.0",
            "--port",
            "8123",
            "--max-model-len",
            "4096",
            "--limit-images",
            "2",
            "--device",
            "cpu",
            "--startup-timeout",
            "30",
            "--",
            "--max-num-seqs",
            "4",
            "--seed",
            "0",
        ]
    )
    assert code == 0
    (srv,) = fake.instances
    assert srv.model == "internvl3-8b"
    assert srv.kwargs["host"] == "0.0.0.0" and srv.kwargs["port"] == 8123
    assert srv.kwargs["extra_args"] == ["--max-num-seqs", "4", "--seed", "0"]
    assert srv.kwargs["max_model_len"] == 4096 and srv.kwargs["limit_images"] == 2
    assert srv.kwargs["device"] == "cpu" and srv.kwargs["startup_timeout"] == 30.0
    assert srv.started and srv.stopped == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    ready = [line for line in lines if line.startswith("ready:")]
    assert ready == ["ready:    http://127.0.0.1:8123/v1 (started in 1.5 s)"]
    assert "model:    tiny" in lines
    assert "curl http://127.0.0.1:8123/v1/chat/completions \\" in lines
    assert '"url": "https://modelscope.oss-cn-beijing.aliyuncs.com/resource/qwen.png"' in out
    assert "Authorization" not in out  # no key in the environment: none needed
    assert lines[-2:] == ["stopping the server...", "stopped"]


def test_defaults(fake):
    assert main(["serve"]) == 0
    (srv,) = fake.instances
    assert srv.model == "tiny"
    assert srv.kwargs["host"] == "127.0.0.1" and srv.kwargs["port"] == 8000
    assert srv.kwargs["extra_args"] == [] and srv.kwargs["device"] == "auto"
    assert "max_model_len" not in srv.kwargs and "limit_images" not in srv.kwargs


def test_port_zero_picks_a_free_port(fake):
    assert main(["serve", "--port", "0"]) == 0
    assert fake.instances[0].kwargs["port"] is None  # VLLMServer then finds a free one


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_bad_port_is_refused_by_the_parser(fake, capsys, port):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", port])
    assert info.value.code == 2
    assert "port must be" in capsys.readouterr().err
    assert fake.instances == []


def test_vllm_flags_need_the_double_dash(fake, capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--max-num-seqs", "4"])
    assert info.value.code == 2
    assert "--max-num-seqs" in capsys.readouterr().err
    assert fake.instances == []


def test_flag_the_client_must_know_is_refused_after_double_dash(capsys):
    """The real VLLMServer refuses ``--port`` in extra flags before starting anything."""
    code = main(["serve", "--", "--port", "9000"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--port" in err and "port=" in err


def test_sigterm_stops_the_server_and_handlers_are_restored(fake, capsys):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    fake.on_poll = staticmethod(lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert main(["serve"]) == 0
    assert fake.instances[0].stopped == 1
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert capsys.readouterr().out.splitlines()[-1] == "stopped"


def test_server_that_dies_is_reported_with_its_log(fake, capsys):
    fake.on_poll = None
    fake.alive = False
    assert main(["serve"]) == 1
    assert fake.instances[0].stopped == 1
    out = capsys.readouterr().out
    assert "exited on its own" in out and "RuntimeError: the engine core died" in out


def test_failed_start_exits_1_with_the_reason(fake, capsys):
    fake.start_error = RuntimeError("vLLM server exited while starting (exit code 1)")
    assert main(["serve"]) == 1
    assert "exited while starting" in capsys.readouterr().err
    assert fake.instances[0].stopped == 1


def test_ctrl_c_while_starting_exits_130(fake):
    fake.start_error = KeyboardInterrupt()
    assert main(["serve"]) == 130
    assert fake.instances[0].stopped == 1


def test_api_key_is_named_never_printed(fake, capsys, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-secret-0123")
    assert main(["serve"]) == 0
    out = capsys.readouterr().out
    assert '-H "Authorization: Bearer $VLLM_API_KEY"' in out
    assert "sk-secret-0123" not in out


# --------------------------------------------------------------------------- real server


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.server
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="needs the CPU stack with vLLM (env/setup_cpu_stack.py)",
)
def test_serve_command_runs_and_ctrl_c_leaves_nothing_behind():
    import httpx
    import psutil

    from cookbook.server import _die_with_parent, find_free_port

    port = find_free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(HF_HUB_OFFLINE="1", VLLM_LOGGING_LEVEL="WARNING", TOKENIZERS_PARALLELISM="false")
    env.pop("VLLM_API_KEY", None)
    cmd = [sys.executable, "-m", "cookbook", "serve", "--model", "tiny", "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        # If pytest itself is killed, the serve command (and so its server) goes too.
        preexec_fn=_die_with_parent,
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 600
        while not any(line.startswith("ready:") for line in seen):
            assert proc.poll() is None, "serve exited early:\n" + "".join(seen)
            assert time.monotonic() < deadline, "no ready line:\n" + "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        time.sleep(0.5)  # the curl command follows the ready line
        while not lines.empty():
            seen.append(lines.get())
        out = "".join(seen)
        base = f"http://127.0.0.1:{port}/v1"
        assert f"ready:    {base}" in out and "model:    tiny" in out
        assert f"curl {base}/chat/completions" in out
        assert "vllm.entrypoints.openai.api_server" in out.split("\n", 1)[0]

        resp = httpx.get(f"{base}/models", timeout=10)
        assert resp.status_code == 200
        assert [m["id"] for m in resp.json()["data"]] == ["tiny"]
        family = psutil.Process(proc.pid).children(recursive=True)
        assert family, "the server and its engine should be children of the command"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:  # only on a failure above: do not leave the server running
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    time.sleep(0.5)
    while not lines.empty():
        seen.append(lines.get())
    assert "".join(seen).rstrip().endswith("stopped")
    gone, alive = psutil.wait_procs(family, timeout=10)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"
    assert _port_is_free(port)
