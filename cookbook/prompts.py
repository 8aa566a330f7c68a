"""Chat-template prompts with ``<image>`` placeholders, prompt checks and stop token ids.

InternVL marks each image with one ``<image>`` inside the model's own chat template; vLLM
replaces it with ``<img>`` + 256 ``<IMG_CONTEXT>`` per tile + ``</img>``
(``InternVLProcessor.get_image_repl`` in vllm/transformers_utils/processors/internvl.py).
Stop token ids differ between the InternLM2-based (InternVL2/2.5) and the Qwen2.5-based
(InternVL3) models, so they are read from the tokenizer, never typed in.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "FOREIGN_PLACEHOLDERS",
    "FOREIGN_TEMPLATES",
    "IMAGE_PLACEHOLDER",
    "RESERVED_TOKENS",
    "STOP_TOKEN_CANDIDATES",
    "build_prompt",
    "check_prompt",
    "check_question",
    "image_prefix",
    "stop_token_ids",
    "text_token_count",
]

#: The placeholder InternVL expects, once per image, in prompt order.
IMAGE_PLACEHOLDER = "<image>"

#: Tokens around each image's context tokens (``InternVLProcessor`` in
#: vllm/transformers_utils/processors/internvl.py).
IMAGE_START = "<img>"
IMAGE_END = "</img>"

#: Token strings that may end an InternVL answer. The first four are those of vLLM's
#: examples/offline_inference/vision_language.py (``run_internvl``); ``</s>`` is the
#: InternLM2 end-of-sequence token.
STOP_TOKEN_CANDIDATES = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|end|>", "</s>")

#: Image placeholders of other model families that InternVL does not understand, with the
#: family they belong to (regex -> description).
FOREIGN_PLACEHOLDERS: dict[str, str] = {
    r"<\|image_pad\|>": "Qwen2-VL/Qwen2.5-VL placeholder '<|image_pad|>'",
    r"<\|vision_start\|>": "Qwen2-VL/Qwen2.5-VL marker '<|vision_start|>'",
    r"\[IMG\]": "Pixtral/Mistral placeholder '[IMG]'",
    r"<\|image\|>": "Llama 3.2 Vision/Phi-3 style placeholder '<|image|>'",
    r"<image_placeholder>": "DeepSeek-VL placeholder '<image_placeholder>'",
    r"<\|image_\d+\|>": "Phi-3-vision placeholder '<|image_N|>'",
    r"<IMG_CONTEXT>": (
        "already expanded InternVL context token '<IMG_CONTEXT>' (vLLM expands <image> itself)"
    ),
}

#: Turn markers of other models' chat templates (regex -> description). Each is checked in
#: the user's text only, and only in forms that cannot be ordinary question text: bracket
#: tokens, or a ``user:``/``human:`` turn holding an ``<image>`` placeholder (a prompt
#: pasted from a LLaVA, Vicuna or similar example).
FOREIGN_TEMPLATES: dict[str, str] = {
    r"(?s)\[INST\].*\[/INST\]": "a Llama 2/Mistral '[INST] ... [/INST]' turn",
    r"<<SYS>>": "a Llama 2 system marker '<<SYS>>'",
    r"<\|start_header_id\|>|<\|eot_id\|>": "Llama 3 turn markers ('<|start_header_id|>')",
    r"<start_of_turn>|<end_of_turn>": "Gemma turn markers ('<start_of_turn>')",
    r"<\|(?:user|assistant|system)\|>": "Phi-3/Zephyr turn markers ('<|user|>')",
    r"(?im)^\s*(?:###\s*)?(?:user|human)\s*:\s*<image>": (
        "a 'USER: <image>' / 'Human: <image>' turn of another model's template (LLaVA, Vicuna, ...)"
    ),
    r"(?is)(?:^|\n)\s*(?:###\s*)?(?:user|human)\s*:.*<image>.*\b(?:assistant|gpt)\s*:\s*\Z": (
        "a 'USER: ... <image> ... ASSISTANT:' conversation of another model's template "
        "(LLaVA, Vicuna, ...)"
    ),
}

#: InternVL's own image tokens, which vLLM inserts around and for each image
#: (``InternVLProcessor.get_image_repl``). Typed in text, the tokenizer turns each into
#: that special token, so the model sees a broken image and the image-token count is off.
RESERVED_TOKENS = (IMAGE_START, IMAGE_END, "<IMG_CONTEXT>")

#: ChatML markers of InternVL's own template; a question holding them is a whole prompt.
_CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")

_LLAVA_TURN = re.compile(r"(?m)^\s*(USER|ASSISTANT)\s*:")
_CHATML_START = "<|im_start|>"
_CHATML_USER_TURN = re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|\Z)", re.S)


def image_prefix(num_images: int) -> str:
    r"""Return the text that puts ``num_images`` images before a question.

    One image: ``"<image>\n"``. Several: ``"Image-1: <image>\nImage-2: <image>\n..."``,
    the labels InternVL's own ``chat()`` adds for separate images (model cards of
    InternVL2/2.5/3-8B, "multi-image multi-round conversation, separate images"). Zero:
    ``""``.
    """
    _check_count("num_images", num_images)
    if num_images == 0:
        return ""
    if num_images == 1:
        return f"{IMAGE_PLACEHOLDER}\n"
    return "".join(f"Image-{i}: {IMAGE_PLACEHOLDER}\n" for i in range(1, num_images + 1))


def build_prompt(
    tokenizer: Any, question: str, num_images: int = 1, system: str | None = None
) -> str:
    """Return a prompt string in the model's chat template with one ``<image>`` per image.

    The user turn is ``image_prefix(num_images) + question``; if ``question`` already holds
    exactly ``num_images`` ``<image>`` placeholders it is used as written (images placed
    inline). The text comes from ``tokenizer.apply_chat_template(messages, tokenize=False,
    add_generation_prompt=True)``, as in vLLM's InternVL examples.

    Args:
        tokenizer: The model's Hugging Face tokenizer (``llm.get_tokenizer()`` or
            ``AutoTokenizer.from_pretrained(model, trust_remote_code=True)``).
        question: The user's text; non-empty.
        num_images: Images that will be sent with the prompt (>= 0).
        system: Optional system message; None keeps the template's default.

    Returns:
        The prompt, ending with the assistant turn's opening.

    Raises:
        TypeError: If ``question`` is not a str or ``num_images`` not an int.
        ValueError: If ``question`` is empty, ``num_images`` < 0, the question holds a
            different number of ``<image>`` than ``num_images``, a foreign placeholder or
            turn marker (`FOREIGN_PLACEHOLDERS`, `FOREIGN_TEMPLATES`), ChatML markers, or
            one of InternVL's image tokens (`RESERVED_TOKENS`); if ``system`` holds an
            ``<image>`` or such text; or if the tokenizer has no chat template.

    """
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if not question.strip():
        raise ValueError("question is empty; pass the text to ask about the image(s)")
    _check_count("num_images", num_images)
    if system is not None and not isinstance(system, str):
        raise TypeError(f"system must be a str or None, got {type(system).__name__}")
    check_question(question, "question")
    if system is not None:
        in_system = system.count(IMAGE_PLACEHOLDER)
        if in_system:
            raise ValueError(
                f"the system message holds {in_system} {IMAGE_PLACEHOLDER} placeholder(s); "
                f"placeholders belong in the user turn: remove them from system "
                f"(build_prompt puts one {IMAGE_PLACEHOLDER} per image before the question)"
            )
        check_question(system, "system message")
    if getattr(tokenizer, "chat_template", None) is None or not hasattr(
        tokenizer, "apply_chat_template"
    ):
        raise ValueError(
            "tokenizer has no chat template; load the model's own tokenizer with "
            "trust_remote_code=True (e.g. llm.get_tokenizer())"
        )

    inline = question.count(IMAGE_PLACEHOLDER)
    if inline and inline != num_images:
        raise ValueError(
            f"question already holds {inline} {IMAGE_PLACEHOLDER} placeholder(s) but "
            f"num_images={num_images}; remove them and let build_prompt add one per image, "
            f"or pass num_images={inline}"
        )
    content = question if inline else image_prefix(num_images) + question

    messages: list[dict[str, str]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(prompt, str):
        raise TypeError(
            f"apply_chat_template returned {type(prompt).__name__}, expected str; "
            f"is this a Hugging Face tokenizer?"
        )
    check_prompt(prompt, num_images)
    return prompt


def check_prompt(prompt: str, num_images: int) -> None:
    """Check that a prompt fits InternVL and the images sent with it; returns None.

    Raises before anything reaches the engine when the prompt carries a placeholder or
    turn markers of another model family, or when the number of ``<image>`` placeholders
    differs from the number of images (vLLM pairs them in order, one each).

    Args:
        prompt: Full prompt text (after the chat template).
        num_images: Images that will be sent with it.

    Raises:
        TypeError: If ``prompt`` is not a str or ``num_images`` not an int.
        ValueError: On a foreign placeholder (`FOREIGN_PLACEHOLDERS`), another model's
            turn markers in a user turn (`FOREIGN_TEMPLATES`), a LLaVA-style
            ``USER:``/``ASSISTANT:`` turn without ChatML markers, InternVL's own image
            tokens typed in the text (`RESERVED_TOKENS`), or a placeholder count that
            differs from ``num_images``; the message names what was found and how to fix
            it.

    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    _check_count("num_images", num_images)
    fix = (
        f"InternVL uses {IMAGE_PLACEHOLDER} inside its own chat template; build the prompt "
        f"with cookbook.prompts.build_prompt(tokenizer, question, num_images={num_images})"
    )

    found = [desc for pattern, desc in FOREIGN_PLACEHOLDERS.items() if re.search(pattern, prompt)]
    if found:
        raise ValueError(f"prompt contains {'; '.join(found)}, not InternVL's. {fix}")
    if _CHATML_START not in prompt and _LLAVA_TURN.search(prompt):
        raise ValueError(
            "prompt uses a LLaVA-style 'USER: ... ASSISTANT:' template without the "
            f"{_CHATML_START} markers InternVL's chat template needs. {fix}"
        )
    user_texts = _CHATML_USER_TURN.findall(prompt) if _CHATML_START in prompt else [prompt]
    found = _foreign_templates(user_texts)
    if found:
        raise ValueError(f"prompt contains {found[0]}, not InternVL's. {fix}")
    reserved = [t for t in RESERVED_TOKENS if t in prompt]
    if reserved:
        raise ValueError(_reserved_message("prompt", reserved))

    count = prompt.count(IMAGE_PLACEHOLDER)
    if count != num_images:
        raise ValueError(
            f"prompt has {count} {IMAGE_PLACEHOLDER} placeholder(s) but {num_images} "
            f"image(s) were given; each image needs exactly one {IMAGE_PLACEHOLDER}, in "
            f"order. {fix}"
        )


