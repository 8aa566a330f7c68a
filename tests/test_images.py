"""Tests of cookbook.images: modes (C05), data URLs (C06), server image URLs (C07)."""

from __future__ import annotations

import base64
import http.server
import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cookbook import images
from cookbook.images import (
    ImageFetchError,
    describe_image,
    from_data_url,
    image_for_server,
    is_url,
    load_image,
    sample_image,
    sample_image_path,
    to_data_url,
    to_rgb,
)

WHITE = (255, 255, 255)
RED = (255, 0, 0)
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def payload(url: str) -> bytes:
    return base64.b64decode(url.split(",", 1)[1])


def mime(url: str) -> str:
    return url[len("data:") : url.index(";")]


def random_rgb(width: int = 7, height: int = 5, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# ----------------------------------------------------------------- C05: every mode to RGB


def rgba_image() -> Image.Image:
    img = Image.new("RGBA", (5, 3), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    img.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black
    return img


def la_image() -> Image.Image:
    img = Image.new("LA", (5, 3), (0, 0))
    img.putpixel((1, 0), (50, 255))
    return img


def p_transparent_image() -> Image.Image:
    img = Image.new("P", (5, 3), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 black, 1 red
    img.info["transparency"] = 0
    img.putpixel((1, 0), 1)
    return img


def test_to_rgb_rgba_transparent_is_white_and_opaque_colour_kept():
    out = to_rgb(rgba_image())
    assert out.mode == "RGB" and out.size == (5, 3)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((4, 2)) == WHITE
    assert out.getpixel((1, 0)) == RED
    half = out.getpixel((2, 0))
    assert all(125 <= c <= 130 for c in half), half  # black at alpha 128 over white


def test_to_rgb_la():
    out = to_rgb(la_image())
    assert out.mode == "RGB" and out.size == (5, 3)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 0)) == (50, 50, 50)


def test_la_premultiplied_alpha_is_handled():
    """Pillow converts mode La (premultiplied) to LA only, so the cookbook does it itself."""
    la = Image.new("La", (4, 2), (0, 0))  # fully transparent
    la.putpixel((1, 0), (50, 255))  # opaque grey 50
    la.putpixel((2, 0), (10, 128))  # premultiplied: straight grey 20, alpha 128
    out = to_rgb(la)
    assert out.mode == "RGB" and out.size == (4, 2)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 0)) == (50, 50, 50)
    # 20 at alpha 128 over white: 20 * 128/255 + 255 * 127/255 = 137
    assert all(abs(c - 137) <= 1 for c in out.getpixel((2, 0))), out.getpixel((2, 0))
    url = to_data_url(la)
    assert mime(url) == "image/png"
    sent = from_data_url(url)
    assert sent.mode == "RGBA"  # what vLLM's server composites onto white
    diff = np.abs(np.asarray(to_rgb(sent), dtype=int) - np.asarray(out, dtype=int))
    assert diff.max() <= 1


def test_to_rgb_palette_with_transparency_entry():
    img = p_transparent_image()
    assert img.convert("RGB").getpixel((0, 0)) == (0, 0, 0)  # what a plain convert gives
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 3)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 0)) == RED


def test_to_rgb_palette_with_transparency_from_png_file(tmp_path):
    path = tmp_path / "p.png"
    p_transparent_image().save(path)
    reopened = Image.open(path)
    assert reopened.mode == "P" and "transparency" in reopened.info
    out = load_image(path)
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == RED


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("L", 77, (77, 77, 77)),
        ("1", 1, WHITE),
        ("1", 0, (0, 0, 0)),
        ("CMYK", (0, 255, 255, 0), RED),
        ("CMYK", (0, 0, 0, 0), WHITE),
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("RGB", (1, 2, 3), (1, 2, 3)),
    ],
)
def test_to_rgb_plain_modes(mode, colour, expected):
    img = Image.new(mode, (5, 3), colour)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 3)
    got = out.getpixel((4, 2))
    assert all(abs(a - b) <= 2 for a, b in zip(got, expected, strict=True)), got


def test_to_rgb_keeps_rgb_object():
    img = random_rgb()
    assert to_rgb(img) is img


