"""InternVL tiling rule, token counts, image limit (C03) and token budget (C04)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from cookbook.tiling import (
    IMAGE_WRAPPER_TOKENS,
    ImagePlan,
    check_budget,
    check_image_limit,
    count_tiles,
    image_token_count,
    image_tokens,
    plan_images,
    target_ratios,
    tile_grid,
    tiling_from_config,
    tokens_per_tile,
)

# --------------------------------------------------------------------------- tiling rule


@pytest.mark.parametrize(
    ("width", "height", "max_patch", "expected"),
    [
        # 4:3 matches the 4x3 grid exactly (12 tiles <= 12) -> 12 + thumbnail.
        (800, 600, 12, 13),
        # With at most 6 tiles the closest grid to 4:3 is 3x2 (1.5) -> 6 + thumbnail.
        (800, 600, 6, 7),
        # Square: 1x1 has ratio difference 0; 2x2 ties but 512*512 <= 0.5*448*448*4.
        (512, 512, 12, 1),
        (448, 448, 12, 1),
        # Square, larger: 1000*1000 > 0.5*448*448*9, so the tie goes to 3x3 -> 9 + 1.
        (1000, 1000, 12, 10),
        # 900*900 beats 2x2 (401,408) but not 3x3 (903,168) -> 4 + 1.
        (900, 900, 12, 5),
        (4000, 3000, 12, 13),
        # A 1-pixel-wide strip: closest grid is 1x12 -> 12 + thumbnail.
        (1, 1000, 12, 13),
        (1000, 1, 12, 13),
        # 2:1 -> 2x1 grid + thumbnail.
        (896, 448, 12, 3),
        # 3:1 -> 3x1 grid + thumbnail.
        (1344, 448, 12, 4),
    ],
)
def test_count_tiles_hand_checked(width, height, max_patch, expected):
    assert count_tiles(width, height, max_dynamic_patch=max_patch) == expected


@pytest.mark.parametrize("size", [(1, 1), (800, 600), (4000, 3000), (1, 1000), (5000, 7)])
def test_max_dynamic_patch_one_gives_one_tile_and_no_thumbnail(size):
    assert count_tiles(*size, max_dynamic_patch=1) == 1
    plan = plan_images([size], max_dynamic_patch=1)[0]
    assert plan.tiles == 1 and plan.thumbnail is False and plan.grid == (1, 1)


def test_no_thumbnail_and_no_dynamic_size():
    assert count_tiles(800, 600, use_thumbnail=False) == 12
    assert count_tiles(800, 600, dynamic_image_size=False) == 1
    assert tile_grid(800, 600) == (4, 3)
    assert tile_grid(600, 800) == (3, 4)


def test_min_dynamic_patch_forces_more_tiles():
    # With at least 2 tiles a square image cannot use the 1x1 grid.
    assert count_tiles(448, 448, min_dynamic_patch=2, max_dynamic_patch=12) > 1


def test_target_ratios_sorted_by_tile_count_and_bounded():
    ratios = target_ratios(1, 12)
    products = [a * b for a, b in ratios]
    assert products == sorted(products)
    assert min(products) == 1 and max(products) == 12
    assert (4, 3) in ratios and (3, 4) in ratios and (5, 3) not in ratios


def test_tile_count_never_exceeds_max_plus_thumbnail():
    rng = random.Random(1)
    for _ in range(500):
        w, h = rng.randint(1, 6000), rng.randint(1, 6000)
        m = rng.randint(1, 12)
        tiles = count_tiles(w, h, max_dynamic_patch=m)
        assert 1 <= tiles <= (m + 1 if m > 1 else 1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"width": 0, "height": 10}, ValueError),
        ({"width": 10, "height": -1}, ValueError),
        ({"width": 10.5, "height": 10}, TypeError),
        ({"width": True, "height": 10}, TypeError),
        ({"width": 10, "height": 10, "max_dynamic_patch": 0}, ValueError),
        ({"width": 10, "height": 10, "min_dynamic_patch": 5, "max_dynamic_patch": 4}, ValueError),
    ],
)
def test_count_tiles_rejects_bad_input(kwargs, error):
    with pytest.raises(error):
        count_tiles(**kwargs)


# --------------------------------------------------------------------------- tokens


def test_tokens_per_tile():
    assert tokens_per_tile() == 256  # 448 px / 14 px = 32 -> 32*32 * 0.5**2
    assert tokens_per_tile(224, 14, 0.5) == 64
    assert tokens_per_tile(448, 14, 1.0) == 1024
    with pytest.raises(ValueError):
        tokens_per_tile(448, 14, 0.0)


def test_image_token_count_includes_img_markers():
    assert IMAGE_WRAPPER_TOKENS == 2
    assert image_token_count(800, 600) == 13 * 256 + 2 == 3330
    assert image_token_count(512, 512) == 256 + 2
    assert image_token_count(800, 600, max_dynamic_patch=6) == 7 * 256 + 2
    assert image_tokens is image_token_count


def test_plan_images_accepts_sizes_and_images():
    image = SimpleNamespace(size=(800, 600))  # anything with PIL's .size
    plans = plan_images([(512, 512), image], max_dynamic_patch=12)
    assert [p.index for p in plans] == [0, 1]
    assert plans[0] == ImagePlan(0, 512, 512, (1, 1), 1, False, 258)
    assert plans[1].grid == (4, 3) and plans[1].thumbnail is True
    assert plans[1].tiles == 13 and plans[1].tokens == 3330


def test_plan_images_with_a_real_pil_image():
    from PIL import Image

    plan = plan_images([Image.new("RGB", (1344, 448))])[0]
    assert (plan.width, plan.height, plan.tiles) == (1344, 448, 4)


def test_plan_images_names_the_bad_item():
    with pytest.raises(ValueError, match="image 1"):
        plan_images([(10, 10), (0, 10)])
    with pytest.raises(TypeError, match="image 0"):
        plan_images(["not a size"])
    with pytest.raises(TypeError, match="max_dynamic_patchh"):
        plan_images([(10, 10)], max_dynamic_patchh=3)


# --------------------------------------------------------------------------- C03 image limit


def test_c03_engine_limit_names_limit_and_setting():
    with pytest.raises(ValueError) as err:
        check_image_limit(5, 4, where="engine")
    msg = str(err.value)
    assert "5 images" in msg and "at most 4" in msg
    assert 'limit_mm_per_prompt={"image": 5}' in msg


def test_c03_server_limit_names_flag():
    with pytest.raises(ValueError) as err:
        check_image_limit(5, 4, where="server")
    msg = str(err.value)
    assert "at most 4" in msg
    assert "--limit-mm-per-prompt '{\"image\":5}'" in msg


def test_image_limit_allows_up_to_limit_and_unknown_limit():
    check_image_limit(4, 4)
    check_image_limit(0, 4)
    check_image_limit(100, None)
    with pytest.raises(ValueError, match="where"):
        check_image_limit(1, 4, where="client")
    with pytest.raises(ValueError):
        check_image_limit(-1, 4)


# --------------------------------------------------------------------------- C04 budget


def test_c04_eight_full_images_do_not_fit_8192():
    per_image = [image_token_count(4000, 3000)] * 8
    assert per_image[0] == 3330  # 13 tiles * 256 + <img></img>
    with pytest.raises(ValueError) as err:
        check_budget(per_image, 30, 128, 8192, 12)
    msg = str(err.value)
    needed = 8 * 3330 + 30 + 128
    assert f"needs {needed} tokens" in msg
    assert "26640 image tokens for 8 image(s)" in msg
    assert "max_model_len is 8192" in msg
    # Remedies: fewer images (2 of 8 fit in 8192 - 158), a lower max_dynamic_patch that fits
    # any image size (2 -> 3 tiles each), a larger max_model_len.
    assert "the first 2 of 8 fit" in msg
    assert "from 12 to 2" in msg and "max_dynamic_patch=2" in msg
    assert f"raise max_model_len to at least {needed}" in msg


def test_c04_suggestion_uses_real_sizes_when_given():
    sizes = [(4000, 3000)] * 8
    per_image = [p.tokens for p in plan_images(sizes)]
    with pytest.raises(ValueError) as err:
        check_budget(per_image, 30, 128, 8192, 12, image_sizes=sizes)
    # 4:3 images: max_dynamic_patch 4 picks 2x2 (+thumb, 1282 tokens: 8 do not fit);
    # 3 picks 1x1 (258 tokens each, 2064 in all).
    assert "from 12 to 3" in str(err.value)
    assert "2064 tokens" in str(err.value)


def test_budget_when_no_patch_setting_fits():
    with pytest.raises(ValueError, match="no max_dynamic_patch fits 40 image"):
        check_budget([3330] * 40, 10, 10, 8192, 12)


def test_budget_when_text_alone_is_too_long():
    with pytest.raises(ValueError, match="lower max_tokens"):
        check_budget([258], 8000, 512, 8192, 12)


def test_budget_fits_returns_tokens_needed():
    assert check_budget([3330, 258], 40, 256, 8192, 12) == 3330 + 258 + 40 + 256
    assert check_budget(3588, 40, None, 8192, 12) == 3628
    # Exactly at the limit fits.
    assert check_budget([8000], 92, 100, 8192, 12) == 8192


def test_budget_with_total_only_still_names_remedies():
    with pytest.raises(ValueError) as err:
        check_budget(26640, 30, 128, 8192, 12)
    msg = str(err.value)
    assert "fewer images" in msg and "max_dynamic_patch" in msg and "max_model_len" in msg


def test_budget_rejects_bad_counts():
    with pytest.raises(TypeError):
        check_budget(True, 1, 1, 10, 12)
    with pytest.raises(TypeError):
        check_budget([1.5], 1, 1, 10, 12)
    with pytest.raises(ValueError):
        check_budget([1], -1, 1, 10, 12)


# --------------------------------------------------------------------------- config


INTERNVL3_8B_CONFIG = {
    # Fields of OpenGVLab/InternVL3-8B config.json that the tiling reads.
    "architectures": ["InternVLChatModel"],
    "downsample_ratio": 0.5,
    "dynamic_image_size": True,
    "force_image_size": 448,
    "max_dynamic_patch": 12,
    "min_dynamic_patch": 1,
    "use_thumbnail": True,
    "vision_config": {"image_size": 448, "patch_size": 14},
}


def test_tiling_from_config_dict_and_object():
    expected = {
        "min_dynamic_patch": 1,
        "max_dynamic_patch": 12,
        "use_thumbnail": True,
        "dynamic_image_size": True,
        "image_size": 448,
        "patch_size": 14,
        "downsample_ratio": 0.5,
    }
    assert tiling_from_config(INTERNVL3_8B_CONFIG) == expected
    obj = SimpleNamespace(
        **{k: v for k, v in INTERNVL3_8B_CONFIG.items() if k != "vision_config"},
        vision_config=SimpleNamespace(image_size=448, patch_size=14),
    )
    assert tiling_from_config(obj) == expected
    tiling = tiling_from_config(INTERNVL3_8B_CONFIG)
    assert image_token_count(800, 600, **tiling) == 3330
    assert plan_images([(800, 600)], **tiling)[0].tokens == 3330


def test_tiling_from_config_overrides_and_fallbacks():
    tiling = tiling_from_config(INTERNVL3_8B_CONFIG, {"max_dynamic_patch": 6})
    assert tiling["max_dynamic_patch"] == 6
    assert image_token_count(800, 600, **tiling) == 7 * 256 + 2
    no_vision_size = {"force_image_size": 224, "vision_config": {"patch_size": 14}}
    assert tiling_from_config(no_vision_size)["image_size"] == 224
    with pytest.raises(ValueError, match="patch_size"):
        tiling_from_config(INTERNVL3_8B_CONFIG, {"patch_size": 16})


# --------------------------------------------------------------------------- against vLLM


def _vllm_tiles(width, height, *, min_patch, max_patch, thumbnail, dynamic=True):
    from vllm.transformers_utils.processors.internvl import (
        calculate_internvl_targets,
        get_internvl_target_ratios,
        resolve_internvl_min_max_num,
    )

    # As InternVLProcessor.get_num_image_tokens: ratios without the thumbnail, then
    # calculate_internvl_targets adds it.
    lo, hi = resolve_internvl_min_max_num(
        min_dynamic_patch=min_patch,
        max_dynamic_patch=max_patch,
        dynamic_image_size=dynamic,
        use_thumbnail=False,
    )
    blocks, _, _ = calculate_internvl_targets(
        orig_width=width,
        orig_height=height,
        target_ratios=get_internvl_target_ratios(lo, hi),
        image_size=448,
        use_thumbnail=thumbnail,
    )
    return blocks


def _size_grid():
    sides = [1, 2, 7, 100, 224, 300, 447, 448, 449, 500, 640, 720, 896, 1000, 1080, 1344, 4000]
    sizes = [(w, h) for w in sides[::2] for h in sides[1::2]]  # 9 x 8 = 72
    rng = random.Random(0)
    sizes += [(rng.randint(1, 5000), rng.randint(1, 5000)) for _ in range(128)]
    return sizes  # 200 sizes


@pytest.mark.vllm
def test_count_tiles_matches_vllm_functions():
    checked = 0
    for width, height in _size_grid():
        for min_patch, max_patch in [(1, 12), (1, 6), (1, 1), (2, 9), (1, 24)]:
            for thumbnail in (True, False):
                ours = count_tiles(
                    width,
                    height,
                    min_dynamic_patch=min_patch,
                    max_dynamic_patch=max_patch,
                    use_thumbnail=thumbnail,
                )
                theirs = _vllm_tiles(
                    width, height, min_patch=min_patch, max_patch=max_patch, thumbnail=thumbnail
                )
                assert ours == theirs, (width, height, min_patch, max_patch, thumbnail)
                checked += 1
        assert count_tiles(width, height, dynamic_image_size=False) == _vllm_tiles(
            width, height, min_patch=1, max_patch=12, thumbnail=True, dynamic=False
        )
    assert checked == 200 * 5 * 2


@pytest.mark.vllm
def test_image_tokens_match_vllm_processor_replacement():
    """vLLM's processor: the number of tiles it cuts and the text that replaces <image>."""
    from PIL import Image
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    from vllm.transformers_utils.processors.internvl import (
        InternVLImageProcessor,
        InternVLProcessor,
    )

    vocab = {"<unk>": 0, "<img>": 1, "</img>": 2, "<IMG_CONTEXT>": 3}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        unk_token="<unk>",
    )
    tok.add_special_tokens({"additional_special_tokens": ["<img>", "</img>", "<IMG_CONTEXT>"]})
    image_processor = InternVLImageProcessor(
        image_size=448,
        min_dynamic_patch=1,
        max_dynamic_patch=12,
        dynamic_image_size=True,
        use_thumbnail=True,
    )
    processor = InternVLProcessor(
        image_processor=image_processor, tokenizer=tok, image_seq_length=tokens_per_tile()
    )
    for width, height in [(800, 600), (512, 512), (1, 1000), (1000, 1000), (1344, 448), (37, 61)]:
        # The real preprocessing path: PIL image -> tiles.
        out = image_processor(Image.new("RGB", (width, height)))
        assert int(out["image_num_patches"][0]) == count_tiles(width, height)
        # The placeholder replacement: <img> + <IMG_CONTEXT> * n + </img>.
        features = processor.get_num_image_tokens(image_width=width, image_height=height)
        repl = processor.get_image_repl(None, num_features=features).full
        ids = tok(repl, add_special_tokens=False)["input_ids"]
        assert len(ids) == image_token_count(width, height)


