"""Notebook 01 run in JupyterLab by a headless browser, as a user would run it.

JupyterLab is started through ``env/with-stack`` (so the ``python3`` kernel imports
``cookbook`` and vLLM) on 127.0.0.1, a free port and a random token, on a *copy* of
``notebooks/`` so that autosave and the results record never touch the repository. The
browser opens ``01_single_image.ipynb``, runs Run > Run All Cells, and waits for the answer
block of ``cookbook.display.answer_html`` with its image. JupyterLab, its kernel and
everything they started are stopped at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import ANSWER_FACTS_JS, REPO, SCREENSHOTS, screenshot

NOTEBOOK = "01_single_image.ipynb"
# The engine starts in about a minute on an idle CPU; allow for a busy machine.
ANSWER_TIMEOUT_S = float(os.environ.get("COOKBOOK_LAB_TIMEOUT_S", "420"))
SERVER_START_TIMEOUT_S = 180

# JupyterLab settings for the test: every cell in the DOM (no virtual scrolling), no
# autosave, no news or update checks (no network here, and no pop-ups over the notebook).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

# The notebook's state as the page shows it: answer blocks (facts line + decoded images in
# the same flex box), error outputs, and cells still waiting to run ("[*]").
STATE_JS = f"""() => {{
  const facts = {ANSWER_FACTS_JS};
  const outputs = [...document.querySelectorAll('.jp-OutputArea-output')];
  const answers = outputs.flatMap(o => [...o.querySelectorAll('p')])
    .filter(p => facts.test(p.textContent))
    .map(p => {{
      const box = p.closest('div[style*="display:flex"], div[style*="display: flex"]');
      const imgs = box ? [...box.querySelectorAll('img')] : [];
      return {{facts: p.textContent.trim(), images: imgs.length,
        decoded: imgs.filter(i => i.src.startsWith('data:image/') && i.complete
                              && i.naturalWidth > 0).length}};
    }});
  const errors = outputs.map(o => o.innerText)
    .filter(t => t.includes('Traceback (most recent call last)'))
    .map(t => t.slice(-3000));
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
    .map(p => p.textContent.trim());
  return {{answers, errors, prompts}};
}}"""


SCROLL_TO_ANSWER_JS = f"""() => {{
  const facts = {ANSWER_FACTS_JS};
  const p = [...document.querySelectorAll('.jp-OutputArea-output p')]
    .find(e => facts.test(e.textContent));
  const box = p && p.closest('div[style*="display:flex"], div[style*="display: flex"]');
  if (box) box.closest('.jp-Cell').scrollIntoView({{block: 'start'}});  // its code, then it
}}"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, token: str, path: str, method: str = "GET") -> Any:
    """Call JupyterLab's REST API; return the decoded JSON (None for an empty answer)."""
    req = urllib.request.Request(
        f"{base}/{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def descendants(root: int) -> list[tuple[int, str]]:
    """Return (pid, start time) of every process below ``root``, read from /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def alive(pid: int, start: str) -> bool:
    """Return True while ``pid`` is the process that started at ``start`` (not a zombie)."""
    try:
        fields = (stat := Path(f"/proc/{pid}/stat").read_text())[stat.rindex(")") + 2 :].split()
    except (OSError, ValueError):
        return False
    return fields[19] == start and fields[0] != "Z"


def kill_if_same(pid: int, start: str) -> None:
    """SIGKILL ``pid`` if it is still the process that started at ``start``."""
    if alive(pid, start):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class JupyterLab:
    """A JupyterLab server process in its own session, on a copy of the notebooks."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.notebooks = workdir / "notebooks"
        shutil.copytree(
            REPO / "notebooks",
            self.notebooks,
            ignore=shutil.ignore_patterns("results", ".ipynb_checkpoints"),
        )
        settings = workdir / "lab-settings"
        for plugin, values in LAB_SETTINGS.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.log_path = workdir / "jupyterlab.log"
        # Without PYTEST_CURRENT_TEST: ipykernel then leaves its streams without a file
        # descriptor, and vLLM's engine, which runs in the kernel, needs sys.stdout.fileno().
        environ = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        self.env = dict(
            environ,
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(workdir / "lab-workspaces"),
            JUPYTER_RUNTIME_DIR=str(workdir / "jupyter-runtime"),
            VLLM_CPU_KVCACHE_SPACE="1",
        )
        self.cmd = [
            str(REPO / "env" / "with-stack"),
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--notebook-dir={self.notebooks}",
        ]
        if os.geteuid() == 0:  # containers and CI runners often run as root
            self.cmd.append("--allow-root")
        self.proc: subprocess.Popen[bytes] | None = None

    def log_tail(self, lines: int = 40) -> str:
        """Return the end of the server's log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> None:
        """Start the server and wait until its API answers; fail with its log otherwise."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"JupyterLab exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                api(self.base, self.token, "api/status")
                return
            except OSError:
                time.sleep(1)
        pytest.fail(
            f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S} s:\n{self.log_tail()}"
        )

    def kernel_state(self, notebook: str) -> str | None:
        """Return the execution state of the notebook's kernel, None without a session."""
        for session in api(self.base, self.token, "api/sessions"):
            if session.get("path", "").endswith(notebook):
                return session["kernel"]["execution_state"]
        return None

    def stop(self) -> list[tuple[int, str]]:
        """Shut down kernels and server, kill whatever of theirs is left; return any survivor."""
        if self.proc is None:
            return []
        started = descendants(self.proc.pid)
        try:
            for kernel in api(self.base, self.token, "api/kernels"):
                api(self.base, self.token, f"api/kernels/{kernel['id']}", method="DELETE")
        except OSError:
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for pid, start in started:  # a kernel or engine outside the server's process group
            kill_if_same(pid, start)
        deadline = time.monotonic() + 10
        while any(alive(*p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        return [p for p in started if alive(*p)]


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[JupyterLab]:
    """A running JupyterLab on a copy of ``notebooks/``, stopped at the end."""
    lab = JupyterLab(tmp_path)
    try:
        lab.start()
        yield lab
    finally:
        left = lab.stop()
    assert not left, f"processes JupyterLab started are still running: {left}"


@pytest.mark.browser
@pytest.mark.vllm
@pytest.mark.timeout(int(ANSWER_TIMEOUT_S) + 600)
def test_notebook_01_runs_in_jupyterlab(jupyterlab, browser_context):
    page = browser_context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{jupyterlab.base}/lab/tree/{NOTEBOOK}?token={jupyterlab.token}")
    try:
        page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell", timeout=120_000)
        deadline = time.monotonic() + 120
        while jupyterlab.kernel_state(NOTEBOOK) != "idle":
            assert time.monotonic() < deadline, "the notebook's kernel did not become idle"
            time.sleep(1)

        page.locator(".jp-NotebookPanel .jp-Cell").first.click()
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item:not(.lm-mod-disabled)").filter(
            has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
        ).click()

        state: dict[str, Any] = {}
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while time.monotonic() < deadline:
            state = page.evaluate(STATE_JS)
            assert not state["errors"], "a cell failed:\n" + "\n\n".join(state["errors"])
            assert jupyterlab.kernel_state(NOTEBOOK) != "dead", "the kernel died"
            if any(a["decoded"] >= 1 and a["decoded"] == a["images"] for a in state["answers"]):
                break
            time.sleep(2)
        else:
            pytest.fail(
                f"no answer block with its image after {ANSWER_TIMEOUT_S:.0f} s; cell "
                f"prompts {state.get('prompts')}; answers {state.get('answers')}"
            )

        # Let the last cells (results record, engine shutdown) finish, then check them all.
        deadline = time.monotonic() + 180
        while True:
            state = page.evaluate(STATE_JS)
            busy = jupyterlab.kernel_state(NOTEBOOK) != "idle"
            if not busy and not any("*" in p for p in state["prompts"]):
                break
            assert time.monotonic() < deadline, f"cells still running: {state['prompts']}"
            time.sleep(2)
        assert not state["errors"], "a cell failed:\n" + "\n\n".join(state["errors"])
        assert all(re.fullmatch(r"\[\d+\]:", p) for p in state["prompts"]), state["prompts"]

        # Bring the answer block (image and text) to the top of the notebook's view.
        page.evaluate(SCROLL_TO_ANSWER_JS)
        page.wait_for_timeout(500)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "jupyterlab-01_single_image.png"))
    except BaseException:
        screenshot(page, "jupyterlab-01_single_image-failure")
        raise
    finally:
        page.close()
