"""Recipes: single image, several images in one prompt, and batches. Request in, record out.

Each recipe validates its input before the engine sees it (placeholders against images,
``limit_mm_per_prompt``, the token budget against ``max_model_len``), sends one
``LLM.generate`` call, and returns `GenerationResult` records that notebooks show and
tests and checkers read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from cookbook.images import load_image
from cookbook.prompts import build_prompt, check_prompt, text_token_count
from cookbook.tiling import check_budget, check_image_limit, plan_images

if TYPE_CHECKING:
    from PIL import Image

    from cookbook.engine import Engine


@dataclass
class GenerationResult:
    """What one request produced, in a form notebooks show and checkers read.

    Attributes:
        index: position of the request in the batch (0 for a single request).
        text: the generated answer (meaningless text for the random-weight tiny model).
        prompt_tokens: tokens in the prompt as vLLM processed it, image tokens included.
        output_tokens: generated tokens.
        finish_reason: ``"stop"`` (a stop token or string), ``"length"`` (``max_tokens``
            reached) or ``None`` when the request failed.
        seconds: wall time of the ``generate`` call that served the request; in a batch
            every request shares the batch's time.
        num_images: images attached to the request.
        tiles: tiles per image as the cookbook planned them (thumbnail included).
        image_tokens: image tokens the plan expects (``<img>``/``</img>`` included).
        measured_image_tokens: image tokens vLLM actually put in the prompt (counted in
            its prompt token ids); equals ``image_tokens`` when the plan is right.
        question: the user's question.
        error: why the request was refused, or ``None``.
    """

    index: int
    text: str
    prompt_tokens: int
    output_tokens: int
    finish_reason: str | None
    seconds: float
    num_images: int
    tiles: list[int] = field(default_factory=list)
    image_tokens: int = 0
    measured_image_tokens: int | None = None
    question: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Return True when the request ran (no ``error``)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict."""
        return asdict(self)


@dataclass
class ImageRequest:
    """One request: a question about zero or more images.

    Attributes:
        question: the user's question, without any ``<image>`` placeholder (the recipe
            adds one per image through the chat template).
        images: image sources: PIL images, paths, URLs, data URLs, bytes, or sample names
            accepted by `cookbook.images.load_image`.
    """

    question: str
    images: Sequence[Any] = ()


@dataclass
class PreparedRequest:
    """A request ready for ``LLM.generate``: the vLLM prompt dict and its token plan."""

    prompt: dict[str, Any]
    question: str
    tiles: list[int]
    image_tokens: int