def text_token_count(tokenizer: Any, prompt: str) -> int:
    r"""Return how many prompt tokens are not image tokens, as vLLM will count them.

    vLLM replaces each ``<image>`` with ``<img>`` + context tokens + ``</img>``
    (``InternVLProcessor.get_image_repl``) and tokenizes the prompt with the tokenizer's
    default special tokens. The text is therefore counted with each ``<image>`` replaced
    by ``<img></img>``, minus those markers. Simply deleting ``<image>`` is not exact: the
    text on both sides can then merge into other tokens (``"\n" + "\n"`` becomes one
    token in a BPE vocabulary, one token short for each image; measured with the tiny
    checkpoint). Add ``cookbook.tiling.image_token_count`` for each image to get the
    prompt length.

    Args:
        tokenizer: The model's Hugging Face tokenizer.
        prompt: Full prompt text with ``<image>`` placeholders.

    Returns:
        Token count of the text, special tokens the tokenizer adds included.

    Raises:
        TypeError: If ``prompt`` is not a str.

    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    markers = IMAGE_START + IMAGE_END
    num_images = prompt.count(IMAGE_PLACEHOLDER)
    ids = tokenizer(prompt.replace(IMAGE_PLACEHOLDER, markers))["input_ids"]
    per_image = len(tokenizer(markers, add_special_tokens=False)["input_ids"])
    return len(ids) - num_images * per_image


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Return the ids that end an answer, read from the model's own tokenizer.

    Candidates are ``STOP_TOKEN_CANDIDATES`` (the list of vLLM's
    examples/offline_inference/vision_language.py, ``run_internvl``, plus ``</s>``) and
    ``tokenizer.eos_token_id``. A candidate is kept only if the tokenizer maps it to an id
    that maps back to the same token (an unknown token falls back to ``<unk>``) and that id
    is a special or added token (``all_special_ids`` or ``added_tokens_decoder``): an id
    that decodes to ordinary text is never a stop id. For InternVL2/2.5 (InternLM2) this
    gives 2, 92542, 92543; for InternVL3 (Qwen2.5) 151643, 151644, 151645.

    Args:
        tokenizer: The model's Hugging Face tokenizer.

    Returns:
        Sorted unique ids.

    Raises:
        ValueError: If none of the candidates is a special token of this tokenizer.

    """
    special = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {int(i) for i in added}

    ids: set[int] = set()
    for token in STOP_TOKEN_CANDIDATES:
        try:
            tid = tokenizer.convert_tokens_to_ids(token)
        except (KeyError, ValueError, TypeError):
            continue
        if isinstance(tid, list) or tid is None or tid not in special:
            continue
        if tokenizer.convert_ids_to_tokens(int(tid)) != token:
            continue
        ids.add(int(tid))
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int) and eos in special:
        ids.add(eos)
    if not ids:
        raise ValueError(
            f"tokenizer has none of {list(STOP_TOKEN_CANDIDATES)} as a special token and no "
            f"eos_token_id; pass stop_token_ids explicitly (from the model card's "
            f"conversation template)"
        )
    return sorted(ids)


