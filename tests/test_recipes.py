"""Recipes on a real vLLM engine (CPU, tiny checkpoint) and their input checks.

Never asserts on generated text (random weights): only on counts, order and finish reasons.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from cookbook import recipes
from cookbook.recipes import ImageRequest, ask_batch, ask_image, ask_images, prepare_request

PER_TILE = 256


def photo(w, h, colour=(120, 30, 200)):
    return Image.new("RGB", (w, h), colour)


class FakeLLM:
    """Stands in for vllm.LLM where a test must prove the engine was *not* called."""

    def __init__(self, max_model_len):
        self.calls = 0
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=max_model_len))

    def generate(self, *args, **kwargs):
        self.calls += 1
        raise AssertionError("the engine must not be called for an invalid request")


def offline_engine(tokenizer, *, max_model_len=8192, limit=8, max_dynamic_patch=12):
    """An Engine without vLLM: enough for prepare_request's checks (C03, C04)."""
    from cookbook.engine import Engine
    from cookbook.models import resolve_model

    return Engine(
        llm=FakeLLM(max_model_len),
        spec=resolve_model("internvl3-8b"),
        device="cpu",
        engine_args={"model": "x", "limit_mm_per_prompt": {"image": limit}},
        tokenizer=tokenizer,
        hf_config=None,
        stop_token_ids=[1],
        tiling={
            "min_dynamic_patch": 1,
            "max_dynamic_patch": max_dynamic_patch,
            "use_thumbnail": True,
            "image_size": 448,
            "patch_size": 14,
            "downsample_ratio": 0.5,
        },
        startup_seconds=0.0,
    )


# --- checks that run before any engine work (no vLLM needed) --------------------------


def test_c04_eight_worst_case_images_refused_with_numbers_and_remedies(tiny_tokenizer):
    engine = offline_engine(tiny_tokenizer, max_model_len=8192, limit=8)
    images = [photo(4000, 3000) for _ in range(8)]  # 13 tiles each = 3328 + 2 tokens
    with pytest.raises(ValueError) as info:
        prepare_request(engine, "Compare these photos.", images, max_tokens=128)
    msg = str(info.value)
    assert "8192" in msg and str(8 * (13 * PER_TILE + 2)) in msg
    assert "max_dynamic_patch" in msg and "max_model_len" in msg and "fewer images" in msg
    assert engine.llm.calls == 0


def test_c04_same_images_fit_with_a_lower_max_dynamic_patch(tiny_tokenizer):
    engine = offline_engine(tiny_tokenizer, max_model_len=8192, limit=8, max_dynamic_patch=1)
    prepared = prepare_request(engine, "Compare.", [photo(4000, 3000)] * 8, max_tokens=128)
    assert prepared.tiles == [1] * 8
    assert prepared.image_tokens == 8 * (PER_TILE + 2)


def test_c03_more_images_than_the_limit_refused_before_the_engine(tiny_tokenizer):
    engine = offline_engine(tiny_tokenizer, limit=4)
    with pytest.raises(ValueError, match=r"limit_mm_per_prompt") as info:
        ask_images(engine, [photo(64, 64)] * 5, "What differs?")
    assert "5" in str(info.value) and "4" in str(info.value)
    assert engine.llm.calls == 0


def test_c10_invalid_items_named_by_index_without_an_engine_call(tiny_tokenizer, tmp_path):
    engine = offline_engine(tiny_tokenizer, limit=2)
    results = ask_batch(
        engine,
        [(tmp_path / "missing.png", "Q0"), ([photo(64, 64)] * 3, "Q1")],
        max_tokens=4,
    )
    assert [r.index for r in results] == [0, 1]
    assert results[0].error.startswith("request 0: FileNotFoundError")
    assert results[1].error.startswith("request 1: ValueError") and "limit" in results[1].error
    assert all(r.finish_reason is None for r in results)
    assert engine.llm.calls == 0


def test_sampling_arguments_checked_first(tiny_tokenizer):
    engine = offline_engine(tiny_tokenizer)
    with pytest.raises(ValueError, match="max_tokens"):
        recipes.sampling_params(engine, max_tokens=0)
    with pytest.raises(ValueError, match="min_tokens"):
        recipes.sampling_params(engine, max_tokens=4, min_tokens=8)


