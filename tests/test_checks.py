"""Request checks (C01 placeholders, C03 image limit, C04 token budget, C10 batches), tiling."""

from __future__ import annotations

import pytest
from PIL import Image

from cookbook import checks, images, prompts, tiling

ARGS = {"model": "internvl3-8b", "max_model_len": 8192, "limit_mm_per_prompt": {"image": 4}}


def _typed(text, n_images):
    parts = [images.image_part(Image.new("RGB", (64, 64)), fit=False)] * n_images
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


@pytest.mark.parametrize(
    ("text", "n_images", "found"),
    [
        ("What is this?", 1, None),  # vLLM adds the placeholder itself
        ("<image>\nWhat is this?", 1, None),
        ("What is this?", 0, None),
        ("<image>\nCompare.", 2, "1 <image> placeholder(s) but 2 image(s)"),  # C01
        ("<image> <image>\nWhat?", 1, "2 <image> placeholder(s) but 1 image(s)"),
        ("USER: <image>\nWhat is this? ASSISTANT:", 1, "LLaVA-style"),  # C01, other family
        ("<|image_pad|> What is this?", 1, "Qwen-VL"),
        ("Look at <img>this</img>", 1, "image token"),
    ],
)
def test_placeholders(text, n_images, found):
    if found is None:
        checks.check_placeholders(_typed(text, n_images))
    else:
        with pytest.raises(ValueError, match=found.replace("(", r"\(").replace(")", r"\)")):
            checks.check_placeholders(_typed(text, n_images))


def test_the_hf_format_counts_its_own_placeholder():
    checks.check_placeholders(_typed("<IMG_CONTEXT>\nWhat?", 1), "<IMG_CONTEXT>")
    with pytest.raises(ValueError, match="image token"):
        checks.check_placeholders(_typed("<IMG_CONTEXT>\nWhat?", 1), "<image>")


def test_five_images_for_a_limit_of_four_name_the_setting():  # C03
    with pytest.raises(ValueError, match=r"5 images.*allows 4.*limit_mm_per_prompt.*--limit-mm"):
        checks.check_request(_typed("Describe.", 5), ARGS, 64)


@pytest.mark.vllm
def test_eight_large_images_over_budget_name_the_remedies():  # C04
    large = Image.new("RGB", (4000, 3000))
    request = [prompts.user_message("Describe.", [large] * 8)]
    args = {**ARGS, "limit_mm_per_prompt": {"image": 8}}
    with pytest.raises(ValueError) as err:
        checks.check_request(request, args, 256)
    message = str(err.value)
    assert "26624 tokens" in message and "max_model_len=8192" in message  # 8 x 13 x 256
    for remedy in ("fewer images", "max_dynamic_patch", "raise max_model_len"):
        assert remedy in message
    one_tile = {**args, "hf_overrides": {"max_dynamic_patch": 1}}
    assert checks.check_request(request, one_tile, 256) == 8 * 256


@pytest.mark.vllm
def test_a_clip_over_budget_is_not_told_to_lower_max_dynamic_patch():
    # Video frames are one tile each: fewer tiles per image cannot help a long clip.
    from cookbook import images

    clip = [{"role": "user", "content": [images.video_part(images.sample_clip(64, 64)),
                                         {"type": "text", "text": "What happens?"}]}]  # fmt: skip
    with pytest.raises(ValueError) as err:
        checks.check_request(clip, {**ARGS, "limit_mm_per_prompt": {"video": 1}}, 64)
    assert "64 video frame(s) take 16384 tokens" in str(err.value)
    assert "max_dynamic_patch" not in str(err.value) and "fewer images or frames" in str(err.value)


@pytest.mark.vllm
def test_a_remote_url_is_not_counted():
    request = [prompts.user_message("Describe.", ["https://example.com/a.png"])]
    assert checks.check_request(request, ARGS, 64) == 0


@pytest.mark.vllm
def test_a_batch_with_bad_items_keeps_the_good_ones():  # C10
    items = [
        (["cat"], "What is in this image?"),
        (["no_such.png"], "What is in this image?"),
        ("cat", "What is this?"),
        "just a string",
        ([], "Hello"),
        (["cat"] * 5, "Too many."),
    ]
    conversations, errors = checks.prepare_batch(items, ARGS, 64)
    assert [c is not None for c in conversations] == [True, False, True, False, True, False]
    assert errors[1].startswith("item 1: FileNotFoundError") and "no_such.png" in errors[1]
    assert errors[3].startswith("item 3: TypeError") and "(images, question) pair" in errors[3]
    assert errors[5].startswith("item 5: ValueError") and "allows 4" in errors[5]


@pytest.mark.vllm
@pytest.mark.parametrize("max_patch", [1, 6, 11, 12])
def test_the_plan_is_what_vllms_processor_counts(max_patch):
    from vllm.transformers_utils.processors.internvl import (
        InternVLImageProcessor,
        InternVLProcessor,
    )

    class FakeTokenizer:
        def convert_tokens_to_ids(self, token):
            return 0

    processor = InternVLProcessor(
        InternVLImageProcessor(448, 1, max_patch, True, True), FakeTokenizer(), image_seq_length=256
    )
    for size in [(451, 300), (512, 512), (800, 600), (4000, 3000), (100, 1000), (1, 1), (1, 300)]:
        expected = processor.get_num_image_tokens(image_width=size[0], image_height=size[1])
        assert tiling.plan(size, max_patch).tokens == expected, size


@pytest.mark.vllm
def test_well_known_tile_counts():
    assert tiling.plan((800, 600)).tiles == 13 and tiling.plan((800, 600), 11).tiles == 7
    assert tiling.plan((512, 512)) == tiling.TilePlan((1, 1), False, 1, 256)
    assert tiling.plan((451, 300)).grid == (3, 2)


@pytest.mark.vllm
@pytest.mark.parametrize(
    "size", [(4000, 3000), (3000, 4000), (2000, 400), (1500, 1500), (451, 300)]
)
def test_fit_to_grid_keeps_the_tiles_and_shrinks_only_large_photos(size):
    img = Image.new("RGB", size)
    fitted = tiling.fit_to_grid(img)
    assert tiling.plan(fitted.size) == tiling.plan(size)
    cols, rows = tiling.plan(size).grid
    if size[0] > cols * 448 and size[1] > rows * 448:
        assert fitted.width * fitted.height < size[0] * size[1]
    else:
        assert fitted is img


@pytest.mark.vllm
def test_a_picture_smaller_than_a_tile_still_costs_tiles():
    assert tiling.plan((1, 1)).tokens == 256
    assert tiling.plan((1, 300)).tiles == 13  # the shape decides, not the pixel count