@pytest.mark.vllm
def test_prompt_length_and_budget_match_the_engine(monkeypatch):
    """Our count of a request's prompt tokens equals vLLM's, and C04 agrees with vLLM.

    Runs the tiny checkpoint with max_dynamic_patch=6, which for this video-capable (Qwen2)
    model goes through hf_overrides (see cookbook.models.engine_args).
    """
    from PIL import Image
    from vllm import LLM, SamplingParams

    from cookbook.models import engine_args, resolve_model
    from cookbook.prompts import build_prompt, text_token_count

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "WARNING")
    args = engine_args(resolve_model("tiny"), max_dynamic_patch=6, enforce_eager=True)
    assert "mm_processor_kwargs" not in args
    llm = LLM(**args)
    try:
        tok = llm.get_tokenizer()
        tiling = tiling_from_config(llm.llm_engine.model_config.hf_config)
        assert tiling["max_dynamic_patch"] == 6
        cases = [
            ([(800, 600)], None, "Describe the picture."),
            ([(512, 512), (1000, 1000)], None, "Compare."),
            ([(1, 1000)], "Be brief.", "What is it?"),
            ([], None, "Hello there"),
        ]
        for sizes, system, question in cases:
            prompt = build_prompt(tok, question, num_images=len(sizes), system=system)
            request = {"prompt": prompt}
            if sizes:
                images = [Image.new("RGB", size, (90, 140, 200)) for size in sizes]
                request["multi_modal_data"] = {"image": images[0] if len(images) == 1 else images}
            out = llm.generate(request, SamplingParams(max_tokens=1))
            plans = plan_images(sizes, **tiling)
            expected = sum(p.tokens for p in plans) + text_token_count(tok, prompt)
            assert len(out[0].prompt_token_ids) == expected, sizes

        # C04 on the engine's own terms: three 7-tile images do not fit 4096 tokens.
        sizes = [(800, 600)] * 3
        prompt = build_prompt(tok, "Describe.", num_images=3)
        image_counts = [p.tokens for p in plan_images(sizes, **tiling)]
        max_len = llm.llm_engine.model_config.max_model_len
        with pytest.raises(ValueError, match="max_model_len is 4096"):
            check_budget(image_counts, text_token_count(tok, prompt), 0, max_len, 6)
        images = [Image.new("RGB", size) for size in sizes]
        with pytest.raises(ValueError, match="maximum model length"):
            llm.generate(
                {"prompt": prompt, "multi_modal_data": {"image": images}},
                SamplingParams(max_tokens=1),
            )
    finally:
        llm.llm_engine.engine_core.shutdown()


