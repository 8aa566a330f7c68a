"""The gate: does vLLM itself reproduce every memorised answer of ``answers.toml``?

Every example goes through ``LLM.chat`` as the notebooks send it (float32, greedy); the
JSON examples a second time under structured outputs with the notebooks' schema. A row
passes when the text is the answer exactly and generation stopped at ``<|im_end|>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cookbook.tiny import config
from cookbook.tiny.answers import Example, examples

#: Engine settings for the gate: fast CPU start-up, float32, room for the 8-frame example.
ENGINE_KWARGS: dict[str, Any] = {
    "enforce_eager": True,
    "distributed_executor_backend": "uni",
    "kv_cache_memory_bytes": 512 * 1024**2,
    "skip_mm_profiling": True,
    "dtype": "float32",
    "trust_remote_code": True,
    "max_model_len": 8192,
    "limit_mm_per_prompt": {"image": 8, "video": 1},
}


@dataclass
class Report:
    """What the gate saw: one row ``(id, expected, got, finish_reason, ok)`` per request."""

    rows: list[tuple[str, str, str, str, bool]] = field(default_factory=list)
    threshold: float = 0.95

    @property
    def fraction(self) -> float:
        """Return the share of rows reproduced exactly (0 to 1)."""
        return sum(row[4] for row in self.rows) / len(self.rows)

    @property
    def passed(self) -> bool:
        """Return whether ``fraction`` reaches ``threshold``."""
        return self.fraction >= self.threshold

    def __str__(self) -> str:
        """Return the figure and one line per miss."""
        ok = sum(row[4] for row in self.rows)
        lines = [
            f"gate: {ok}/{len(self.rows)} exact ({self.fraction:.1%}, "
            f"needs {self.threshold:.0%}): {'PASS' if self.passed else 'FAIL'}"
        ]
        for id_, expected, got, finish, good in self.rows:
            if not good:
                lines.append(f"  miss {id_} [{finish}]\n    want {expected!r}\n    got  {got!r}")
        return "\n".join(lines)


def open_engine(model: str | Path | None = None) -> Any:
    """Return a ``vllm.LLM`` with ``ENGINE_KWARGS`` on ``model`` (default: the trained one)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    from vllm import LLM

    from cookbook.tiny.build import checkpoint

    return LLM(model=str(model or checkpoint()), **ENGINE_KWARGS)


def gate(llm: Any, threshold: float = 0.95, todo: list[Example] | None = None) -> Report:
    """Return the gate's :class:`Report` for ``llm``, a ``vllm.LLM`` on a tiny checkpoint.

    ``llm`` must allow 8 images a prompt (``ENGINE_KWARGS``); ``todo`` defaults to every example.
    """
    from pydantic import BaseModel
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    class Item(BaseModel):
        name: str
        color: str
        count: int

    class Objects(BaseModel):
        objects: list[Item]

    todo = examples() if todo is None else todo
    stop = [config.ids()["<|im_end|>"], config.ids()["<|endoftext|>"]]

    def params(**extra: Any) -> Any:
        return SamplingParams(temperature=0, max_tokens=128, stop_token_ids=stop,
                              skip_special_tokens=False, **extra)  # fmt: skip

    schema = StructuredOutputsParams(json=Objects.model_json_schema())
    runs = [(e.id, e, params()) for e in todo]
    runs += [
        (e.id + "+schema", e, params(structured_outputs=schema)) for e in todo if e.task == "json"
    ]
    outputs = llm.chat([e.messages for _, e, _ in runs], [p for _, _, p in runs], use_tqdm=False)
    report = Report(threshold=threshold)
    for (id_, example, _), out in zip(runs, outputs, strict=True):
        got = out.outputs[0]
        ok = got.text == example.answer and got.finish_reason == "stop"
        ok = ok and list(got.token_ids)[-1:] == stop[:1]
        report.rows.append((id_, example.answer, got.text, str(got.finish_reason), ok))
    return report