def _foreign_templates(texts: list[str]) -> list[str]:
    """Return the description of the first `FOREIGN_TEMPLATES` entry found in ``texts``."""
    for pattern, desc in FOREIGN_TEMPLATES.items():
        if any(re.search(pattern, text) for text in texts):
            return [desc]
    return []


def _reserved_message(what: str, tokens: list[str]) -> str:
    shown = ", ".join(repr(t) for t in tokens)
    return (
        f"the {what} contains {shown}: InternVL's own image token(s), which vLLM inserts "
        f"around each image. Typed in text, the tokenizer reads them as those special "
        f"tokens, which confuses the model and throws off the image-token count. Write them "
        f"another way (e.g. 'the img tag' or '< img >'); images are added with "
        f"{IMAGE_PLACEHOLDER} placeholders, one per image"
    )


def check_question(text: str, what: str = "question") -> None:
    """Check a question (or system message) before a chat template wraps it; returns None.

    For text that the chat template will wrap: `build_prompt` calls it, and so can a
    client that sends the text to a server which applies the template itself.

    Args:
        text: The user's text, without the chat template.
        what: How the error messages name the text (``"question"``, ``"system message"``).

    Raises:
        TypeError: If ``text`` is not a str.
        ValueError: If the text holds InternVL's image tokens (`RESERVED_TOKENS`), ChatML
            markers (it is a whole prompt), a foreign placeholder (`FOREIGN_PLACEHOLDERS`)
            or another model's turn markers (`FOREIGN_TEMPLATES`).

    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    reserved = [t for t in RESERVED_TOKENS if t in text]
    if reserved:
        raise ValueError(_reserved_message(what, reserved))
    markers = [m for m in _CHATML_MARKERS if m in text]
    if markers:
        raise ValueError(
            f"the {what} contains the chat-template marker(s) {markers}: it is already a "
            f"whole prompt. Pass only the text (build_prompt applies the chat template), "
            f"or send a prompt you built yourself after check_prompt(prompt, num_images)"
        )
    found = [desc for pattern, desc in FOREIGN_PLACEHOLDERS.items() if re.search(pattern, text)]
    found += _foreign_templates([text])
    if found:
        raise ValueError(
            f"the {what} contains {'; '.join(found)}, not InternVL's. Pass only the plain "
            f"text (no turn markers or placeholders of other models): build_prompt applies "
            f"InternVL's chat template and adds one {IMAGE_PLACEHOLDER} per image"
        )


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
