"""The README's "The same in plain vLLM" block runs as it stands, on the tiny checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _plain_vllm_block() -> str:
    section = README.read_text().split("## The same in plain vLLM", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_block_uses_vllm_only():
    code = _plain_vllm_block()
    assert "cookbook" not in code and "from vllm import LLM, SamplingParams" in code
    assert len(code.splitlines()) <= 40


@pytest.mark.vllm
def test_the_block_answers_the_trained_question(tmp_path):
    from cookbook import images, tiny

    script = tmp_path / "describe.py"
    script.write_text(_plain_vllm_block())
    # The environment of the README's CPU command line, as printed there, and quiet logs.
    line = r"`((?:[A-Z0-9_]+=\S+ )+)env/with-stack python describe.py"
    command = re.search(line, README.read_text())
    settings = dict(pair.split("=", 1) for pair in command.group(1).split())
    assert settings["VLLM_CPU_KVCACHE_SPACE"] == "1"
    env = {**os.environ, **settings, "VLLM_LOGGING_LEVEL": "ERROR"}
    done = subprocess.run(
        [sys.executable, str(script), str(tiny.checkpoint()), str(images.sample_path("cat"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    expected = next(e for e in tiny.examples() if e.id == "cat-describe").answer
    assert done.stdout.splitlines()[-2:] == [expected, "finish reason: stop"]
