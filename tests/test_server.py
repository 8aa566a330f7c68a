"""A real vLLM OpenAI-compatible server on the CPU with the tiny checkpoint.

One server serves the module (image limit 2, small KV cache); the last test that uses
it stops it the way Ctrl-C would and checks nothing is left. Two more servers are
started on purpose: one that is killed in the middle of a request, and one whose model
directory is broken (it fails within seconds of loading). Token counts and structure
are asserted, never the text of the random-weight model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from cookbook.images import sample_image, sample_image_path
from cookbook.server import ServerError, VLLMServer, _group_members, attach_server
from cookbook.tiling import image_token_count, tiling_from_config

pytestmark = [
    pytest.mark.server,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="needs the CPU stack with vLLM (env/setup_cpu_stack.py)",
    ),
]

psutil = pytest.importorskip("psutil")  # a vLLM dependency: present wherever vLLM is

#: Environment of every server started here: a 1 GiB KV cache (vLLM's default on the CPU
#: asks for 92% of host memory) and no hub access (everything is local).
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
START_TIMEOUT = 600  # seconds; about 30-60 s alone on 2 cores, more on a busy machine


def _tiling(server: VLLMServer) -> dict:
    config = json.loads((Path(server.spec.model_id) / "config.json").read_text())
    return tiling_from_config(config)


def _expected_image_tokens(server: VLLMServer, img: Image.Image) -> int:
    return image_token_count(img.width, img.height, **_tiling(server))


def _alive_in_group(pgid: int) -> list:
    return _group_members(pgid)


def _alive(procs: list) -> list:
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


def _assert_cleaned_up(server: VLLMServer, family: list) -> None:
    assert not server.running
    assert _alive_in_group(server.pid) == []
    assert _alive(family) == []
    import socket

    with socket.socket() as sock:  # what a new server on this port would do
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "vllm-server.log"
    srv = VLLMServer(
        "tiny",
        limit_images=2,
        max_model_len=4096,
        env=ENV,
        log_path=log,
        startup_timeout=START_TIMEOUT,
    )
    with srv:
        print(f"\nserver ready in {srv.startup_seconds:.1f} s: {' '.join(srv.command)}")
        yield srv


# --------------------------------------------------------------------------- requests


def test_ready_server_answers(server):
    assert server.running and server.startup_seconds > 0
    assert server.health()
    assert server.models() == ["tiny"] == [server.served_model]
    assert server.image_limit == 2
    assert "--allowed-local-media-path" not in server.command
    assert "--kv-cache-memory-bytes" in server.command


def test_single_image_chat(server):
    cat = sample_image("cat")
    res = server.chat("What is in this image?", [cat], max_tokens=16)
    image_tokens = _expected_image_tokens(server, cat)
    assert image_tokens > 256  # the cat photo is cut into several tiles
    assert res.prompt_tokens > image_tokens  # image placeholders plus the chat text
    assert res.finish_reason in {"stop", "length"}
    assert 0 <= res.output_tokens <= 16
    assert res.num_images == 1 and res.model == "tiny" and res.seconds > 0

    exact = server.chat("What is in this image?", [cat], max_tokens=4, min_tokens=4)
    assert exact.output_tokens == 4
    assert exact.finish_reason == "length"
    assert exact.prompt_tokens == res.prompt_tokens  # same request, same prompt


def test_two_images(server):
    cat, astronaut = sample_image("cat"), sample_image("astronaut")
    res = server.chat("Compare the two images.", [cat, astronaut], max_tokens=4, min_tokens=4)
    single = server.chat("Compare the two images.", [cat], max_tokens=4, min_tokens=4)
    second = _expected_image_tokens(server, astronaut)
    assert res.num_images == 2 and res.output_tokens == 4
    assert res.prompt_tokens > _expected_image_tokens(server, cat) + second
    assert res.prompt_tokens - single.prompt_tokens >= second


def test_three_images_refused_before_sending_then_by_the_server_c03(server, monkeypatch):
    images = [sample_image("astronaut")] * 3
    sent = []
    real = server.openai_client
    monkeypatch.setattr(server, "openai_client", lambda *a, **k: sent.append(1) or real(*a, **k))
    with pytest.raises(ValueError, match="--limit-mm-per-prompt") as info:
        server.chat("Describe.", images)
    assert "at most 2" in str(info.value)
    assert sent == []  # nothing reached the server

    with pytest.raises(ServerError) as info:
        server.chat("Describe.", images, check_limits=False, max_tokens=4)
    assert sent == [1]
    assert info.value.status == 400
    assert "At most 2 image(s)" in info.value.message
    assert "400" in str(info.value) and server.base_url in str(info.value)


def test_streaming_equals_non_streaming(server):
    cat = sample_image("cat")
    kwargs = dict(max_tokens=12, min_tokens=12, seed=0, temperature=0.0)
    # Special tokens are kept so the random model's output has text to compare.
    kwargs["skip_special_tokens"] = False
    plain = server.chat("Describe the image.", [cat], **kwargs)
    pieces: list[str] = []
    streamed = server.stream_chat("Describe the image.", [cat], on_token=pieces.append, **kwargs)
    assert streamed.text == "".join(pieces) == plain.text
    assert streamed.output_tokens == plain.output_tokens == 12
    assert streamed.prompt_tokens == plain.prompt_tokens
    assert streamed.finish_reason == plain.finish_reason == "length"
    assert 0 < streamed.ttft_seconds < streamed.seconds
    assert streamed.tpot_seconds > 0
    assert streamed.ttft_seconds + streamed.tpot_seconds * 11 <= streamed.seconds + 1e-3
    assert streamed.chunks >= 2
    again = server.chat("Describe the image.", [cat], stream=True, **kwargs)
    assert again.text == plain.text and again.ttft_seconds > 0


def test_text_only_chat(server):
    res = server.chat("Say hello.", max_tokens=5, min_tokens=5)
    assert res.num_images == 0
    assert res.output_tokens == 5
    with_image = server.chat("Say hello.", [sample_image("astronaut")], max_tokens=1)
    assert res.prompt_tokens < 256 < with_image.prompt_tokens


def test_local_path_sent_as_data_url_c07(server, tmp_path):
    path = sample_image_path("cat")
    as_path = server.chat("What is it?", [str(path)], max_tokens=2, min_tokens=2)
    as_pil = server.chat("What is it?", [sample_image("cat")], max_tokens=2, min_tokens=2)
    assert as_path.prompt_tokens == as_pil.prompt_tokens
    assert as_path.output_tokens == 2
    # What the conversion avoids: this server refuses a file:// URL sent as it is.
    import openai

    raw = server.openai_client(timeout=30)
    with pytest.raises(openai.APIStatusError) as info:
        raw.chat.completions.create(
            model=server.served_model,
            max_tokens=2,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": path.resolve().as_uri()}},
                        {"type": "text", "text": "What is it?"},
                    ],
                }
            ],
        )
    assert info.value.status_code >= 400


def test_unreachable_image_url_error_comes_back(server):
    with pytest.raises(ServerError) as info:
        server.chat("What is it?", ["http://127.0.0.1:9/none.png"], max_tokens=2, timeout=60)
    assert info.value.status is not None and info.value.status >= 400
    assert info.value.message


def test_attach_to_running_server(server):
    with attach_server(server.base_url) as client:
        assert client.served_model == "tiny"
        assert client.image_limit is None  # unknown for a server run by someone else
        res = client.chat("Hi", [sample_image("astronaut")], max_tokens=3, min_tokens=3)
        assert res.output_tokens == 3
    assert server.running and server.health()  # attaching never stops the server
    same = VLLMServer.attach(server.root_url, model="tiny", image_limit=2)
    assert same.base_url == server.base_url
    with pytest.raises(ValueError, match="at most 2"):
        same.chat("Hi", [sample_image("astronaut")] * 3)


def test_curl_example_runs(server, tmp_path):
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 48), (0, 128, 255)).save(small)
    text = server.curl_example(small, "What colour is it?", max_tokens=3)
    out = subprocess.run(
        ["bash", "-c", text + " --silent --show-error --max-time 120"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["model"] == "tiny"
    assert body["usage"]["prompt_tokens"] > 256
    assert body["choices"][0]["finish_reason"] in {"stop", "length"}


def test_stop_on_ctrl_c_leaves_nothing(server):
    """Runs last among the tests using the module server: it stops that server."""
    family = psutil.Process(server.pid).children(recursive=True)
    assert family, "vLLM runs its engine core in a child process"
    assert all(os.getpgid(p.pid) == server.pid for p in family)
    t0 = time.perf_counter()
    server.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
    print(f"\nstopped in {time.perf_counter() - t0:.1f} s")
    _assert_cleaned_up(server, family)
    assert not server.health(timeout=2)
    with pytest.raises(ServerError):
        server.chat("Hi", max_tokens=1, timeout=5)
    server.stop()  # idempotent


# --------------------------------------------------------------------------- own servers


def test_server_killed_mid_request(tmp_path):
    srv = VLLMServer(
        "tiny",
        limit_images=1,
        max_model_len=32768,  # the tiny model's max_position_embeddings: a long answer
        env=ENV,
        log_path=tmp_path / "killed.log",
        startup_timeout=START_TIMEOUT,
    )
    timeout = 120
    # 32,000 decode steps take far longer than the second this test waits before the kill.
    long = dict(max_tokens=32000, min_tokens=32000, skip_special_tokens=False, timeout=timeout)
    with srv:
        family = psutil.Process(srv.pid).children(recursive=True)
        outcomes: dict[str, dict] = {"plain": {}, "stream": {}}
        streaming = threading.Event()

        def ask(kind: str) -> None:
            try:
                if kind == "plain":
                    outcomes[kind]["result"] = srv.chat("Tell a long story.", **long)
                else:
                    outcomes[kind]["result"] = srv.stream_chat(
                        "Tell a long story.", on_token=lambda _: streaming.set(), **long
                    )
            except Exception as err:  # noqa: BLE001 - the test inspects it
                outcomes[kind]["error"] = err
            outcomes[kind]["at"] = time.perf_counter()

        workers = {k: threading.Thread(target=ask, args=(k,), daemon=True) for k in outcomes}
        workers["stream"].start()
        # The first streamed token shows the engine is generating; the plain request
        # then joins the batch and waits for its whole answer.
        assert streaming.wait(timeout=60), f"no token arrived: {outcomes}"
        workers["plain"].start()
        time.sleep(1.0)
        assert all(w.is_alive() for w in workers.values()), f"ended early: {outcomes}"
        killed_at = time.perf_counter()
        os.killpg(srv.pid, signal.SIGKILL)
        for worker in workers.values():
            worker.join(timeout=timeout + 10)
            assert not worker.is_alive(), "the client did not give up within its timeout"
        for kind, outcome in outcomes.items():
            err = outcome.get("error")
            assert isinstance(err, ServerError), (kind, outcome)
            assert err.status is None and srv.base_url in str(err)
            assert outcome["at"] - killed_at < timeout + 5
            print(f"\n{kind}: ServerError {outcome['at'] - killed_at:.2f} s after the kill")
    _assert_cleaned_up(srv, family)


def test_startup_failure_reports_the_log_and_leaves_nothing(tmp_path):
    broken = tmp_path / "broken-internvl"
    broken.mkdir()
    (broken / "config.json").write_text(
        json.dumps({"architectures": ["InternVLChatModel"], "model_type": "internvl_chat"})
    )
    srv = VLLMServer(
        str(broken),
        env=ENV,
        log_path=tmp_path / "broken.log",
        startup_timeout=START_TIMEOUT,
    )
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        with srv:
            pytest.fail("a server without weights must not become ready")
    elapsed = time.perf_counter() - t0
    text = str(info.value)
    assert "exited while starting" in text and "exit code" in text
    assert "cause: " in text  # the exception line of the log, first
    assert str(srv.log_path) in text
    tail = srv.log_tail(3).strip()
    assert tail and tail in text
    assert elapsed < START_TIMEOUT / 2, f"took {elapsed:.0f} s to notice the exit"
    print(f"\nbroken model detected in {elapsed:.1f} s")
    _assert_cleaned_up(srv, [])
