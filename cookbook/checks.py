"""Checks on what an executed notebook produced: its cells and its results record.

Two kinds, chosen per profile in ``notebooks/manifest.toml``:

* ``structure`` (the tiny random-weight model): no error output, the injected parameters
  were the ones used, every result ran, tiles and image tokens as planned, output tokens
  generated, finish reasons valid. Never the text: random weights give random text.
* ``content`` (real models on an NPU or GPU): everything above, plus each answer ends with
  finish reason ``stop`` and mentions an expected word for its image.

Every check returns a list of failure strings; an empty list means it passed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FINISH_REASONS = ("stop", "length")


def error_outputs(nb: Any) -> list[str]:
    """Return a failure per code cell output of type ``error`` in an executed notebook."""
    failures = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                failures.append(
                    f"cell {i} raised {out.get('ename')}: {str(out.get('evalue'))[:300]}"
                )
    return failures


def parameters_used(record: Mapping[str, Any], injected: Mapping[str, Any]) -> list[str]:
    """Return failures where the record's parameters differ from the injected values."""
    used = record.get("parameters") or {}
    failures = []
    for key, value in injected.items():
        if key not in used:
            failures.append(f"parameter {key!r} was injected but the record does not show it")
        elif not _same(used[key], value):
            failures.append(
                f"parameter {key!r}: injected {value!r} but the notebook used {used[key]!r}"
            )
    return failures


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b))
        except (TypeError, ValueError):
            return False
    return a == b


def result_structure(
    results: Sequence[Mapping[str, Any]], *, min_output_tokens: int = 1
) -> list[str]:
    """Return failures in the structure of generation results (no text is read).

    Each result must have no ``error`` unless it is marked ``expected_error``, a finish
    reason in `FINISH_REASONS`, at least ``min_output_tokens`` output tokens, tiles planned
    for each image, and, where the recipe measured them, image tokens equal to the plan.
    """
    failures = []
    if not results:
        return ["the record holds no results"]
    for r in results:
        tag = f"result {r.get('index')}"
        if r.get("expected_error"):
            if not r.get("error"):
                failures.append(f"{tag}: an error was expected but the request ran")
            continue
        if r.get("error"):
            failures.append(f"{tag}: failed: {r['error']}")
            continue
        if r.get("finish_reason") not in FINISH_REASONS:
            failures.append(f"{tag}: finish reason {r.get('finish_reason')!r}")
        if int(r.get("output_tokens", 0)) < min_output_tokens:
            failures.append(
                f"{tag}: {r.get('output_tokens')} output tokens, expected >= {min_output_tokens}"
            )
        n_img = int(r.get("num_images", 0))
        tiles = r.get("tiles") or []
        if len(tiles) != n_img or any(int(t) < 1 for t in tiles):
            failures.append(f"{tag}: tiles {tiles} do not match {n_img} image(s)")
        measured = r.get("measured_image_tokens")
        if measured is not None and int(measured) != int(r.get("image_tokens", -1)):
            failures.append(
                f"{tag}: vLLM used {measured} image tokens "
                f"but the plan said {r.get('image_tokens')}"
            )
        if int(r.get("prompt_tokens", 0)) <= int(r.get("image_tokens", 0)):
            failures.append(f"{tag}: prompt tokens {r.get('prompt_tokens')} not above image tokens")
    return failures


def result_content(
    results: Sequence[Mapping[str, Any]], expected_words: Mapping[str, Iterable[str]]
) -> list[str]:
    """Return failures where a real model's answers miss their expected words.

    Args:
        results: result dicts; each may carry ``image_names`` (sample names it was asked
            about), matched against ``expected_words``.
        expected_words: sample name -> words, any one of which (case-insensitive) must
            appear in the answer, e.g. ``{"cat": ["cat", "kitten"]}``.

    Answers must end with finish reason ``stop`` (a truncated answer fails), and an answer
    about several images must mention a word for each of them.
    """
    failures = []
    for r in results:
        if r.get("expected_error") or r.get("error"):
            continue
        tag = f"result {r.get('index')}"
        if r.get("finish_reason") != "stop":
            failures.append(
                f"{tag}: finish reason {r.get('finish_reason')!r}, expected 'stop' (truncated?)"
            )
        text = str(r.get("text", "")).lower()
        for name in r.get("image_names") or []:
            words = [w.lower() for w in expected_words.get(name, [])]
            if words and not any(w in text for w in words):
                failures.append(f"{tag}: answer about {name!r} mentions none of {words}")
    return failures


def check_executed(
    nb: Any,
    record: Mapping[str, Any] | None,
    *,
    injected: Mapping[str, Any],
    kind: str,
    expected_words: Mapping[str, Iterable[str]] | None = None,
    min_output_tokens: int = 1,
    require_results: bool = True,
) -> list[str]:
    """Return all failures for one executed notebook and its record.

    Args:
        nb: the executed notebook (an ``nbformat`` node or a plain dict).
        record: its results record, or ``None`` if it wrote none.
        injected: the parameters papermill injected.
        kind: ``"structure"`` or ``"content"``.
        expected_words: for ``"content"``: sample name -> expected words.
        min_output_tokens: least output tokens a result must have.
        require_results: False for notebooks that generate nothing (environment checks);
            their record's own ``failures`` list still counts.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind not in ("structure", "content"):
        raise ValueError(f"check kind must be 'structure' or 'content', got {kind!r}")
    failures = error_outputs(nb)
    if record is None:
        return failures + ["the notebook wrote no results record"]
    failures += parameters_used(record, injected)
    failures += [str(f) for f in record.get("failures", [])]
    results = record.get("results") or []
    if not require_results and not results:
        return failures
    failures += result_structure(results, min_output_tokens=min_output_tokens)
    if kind == "content":
        failures += result_content(results, expected_words or {})
    return failures
