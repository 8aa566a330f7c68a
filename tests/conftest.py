from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """Path of the tiny random InternVL checkpoint (built once, cached)."""
    from cookbook.tiny import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint()


@pytest.fixture(scope="session")
def tiny_engine():
    """One real vLLM engine on the tiny checkpoint for the whole test session.

    ``max_dynamic_patch=6`` (instead of the config's 12) so an 800x600 photo gives 6 tiles
    + a thumbnail, and so every test shows the per-engine setting takes effect.
    """
    from cookbook.engine import create_engine

    engine = create_engine("tiny", "cpu", max_model_len=4096, max_dynamic_patch=6, limit_images=4)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_checkpoint):
    """The tiny checkpoint's tokenizer, loaded by transformers (no engine)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoint), trust_remote_code=True)
