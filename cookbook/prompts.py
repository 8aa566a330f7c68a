"""How a request to InternVL is spelled: chat messages with images, prompts, stop token ids.

OpenAI-style chat messages serve ``LLM.chat`` and a vLLM server alike; `build_prompt` gives
the same text for ``LLM.generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from cookbook.images import image_part

#: Tokens that may end an InternVL answer, as vLLM's own InternVL example lists them
#: (examples/offline_inference/vision_language.py, ``run_internvl``), plus InternLM2's ``</s>``.
STOP_TOKEN_CANDIDATES = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|end|>", "</s>")


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Return the stop ids: the special tokens among `STOP_TOKEN_CANDIDATES` and ``eos_token``.

    InternLM2 tokenizers (InternVL2, 2.5) give ``</s>`` = 2 and ``<|im_end|>`` = 92542; Qwen
    ones (InternVL3, 3.5) give 151643-151645, and there 2 and 92542 are ordinary tokens.
    Raises ValueError when no candidate is a special token of this tokenizer.
    """
    special = dict(zip(tokenizer.all_special_tokens, tokenizer.all_special_ids, strict=True))
    special.update({t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special})
    wanted = [*STOP_TOKEN_CANDIDATES, tokenizer.eos_token]
    ids = sorted({special[t] for t in wanted if t in special})
    if not ids:
        raise ValueError(f"the tokenizer has none of {wanted} as a special token; pass stop ids")
    return ids


def stop_token_ids_of(model: str) -> list[int]:
    """Return `stop_token_ids` of a model (hub id or folder), its tokenizer loaded by vLLM.

    ``vllm.tokenizers.get_tokenizer`` reads the engine's cache (ModelScope's where set).
    """
    from vllm.tokenizers import get_tokenizer

    return stop_token_ids(get_tokenizer(model, trust_remote_code=True))


def image_labels(num_images: int, placeholder: str = "<image>", label: str = "Image-") -> str:
    r"""Return InternVL's labels for several images: ``"Image-1: <image>\nImage-2: <image>\n"``.

    As its model cards label images in one turn (``label="Frame"``: a video sent as frames).
    For one image ``""``: vLLM then puts the placeholder before the text itself.
    """
    if num_images < 2:
        return ""
    return "".join(f"{label}{i}: {placeholder}\n" for i in range(1, num_images + 1))


def user_message(
    question: str,
    images: Sequence[Any] = (),
    *,
    placeholder: str = "<image>",
    label: str = "Image-",
) -> dict[str, Any]:
    """Return one user turn: the images (`cookbook.images.image_part`), then the text.

    Several images are labelled in the text (`image_labels`), so the model can tell them
    apart. ``placeholder`` is the model's (``ModelSpec.image_placeholder``). Raises
    FileNotFoundError or ValueError when an image cannot be loaded (`images.load_image`).
    """
    if isinstance(images, str | Image.Image):  # one image, not in a list
        images = [images]
    parts = [image_part(image) for image in images]
    text = image_labels(len(parts), placeholder, label) + question
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def build_prompt(
    tokenizer: Any, question: str, num_images: int = 1, *, placeholder: str = "<image>"
) -> str:
    r"""Return the prompt text for ``LLM.generate``: the chat template around one user turn.

    What ``LLM.chat`` builds from `user_message` (one image ``<image>\n`` before the text);
    pass the images in ``multi_modal_data``, in the same order.
    """
    labels = image_labels(num_images, placeholder) or (f"{placeholder}\n" if num_images else "")
    messages = [{"role": "user", "content": labels + question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


#: InternVL3.5's system prompt for its thinking mode (its model card, "Thinking Mode"): the
#: answer then starts with the reasoning between ``<think>`` and ``</think>``.
THINKING_SYSTEM_PROMPT = (
    "You are an AI assistant that rigorously follows this response protocol:\n\n"
    "1. First, conduct a detailed analysis of the question. Consider different angles, "
    "potential solutions, and reason through the problem step-by-step. Enclose this entire "
    "thinking process within <think> and </think> tags.\n\n"
    "2. After the thinking section, provide a clear, concise, and direct answer to the user's "
    "question. Separate the answer from the think section with a newline.\n\n"
    "Ensure that the thinking process is thorough but remains focused on the query. The final "
    "answer should be standalone and not reference the thinking section."
)


def split_thinking(text: str) -> tuple[str, str]:
    """Return ``(thinking, answer)`` of a thinking-mode answer; ``("", text)`` without one."""
    head, sep, tail = text.partition("</think>")
    if not sep:
        return "", text.strip()
    return head.replace("<think>", "", 1).strip(), tail.strip()
