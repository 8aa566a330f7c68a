"""Start, wait for and stop a vLLM OpenAI-compatible server; the client side with ``openai``.

``Server`` runs ``vllm serve`` with the engine arguments the notebooks pass to ``LLM(...)``
(`cookbook.engine.engine_args`) and keeps them for `cookbook.checks.check_request`. It
listens on 127.0.0.1 only and stops its whole process family on exit, on an error, at
interpreter exit, or when the process that started it dies.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from cookbook import engine, results

#: Lines of the server's log quoted when it fails to start.
LOG_TAIL_LINES = 30


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Server:
    """A vLLM server this process starts, and stops on exit (a context manager).

    ``port`` None picks a free one. ``api_key`` goes to the server as ``VLLM_API_KEY`` in its
    environment, so it is in no command line, log or error. ``log_path`` None makes a file in
    ``$COOKBOOK_LOG_DIR`` (else the temporary folder). ``startup_timeout`` is in seconds.
    ``stop_token_ids`` end every answer, also for clients that send none (curl, lm-eval):
    written as ``eos_token_id`` of a ``--generation-config``, since vLLM's server otherwise
    stops only on the tokenizer's EOS, for InternVL2/2.5 not ``<|im_end|>`` (vLLM #7349, #7148).
    """

    def __init__(
        self,
        args: dict[str, Any],
        *,
        port: int | None = None,
        api_key: str | None = None,
        log_path: str | Path | None = None,
        startup_timeout: float = 600.0,
        stop_token_ids: list[int] | None = None,
    ) -> None:
        self.args = dict(args)
        if stop_token_ids:
            folder = Path(tempfile.mkdtemp(prefix="vllm-generation-config-"))
            config = json.dumps({"eos_token_id": stop_token_ids})
            (folder / "generation_config.json").write_text(config)
            self.args["generation_config"] = str(folder)
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.base_url = f"http://{self.host}:{self.port}/v1"
        self.model = str(args["model"])
        self.command = engine.serve_command(self.args, host=self.host, port=self.port)
        self.api_key = api_key
        logs = os.environ.get("COOKBOOK_LOG_DIR") or None
        if logs:
            Path(logs).mkdir(parents=True, exist_ok=True)
        self.log_path = Path(
            log_path or tempfile.mkstemp(prefix="vllm-server-", suffix=".log", dir=logs)[1]
        )
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        """Start the server; return once ``/health`` answers 200 and ``/v1/models`` lists the model.

        Raises RuntimeError (after stopping its processes) when the server exits or does not
        answer within ``startup_timeout``: the exit code, the command, the log's last lines.
        """
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLLM_HOST_IP": self.host}
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        log = self.log_path.open("ab")
        log.write(f"$ {shlex.join(self.command)}\n".encode())
        log.flush()
        started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        atexit.register(self.stop)
        try:
            self._wait_ready(started + self.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        why = "no answer yet"
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise self._failure(f"exited while starting (exit code {self.process.returncode})")
            try:
                health = httpx.get(f"http://{self.host}:{self.port}/health", timeout=5)
                if health.status_code == 200:
                    if self.model in models(self.base_url, self.api_key, timeout=5):
                        return
                    why = "/v1/models does not list the model yet"
            except httpx.HTTPError as err:
                why = f"{type(err).__name__}"
            time.sleep(0.5)
        raise self._failure(f"did not answer within {self.startup_timeout:g} s ({why})")

    def _failure(self, what: str) -> RuntimeError:
        lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return RuntimeError(
            f"the vLLM server {what}.\ncommand: {shlex.join(self.command)}\n"
            f"log {self.log_path}, last lines:\n" + "\n".join(lines)
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server and every process it started; safe to call twice.

        SIGTERM to its process group, SIGKILL after ``timeout`` s, then to descendants still alive.
        """
        proc, self.process = self.process, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        import psutil

        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        _, alive = psutil.wait_procs(family, timeout=5)
        for child in alive:
            child.kill()

    def client(self, timeout: float = 60.0, max_retries: int = 2) -> Any:
        """Return an ``openai.OpenAI`` client for this server.

        Its retries also cover the keep-alive connection vLLM closes after an error answer.
        """
        return client(self.base_url, self.api_key, timeout=timeout, max_retries=max_retries)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process and self.process.poll() is None else "stopped"
        return f"Server({self.model!r}, {self.base_url}, {state})"


def client(base_url: str, api_key: str | None = None, **kwargs: Any) -> Any:
    """Return an ``openai.OpenAI(**kwargs)`` client for ``base_url`` (``.../v1``).

    The key defaults to ``$VLLM_API_KEY``.
    """
    import openai

    key = api_key or os.environ.get("VLLM_API_KEY") or "EMPTY"
    return openai.OpenAI(base_url=base_url, api_key=key, **kwargs)


def models(base_url: str, api_key: str | None = None, *, timeout: float = 10.0) -> list[str]:
    """Return the model ids a server serves (``GET /v1/models``), waiting at most ``timeout`` s.

    Raises httpx.HTTPError: no answer in time, or an error status.
    """
    key = api_key or os.environ.get("VLLM_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{base_url}/models", headers=headers, timeout=timeout)
    response.raise_for_status()
    return [m["id"] for m in response.json()["data"]]


def chat(client: Any, model: str, messages: list[dict[str, Any]], **request: Any) -> results.Result:
    """Send one chat request (``request`` to ``client.chat.completions.create``); return its Result.

    Raises openai.APIError as the client does; a timeout or server error on a request with
    http(s) image URLs, which the server fetches itself, as RuntimeError naming them and the fix.
    """
    import openai

    started = time.perf_counter()
    try:
        completion = client.chat.completions.create(model=model, messages=messages, **request)
    except (openai.APITimeoutError, openai.InternalServerError) as err:
        urls = [
            p["image_url"]["url"]
            for m in messages
            for p in (m["content"] if isinstance(m["content"], list) else [])
            if p.get("type") == "image_url" and p["image_url"]["url"].startswith("http")
        ]
        if not urls:
            raise
        raise RuntimeError(
            f"{type(err).__name__} for a request with remote image URL(s) {urls}: the server "
            "fetches them itself, retrying with growing timeouts. Fetch the image here and "
            "send it as a data URL (cookbook.images.image_part), or start the server with "
            "VLLM_IMAGE_FETCH_TIMEOUT set lower"
        ) from err
    return results.from_completion(completion, seconds=time.perf_counter() - started)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send SIGTERM when the thread that started us dies (PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
