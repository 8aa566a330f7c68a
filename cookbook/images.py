"""Images for InternVL requests: sample photos, any source as RGB, data URLs, a sample clip.

The sample photos ship with scikit-image (its ``data`` folder), so all works offline; their
files, objects (hand-checked boxes) and expected answer words are in ``cookbook/samples.toml``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.util
import io
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

SAMPLES_FILE = Path(__file__).with_name("samples.toml")

#: zlib level of PNG data URLs (Pillow's default is 6): encoding is the client's main cost.
PNG_COMPRESS_LEVEL = 1
#: What vLLM's server and ``LLM.chat`` decode from a data URL, by MIME type (Pillow format).
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[^,;]*)*),(?P<data>.*)", re.S)
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]{64,}")


@functools.cache
def samples() -> dict[str, dict[str, Any]]:
    """Return ``cookbook/samples.toml``: sample name -> file, expected words, objects."""
    return tomllib.loads(SAMPLES_FILE.read_text())


def sample_path(name: str) -> Path:
    """Return the file of a sample photo (``"cat"``, ...) in scikit-image.

    Raises ValueError, listing the names, when ``name`` is not a sample.
    """
    if "file" not in samples().get(name, {}):
        photos = sorted(n for n, s in samples().items() if "file" in s)
        raise ValueError(f"unknown sample photo {name!r}; samples are {photos}")
    import skimage

    return Path(skimage.__file__).parent / "data" / samples()[name]["file"]


def to_rgb(img: Image.Image) -> Image.Image:
    """Return ``img`` upright (EXIF orientation) as RGB of the same size.

    Transparent pixels become white, not the black of ``convert("RGB")``; 16-bit grey (``I;16``,
    ``I``) is scaled to 8 bits, not clipped; other modes (L, CMYK, ...) use Pillow's conversion.
    """
    img = ImageOps.exif_transpose(img) or img
    if img.mode.startswith("I"):
        scaled = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or img.has_transparency_data:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(src: Any, *, timeout: float = 10.0) -> Image.Image:
    """Return an image as RGB (`to_rgb`) from a sample name, path, URL, data URL, bytes or PIL.

    ``timeout``: seconds to wait for an http(s) URL (httpx). Raises FileNotFoundError (no such
    file), httpx.HTTPError (naming the URL), or ValueError: bytes that are no image, a bad or
    mislabelled data URL, bare base64 without its ``data:`` prefix, or more pixels than
    ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    if isinstance(src, Image.Image):
        return to_rgb(src)
    if isinstance(src, bytes | bytearray):
        return to_rgb(_decode(bytes(src), "the given bytes"))
    text = str(src)
    if text.startswith("data:"):
        return from_data_url(text)
    if text.startswith(("http://", "https://")):
        import httpx

        response = httpx.get(text, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
        return to_rgb(_decode(response.content, text))
    if isinstance(src, str) and src in samples():
        return to_rgb(_decode(sample_path(src).read_bytes(), f"sample {src!r}"))
    path = Path(text).expanduser()
    try:
        found = path.is_file()
    except OSError:  # a name too long to be a path (ENAMETOOLONG)
        found = False
    if not found:
        if _BASE64_TEXT.fullmatch(text):
            raise ValueError(
                f"{text[:24]}... looks like bare base64 image data: add its data URL prefix, "
                "e.g. 'data:image/png;base64,' + text (the prefix says the image format)"
            )
        raise FileNotFoundError(f"no image file {text!r} (samples: {sorted(samples())})")
    return to_rgb(_decode(path.read_bytes(), repr(text)))


def _decode(data: bytes, source: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Image.DecompressionBombError as err:
        raise ValueError(
            f"{source}: {err} Downscale it first; InternVL sees at most 12 tiles of 448 px."
        ) from err
    except (OSError, SyntaxError) as err:
        raise ValueError(f"{source} is not an image Pillow can read: {err}") from err
    return img


def to_data_url(img: Image.Image, fmt: str = "PNG") -> str:
    """Return ``img`` as a ``data:image/<fmt>;base64,...`` URL (PNG: lossless, the exact pixels).

    PNG at `PNG_COMPRESS_LEVEL`: Pillow's default level 6 takes 3x as long for 6-8% fewer bytes.
    """
    buffer = io.BytesIO()
    to_rgb(img).save(buffer, format=fmt, compress_level=PNG_COMPRESS_LEVEL)  # PNG reads it
    return f"data:{_MIME[fmt]};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def from_data_url(url: str) -> Image.Image:
    """Return the RGB image in a base64 data URL.

    Raises ValueError: not ``data:<image mime>;base64,<payload>``, a payload that is not base64
    or no image, or a MIME type that is not the bytes' format (PNG bytes as ``image/jpeg``).
    """
    match = _DATA_URL.fullmatch(url.strip())
    if not match or not match["mime"].lower().startswith("image/"):
        raise ValueError(
            f"not an image data URL: {url[:40]!r}; expected 'data:image/png;base64,...'"
        )
    if ";base64" not in match["params"].lower():
        raise ValueError(f"data URL {url[:40]!r}... is not base64-encoded (';base64' missing)")
    try:
        data = base64.b64decode("".join(match["data"].split()), validate=True)
    except binascii.Error as err:
        raise ValueError(f"data URL payload is not valid base64: {err}") from err
    img = _decode(data, "the data URL")
    declared = match["mime"].lower().replace("image/jpg", "image/jpeg")
    actual = _MIME.get(img.format or "", f"image/{(img.format or '?').lower()}")
    if declared != actual:
        raise ValueError(
            f"data URL says {declared} but holds {actual} bytes; build it with "
            f"to_data_url(image), which writes the true format"
        )
    return to_rgb(img)


def image_part(src: Any, *, fit: bool = True) -> dict[str, Any]:
    """Return an OpenAI-style ``image_url`` content part, for ``LLM.chat`` and a server alike.

    An http(s) URL is passed on for the server to fetch, a data URL checked and passed on;
    whatever else `load_image` takes becomes a PNG data URL. ``fit`` first shrinks a photo to
    its tile grid (`cookbook.tiling.fit_to_grid`: same tokens, fewer bytes) where vLLM is
    installed; False sends the exact pixels.
    """
    text = src if isinstance(src, str) else ""
    if text.startswith(("http://", "https://")):
        return {"type": "image_url", "image_url": {"url": text}}
    if text.startswith("data:"):
        from_data_url(text)
        return {"type": "image_url", "image_url": {"url": text}}
    img = load_image(src)
    if fit and importlib.util.find_spec("vllm") is not None:
        from cookbook.tiling import fit_to_grid

        img = fit_to_grid(img)
    return {"type": "image_url", "image_url": {"url": to_data_url(img)}}


def video_part(frames: np.ndarray) -> dict[str, Any]:
    """Return a ``video_url`` content part carrying ``frames`` (``(T, H, W, 3)`` uint8).

    vLLM, offline and served, takes ``data:video/jpeg;base64,<frame>,<frame>,...`` and decodes
    each JPEG frame with Pillow: no video codec is needed.
    """
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    url = "data:video/jpeg;base64," + ",".join(encoded)
    return {"type": "video_url", "video_url": {"url": url}}


def sample_clip(num_frames: int = 8, size: int = 448) -> np.ndarray:
    """Return a generated clip of a red ball rolling left to right, the same for the same arguments.

    A uint8 ``(num_frames, size, size, 3)`` array, as ``multi_modal_data={"video": clip}`` takes.
    """
    from PIL import ImageDraw

    frames = []
    radius = size // 10
    for i in range(num_frames):
        frame = Image.new("RGB", (size, size), (255, 255, 255))
        draw = ImageDraw.Draw(frame)
        draw.rectangle((0, size * 3 // 4, size, size), fill=(200, 200, 200))
        x = radius + (size - 2 * radius) * i // max(num_frames - 1, 1)
        y = size * 3 // 4 - radius
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(220, 30, 30))
        frames.append(np.asarray(frame))
    return np.stack(frames)