SIXTEEN_BIT = np.array([[0, 32768, 65535, 257, 128]], dtype=np.uint16)
SIXTEEN_BIT_AS_8 = [0, 128, 255, 1, 0]


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_to_rgb_16_bit_is_scaled_not_clipped(mode):
    if mode == "I;16":
        img = Image.fromarray(SIXTEEN_BIT)
    else:
        img = Image.frombytes("I;16B", (5, 1), SIXTEEN_BIT.astype(">u2").tobytes())
    assert img.mode == mode
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 1)
    arr = np.asarray(out)
    assert arr[0, :, 0].tolist() == SIXTEEN_BIT_AS_8
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_to_rgb_16_bit_png_file(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(SIXTEEN_BIT).save(path)
    assert Image.open(path).mode.startswith("I")
    arr = np.asarray(load_image(path))
    assert arr[0, :, 0].tolist() == SIXTEEN_BIT_AS_8


def test_to_rgb_mode_i():
    img = Image.fromarray(SIXTEEN_BIT.astype(np.int32))
    assert img.mode == "I"
    assert np.asarray(to_rgb(img))[0, :, 0].tolist() == SIXTEEN_BIT_AS_8
    wide = Image.fromarray(np.array([[-100, 0, 100]], dtype=np.int32))
    stretched = np.asarray(to_rgb(wide))[0, :, 0].tolist()
    assert stretched[0] == 0 and stretched[2] == 255 and stretched[1] in (127, 128)


def test_to_rgb_float():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    out = to_rgb(unit)
    assert out.mode == "RGB" and out.size == (3, 1)
    assert np.asarray(out)[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[-1.0, 1.0, float("nan")]], dtype=np.float32))
    stretched = np.asarray(to_rgb(wide))[0, :, 0].tolist()  # NaN counts as 0
    assert stretched[0] == 0 and stretched[1] == 255 and stretched[2] in (127, 128)


def test_to_rgb_rejects_non_images():
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        to_rgb(np.zeros((2, 2, 3)))


# ----------------------------------------------------------------- load_image sources


def test_load_image_every_kind_of_source(tmp_path):
    img = rgba_image()
    path = tmp_path / "a.png"
    img.save(path)
    data = path.read_bytes()
    sources = [
        img,
        path,
        str(path),
        path.resolve().as_uri(),
        data,
        bytearray(data),
        memoryview(data),
        "data:image/png;base64," + base64.b64encode(data).decode(),
    ]
    for src in sources:
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (5, 3), type(src)
        assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == RED, type(src)


def test_load_image_applies_exif_orientation(tmp_path):
    img = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "sideways.jpg"
    img.save(path, exif=exif.tobytes())
    assert Image.open(path).size == (40, 20)
    assert load_image(path).size == (20, 40)
    assert load_image(Image.open(path)).size == (20, 40)
    # vLLM's server ignores the tag, so the data URL carries the upright pixels.
    url = to_data_url(path)
    assert Image.open(io.BytesIO(payload(url))).size == (20, 40)
    assert mime(url) == "image/jpeg"


def test_load_image_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "cat.png"
    for src in (missing, str(missing), missing.as_uri()):
        with pytest.raises(FileNotFoundError, match="cat.png") as info:
            load_image(src)
        assert str(missing) in str(info.value)


def test_load_image_refuses_bare_base64(tmp_path):
    text = base64.b64encode(png_bytes(random_rgb())).decode()
    with pytest.raises(ValueError, match="bare base64") as info:
        load_image(text)
    assert "data:image/png;base64," in str(info.value)
    with pytest.raises(ValueError, match="bare base64"):
        from_data_url(text)
    with pytest.raises(ValueError, match="bare base64"):
        image_for_server(text)