class EchoLLM(FakeLLM):
    """Stands in for vllm.LLM where a test needs answers: two tokens for each prompt."""

    def __init__(self, max_model_len):
        super().__init__(max_model_len)
        self.prompts = []

    def generate(self, prompts, params, use_tqdm=False):
        self.calls += 1
        self.prompts.extend(prompts)
        done = SimpleNamespace(text="", token_ids=[1, 2], finish_reason="length")
        return [SimpleNamespace(prompt_token_ids=[0] * 5, outputs=[done]) for _ in prompts]


@pytest.fixture
def echo_engine(tiny_tokenizer, monkeypatch):
    """An offline engine that answers, with sampling parameters built without vLLM."""
    monkeypatch.setattr(
        recipes,
        "sampling_params",
        lambda engine, max_tokens=128, **kw: SimpleNamespace(max_tokens=max_tokens),
    )
    engine = offline_engine(tiny_tokenizer, limit=4)
    engine.llm = EchoLLM(engine.max_model_len)
    return engine


@pytest.mark.parametrize(
    ("item", "says"),
    [
        (None, "got None"),
        ("what is this?", "got a str ('what is this?')"),
        ((photo(8, 8), "q", "extra"), "got a 3-item tuple"),
        ({"prompt": "<image>\nq", "multi_modal_data": {}}, "vLLM prompt dict"),
        ({"question": "q", "image": photo(8, 8)}, "'question' (required) and 'images'"),
        ((photo(8, 8), 123), "question must be a str"),
        (("q", photo(8, 8)), "images first"),
    ],
)
def test_c10_a_malformed_item_is_its_own_error_result(tiny_tokenizer, item, says):
    engine = offline_engine(tiny_tokenizer)
    results = ask_batch(engine, [item, ("/nope.png", "Q1")], max_tokens=4)
    assert [r.index for r in results] == [0, 1]
    first = results[0].error
    assert first.startswith("request 0: TypeError: ") and says in first
    if "got" in says:  # names the accepted forms
        assert "ImageRequest" in first and "(images, question)" in first
    assert results[1].error.startswith("request 1: FileNotFoundError")
    assert all(r.finish_reason is None for r in results)
    assert engine.llm.calls == 0


def test_c10_valid_items_still_run_beside_broken_ones(echo_engine, monkeypatch):
    import io

    from PIL import Image as PILImage

    small = io.BytesIO()
    photo(700, 700).save(small, format="PNG")
    # Any exception while preparing an item stays with that item, here Pillow's
    # DecompressionBombError (an image over 2 x MAX_IMAGE_PIXELS; the 451x300 cat is under).
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 200_000)
    items = [
        None,
        {"question": "Q1: the dict form", "images": [photo(8, 8)]},
        (small.getvalue(), "Q2: too many pixels"),
        ("cat", "Q3: a sample name is one image"),
        ImageRequest("Q4: one PIL image, not in a list", photo(8, 8)),
        {"question": "Q5: no images"},
    ]
    results = ask_batch(echo_engine, items, max_tokens=4)
    assert [r.index for r in results] == list(range(6))
    assert [r.ok for r in results] == [False, True, False, True, True, True]
    assert results[2].error.startswith("request 2: ") and "pixels" in results[2].error
    assert [r.num_images for r in results[1:]] == [1, 1, 1, 1, 0]
    assert results[1].question == "Q1: the dict form" and results[1].output_tokens == 2
    assert echo_engine.llm.calls == 1 and len(echo_engine.llm.prompts) == 4


def test_batch_error_text_is_capped(tiny_tokenizer, monkeypatch):
    def load_image(src):
        raise ValueError(f"cannot read {src}")

    monkeypatch.setattr(recipes, "load_image", load_image)
    engine = offline_engine(tiny_tokenizer)
    (res,) = ask_batch(engine, [("A" * 20000, "q")], max_tokens=4)
    assert res.error.startswith("request 0: ") and len(res.error) <= recipes.MAX_ERROR_CHARS
    assert "characters in all" in res.error