def sampling_params(
    engine: Engine,
    *,
    max_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    min_tokens: int = 0,
    seed: int | None = 0,
    **extra: Any,
) -> Any:
    """Return ``vllm.SamplingParams`` with the model's own stop token ids.

    Args:
        engine: the engine whose tokenizer supplied ``engine.stop_token_ids``.
        max_tokens: most tokens to generate.
        temperature: 0.0 is greedy decoding (what checked runs use).
        top_p: nucleus sampling mass (the seed tutorial uses 0.9 with temperature 0.7).
        min_tokens: generate at least this many tokens before a stop token may end the
            answer (useful with the random-weight tiny model, which may stop at once).
        seed: sampling seed, for repeatable sampled answers.
        **extra: any other ``SamplingParams`` field.

    Raises:
        ValueError: ``max_tokens`` < 1 or ``min_tokens`` > ``max_tokens``.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if min_tokens > max_tokens:
        raise ValueError(f"min_tokens ({min_tokens}) cannot exceed max_tokens ({max_tokens})")
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        min_tokens=min_tokens,
        seed=seed,
        stop_token_ids=list(engine.stop_token_ids),
        **extra,
    )


def prepare_request(
    engine: Engine, question: str, images: Sequence[Any] = (), *, max_tokens: int = 128
) -> PreparedRequest:
    """Return a validated vLLM prompt dict for a question about images.

    Loads and normalises each image (RGB), builds the prompt with the model's chat
    template and one ``<image>`` placeholder per image, and checks, before any engine
    work: the placeholder count, ``limit_mm_per_prompt`` and that prompt plus
    ``max_tokens`` fit ``max_model_len``.

    Raises:
        ValueError: bad question, too many images, or a prompt that cannot fit; the
            message names the numbers and the setting to change.
        FileNotFoundError: an image path does not exist.
    """
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        images = [images]
    check_image_limit(len(images), engine.limit_images, where="engine")
    pil_images: list[Image.Image] = [load_image(src) for src in images]
    prompt = build_prompt(engine.tokenizer, question, num_images=len(pil_images))
    check_prompt(prompt, len(pil_images))
    plans = plan_images(pil_images, **engine.tiling)
    check_budget(
        image_tokens=[p.tokens for p in plans],
        text_tokens=text_token_count(engine.tokenizer, prompt),
        max_tokens=max_tokens,
        max_model_len=engine.max_model_len,
        max_dynamic_patch=int(engine.tiling.get("max_dynamic_patch", 12)),
        image_sizes=[(p.width, p.height) for p in plans],
        **{k: v for k, v in engine.tiling.items() if k != "max_dynamic_patch"},
    )
    request: dict[str, Any] = {"prompt": prompt}
    if pil_images:
        request["multi_modal_data"] = {
            "image": pil_images[0] if len(pil_images) == 1 else pil_images
        }
    return PreparedRequest(
        prompt=request,
        question=question,
        tiles=[p.tiles for p in plans],
        image_tokens=sum(p.tokens for p in plans),
    )


def _result(
    engine: Engine, index: int, prepared: PreparedRequest, output: Any, seconds: float
) -> GenerationResult:
    completion = output.outputs[0]
    ids = set(engine.image_token_ids)
    prompt_ids = list(output.prompt_token_ids or [])
    images = prepared.prompt.get("multi_modal_data", {}).get("image", [])
    num_images = len(images) if isinstance(images, list) else 1
    return GenerationResult(
        index=index,
        text=completion.text,
        prompt_tokens=len(prompt_ids),
        output_tokens=len(completion.token_ids),
        finish_reason=completion.finish_reason,
        seconds=seconds,
        num_images=num_images,
        tiles=prepared.tiles,
        image_tokens=prepared.image_tokens,
        measured_image_tokens=sum(1 for t in prompt_ids if t in ids) if ids else None,
        question=prepared.question,
    )


def run_prepared(
    engine: Engine, prepared: Sequence[PreparedRequest], params: Any
) -> list[GenerationResult]:
    """Send prepared requests in one ``LLM.generate`` call; return results in order."""
    if not prepared:
        return []
    t0 = time.perf_counter()
    outputs = engine.llm.generate([p.prompt for p in prepared], params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    return [
        _result(engine, i, p, o, seconds)
        for i, (p, o) in enumerate(zip(prepared, outputs, strict=True))
    ]


def ask_image(engine: Engine, image: Any, question: str, **sampling: Any) -> GenerationResult:
    """Return the model's answer to a question about one image.

    Args:
        engine: from `cookbook.engine.create_engine`.
        image: a PIL image, path, URL, data URL, bytes or sample name (`load_image`).
        question: the question, without ``<image>`` (one is added by the chat template).
        **sampling: `sampling_params` arguments (``max_tokens``, ``temperature``, ...).

    Raises:
        ValueError: bad input or a prompt that cannot fit ``max_model_len`` (before the
            engine runs).
    """
    return ask_images(engine, [image], question, **sampling)


def ask_images(
    engine: Engine, images: Sequence[Any], question: str, **sampling: Any
) -> GenerationResult:
    """Return the model's answer to one question about several images in one prompt.

    The prompt labels the images ``Image-1: <image>``, ``Image-2: <image>``, ... as
    InternVL's own ``chat`` does for multi-image input, so the question can refer to
    "Image-1" and "Image-2".

    Raises:
        ValueError: more images than ``limit_mm_per_prompt`` allows, or a prompt that
            cannot fit ``max_model_len``; raised before the engine runs.
    """
    params = sampling_params(engine, **sampling)
    prepared = prepare_request(engine, question, list(images), max_tokens=params.max_tokens)
    return run_prepared(engine, [prepared], params)[0]


def ask_batch(
    engine: Engine, requests: Sequence[ImageRequest | tuple[Any, str]], **sampling: Any
) -> list[GenerationResult]:
    """Return one result per request, in order, from a single ``LLM.generate`` call.

    A batch is a *list of request dicts*, each with its own prompt and images: vLLM
    schedules them together (continuous batching), which is much faster than one call per
    request. The seed tutorial's form, one dict whose ``"prompt"`` is a list, raises
    ``TypeError: Prompt text should be a string``.

    Args:
        engine: from `cookbook.engine.create_engine`.
        requests: `ImageRequest` items, or ``(images, question)`` pairs where ``images``
            is one image source or a list of them.
        **sampling: `sampling_params` arguments, shared by the batch.

    Returns:
        ``len(requests)`` results; ``results[i]`` answers ``requests[i]``. A request that
        fails validation (a missing file, too many images, too long) gets a result with
        ``error`` set and ``finish_reason`` ``None``; the others still run.

    Raises:
        ValueError: bad sampling arguments (they apply to the whole batch).
    """
    params = sampling_params(engine, **sampling)
    prepared: list[PreparedRequest] = []
    slots: list[int] = []
    results: list[GenerationResult | None] = [None] * len(requests)
    for i, req in enumerate(requests):
        if isinstance(req, ImageRequest):
            images, question = req.images, req.question
        else:
            images, question = req
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            images = [images]
        try:
            prepared.append(
                prepare_request(engine, question, list(images), max_tokens=params.max_tokens)
            )
            slots.append(i)
        except (ValueError, TypeError, OSError) as exc:
            results[i] = GenerationResult(
                index=i,
                text="",
                prompt_tokens=0,
                output_tokens=0,
                finish_reason=None,
                seconds=0.0,
                num_images=len(images),
                question=str(question),
                error=f"request {i}: {type(exc).__name__}: {exc}",
            )
    for slot, res in zip(slots, run_prepared(engine, prepared, params), strict=True):
        res.index = slot
        results[slot] = res
    return [r for r in results if r is not None]