def test_long_bare_base64_is_refused_with_a_short_message():
    """Real photos give base64 text longer than a file name may be (ENAMETOOLONG)."""
    data = sample_image_path("cat").read_bytes()
    texts = {
        "photo": base64.b64encode(data).decode(),
        "wrapped": base64.encodebytes(data).decode(),
        "jpeg": base64.b64encode(jpeg_bytes(sample_image("cat"))).decode(),  # starts "/9j/"
        "unknown": "A" * 300,
    }
    assert len(texts["photo"]) > 300_000 and texts["jpeg"].startswith("/9j/")
    for name, text in texts.items():
        for fn in (load_image, to_data_url, image_for_server, from_data_url):
            with pytest.raises(ValueError, match="bare base64") as info:
                fn(text)
            assert not isinstance(info.value, OSError), (name, fn.__name__)
            message = str(info.value)
            assert "data:image/png;base64," in message, (name, fn.__name__)
            assert len(message) < 600, (name, fn.__name__, len(message))


def test_error_messages_never_quote_a_huge_input(tmp_path):
    long_path = "/no/such/dir/" + "x" * 5000 + "/photo.png"
    checks = [
        (FileNotFoundError, lambda: load_image(long_path)),
        (FileNotFoundError, lambda: load_image(Path(long_path))),
        (FileNotFoundError, lambda: to_data_url("file://" + long_path)),
        (ValueError, lambda: load_image("file://host" + long_path)),
        (ValueError, lambda: load_image("ftp://example.invalid/" + "y" * 5000)),
        (ValueError, lambda: from_data_url("data:image/png;base64," + "@" * 5000)),
        (ValueError, lambda: from_data_url("data:image/png," + "z" * 5000)),
        (ValueError, lambda: from_data_url("data:" + "t" * 5000 + ";base64,AAAA")),
        (ValueError, lambda: from_data_url("not a data url " * 500)),
        (ValueError, lambda: load_image(b"\x89PNG\r\n\x1a\n" + b"q" * 100_000)),
    ]
    for i, (exc_type, call) in enumerate(checks):
        with pytest.raises(exc_type) as info:
            call()
        assert len(str(info.value)) < 800, (i, len(str(info.value)))
    with pytest.raises(FileNotFoundError) as info:
        load_image(long_path)
    assert "photo.png" in str(info.value) and f"({len(long_path)} chars)" in str(info.value)


@pytest.mark.parametrize(
    "path",
    [
        "/data/camera_uploads/2024/holiday/IMG_20240101_sunset_over_the_mountains_final",
        "camera_uploads/2024/holiday/IMG_20240101_sunset_over_the_mountains_final_v2",
        "IMG_0001",
    ],
)
def test_missing_path_without_extension_is_not_called_base64(path):
    with pytest.raises(FileNotFoundError, match="image file not found") as info:
        load_image(path)
    assert path in str(info.value)
    with pytest.raises(FileNotFoundError):
        image_for_server(path)


def test_long_name_without_separator_mentions_both_readings():
    name = "IMG_20240101_sunset_over_the_mountains_final_version_two_edited_again"
    with pytest.raises(ValueError, match="bare base64") as info:
        load_image(name)
    assert "no such file" in str(info.value)


def test_load_image_undecodable_bytes_name_the_source(tmp_path):
    with pytest.raises(ValueError, match="given bytes"):
        load_image(b"this is not an image at all")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(bad)
    with pytest.raises(ValueError, match="empty"):
        load_image(b"")