@pytest.mark.parametrize("requests", [ImageRequest("q", ["cat"]), "cat", {"question": "q"}])
def test_batch_needs_a_list_of_requests(tiny_tokenizer, requests):
    with pytest.raises(TypeError, match=r"wrap a single request in a list"):
        ask_batch(offline_engine(tiny_tokenizer), requests, max_tokens=4)


@pytest.mark.parametrize("single", ["astronaut", "cat", photo(8, 8), "path", "bytes"])
def test_ask_images_takes_a_single_source_as_one_image(echo_engine, single):
    from cookbook.images import sample_image_path

    if single == "path":
        single = sample_image_path("coffee")
    elif single == "bytes":
        single = sample_image_path("coffee").read_bytes()
    res = ask_images(echo_engine, single, "What is this?", max_tokens=4)
    assert res.ok and res.num_images == 1 and len(res.tiles) == 1
    (sent,) = echo_engine.llm.prompts
    assert sent["prompt"].count("<image>") == 1
    assert not isinstance(sent["multi_modal_data"]["image"], list)


def test_ask_images_still_takes_lists_and_generators(echo_engine):
    res = ask_images(echo_engine, (photo(8, 8) for _ in range(2)), "Compare.", max_tokens=4)
    assert res.num_images == 2 and "Image-2: <image>" in echo_engine.llm.prompts[0]["prompt"]


def test_prepare_request_checks_the_question_before_loading_images(tiny_tokenizer, tmp_path):
    engine = offline_engine(tiny_tokenizer)
    # A missing image would raise FileNotFoundError; the bad question is reported first.
    with pytest.raises(TypeError, match="question must be a str"):
        prepare_request(engine, 42, [tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="'<img>'"):
        prepare_request(engine, "What does <img> do?", [tmp_path / "missing.png"])


def test_c04_message_for_a_too_large_max_tokens_talks_about_max_tokens(tiny_tokenizer):
    engine = offline_engine(tiny_tokenizer, max_model_len=4096, limit=4)
    for images in ([], [photo(64, 64)]):
        with pytest.raises(ValueError) as info:
            prepare_request(engine, "hi", images, max_tokens=10000)
        remedies = str(info.value).split("Remedies: ")[1]
        assert remedies.startswith("lower max_tokens from 10000 to at most ")
        assert "fewer images" not in remedies and "max_dynamic_patch" not in remedies
    assert engine.llm.calls == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"stop_token_ids": [2]}, ValueError, "not special tokens"),
        ({"stop_token_ids": [10**9]}, ValueError, "not in the vocabulary"),
        ({"stop_token_ids": ["<|im_end|>"]}, TypeError, "stop=\\['...'\\]"),
        ({"stop_token_ids": 373}, TypeError, "list of token ids"),
        ({"max_tokens": "16"}, TypeError, "max_tokens must be an int"),
        ({"min_tokens": 1.5}, TypeError, "min_tokens must be an int"),
        ({"temperature": "0.7"}, TypeError, "temperature must be a number"),
    ],
)
def test_sampling_arguments_get_clear_errors(tiny_tokenizer, kwargs, error, says):
    with pytest.raises(error, match=says):
        recipes.sampling_params(offline_engine(tiny_tokenizer), **kwargs)


@pytest.mark.vllm
def test_extra_stop_token_ids_are_added_to_the_tokenizers(tiny_tokenizer):
    engine = offline_engine(tiny_tokenizer)
    engine.stop_token_ids = [373]  # <|im_end|> of the tiny tokenizer
    im_start = tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")
    params = recipes.sampling_params(engine, max_tokens=4, stop_token_ids=[im_start])
    assert params.stop_token_ids == sorted({373, im_start})
    assert recipes.sampling_params(engine, max_tokens=4).stop_token_ids == [373]


# --- the real engine ---------------------------------------------------------------


@pytest.mark.vllm
def test_800x600_gives_7_tiles_with_max_dynamic_patch_6(tiny_engine):
    assert tiny_engine.tiling["max_dynamic_patch"] == 6
    res = ask_image(
        tiny_engine, photo(800, 600), "What is in the image?", max_tokens=6, min_tokens=6
    )
    assert res.ok and res.tiles == [7]
    assert res.image_tokens == 7 * PER_TILE + 2
    assert res.measured_image_tokens == res.image_tokens  # vLLM's own prompt ids agree
    assert res.output_tokens == 6 and res.finish_reason == "length"
    assert res.prompt_tokens > res.image_tokens


