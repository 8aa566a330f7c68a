"""Chat-template prompts, placeholder checks (C01) and stop token ids (C02).

The tokenizers are built here with the `tokenizers` library so that their ids match the
real models where it matters: InternLM2 (InternVL2/2.5-8B: ``</s>`` = 2,
``<|im_end|>`` = 92542) and Qwen2.5 (InternVL3-8B: ``<|endoftext|>`` = 151643,
``<|im_start|>`` = 151644, ``<|im_end|>`` = 151645, where 2 and 92542 are ordinary words).
"""

from __future__ import annotations

import pytest

from cookbook.prompts import (
    IMAGE_PLACEHOLDER,
    build_prompt,
    check_prompt,
    image_prefix,
    stop_token_ids,
    text_token_count,
)

CHATML = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizer(size, names, *, specials, unk=None, **special_kwargs):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(size)}
    for index, name in names.items():
        del vocab[f"w{index}"]
        vocab[name] = index
    model = models.WordLevel(vocab, unk_token=unk) if unk else models.WordLevel(vocab)
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = dict(special_kwargs)
    if unk:
        kwargs["unk_token"] = unk
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = CHATML
    return tok


@pytest.fixture(scope="module")
def internlm2_tokenizer():
    # InternLM2 layout: <unk>=0, <s>=1, </s>=2, <|im_end|>=92542, <|im_start|>=92543;
    # unknown strings fall back to <unk>.
    names = {0: "<unk>", 1: "<s>", 2: "</s>", 92542: "<|im_end|>", 92543: "<|im_start|>"}
    return _tokenizer(
        92553,
        names,
        specials=["<|im_end|>", "<|im_start|>"],
        unk="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )


@pytest.fixture(scope="module")
def qwen_tokenizer():
    # Qwen2.5 layout (InternVL3): specials at 151643..151645, no <unk>; ids 2 and 92542
    # are ordinary words, and "<|end|>" is an ordinary (non-special) vocabulary entry.
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
        specials=["<|im_start|>"],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )


# --------------------------------------------------------------------------- build_prompt


def test_build_prompt_one_image(qwen_tokenizer):
    prompt = build_prompt(qwen_tokenizer, "What is in the picture?")
    assert prompt.endswith(
        "<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt.count(IMAGE_PLACEHOLDER) == 1


def test_build_prompt_labels_several_images(qwen_tokenizer):
    prompt = build_prompt(qwen_tokenizer, "Compare them.", num_images=3)
    assert "user\nImage-1: <image>\nImage-2: <image>\nImage-3: <image>\nCompare them." in prompt
    assert prompt.count(IMAGE_PLACEHOLDER) == 3


def test_build_prompt_without_images_and_with_system(qwen_tokenizer):
    prompt = build_prompt(qwen_tokenizer, "Hi", num_images=0, system="Be brief.")
    assert IMAGE_PLACEHOLDER not in prompt
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "helpful assistant" not in prompt  # the template's default system was replaced


def test_build_prompt_keeps_inline_placeholders_when_counts_match(internlm2_tokenizer):
    question = "Left: <image>\nRight: <image>\nWhich is larger?"
    prompt = build_prompt(internlm2_tokenizer, question, num_images=2)
    assert f"user\n{question}<|im_end|>" in prompt
    with pytest.raises(ValueError, match="already holds 2"):
        build_prompt(internlm2_tokenizer, question, num_images=1)


def test_image_prefix():
    assert image_prefix(0) == ""
    assert image_prefix(1) == "<image>\n"
    assert image_prefix(2) == "Image-1: <image>\nImage-2: <image>\n"


@pytest.mark.parametrize(
    ("question", "num_images", "error"),
    [
        (None, 1, TypeError),
        (42, 1, TypeError),
        ("", 1, ValueError),
        ("   \n", 1, ValueError),
        ("ok", -1, ValueError),
        ("ok", 1.0, TypeError),
        ("ok", True, TypeError),
        ("Describe <|image_pad|>", 0, ValueError),
    ],
)
def test_build_prompt_rejects_bad_input(qwen_tokenizer, question, num_images, error):
    with pytest.raises(error):
        build_prompt(qwen_tokenizer, question, num_images=num_images)


def test_build_prompt_needs_a_chat_template():
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="chat template"):
        build_prompt(NoTemplate(), "What?")


# --------------------------------------------------------------------------- C01 check_prompt

GOOD = "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n"


def test_check_prompt_accepts_matching_prompt():
    assert check_prompt(GOOD, 1) is None
    two = GOOD.replace("<image>\n", "Image-1: <image>\nImage-2: <image>\n")
    assert check_prompt(two, 2) is None