def test_load_image_other_bad_sources(tmp_path):
    with pytest.raises(IsADirectoryError):
        load_image(tmp_path)
    with pytest.raises(TypeError, match="int"):
        load_image(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ftp"):
        load_image("ftp://example.invalid/cat.png")
    with pytest.raises(ValueError, match="empty string"):
        load_image("   ")
    with pytest.raises(ValueError, match="host"):
        load_image("file://cat.png")


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), c) for c in (RED, (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).getpixel((0, 0)) == RED


# ----------------------------------------------------------------- http(s), loopback only


@pytest.fixture
def no_proxy(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def image_server(no_proxy) -> Iterator[str]:
    body = png_bytes(rgba_image())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path == "/a.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/page.html":
                text = b"<html>not an image</html>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_url_loads(image_server):
    out = load_image(f"{image_server}/a.png")
    assert out.mode == "RGB" and out.size == (5, 3)
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == RED
    url = to_data_url(f"{image_server}/a.png")
    assert mime(url) == "image/png"


def test_http_error_status_is_reported(image_server):
    url = f"{image_server}/missing.png"
    with pytest.raises(ImageFetchError, match="404") as info:
        load_image(url)
    assert info.value.status_code == 404
    assert url in str(info.value)
    with pytest.raises(ValueError, match="page.html"):
        load_image(f"{image_server}/page.html")


def test_unreachable_url_fails_fast_and_clearly(no_proxy):
    url = f"http://127.0.0.1:{free_loopback_port()}/x.png"
    start = time.monotonic()
    with pytest.raises(ImageFetchError) as info:
        load_image(url, timeout=3.0)
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert url in message
    assert "ConnectError" in message or "refused" in message.lower()
    assert info.value.status_code is None
    assert isinstance(info.value, OSError)


# ----------------------------------------------------------------- C06: data URLs


@pytest.mark.parametrize(
    "img",
    [
        random_rgb(13, 9),
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (6, 11, 4), dtype=np.uint8)),
        Image.fromarray(np.random.default_rng(2).integers(0, 256, (6, 11), dtype=np.uint8)),
    ],
    ids=["RGB", "RGBA", "L"],
)
def test_png_data_url_round_trip_is_lossless(img):
    url = to_data_url(img)
    assert url.startswith("data:image/png;base64,")
    back = from_data_url(url)
    assert back.mode == img.mode and back.size == img.size
    assert np.array_equal(np.asarray(back), np.asarray(img))


def test_jpeg_data_url_when_asked():
    img = rgba_image()
    url = to_data_url(img, "JPEG")
    assert url.startswith("data:image/jpeg;base64,")
    back = from_data_url(url)
    assert back.format == "JPEG" and back.mode == "RGB" and back.size == (5, 3)
    assert to_data_url(img, "jpg").startswith("data:image/jpeg;")
    with pytest.raises(ValueError, match="fmt"):
        to_data_url(img, "TIFF")


def test_file_bytes_keep_their_true_format(tmp_path):
    photo = random_rgb(32, 24)
    jpg = tmp_path / "photo.jpg"
    photo.save(jpg, quality=80)
    url = to_data_url(jpg)
    assert mime(url) == "image/jpeg"
    assert payload(url) == jpg.read_bytes()  # original bytes, not re-encoded
    assert to_data_url(str(jpg)) == url == to_data_url(jpg.read_bytes())
    # A PNG named .jpg is labelled by its content, not its extension.
    liar = tmp_path / "really_png.jpg"
    liar.write_bytes(png_bytes(photo))
    assert mime(to_data_url(liar)) == "image/png"
    webp = tmp_path / "photo.bin"
    photo.save(webp, format="WEBP")
    assert mime(to_data_url(webp)) == "image/webp"
    bmp = tmp_path / "photo.bmp"
    photo.save(bmp)
    url = to_data_url(bmp)  # not a web format: re-encoded losslessly
    assert mime(url) == "image/png"
    assert np.array_equal(np.asarray(from_data_url(url)), np.asarray(photo))


def test_data_url_of_transparent_or_16_bit_file_is_made_server_safe(tmp_path):
    p_path = tmp_path / "p.png"
    p_transparent_image().save(p_path)
    decoded = from_data_url(to_data_url(p_path))
    assert decoded.mode == "RGBA"  # vLLM composites RGBA onto white
    assert decoded.getpixel((0, 0))[3] == 0 and decoded.getpixel((1, 0)) == (*RED, 255)
    deep = tmp_path / "deep.png"
    Image.fromarray(SIXTEEN_BIT).save(deep)
    decoded = from_data_url(to_data_url(deep))
    assert decoded.mode == "RGB"
    assert np.asarray(decoded)[0, :, 0].tolist() == SIXTEEN_BIT_AS_8


def test_jpeg_declared_png_is_refused():
    data = png_bytes(random_rgb())
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    with pytest.raises(ValueError, match="image/jpeg") as info:
        from_data_url(url)
    assert "PNG" in str(info.value) and "image/png" in str(info.value)
    for fn in (load_image, image_for_server, to_data_url):
        with pytest.raises(ValueError, match="declares image/jpeg"):
            fn(url)