@pytest.mark.vllm
def test_prompt_length_is_exactly_text_plus_image_tokens(tiny_engine):
    from cookbook.prompts import build_prompt, text_token_count

    question = "Describe it."
    res = ask_image(tiny_engine, photo(512, 512), question, max_tokens=2, min_tokens=2)
    text = text_token_count(tiny_engine.tokenizer, build_prompt(tiny_engine.tokenizer, question))
    assert res.tiles == [1]  # one tile, so no thumbnail
    assert res.prompt_tokens == text + PER_TILE + 2


@pytest.mark.vllm
def test_c02_stop_ids_come_from_the_tokenizer_and_stop_the_answer(tiny_engine):
    tok = tiny_engine.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in tiny_engine.stop_token_ids
    assert 2 not in tiny_engine.stop_token_ids  # InternLM2's </s>, ordinary text here
    # Push the model towards <|im_end|>: the answer must end with finish reason "stop".
    res = ask_image(
        tiny_engine, photo(64, 64), "Hi", max_tokens=16, min_tokens=2, logit_bias={im_end: 100.0}
    )
    assert res.finish_reason == "stop" and res.output_tokens <= 3


@pytest.mark.vllm
def test_c02_seed_stop_ids_cut_an_answer_at_ordinary_text(tiny_engine):
    """Why hard-coded ids are wrong: id 2 is an ordinary token for a Qwen-style tokenizer."""
    from vllm import SamplingParams

    assert tiny_engine.tokenizer.convert_ids_to_tokens(2) not in ("</s>", "<|im_end|>")
    prepared = prepare_request(tiny_engine, "Hi", [photo(64, 64)], max_tokens=16)
    # The seed's [2, 92542]; 92542 is left out only because the tiny vocabulary has 384
    # ids and an out-of-range stop id crashes vLLM's sampler.
    seed_params = SamplingParams(
        max_tokens=16, min_tokens=2, stop_token_ids=[2], logit_bias={2: 100.0}
    )
    out = tiny_engine.llm.generate([prepared.prompt], seed_params, use_tqdm=False)[0]
    assert out.outputs[0].finish_reason == "stop"  # stopped on plain text
    ours = recipes.sampling_params(tiny_engine, max_tokens=16, min_tokens=2, logit_bias={2: 100.0})
    out = tiny_engine.llm.generate([prepared.prompt], ours, use_tqdm=False)[0]
    assert out.outputs[0].finish_reason == "length"  # ordinary token 2 does not stop ours


@pytest.mark.vllm
def test_batch_maps_results_to_requests_in_order_and_keeps_valid_ones(tiny_engine, tmp_path):
    requests = [
        ImageRequest("Q0: one photo", [photo(800, 600)]),
        ImageRequest("Q1: missing", [tmp_path / "nope.jpg"]),
        ImageRequest("Q2: two photos", [photo(448, 448), photo(1600, 448)]),
        ImageRequest("Q3: five photos", [photo(64, 64)] * 5),
        ("cat", "Q4: a sample photo"),
    ]
    results = ask_batch(tiny_engine, requests, max_tokens=3, min_tokens=3)
    assert len(results) == len(requests)
    assert [r.index for r in results] == list(range(5))
    assert [r.question for r in results] == [
        "Q0: one photo",
        "Q1: missing",
        "Q2: two photos",
        "Q3: five photos",
        "Q4: a sample photo",
    ]
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert "request 1" in results[1].error and "request 3" in results[3].error
    assert results[2].tiles == [1, 5] and results[2].num_images == 2  # 1600x448: 4x1 + thumbnail
    for r in (results[0], results[2], results[4]):
        assert r.output_tokens == 3 and r.measured_image_tokens == r.image_tokens


@pytest.mark.vllm
def test_c01_a_raw_prompt_without_placeholder_is_refused(tiny_engine):
    from cookbook.prompts import check_prompt

    raw = "<|im_start|>user\nDescribe.<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="placeholder"):
        check_prompt(raw, 1)