# --------------------------------------------------------------------------- C04 remedies


def test_c04_no_images_offers_only_max_tokens_and_max_model_len():
    with pytest.raises(ValueError) as err:
        check_budget([], 148, 10000, 4096, 12)
    msg = str(err.value)
    assert "lower max_tokens from 10000 to at most 3948" in msg
    assert "raise max_model_len to at least 10148" in msg
    assert "image" not in msg.split("Remedies:")[1]
    assert "max_dynamic_patch" not in msg


def test_c04_answer_budget_is_the_cause_so_it_leads_and_image_remedies_stay_out():
    sizes = [(64, 64)]
    per_image = [p.tokens for p in plan_images(sizes)]  # 258
    with pytest.raises(ValueError) as err:
        check_budget(per_image, 149, 10000, 4096, 12, image_sizes=sizes)
    remedies = str(err.value).split("Remedies: ")[1]
    assert remedies.startswith(f"lower max_tokens from 10000 to at most {4096 - 149 - 258}")
    assert "fewer images" not in remedies and "max_dynamic_patch" not in remedies
    # That remedy is right: the request fits with exactly that max_tokens.
    assert check_budget(per_image, 149, 4096 - 149 - 258, 4096, 12) == 4096


def test_c04_lower_max_tokens_offered_beside_image_remedies_when_both_help():
    # 2 x 3330 image tokens + 100 text = 6760 fit 8192; a 4000-token answer does not.
    with pytest.raises(ValueError) as err:
        check_budget([3330, 3330], 100, 4000, 8192, 12)
    msg = str(err.value)
    assert "lower max_tokens from 4000 to at most 1432" in msg
    assert "the first 1 of 2 fit" in msg and "lower max_dynamic_patch" in msg