def test_c01_one_image_no_placeholder():
    prompt = GOOD.replace("<image>\n", "")
    with pytest.raises(ValueError) as err:
        check_prompt(prompt, 1)
    msg = str(err.value)
    assert "0 <image> placeholder(s)" in msg and "1 image(s)" in msg
    assert "build_prompt" in msg


def test_c01_two_images_one_placeholder():
    with pytest.raises(ValueError) as err:
        check_prompt(GOOD, 2)
    assert "1 <image> placeholder(s) but 2 image(s)" in str(err.value)


def test_c01_placeholder_without_image():
    with pytest.raises(ValueError, match="1 <image> placeholder.*0 image"):
        check_prompt(GOOD, 0)


def test_c01_llava_style_template():
    with pytest.raises(ValueError) as err:
        check_prompt("USER: <image>\nWhat is this? ASSISTANT:", 1)
    msg = str(err.value)
    assert "LLaVA" in msg and "<|im_start|>" in msg and "<image>" in msg


@pytest.mark.parametrize(
    ("foreign", "named"),
    [
        ("<|vision_start|><|image_pad|><|vision_end|>", "'<|image_pad|>'"),
        ("[IMG]", "'[IMG]'"),
        ("<|image|>", "'<|image|>'"),
        ("<image_placeholder>", "'<image_placeholder>'"),
        ("<|image_1|>", "'<|image_N|>'"),
        ("<img><IMG_CONTEXT><IMG_CONTEXT></img>", "'<IMG_CONTEXT>'"),
    ],
)
def test_c01_foreign_placeholders(foreign, named):
    prompt = f"<|im_start|>user\n{foreign}\nWhat is this?<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError) as err:
        check_prompt(prompt, 1)
    msg = str(err.value)
    assert "InternVL uses <image> inside its own chat template" in msg
    assert named in msg  # names what it found


def test_check_prompt_type_errors():
    with pytest.raises(TypeError):
        check_prompt(b"<image>", 1)
    with pytest.raises(TypeError):
        check_prompt(GOOD, "1")


# --------------------------------------------------------------------------- C02 stop ids


def test_stop_ids_internlm2(internlm2_tokenizer):
    ids = stop_token_ids(internlm2_tokenizer)
    assert ids == [2, 92542, 92543]
    # "<|endoftext|>" is unknown here and falls back to <unk>=0: never a stop id.
    assert internlm2_tokenizer.convert_tokens_to_ids("<|endoftext|>") == 0
    assert 0 not in ids


def test_stop_ids_qwen_never_internlm2_ids(qwen_tokenizer):
    ids = stop_token_ids(qwen_tokenizer)
    assert ids == [151643, 151644, 151645]
    # The seed's InternLM2 ids are ordinary text in a Qwen2.5 vocabulary.
    assert qwen_tokenizer.decode([2, 92542]) == "hello world"
    assert 2 not in ids and 92542 not in ids
    # "<|end|>" exists in this vocabulary but is not special: never a stop id.
    assert qwen_tokenizer.convert_tokens_to_ids("<|end|>") == 100
    assert 100 not in ids


def test_stop_ids_each_decodes_to_a_special_token(internlm2_tokenizer, qwen_tokenizer):
    for tok in (internlm2_tokenizer, qwen_tokenizer):
        special = set(tok.all_special_ids) | set(tok.added_tokens_decoder)
        for tid in stop_token_ids(tok):
            assert tid in special
            assert tok.convert_ids_to_tokens(tid) in (
                "<|endoftext|>",
                "<|im_start|>",
                "<|im_end|>",
                "<|end|>",
                "</s>",
                tok.eos_token,
            )


def test_stop_ids_fall_back_to_eos_only():
    tok = _tokenizer(10, {0: "<unk>", 9: "<eos>"}, specials=[], unk="<unk>", eos_token="<eos>")
    assert stop_token_ids(tok) == [9]


def test_stop_ids_none_found_raises():
    tok = _tokenizer(10, {0: "<unk>"}, specials=[], unk="<unk>")
    with pytest.raises(ValueError, match="stop_token_ids"):
        stop_token_ids(tok)


# --------------------------------------------------------------------------- text tokens


def test_text_token_count_excludes_image_markers():
    tok = _tokenizer(
        8,
        {0: "<unk>", 1: "a", 2: "b", 3: "<img>", 4: "</img>"},
        specials=["<img>", "</img>"],
        unk="<unk>",
    )
    assert text_token_count(tok, "a <image> b") == 2
    assert text_token_count(tok, "a <image> b <image> a") == 3
    assert text_token_count(tok, "a b a") == 3
    with pytest.raises(TypeError):
        text_token_count(tok, None)