def test_bad_data_urls_are_refused():
    data64 = base64.b64encode(png_bytes(random_rgb())).decode()
    with pytest.raises(ValueError, match="not valid base64"):
        from_data_url("data:image/png;base64,@@@not*base64@@@")
    with pytest.raises(ValueError, match="not an image type"):
        from_data_url("data:text/plain;base64," + data64)
    with pytest.raises(ValueError, match="not base64-encoded"):
        from_data_url("data:image/png,rawtext")
    with pytest.raises(ValueError, match="malformed"):
        from_data_url("data:image/png;base64")
    with pytest.raises(ValueError, match="empty"):
        from_data_url("data:image/png;base64,")
    with pytest.raises(ValueError, match="cannot read an image"):
        from_data_url("data:image/png;base64," + base64.b64encode(b"no image").decode())
    with pytest.raises(TypeError):
        from_data_url(b"data:image/png;base64,")  # type: ignore[arg-type]
    # Aliases and line breaks inside the payload are accepted.
    jpg64 = base64.encodebytes(jpeg_bytes(random_rgb())).decode()
    assert "\n" in jpg64
    assert from_data_url("data:image/jpg;base64," + jpg64).format == "JPEG"
    with pytest.raises(ValueError, match="mixes"):
        from_data_url("data:image/png;base64,ab+c-d==")


def variant_photo() -> tuple[Image.Image, bytes, str]:
    """Return a PNG photo whose base64 text has '+' and '/' and needs '=' padding."""
    for seed in range(50):
        img = random_rgb(21, 17, seed=seed)
        data = png_bytes(img)
        text = base64.b64encode(data).decode()
        if "+" in text and "/" in text and len(data) % 3:
            return img, data, text
    raise AssertionError("no suitable seed")


DATA_URL_VARIANTS = {
    "charset": lambda t: "data:image/png;charset=utf-8;base64," + t,
    "upper BASE64": lambda t: "data:image/png;BASE64," + t,
    "upper MIME": lambda t: "DATA:IMAGE/PNG;base64," + t,
    "blank before base64": lambda t: "data:image/png; base64," + t,
    "line breaks": lambda t: (
        "data:image/png;base64," + "\n".join(t[i : i + 76] for i in range(0, len(t), 76))
    ),
    "blanks around": lambda t: "  data:image/png;base64, " + t + " \n",
    "url-safe": lambda t: "data:image/png;base64," + t.replace("+", "-").replace("/", "_"),
    "no padding": lambda t: "data:image/png;base64," + t.rstrip("="),
    "percent-encoded": lambda t: (
        "data:image/png;base64," + t.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    ),
    "alias x-png": lambda t: "data:image/x-png;base64," + t,
}


@pytest.mark.parametrize("variant", sorted(DATA_URL_VARIANTS))
def test_data_url_variants_are_read_and_rebuilt_canonically(variant):
    img, data, text = variant_photo()
    canonical = "data:image/png;base64," + text
    url = DATA_URL_VARIANTS[variant](text)
    assert url != canonical
    back = from_data_url(url)
    assert back.format == "PNG" and np.array_equal(np.asarray(back), np.asarray(img))
    assert np.array_equal(np.asarray(load_image(url)), np.asarray(img))
    assert to_data_url(url) == canonical
    assert image_for_server(url) == canonical
    assert payload(to_data_url(url, "JPEG")) != data  # re-encoded when asked


