"""Image loading (C05 modes), data URLs (C06), sample photos and the sample clip."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from cookbook import images


def _png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_transparent_pixels_become_white(mode):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0)).convert(mode)
    out = images.to_rgb(img)
    assert out.mode == "RGB" and out.size == (4, 4)
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_entry_becomes_white():
    img = Image.new("P", (3, 3), 0)
    img.putpalette([0, 0, 0, 255, 0, 0])
    img.info["transparency"] = 0
    assert images.to_rgb(img).getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("L", 128, (128, 128, 128)), ("CMYK", (0, 0, 0, 0), (255, 255, 255))],
)
def test_other_modes_keep_their_colour(mode, value, expected):
    assert images.to_rgb(Image.new(mode, (2, 2), value)).getpixel((0, 0)) == expected


def test_16_bit_grey_is_scaled_not_clipped():
    img = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    out = images.to_rgb(img)
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (4, 2), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif)
    assert images.load_image(buffer.getvalue()).size == (2, 4)


def test_data_url_round_trip_keeps_every_pixel():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8))
    url = images.to_data_url(img)
    assert url.startswith("data:image/png;base64,")
    assert np.array_equal(np.asarray(images.from_data_url(url)), np.asarray(img))


def test_data_url_with_the_wrong_mime_type_is_refused():
    payload = base64.b64encode(_png_bytes(Image.new("RGB", (2, 2)))).decode()
    with pytest.raises(ValueError, match="says image/jpeg but holds image/png"):
        images.from_data_url("data:image/jpeg;base64," + payload)


@pytest.mark.parametrize("size", [(32, 32), (451, 300)])  # short, and longer than a file name
def test_bare_base64_is_refused_with_the_prefix_to_add(size):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    payload = base64.b64encode(_png_bytes(img)).decode()
    with pytest.raises(ValueError, match="data:image/png;base64"):
        images.load_image(payload)


def test_a_data_url_without_base64_is_refused():
    with pytest.raises(ValueError, match="not base64"):
        images.from_data_url("data:image/png,abc")


def test_missing_file_names_the_path():
    with pytest.raises(FileNotFoundError, match="no_such.png"):
        images.load_image("no_such.png")


def test_samples_load_as_rgb_at_their_size():
    cat = images.load_image("cat")
    assert (cat.mode, cat.size) == ("RGB", (451, 300))
    assert images.load_image("text").mode == "RGB"  # a grey PNG in scikit-image
    with pytest.raises(ValueError, match="samples are"):
        images.sample_path("dog")


def test_image_part_passes_urls_on_and_encodes_the_rest():
    remote = images.image_part("https://example.com/cat.png")
    assert remote["image_url"]["url"] == "https://example.com/cat.png"
    local = images.image_part(Image.new("RGB", (5, 5), "blue"), fit=False)
    assert images.from_data_url(local["image_url"]["url"]).getpixel((0, 0)) == (0, 0, 255)


def test_a_local_path_travels_as_a_data_url_never_as_a_file_url(tmp_path):  # C07
    path = tmp_path / "blue.png"
    Image.new("RGB", (5, 5), "blue").save(path)
    for src in (str(path), path, "cat"):
        url = images.image_part(src, fit=False)["image_url"]["url"]
        assert url.startswith("data:image/png;base64,") and "file:" not in url


def test_sample_clip_is_deterministic_and_moves():
    clip = images.sample_clip(num_frames=4, size=64)
    assert clip.shape == (4, 64, 64, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, images.sample_clip(num_frames=4, size=64))
    red = [np.argwhere(frame[..., 1] < 100)[:, 1].mean() for frame in clip]  # the ball's column
    assert red == sorted(red) and red[0] < red[-1]


def test_drawn_boxes_keep_their_colour_on_a_photo_with_a_colour_profile():
    from cookbook import display

    photo = images.load_image("rocket")
    assert photo.info.get("icc_profile")  # the sample this guards: a JPEG with a profile
    drawn = display.draw_boxes(photo, [{"label": "the rocket", "box": [10, 10, 100, 100]}])
    buf = io.BytesIO()
    drawn.save(buf, "PNG")
    again = Image.open(buf)
    assert "icc_profile" not in again.info and photo.info.get("icc_profile")
    assert again.getpixel((10, 50)) == (0xE6, 0x19, 0x4B)