# --------------------------------------------------------------------------- C01 user text


def test_c01_image_in_the_system_message_is_blamed_on_the_system_message(qwen_tokenizer):
    with pytest.raises(ValueError) as err:
        build_prompt(qwen_tokenizer, "What is this?", 1, system="Images are marked <image>.")
    msg = str(err.value)
    assert msg.startswith("the system message holds 1 <image>")
    assert "remove them from system" in msg
    assert "use build_prompt" not in msg and "build the prompt with" not in msg


@pytest.mark.parametrize(
    ("question", "named"),
    [
        ("USER: <image>\nWhat is in this photo? ASSISTANT:", "'USER: <image>'"),
        ("user: <image>\nWhat? assistant:", "'USER: <image>'"),
        ("Human: <image>\nWhat?\nAssistant:", "'Human: <image>'"),
        ("### Human: <image>\nWhat?\n### Assistant:", "'Human: <image>'"),
        ("USER: Look at <image> closely. ASSISTANT:", "'USER: ... <image> ... ASSISTANT:'"),
        ("[INST] <image>\nWhat? [/INST]", "'[INST] ... [/INST]'"),
        ("<|user|>\n<image>\nWhat?<|end|>\n<|assistant|>", "'<|user|>'"),
        ("<|start_header_id|>user<|end_header_id|>\n<image>What?<|eot_id|>", "Llama 3"),
        ("<start_of_turn>user\n<image>What?<end_of_turn>", "Gemma"),
    ],
)
def test_c01_other_models_templates_pasted_as_the_question(qwen_tokenizer, question, named):
    with pytest.raises(ValueError) as err:
        build_prompt(qwen_tokenizer, question, num_images=1)
    msg = str(err.value)
    assert msg.startswith("the question contains") and named in msg
    # The same text in a prompt built by hand (wrapped in ChatML or not) is refused too.
    wrapped = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    for prompt in (question, wrapped):
        with pytest.raises(ValueError, match="not InternVL's|LLaVA-style"):
            check_prompt(prompt, 1)


@pytest.mark.parametrize(
    "question",
    [
        "What does the user: field in this form mean?",
        "Continue the dialogue:\nUser: hi\nAssistant:",  # no <image>: a plain question
        "What does [INST] stand for in this screenshot?",
        "Which human: the left or the right one?",
        'Is <img src="a.png"> valid HTML?',  # not the <img> token: it has attributes
    ],
)
def test_c01_ordinary_questions_that_look_a_little_like_templates_pass(qwen_tokenizer, question):
    prompt = build_prompt(qwen_tokenizer, question, num_images=1)
    assert question in prompt and prompt.count(IMAGE_PLACEHOLDER) == 1


@pytest.mark.parametrize("token", ["<img>", "</img>", "<IMG_CONTEXT>"])
def test_internvl_image_tokens_typed_in_the_question_are_refused(qwen_tokenizer, token):
    question = f"What does the {token} tag do in this HTML?"
    with pytest.raises(ValueError) as err:
        build_prompt(qwen_tokenizer, question, num_images=1)
    msg = str(err.value)
    assert f"the question contains {token!r}" in msg and "image token" in msg
    with pytest.raises(ValueError, match="image token"):
        build_prompt(qwen_tokenizer, "What?", num_images=1, system=f"Mind the {token}.")
    prompt = f"<|im_start|>user\n<image>\n{question}<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match=r"<IMG_CONTEXT>|image token"):
        check_prompt(prompt, 1)


def test_img_token_in_a_question_would_change_the_image_token_count(tiny_tokenizer):
    """Why <img> is refused: the tokenizer reads it as InternVL's image-start token."""
    img = tiny_tokenizer.convert_tokens_to_ids("<img>")
    ids = tiny_tokenizer("the <img> tag", add_special_tokens=False)["input_ids"]
    assert img in ids
    with pytest.raises(ValueError, match="'<img>'"):
        build_prompt(tiny_tokenizer, "the <img> tag", num_images=1)


def test_a_whole_chatml_prompt_as_the_question_is_refused(qwen_tokenizer):
    with pytest.raises(ValueError, match="already a whole prompt"):
        build_prompt(qwen_tokenizer, GOOD, num_images=1)


def test_check_question_on_its_own():
    from cookbook.prompts import check_question

    assert check_question("What colour is the cat?") is None
    with pytest.raises(TypeError, match="question must be a str"):
        check_question(3)
    with pytest.raises(ValueError, match="the caption contains"):
        check_question("[INST] <image> [/INST]", "caption")