def test_data_url_is_made_server_safe_like_a_file(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    sideways = tmp_path / "sideways.jpg"
    random_rgb(30, 20).save(sideways, exif=exif.tobytes())
    url = "data:image/jpeg;base64," + base64.b64encode(sideways.read_bytes()).decode()
    sent = image_for_server(url)
    assert mime(sent) == "image/jpeg" and from_data_url(sent).size == (20, 30)  # upright
    la_url = "data:image/png;base64," + base64.b64encode(png_bytes(la_image())).decode()
    assert from_data_url(image_for_server(la_url)).mode == "RGBA"


@pytest.fixture
def tiny_pixel_limit(monkeypatch):
    """Lower Pillow's decompression-bomb limit so small images stand in for huge ones."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


@pytest.mark.parametrize(
    ("size", "pixels"), [((40, 40), "1,600"), ((60, 50), "3,000")], ids=["warning", "error"]
)
def test_too_many_pixels_is_a_value_error_with_the_fix(
    tmp_path, tiny_pixel_limit, monkeypatch, size, pixels
):
    """Above MAX_IMAGE_PIXELS Pillow warns, above twice that it raises: both -> ValueError."""
    data = png_bytes(random_rgb(*size))
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    for src in (data, path, str(path), url):
        for fn in (load_image, to_data_url, image_for_server):
            with pytest.raises(ValueError, match="decompression-bomb") as info:
                fn(src)
            message = str(info.value)
            assert f"{pixels} pixels" in message, message
            assert "MAX_IMAGE_PIXELS = 1,000" in message
            assert "Downscale" in message
    with pytest.raises(ValueError, match=f"{pixels} pixels"):
        from_data_url(url)
    with pytest.raises(ValueError, match="huge.png"):  # the message names the source
        load_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # raised knowingly: it loads
    assert load_image(path).size == size


def test_too_many_pixels_with_pillows_own_limit():
    """A 20000x10000 bilevel PNG is 45 KB but 200 million pixels: refused before decoding."""
    big = Image.new("1", (20000, 10000), 1)
    with pytest.raises(ValueError, match="200,000,000 pixels"):
        load_image(png_bytes(big))


def test_max_side_downscales_keeping_aspect(tmp_path):
    img = random_rgb(800, 400)
    url = to_data_url(img, max_side=200)
    assert from_data_url(url).size == (200, 100)
    assert from_data_url(to_data_url(img, max_side=1000)).size == (800, 400)
    path = tmp_path / "big.jpg"
    img.save(path)
    url = to_data_url(path, max_side=100)
    assert mime(url) == "image/jpeg" and from_data_url(url).size == (100, 50)
    with pytest.raises(ValueError, match="max_side"):
        to_data_url(img, max_side=0)


# ----------------------------------------------------------------- C07: images for a server


def test_image_for_server(tmp_path):
    photo = random_rgb(16, 8)
    path = tmp_path / "photo.png"
    photo.save(path)
    local = image_for_server(path)
    assert local.startswith("data:image/png;base64,")
    assert payload(local) == path.read_bytes()
    assert image_for_server(str(path)) == local
    assert image_for_server(path.read_bytes()) == local
    assert image_for_server(photo).startswith("data:image/png;base64,")

    remote = "https://example.com/cat.png?size=large"
    assert image_for_server(remote) == remote  # passed through, not fetched

    file_url = path.resolve().as_uri()
    assert image_for_server(file_url) == local
    assert image_for_server(file_url, allow_local_file_urls=True) == file_url
    with pytest.raises(ValueError, match="host"):
        image_for_server("file://server/photo.png", allow_local_file_urls=True)

    assert image_for_server(local) == local
    with pytest.raises(FileNotFoundError, match="gone.png"):
        image_for_server(tmp_path / "gone.png")


# ----------------------------------------------------------------- helpers and samples


def test_is_url_and_describe_image():
    assert is_url("https://x/y.png") and is_url("HTTP://x") and is_url("file:///tmp/a.png")
    assert is_url("data:image/png;base64,AAAA")
    assert not is_url("/tmp/a.png") and not is_url("cat.png") and not is_url(b"http://x")
    assert describe_image(Image.new("LA", (3, 2))) == {
        "width": 3,
        "height": 2,
        "mode": "LA",
        "format": None,
    }


@pytest.mark.parametrize("name", sorted(images.SAMPLE_IMAGES))
def test_sample_images_load_offline(name):
    path = sample_image_path(name)
    assert path.is_file() and path.name == images.SAMPLE_IMAGES[name]
    img = sample_image(name)
    assert img.mode == "RGB" and img.width > 0 and img.height > 0
    assert img.size == Image.open(path).size
    assert images.SAMPLE_IMAGE_DESCRIPTIONS[name]


def test_sample_names_are_image_sources(tmp_path, monkeypatch):
    cat = sample_image("cat")
    assert np.array_equal(np.asarray(load_image("cat")), np.asarray(cat))
    url = image_for_server("rocket")
    assert mime(url) == "image/jpeg" and payload(url) == sample_image_path("rocket").read_bytes()
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (3, 3), RED).save(tmp_path / "cat", format="PNG")
    assert load_image("cat").size == (3, 3)  # an existing file wins over a sample name
    with pytest.raises(FileNotFoundError, match="nor a sample name: offline samples: astronaut"):
        load_image("dog")


def test_logo_sample_background_is_white():
    assert Image.open(sample_image_path("logo")).mode == "RGBA"
    assert sample_image("logo").getpixel((0, 0)) == WHITE


def test_unknown_sample_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown sample image 'dog'") as info:
        sample_image("dog")
    for name in ("cat", "astronaut", "rocket", "cherry_blossom"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="cat"):
        sample_image_path("dog")
    with pytest.raises(ValueError, match="no local path"):
        sample_image_path("cherry_blossom")


def test_module_imports_without_heavy_packages():
    code = (
        "import sys, cookbook.images as m\n"
        "m.to_data_url(m.sample_image('cat'))\n"
        "heavy = [x for x in ('torch', 'vllm', 'transformers', 'httpx', 'skimage')\n"
        "         if x in sys.modules]\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.vllm
@pytest.mark.parametrize("name", ["cherry_blossom", "stop_sign"])
def test_online_vllm_asset_offline_gives_clear_error(name, tmp_path, monkeypatch):
    # This machine has no internet access; an empty asset cache forces a download.
    monkeypatch.setenv("VLLM_ASSETS_CACHE", str(tmp_path))
    monkeypatch.setenv("VLLM_MEDIA_FETCH_MAX_RETRIES", "1")
    monkeypatch.setenv("VLLM_IMAGE_FETCH_TIMEOUT", "5")
    with pytest.raises(RuntimeError, match="internet access") as info:
        sample_image(name)
    assert "sample_image('cat')" in str(info.value)
    assert name in str(info.value)


@pytest.mark.vllm
def test_data_urls_decode_in_vllm_as_load_image_sees_them(tmp_path):
    """vLLM's own server-side decoder gives the same RGB pixels as load_image."""
    from vllm.multimodal.media.image import ImageMediaIO

    io_ = ImageMediaIO()
    cases = {
        "rgba": rgba_image(),
        "la": la_image(),
        "p": p_transparent_image(),
        "i16": Image.fromarray(SIXTEEN_BIT),
        "cmyk": Image.new("CMYK", (5, 3), (0, 255, 255, 0)),
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = tmp_path / "sideways.jpg"
    sample_image("cat").save(sideways, exif=exif.tobytes(), quality=95)
    for name, img in cases.items():
        path = tmp_path / f"{name}.{'jpg' if img.mode == 'CMYK' else 'png'}"
        img.save(path)
        cases[name] = path
    cases["sideways"] = sideways
    for name, path in cases.items():
        url = to_data_url(path)
        served = io_.load_base64(mime(url), url.split(",", 1)[1]).media
        ours = load_image(path)
        assert served.mode == "RGB" and served.size == ours.size, name
        diff = np.abs(np.asarray(served, dtype=int) - np.asarray(ours, dtype=int))
        if name == "sideways":  # turned upright, then re-encoded as JPEG: small loss
            assert served.size == (300, 451) and diff.mean() < 2.0, diff.mean()
        else:
            assert diff.max() <= 1, (name, diff.max())


@pytest.mark.vllm
def test_data_url_variants_decode_in_vllms_connector_once_rebuilt():
    """vLLM's server-side fetch (MediaConnector) reads every rebuilt variant."""
    from vllm.multimodal.media.connector import MediaConnector

    connector = MediaConnector()
    img, _, text = variant_photo()
    for variant, build in sorted(DATA_URL_VARIANTS.items()):
        served = connector.fetch_image(image_for_server(build(text)))
        assert np.array_equal(np.asarray(served), np.asarray(img)), variant
