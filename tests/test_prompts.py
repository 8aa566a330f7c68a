"""Stop token ids from the tokenizer (C02), InternVL's image labels, the prompt text.

The tokenizers are built here with the ``tokenizers`` library so that their ids match the
real models where it matters: InternLM2 (InternVL2/2.5: ``</s>`` = 2, ``<|im_end|>`` =
92542) and Qwen2.5 (InternVL3: ``<|endoftext|>`` = 151643 ... ``<|im_end|>`` = 151645, where
2 and 92542 are ordinary words).
"""

from __future__ import annotations

import pytest

from cookbook import prompts

CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizer(size, names, *, specials, **kwargs):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(size)}
    for index, name in names.items():
        del vocab[f"w{index}"]
        vocab[name] = index
    backend = Tokenizer(models.WordLevel(vocab, unk_token=kwargs.get("unk_token", "w0")))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="module")
def internlm2():
    names = {0: "<unk>", 1: "<s>", 2: "</s>", 92542: "<|im_end|>", 92543: "<|im_start|>"}
    return _tokenizer(
        92553,
        names,
        specials=["<|im_end|>", "<|im_start|>"],
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )


@pytest.fixture(scope="module")
def qwen():
    # "<|end|>" is an ordinary vocabulary entry here: it must not become a stop id.
    names = {
        2: "hello",
        92542: "world",
        100: "<|end|>",
        151643: "<|endoftext|>",
        151644: "<|im_start|>",
        151645: "<|im_end|>",
    }
    return _tokenizer(
        151646,
        names,
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        eos_token="<|im_end|>",
    )


def test_internlm2_stop_ids_are_its_end_tokens(internlm2):
    assert prompts.stop_token_ids(internlm2) == [2, 92542, 92543]


def test_qwen_stop_ids_leave_out_ordinary_words(qwen):
    ids = prompts.stop_token_ids(qwen)
    assert ids == [151643, 151644, 151645]
    assert 2 not in ids and 92542 not in ids and 100 not in ids  # the seed's ids, "<|end|>"


def test_a_tokenizer_without_end_tokens_is_refused():
    tok = _tokenizer(10, {0: "<unk>"}, specials=[], unk_token="<unk>")
    with pytest.raises(ValueError, match="special token"):
        prompts.stop_token_ids(tok)


def test_image_labels_number_each_image():
    assert prompts.image_labels(1) == ""
    assert prompts.image_labels(3) == "Image-1: <image>\nImage-2: <image>\nImage-3: <image>\n"
    assert prompts.image_labels(2, "<IMG_CONTEXT>").count("<IMG_CONTEXT>") == 2


def test_user_message_puts_images_before_the_labelled_text():
    from PIL import Image

    pics = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    message = prompts.user_message("Compare.", pics)
    assert [p["type"] for p in message["content"]] == ["image_url", "image_url", "text"]
    assert message["content"][-1]["text"] == "Image-1: <image>\nImage-2: <image>\nCompare."
    single = prompts.user_message("What is it?", pics[0])  # one image, not a list
    assert single["content"][-1]["text"] == "What is it?"


def test_build_prompt_is_the_chat_template_around_one_turn(qwen):
    assert prompts.build_prompt(qwen, "What is it?") == (
        "<|im_start|>user\n<image>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n"
    )
    two = prompts.build_prompt(qwen, "Compare.", num_images=2)
    assert "Image-1: <image>\nImage-2: <image>\nCompare." in two
    assert "<image>" not in prompts.build_prompt(qwen, "Hello.", num_images=0)