def test_c04_text_and_answer_leave_no_room_for_images():
    with pytest.raises(ValueError) as err:
        check_budget([258], 8000, 512, 8192, 12)
    msg = str(err.value)
    assert "lower max_tokens and send fewer or smaller images" in msg
    assert "the first" not in msg and "lower max_dynamic_patch" not in msg


def test_c04_text_alone_too_long_asks_for_a_shorter_prompt():
    with pytest.raises(ValueError) as err:
        check_budget([], 9000, 10, 8192, 12)
    msg = str(err.value)
    assert "shorten the prompt: its text alone takes 9000 tokens" in msg
    assert "lower max_tokens" not in msg


def test_c04_raised_min_dynamic_patch_keeps_the_budget_message():
    sizes = [(1792, 1344)] * 8
    plans = plan_images(sizes, max_dynamic_patch=12, min_dynamic_patch=4)
    with pytest.raises(ValueError) as err:
        check_budget(
            [p.tokens for p in plans], 40, 256, 8192, 12, image_sizes=sizes, min_dynamic_patch=4
        )
    msg = str(err.value)
    assert "request needs 26936 tokens" in msg and "must not exceed" not in msg
    # 4 is the lowest max_dynamic_patch tried: 2x2 + thumbnail = 1282 tokens each.
    assert "even 4 gives 10256 tokens" in msg


def test_c04_patch_remedy_never_goes_below_min_dynamic_patch():
    # Without a minimum, max_dynamic_patch 2 fits 8 images of any size (8 x 770 tokens).
    with pytest.raises(ValueError, match="from 12 to 2"):
        check_budget([3330] * 8, 10, 10, 8192, 12)
    # With min_dynamic_patch 3 (vLLM refuses a max below the min) nothing fits.
    with pytest.raises(ValueError) as err:
        check_budget([3330] * 8, 10, 10, 8192, 12, min_dynamic_patch=3)
    msg = str(err.value)
    assert "no max_dynamic_patch fits 8 image(s)" in msg and "to 2" not in msg
    with pytest.raises(ValueError) as err:
        check_budget([3330] * 40, 10, 10, 8192, 3, min_dynamic_patch=3)
    assert "max_dynamic_patch (3) is already at min_dynamic_patch (3)" in str(err.value)
