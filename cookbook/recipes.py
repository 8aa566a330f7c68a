"""Recipes: single image, several images in one prompt, and batches. Request in, record out.

Each recipe validates its input before the engine sees it (placeholders against images,
``limit_mm_per_prompt``, the token budget against ``max_model_len``), sends one
``LLM.generate`` call, and returns `GenerationResult` records that notebooks show and
tests and checkers read.
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Iterable, Mapping, Sequence
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
            accepted by `cookbook.images.load_image`; one source alone is one image.
    """

    question: str
    images: Any = ()


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
    stop_token_ids: Iterable[int] | None = None,
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
        stop_token_ids: extra stop token ids, *added* to ``engine.stop_token_ids`` (the
            tokenizer's, which are always kept). Each must be a special or added token of
            the engine's tokenizer: an ordinary text token as a stop id cuts answers in
            the middle of the text (case C02). To stop at text, use ``stop=["..."]``.
        **extra: any other ``SamplingParams`` field (``stop``, ``logit_bias``, ...).

    Raises:
        TypeError: ``max_tokens``/``min_tokens``/``seed`` not an int, ``temperature`` or
            ``top_p`` not a number, or ``stop_token_ids`` not a list of ints.
        ValueError: ``max_tokens`` < 1, ``min_tokens`` < 0 or > ``max_tokens``, or a stop
            token id that is not a special token of the engine's tokenizer.
    """
    for name, value in (("max_tokens", max_tokens), ("min_tokens", min_tokens)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    for name, number in (("temperature", temperature), ("top_p", top_p)):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise TypeError(f"{name} must be a number, got {number!r}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if min_tokens < 0:
        raise ValueError(f"min_tokens must be >= 0, got {min_tokens}")
    if min_tokens > max_tokens:
        raise ValueError(f"min_tokens ({min_tokens}) cannot exceed max_tokens ({max_tokens})")
    stops = _stop_ids(engine, stop_token_ids)
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        min_tokens=min_tokens,
        seed=seed,
        stop_token_ids=stops,
        **extra,
    )


def _special_ids(tokenizer: Any) -> set[int]:
    special = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return special | {int(i) for i in added}


def _stop_ids(engine: Engine, extra: Iterable[int] | None) -> list[int]:
    """Return the engine's stop token ids plus the caller's checked ``extra`` ids."""
    own = [int(i) for i in engine.stop_token_ids]
    if extra is None:
        return own
    if isinstance(extra, (str, bytes, int)) or not isinstance(extra, Iterable):
        raise TypeError(
            f"stop_token_ids must be a list of token ids (ints), got {extra!r}; "
            "to stop at text use stop=['...']"
        )
    given = list(extra)
    wrong = [i for i in given if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
    if wrong:
        raise TypeError(
            f"stop_token_ids must be ints, got {wrong!r}; to stop at text use stop=['...']"
        )
    ids = [int(i) for i in given]
    special = _special_ids(engine.tokenizer)
    ordinary = [i for i in ids if i not in special]
    if ordinary:
        named = []
        for i in ordinary:
            try:
                token = engine.tokenizer.convert_ids_to_tokens(i)
            except (IndexError, KeyError, TypeError, ValueError, OverflowError):
                token = None
            named.append(
                f"{i} ({token!r})" if token is not None else f"{i} (not in the vocabulary)"
            )
        raise ValueError(
            f"stop_token_ids {', '.join(named)} are not special tokens of this model's "
            f"tokenizer; an ordinary token as a stop id cuts answers in the middle of the "
            f"text. The tokenizer's own stop ids {own} are always used; add only special "
            f"tokens, or pass stop=['...'] to stop at text"
        )
    return sorted(set(own) | set(ids))


def _image_list(images: Any) -> list[Any]:
    """Return image sources as a list; a single source (str, bytes, path, image) is one image.

    A str is never split into characters, so ``"cat"`` is the sample photo, not three
    images. Lists, tuples and other iterables give their items; ``None`` and any other
    object become a one-item list, which `load_image` then refuses with its own message.
    """
    from PIL import Image as PILImage

    single = (str, bytes, bytearray, memoryview, os.PathLike, PILImage.Image, Mapping)
    if isinstance(images, single) or hasattr(images, "__array_interface__"):
        return [images]
    if isinstance(images, Iterable):
        return list(images)
    return [images]


def prepare_request(
    engine: Engine, question: str, images: Any = (), *, max_tokens: int = 128
) -> PreparedRequest:
    """Return a validated vLLM prompt dict for a question about images.

    Loads and normalises each image (RGB), builds the prompt with the model's chat
    template and one ``<image>`` placeholder per image, and checks, before any engine
    work: the placeholder count, ``limit_mm_per_prompt`` and that prompt plus
    ``max_tokens`` fit ``max_model_len``.

    Args:
        engine: from `cookbook.engine.create_engine`.
        question: the question, without ``<image>`` (one per image is added).
        images: a list of image sources, or one source (a str, bytes, path or PIL image
            is one image, never split).
        max_tokens: the answer budget counted against ``max_model_len``.

    Raises:
        TypeError: the question is not a str, or an image source of an unknown type.
        ValueError: bad question, too many images, or a prompt that cannot fit; the
            message names the numbers and the setting to change.
        FileNotFoundError: an image path does not exist.
    """
    images = _image_list(images)
    check_image_limit(len(images), engine.limit_images, where="engine")
    # The prompt checks (question type, placeholders, foreign templates) need only the
    # image count, so they run before any image is loaded.
    prompt = build_prompt(engine.tokenizer, question, num_images=len(images))
    check_prompt(prompt, len(images))
    pil_images: list[Image.Image] = [load_image(src) for src in images]
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


def ask_images(engine: Engine, images: Any, question: str, **sampling: Any) -> GenerationResult:
    """Return the model's answer to one question about several images in one prompt.

    The prompt labels the images ``Image-1: <image>``, ``Image-2: <image>``, ... as
    InternVL's own ``chat`` does for multi-image input, so the question can refer to
    "Image-1" and "Image-2".

    Args:
        engine: from `cookbook.engine.create_engine`.
        images: a list of image sources (`load_image`); a single source (a sample name,
            path, URL, bytes or PIL image) counts as one image.
        question: the question, without ``<image>``.
        **sampling: `sampling_params` arguments (``max_tokens``, ``temperature``, ...).

    Raises:
        ValueError: more images than ``limit_mm_per_prompt`` allows, or a prompt that
            cannot fit ``max_model_len``; raised before the engine runs.
    """
    params = sampling_params(engine, **sampling)
    prepared = prepare_request(engine, question, images, max_tokens=params.max_tokens)
    return run_prepared(engine, [prepared], params)[0]


#: The item forms `ask_batch` accepts, for its error messages.
REQUEST_FORMS = (
    "an ImageRequest, an (images, question) pair, or a dict {'question': ..., 'images': [...]}"
)

#: Longest error text kept in a batch result (a pasted base64 string can make an
#: exception message hundreds of kilobytes long).
MAX_ERROR_CHARS = 2000


def _describe(item: Any) -> str:
    if item is None:
        return "None"
    if isinstance(item, (tuple, list)):
        return f"a {len(item)}-item {type(item).__name__}"
    if isinstance(item, str):
        text = item if len(item) <= 40 else item[:37] + "..."
        return f"a str ({text!r})"
    return f"a {type(item).__name__}"


def _split_request(item: Any) -> tuple[Any, str]:
    """Return ``(images, question)`` of one batch item, or raise TypeError naming the forms."""
    if isinstance(item, ImageRequest):
        images, question = item.images, item.question
    elif isinstance(item, Mapping):
        keys = set(item)
        if keys & {"prompt", "multi_modal_data"}:
            raise TypeError(
                "got a vLLM prompt dict ('prompt'/'multi_modal_data'); the recipes build the "
                f"prompt themselves: pass {REQUEST_FORMS}"
            )
        unknown = sorted(str(k) for k in keys - {"question", "images"})
        if unknown or "question" not in keys:
            raise TypeError(
                f"a request dict takes the keys 'question' (required) and 'images', got "
                f"{sorted(str(k) for k in keys)}; expected {REQUEST_FORMS}"
            )
        images, question = item.get("images", ()), item["question"]
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        images, question = item
    else:
        raise TypeError(f"expected {REQUEST_FORMS}, got {_describe(item)}")
    if not isinstance(question, str):
        raise TypeError(
            f"question must be a str, got {_describe(question)} (a pair is (images, "
            "question): images first)"
        )
    return images, question


def _error_text(index: int, exc: Exception) -> str:
    text = f"request {index}: {type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 40] + f"... ({len(text)} characters in all)"
    return text


def ask_batch(engine: Engine, requests: Iterable[Any], **sampling: Any) -> list[GenerationResult]:
    """Return one result per request, in order, from a single ``LLM.generate`` call.

    A batch is a *list of request dicts*, each with its own prompt and images: vLLM
    schedules them together (continuous batching), which is much faster than one call per
    request. The seed tutorial's form, one dict whose ``"prompt"`` is a list, raises
    ``TypeError: Prompt text should be a string``.

    Args:
        engine: from `cookbook.engine.create_engine`.
        requests: a list of items, each `ImageRequest`, an ``(images, question)`` pair
            (images first; one image source or a list of them), or, for convenience, a
            dict ``{"question": ..., "images": [...]}`` (``"images"`` may be left out).
            A vLLM prompt dict (``"prompt"``, ``"multi_modal_data"``) is refused: the
            recipe builds the prompt from the question.
        **sampling: `sampling_params` arguments, shared by the batch.

    Returns:
        One result per item; ``results[i]`` answers ``requests[i]``. An item that cannot
        be prepared gets a result with ``error`` set (``"request i: <exception type>:
        <message>"``, at most `MAX_ERROR_CHARS` characters) and ``finish_reason`` ``None``:
        a malformed item (``None``, a bare string, a 3-tuple, a dict with other keys), a
        non-str question, a missing or unreadable image (any exception while loading or
        checking it), too many images, too long. The other items still run.

    Raises:
        TypeError: ``requests`` is one request instead of a list of them.
        ValueError: bad sampling arguments (they apply to the whole batch).
    """
    if isinstance(requests, (str, bytes, ImageRequest, Mapping)) or not isinstance(
        requests, Iterable
    ):
        raise TypeError(
            f"requests must be a list of requests, got {_describe(requests)}; wrap a single "
            "request in a list: [request]"
        )
    items = list(requests)
    params = sampling_params(engine, **sampling)
    prepared: list[PreparedRequest] = []
    slots: list[int] = []
    results: list[GenerationResult | None] = [None] * len(items)
    for i, item in enumerate(items):
        images: list[Any] = []
        question = ""
        try:
            raw_images, question = _split_request(item)
            images = _image_list(raw_images)
            prepared.append(prepare_request(engine, question, images, max_tokens=params.max_tokens))
            slots.append(i)
        except Exception as exc:  # one bad item must not sink the batch
            results[i] = GenerationResult(
                index=i,
                text="",
                prompt_tokens=0,
                output_tokens=0,
                finish_reason=None,
                seconds=0.0,
                num_images=len(images),
                question=question,
                error=_error_text(i, exc),
            )
    for slot, res in zip(slots, run_prepared(engine, prepared, params), strict=True):
        res.index = slot
        results[slot] = res
    return [r for r in results if r is not None]
