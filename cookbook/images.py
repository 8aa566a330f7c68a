"""Load and normalise images for InternVL; offline sample photos; data URLs.

Everything here returns images the way InternVL's preprocessing expects them: RGB, the
original size, turned upright by the EXIF orientation tag, transparent pixels white.

Only Pillow and NumPy are imported at module level. ``httpx`` is imported when an http(s)
URL is fetched, and ``vllm`` only for the two online vLLM assets of :func:`sample_image`.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import os
import re
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "JPEG_QUALITY",
    "ONLINE_SAMPLE_IMAGES",
    "SAMPLE_IMAGES",
    "SAMPLE_IMAGE_DESCRIPTIONS",
    "ImageFetchError",
    "ImageSource",
    "describe_image",
    "from_data_url",
    "image_for_server",
    "is_url",
    "load_image",
    "sample_image",
    "sample_image_path",
    "to_data_url",
    "to_rgb",
]

ImageSource = Image.Image | Path | str | bytes | bytearray | memoryview
"""Anything :func:`load_image` accepts."""

JPEG_QUALITY = 90
"""Quality used when an image is encoded as JPEG (Pillow's scale 1-95; its default is 75).

90 keeps text in screenshots and documents legible at about a third of the PNG size.
"""

_ORIENTATION_TAG = 0x0112  # EXIF "Orientation" (TIFF/EXIF specification, tag 274)

# Formats a data URL may carry unchanged: the ones image servers decode everywhere.
# Pillow names "MPO" the multi-picture JPEG files some cameras write; their first picture
# is a plain JPEG, so they travel as image/jpeg.
_PASS_THROUGH_MIME = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
_MIME_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/mpo": "image/jpeg",
}
_ENCODE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG"}
_PNG_MODES = {"1", "L", "P", "RGB", "RGBA"}

_DATA_URL_RE = re.compile(
    r"^data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)$", re.DOTALL | re.IGNORECASE
)
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")
_URLSAFE_TO_STD = str.maketrans("-_", "+/")
_DATA_URL_HINT = (
    "make a data URL by adding the prefix, e.g. 'data:image/png;base64,' + text "
    "(the MIME type must match the bytes), or pass the image to to_data_url(), "
    "which detects the format"
)

# Friendly name -> file in scikit-image's `skimage/data/` directory (shipped in its wheel).
SAMPLE_IMAGES: dict[str, str] = {
    "cat": "chelsea.png",
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "text": "text.png",
    "page": "page.png",
    "hubble": "hubble_deep_field.jpg",
    "logo": "logo.png",
}
"""Offline sample photos: friendly name -> file name in scikit-image's data directory."""

SAMPLE_IMAGE_DESCRIPTIONS: dict[str, str] = {
    "cat": "Chelsea, a tabby cat, face close up (451x300, colour).",
    "astronaut": "Astronaut Eileen Collins in an orange suit, flag and shuttle model (512x512).",
    "coffee": "An espresso cup with a spoon on a saucer, on a wooden table (600x400, colour).",
    "rocket": "A SpaceX Falcon 9 rocket on its launch pad at dusk (640x427, colour).",
    "motorcycle": "A red motorcycle in a garage, left view of a stereo pair (741x500, colour).",
    "text": "Handwritten maths on paper, photographed at an angle (448x172, grayscale).",
    "page": "A book page of printed text, unevenly lit: an OCR test (384x191, grayscale).",
    "hubble": "The Hubble eXtreme Deep Field: many small galaxies on black (1000x872, colour).",
    "logo": "The scikit-image logo, a snake on a transparent background (500x500, RGBA).",
}
"""One-line description of each of :data:`SAMPLE_IMAGES`."""

ONLINE_SAMPLE_IMAGES: dict[str, str] = {
    "cherry_blossom": "Cherry blossoms: the photo of vLLM's examples (downloaded on use).",
    "stop_sign": "A street stop sign: the photo of vLLM's examples (downloaded on use).",
}
"""Sample images from ``vllm.assets.image.ImageAsset``: they need internet access."""


class ImageFetchError(OSError):
    """An image URL could not be fetched: the host was unreachable or answered an error.

    Attributes:
        url: The URL that was requested.
        status_code: The HTTP status code, or ``None`` when no response arrived.

    """

    def __init__(self, message: str, *, url: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


# --------------------------------------------------------------------------- helpers


def is_url(s: object) -> bool:
    """Return True when ``s`` is a string holding an http(s), ``file://`` or ``data:`` URL.

    Args:
        s: Any object; only strings can be URLs.

    Returns:
        ``True`` for strings starting (case-insensitively, after leading blanks) with
        ``http://``, ``https://``, ``file://`` or ``data:``; ``False`` otherwise.

    """
    if not isinstance(s, str):
        return False
    head = s.lstrip()[:8].lower()
    return head.startswith(("http://", "https://", "file://", "data:"))


def _is_http_url(s: str) -> bool:
    return s.lstrip()[:8].lower().startswith(("http://", "https://"))


def _is_file_url(s: str) -> bool:
    return s.lstrip()[:7].lower() == "file://"


def _is_data_url(s: str) -> bool:
    return s.lstrip()[:5].lower() == "data:"


def _short(s: str, limit: int = 80) -> str:
    """Return ``s`` cut to about ``limit`` characters for error messages.

    Inputs can be huge (a data URL or base64 text of a photo is hundreds of kilobytes), and
    an error message ends up in logs and results records, so no message quotes more than
    this. The start and the end are kept (the end of a path is its file name), and the
    full length is given.
    """
    cut = _cut(s, limit)
    return cut if cut == s else f"{cut} ({len(s)} chars)"


def _quoted(s: str, limit: int = 80) -> str:
    """Return ``repr(s)`` of ``s`` cut as by :func:`_short`, the length after the quotes."""
    cut = _cut(s, limit)
    return repr(cut) if cut == s else f"{cut!r} ({len(s)} chars)"


def _cut(s: str, limit: int) -> str:
    if len(s) <= limit:
        return s
    tail = max(limit // 4, 8)
    return f"{s[: limit - tail - 3]}...{s[-tail:]}"


def _exists(path: Path) -> bool:
    """Return ``path.exists()``, False where the name cannot be a file (too long, ...)."""
    try:
        return path.exists()
    except (OSError, ValueError):  # ENAMETOOLONG for long strings, e.g. base64 text
        return False


# First bytes of the image formats whose base64 text people paste: PNG, JPEG, GIF, WEBP
# (RIFF), BMP, TIFF (both byte orders), ICO.
_IMAGE_SIGNATURES = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"RIFF",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"\x00\x00\x01\x00",
)
_LONG = 120  # paths and URLs: quoted up to this many characters, the file name kept
_BARE_BASE64_MIN_CHARS = 64  # a 1x1 PNG is 67 bytes, 92 base64 characters


def _base64_kind(s: str) -> str | None:
    """Return how a string that is no file looks like bare base64 image data, or None.

    ``"image"`` when its first bytes decode to a known image signature; ``"text"`` when it
    is long base64-alphabet text of an unknown format. A string with a path separator and
    no image signature, or a short one, is taken for a path (None).
    """
    text = "".join(s.split())
    if len(text) < 16 or not _BASE64_RE.match(text):
        return None
    head64 = text[:64].translate(_URLSAFE_TO_STD).rstrip("=")
    head64 = head64[: len(head64) // 4 * 4]
    try:
        head = base64.b64decode(head64, validate=True)
    except (binascii.Error, ValueError):
        head = b""
    if head.startswith(_IMAGE_SIGNATURES):
        return "image"
    if "/" in text or "\\" in text or os.sep in text or len(text) < _BARE_BASE64_MIN_CHARS:
        return None
    return "text"


def _bare_base64_error(s: str, kind: str = "image") -> ValueError:
    also = (
        "" if kind == "image" else " (if it is meant as a file path: no such file, check the name)"
    )
    return ValueError(
        f"got a string that is not an existing file, an http(s)/file:// URL or a data URL; "
        f"it looks like bare base64 text ({_short(s, 40)}), which is not accepted because "
        f"it does not say its image format: {_DATA_URL_HINT}{also}."
    )


def _file_url_to_path(url: str) -> Path:
    """Return the local path of a ``file://`` URL; ValueError when it names another host."""
    parsed = urllib.parse.urlparse(url.strip())
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(
            f"file URL {_quoted(url.strip(), _LONG)} names the host {_quoted(parsed.netloc)}; "
            "a file URL needs an absolute path and three slashes, e.g. "
            f"{Path('/tmp/cat.png').as_uri()!r} (pathlib.Path(p).resolve().as_uri() builds one)."
        )
    return Path(urllib.request.url2pathname(urllib.parse.unquote(parsed.path)))


def _quote_path(path: Path | str) -> str:
    return _quoted(str(path), _LONG)


def _read_file(path: Path) -> bytes:
    if not _exists(path):
        raise FileNotFoundError(f"image file not found: {_quote_path(path)}")
    if path.is_dir():
        raise IsADirectoryError(f"expected an image file but {_quote_path(path)} is a directory")
    return path.read_bytes()


def _fetch_url(url: str, timeout: float) -> bytes:
    """Return the body of an http(s) URL; ImageFetchError naming the URL and the reason."""
    import httpx

    shown = _short(url, _LONG)
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.TimeoutException as exc:
        raise ImageFetchError(
            f"could not fetch image {shown}: no answer within {timeout} s ({type(exc).__name__}). "
            "Raise `timeout`, check the network, or use a local file or sample_image().",
            url=url,
        ) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = _short(str(exc) or type(exc).__name__, _LONG)
        raise ImageFetchError(
            f"could not fetch image {shown}: {type(exc).__name__}: {reason}. The host may be "
            "unreachable or this machine offline; use a local file, a data URL or "
            "sample_image() (offline photos) instead.",
            url=url,
        ) from exc
    if response.status_code >= 400:
        raise ImageFetchError(
            f"could not fetch image {shown}: HTTP {response.status_code} {response.reason_phrase}.",
            url=url,
            status_code=response.status_code,
        )
    return response.content


def _decode(data: bytes, source: str) -> Image.Image:
    """Return the fully decoded image in ``data``; ValueError naming ``source`` if it fails."""
    if not data:
        raise ValueError(f"cannot read an image from {source}: it is empty (0 bytes)")
    try:
        # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that; both
        # become the same ValueError here, before the pixels are decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(source, len(data), exc) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(
            f"cannot read an image from {source} ({len(data)} bytes): "
            f"{type(exc).__name__}: {_short(str(exc), _LONG)}. Supported are the formats "
            "Pillow decodes (PNG, JPEG, WEBP, GIF, BMP, TIFF, ...)."
        ) from exc
    return img


def _too_many_pixels(source: str, nbytes: int, exc: Exception) -> ValueError:
    """Return the ValueError for an image above Pillow's decompression-bomb limit."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{int(found[1]):,} pixels" if found else "more pixels"
    limit = Image.MAX_IMAGE_PIXELS
    return ValueError(
        f"cannot read an image from {source} ({nbytes} bytes): it has {pixels}, more than "
        f"Pillow's decompression-bomb limit PIL.Image.MAX_IMAGE_PIXELS = {limit:,} "
        f"({type(exc).__name__}). Downscale the image before passing it in (InternVL sees "
        "at most max_dynamic_patch tiles of 448x448 pixels, so about 4000 pixels on the "
        "long side are plenty), or, only for files you trust, raise the limit knowingly: "
        "PIL.Image.MAX_IMAGE_PIXELS = <pixels> (None turns the check off)."
    )


def _read_source(src: Any, timeout: float) -> tuple[bytes, str]:
    """Return the bytes of a path, file/http(s) URL or bytes-like source, and its label."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "the given bytes"
    if isinstance(src, Path):
        return _read_file(src), f"file {str(src)!r}"
    if not isinstance(src, str):
        raise TypeError(
            f"expected a PIL image, a path (str or pathlib.Path), an http(s)/file:// URL, a "
            f"data URL or bytes, got {type(src).__name__}"
        )
    if not src.strip():
        raise ValueError("got an empty string instead of an image path or URL")
    if _is_data_url(src):
        mime, data = _parse_data_url(src)
        return data, f"data URL ({mime})"
    if _is_http_url(src):
        return _fetch_url(src.strip(), timeout), f"URL {_short(src.strip(), _LONG)}"
    if _is_file_url(src):
        path = _file_url_to_path(src)
        return _read_file(path), f"file {_quote_path(path)} (from {_short(src.strip(), _LONG)})"
    path = Path(os.path.expanduser(src))
    if _exists(path):
        return _read_file(path), f"file {_quote_path(path)}"
    if src in SAMPLE_IMAGES:
        return _read_file(sample_image_path(src)), f"sample image {src!r}"
    if src in ONLINE_SAMPLE_IMAGES:
        buffer = io.BytesIO()
        sample_image(src).save(buffer, format="PNG")
        return buffer.getvalue(), f"sample image {src!r}"
    kind = _base64_kind(src)
    if kind is not None:
        raise _bare_base64_error(src, kind)
    scheme = urllib.parse.urlparse(src).scheme
    if len(scheme) > 1 and "://" in src:
        raise ValueError(
            f"unsupported URL scheme {_quoted(scheme, 20)} in {_quoted(src)}: use an http(s) "
            "URL, a file:// URL, a data URL or a local path"
        )
    hint = "" if os.sep in src or "." in src else f" (nor a sample name: {_sample_names()})"
    raise FileNotFoundError(f"image file not found: {_quote_path(src)}{hint}")


def _parse_data_url(url: str) -> tuple[str, bytes]:
    """Return the (normalised MIME type, decoded bytes) of a base64 image data URL.

    Lenient where the meaning is unambiguous: MIME type and ``base64`` in any case,
    parameters such as ``;charset=utf-8`` and blanks around them, whitespace and line breaks
    in the payload, %-encoded payloads, the URL-safe alphabet (``-`` ``_``) and missing
    ``=`` padding. Callers that send the URL on rebuild it canonically (:func:`to_data_url`).
    """
    match = _DATA_URL_RE.match(url.strip())
    if match is None:
        raise ValueError(
            f"malformed data URL {_quoted(url)}: expected 'data:<mime>;base64,<payload>', "
            "e.g. 'data:image/png;base64,iVBORw0...'"
        )
    mime = match["mime"].strip().lower()
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if not mime.startswith("image/"):
        raise ValueError(
            f"data URL has MIME type {_quoted(mime or '(none)')}, not an image type; expected "
            "'data:image/png;base64,...' or another image/* type"
        )
    if "base64" not in params:
        raise ValueError(
            f"data URL {_quoted(url)} is not base64-encoded; image data URLs must read "
            "'data:<mime>;base64,<payload>' (to_data_url() builds one)"
        )
    payload = "".join(match["payload"].split())
    if "%" in payload:  # '%' is no base64 character: the payload was %-encoded
        payload = "".join(urllib.parse.unquote(payload).split())
    if "-" in payload or "_" in payload:  # the URL-safe alphabet (RFC 4648, section 5)
        if "+" in payload or "/" in payload:
            raise ValueError(
                "data URL payload mixes the standard base64 alphabet ('+', '/') with the "
                "URL-safe one ('-', '_'); encode the bytes once with base64.b64encode()"
            )
        payload = payload.translate(_URLSAFE_TO_STD)
    unpadded = payload.rstrip("=")
    try:
        data = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(
            f"data URL payload is not valid base64 ({_short(str(exc))}); use the standard "
            "alphabet (A-Z a-z 0-9 + /) with '=' padding, as base64.b64encode() writes it"
        ) from exc
    if not data:
        raise ValueError("data URL payload is empty: no image bytes after 'base64,'")
    return _MIME_ALIASES.get(mime, mime), data


def _format_mime(fmt: str | None) -> str:
    if fmt is None:
        return "unknown"
    if fmt in _PASS_THROUGH_MIME:
        return _PASS_THROUGH_MIME[fmt]
    return Image.MIME.get(fmt, f"image/{fmt.lower()}")


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # malformed EXIF must not stop an image from loading
        return 1


def _upright(img: Image.Image) -> Image.Image:
    """Return ``img`` turned by its EXIF orientation tag (``img`` itself when upright)."""
    if _orientation(img) in (0, 1):
        return img
    turned = ImageOps.exif_transpose(img)
    return img if turned is None else turned


# --------------------------------------------------------------------------- public API


def to_rgb(img: Image.Image) -> Image.Image:
    """Return ``img`` as an RGB image of the same size, transparent pixels white.

    Handles every mode Pillow opens:

    * ``RGB``: returned as is (the same object).
    * Alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``) and transparency entries (``P``
      with a transparent palette index, ``L``/``RGB`` with a ``transparency`` colour): the
      image is composited onto white, so fully transparent pixels become (255, 255, 255)
      and half-transparent ones are blended with white (``Image.convert("RGB")`` alone
      would drop alpha and show the hidden colour, often black).
    * 16-bit integer (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``): scaled, not clipped,
      value / 257 rounded, so 65535 -> 255, 32768 -> 128, 0 -> 0.
    * 32-bit integer ``I``: values within 0..65535 (16-bit PNG and TIFF files open this
      way) are scaled as 16-bit; other ranges are stretched linearly from min..max to
      0..255.
    * Float ``F``: values within 0..1 are multiplied by 255, values within 0..255 kept,
      other ranges stretched from min..max to 0..255; NaN becomes 0.
    * ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and the rest: Pillow's
      own conversion.

    Args:
        img: A PIL image in any mode.

    Returns:
        An RGB ``PIL.Image.Image`` with ``size == img.size``.

    Raises:
        TypeError: ``img`` is not a PIL image.
        ValueError: Pillow cannot convert the mode to RGB.

    """
    if not isinstance(img, Image.Image):
        raise TypeError(f"to_rgb expects a PIL.Image.Image, got {type(img).__name__}")
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(img)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or img.has_transparency_data:
        rgba = _to_rgba(img)
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(
            f"cannot convert an image of mode {mode!r} to RGB: {exc}; convert it to RGB "
            "yourself first"
        ) from exc


def _to_rgba(img: Image.Image) -> Image.Image:
    """Return ``img`` as RGBA; ``La`` (premultiplied alpha) is un-premultiplied first.

    Pillow converts ``La`` to nothing but ``LA`` (and only in recent versions), so it is
    done here: grey = premultiplied grey * 255 / alpha, 0 where alpha is 0.
    """
    if img.mode == "La":
        arr = np.asarray(img).astype(np.float64)
        grey, alpha = arr[..., 0], arr[..., 1]
        straight = np.divide(grey * 255.0, alpha, out=np.zeros_like(grey), where=alpha > 0)
        channels = (np.clip(np.rint(straight), 0, 255), alpha)
        img = Image.merge("LA", [Image.fromarray(c.astype(np.uint8)) for c in channels])
    return img.convert("RGBA")


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    """Return a 16-bit, 32-bit or float single-channel image as 8-bit RGB (see to_rgb)."""
    arr = np.asarray(img)
    if img.mode == "F":
        values = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 1.0:
            values = values * 255.0
        elif not (lo >= 0.0 and hi <= 255.0):
            values = (values - lo) * (255.0 / (hi - lo)) if hi > lo else values * 0.0
    else:
        values = arr.astype(np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if lo >= 0.0 and hi <= 65535.0:
            values = values / 257.0
        else:
            values = (values - lo) * (255.0 / (hi - lo)) if hi > lo else values * 0.0
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def load_image(src: ImageSource, *, timeout: float = 10.0) -> Image.Image:
    """Return the image at ``src`` as an upright RGB ``PIL.Image.Image`` of the same size.

    The image is turned by its EXIF orientation tag (``ImageOps.exif_transpose``), so a
    phone photo stored sideways comes out as a viewer shows it, then passed through
    :func:`to_rgb` (alpha onto white, 16-bit scaled). Animated images give their first
    frame.

    Args:
        src: One of

            * a ``PIL.Image.Image``;
            * a path, as ``pathlib.Path`` or ``str`` (``~`` is expanded);
            * a sample name of :data:`SAMPLE_IMAGES` (``"cat"``, ...) or
              :data:`ONLINE_SAMPLE_IMAGES`, when no file of that name exists;
            * a ``file://`` URL (absolute path, ``Path(p).resolve().as_uri()``);
            * an ``http://`` or ``https://`` URL, fetched with ``httpx``;
            * a data URL ``data:image/<type>;base64,<payload>`` (checked as by
              :func:`from_data_url`);
            * raw encoded bytes (``bytes``, ``bytearray``, ``memoryview``).

            Bare base64 text is refused: it does not say its format.
        timeout: Seconds to wait for an http(s) URL (connect and each read).

    Returns:
        An RGB ``PIL.Image.Image``, upright.

    Raises:
        FileNotFoundError: A path or ``file://`` URL names no file (the message names it).
        ImageFetchError: An http(s) URL was unreachable (the message names the URL and
            the reason) or answered an HTTP error (``status_code`` set). It is an
            ``OSError``.
        ValueError: Bare base64 text, a malformed or mismatched data URL, bytes that are
            not a readable image, or an image above Pillow's decompression-bomb limit
            ``PIL.Image.MAX_IMAGE_PIXELS`` (the message names the source, the pixel count,
            the limit and the remedies).
        TypeError: ``src`` is of another type.

    """
    if isinstance(src, Image.Image):
        return to_rgb(_upright(src))
    data, source = _read_source(src, timeout)
    img = _decode(data, source)
    if isinstance(src, str) and _is_data_url(src):
        _check_declared_format(src, img)
    return to_rgb(_upright(img))


def _check_declared_format(url: str, img: Image.Image) -> None:
    declared, _ = _parse_data_url_header(url)
    actual = _format_mime(img.format)
    if declared != actual:
        raise ValueError(
            f"data URL declares {declared} but its bytes are {img.format or 'unknown'} "
            f"({actual}); the MIME type must match the bytes: build the URL with "
            "to_data_url(), which detects the true format"
        )


def _parse_data_url_header(url: str) -> tuple[str, str]:
    match = _DATA_URL_RE.match(url.strip())
    assert match is not None  # the URL was parsed successfully before
    mime = match["mime"].strip().lower()
    return _MIME_ALIASES.get(mime, mime), match["params"]


def from_data_url(url: str) -> Image.Image:
    """Return the image encoded in a base64 image data URL, decoded but not converted.

    The result keeps the stored mode (an RGBA PNG stays RGBA) so that
    ``from_data_url(to_data_url(img))`` gives ``img``'s pixels back exactly; use
    :func:`load_image` for an upright RGB image.

    Args:
        url: ``data:image/<type>;base64,<payload>``. The MIME type must be the true format
            of the bytes (``image/jpg`` is read as ``image/jpeg``). Also read: any case
            (``;BASE64``), extra parameters (``;charset=utf-8``), blanks around them,
            whitespace and line breaks in the payload, %-encoded or URL-safe (``-``
            ``_``) payloads and missing ``=`` padding. vLLM 0.23's server refuses most
            of these variants: send :func:`to_data_url`'s canonical URL instead.

    Returns:
        The decoded, fully loaded ``PIL.Image.Image`` (``.format`` set to the true format).

    Raises:
        TypeError: ``url`` is not a string.
        ValueError: ``url`` is not a data URL (bare base64 text included), the MIME type
            is not ``image/*``, the payload is not base64 or not a readable image, the
            image is above ``PIL.Image.MAX_IMAGE_PIXELS``, or the declared type differs
            from the actual format (the message names both).

    """
    if not isinstance(url, str):
        raise TypeError(f"from_data_url expects a str, got {type(url).__name__}")
    if not _is_data_url(url):
        kind = _base64_kind(url)
        if kind is not None:
            raise _bare_base64_error(url, kind)
        raise ValueError(f"not a data URL: {_quoted(url)}; expected 'data:<mime>;base64,<payload>'")
    mime, data = _parse_data_url(url)
    img = _decode(data, f"data URL ({mime})")
    _check_declared_format(url, img)
    return img


def _server_safe(img: Image.Image) -> Image.Image:
    """Return ``img`` in a mode vLLM turns into the right RGB image (``img`` if it is one).

    vLLM's server decodes image bytes with ``ImageMediaIO.load_bytes``
    (vllm/multimodal/media/image.py, vLLM 0.23): it composites only mode ``RGBA`` onto
    white and otherwise calls ``Image.convert("RGB")``, which shows the hidden colour of
    transparent ``LA``/``P`` pixels and clips 16-bit values (32768 -> 255). So alpha in
    other modes becomes ``RGBA`` and 16-bit, 32-bit and float images become RGB via
    :func:`to_rgb`.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return to_rgb(img)
    if mode != "RGBA" and (mode in ("LA", "PA", "RGBa", "La") or img.has_transparency_data):
        return _to_rgba(img)
    return img


def _encode(img: Image.Image, fmt: str) -> tuple[bytes, str]:
    """Return (encoded bytes, MIME type) of ``img`` as PNG or JPEG."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        to_rgb(img).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), "image/jpeg"
    img = _server_safe(img)
    png_ready = img if img.mode in _PNG_MODES else to_rgb(img)
    png_ready.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def _normalise_fmt(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    key = str(fmt).strip().upper()
    if key not in _ENCODE_FORMATS:
        raise ValueError(f"fmt must be 'PNG' or 'JPEG' (or None), got {fmt!r}")
    return _ENCODE_FORMATS[key]


def _downscale(img: Image.Image, max_side: int) -> Image.Image:
    """Return ``img`` resized (LANCZOS) so its longer side is ``max_side``, aspect kept."""
    width, height = img.size
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return to_rgb(img).resize(size, Image.Resampling.LANCZOS)


def _data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def to_data_url(
    src: ImageSource,
    fmt: str | None = None,
    *,
    max_side: int | None = None,
    timeout: float = 10.0,
) -> str:
    """Return a ``data:image/<type>;base64,...`` URL whose MIME type is the true format.

    The URL is meant for a vLLM server, which decodes it with ``ImageMediaIO.load_bytes``
    (vllm/multimodal/media/image.py, vLLM 0.23): that ignores the EXIF orientation tag,
    composites only ``RGBA`` onto white and clips 16-bit values. So the image is made
    upright and, where needed, converted: alpha in ``LA``/``PA``/``P``/``L`` becomes
    ``RGBA`` (the server then shows transparent pixels white, as :func:`to_rgb` does);
    16-bit, 32-bit and float images become RGB via :func:`to_rgb`; modes PNG cannot
    store (``CMYK``, ...) become RGB.

    * A PIL image is encoded as PNG (lossless, the default: for modes ``RGB``, ``RGBA``,
      ``L``, ``1`` and ``P`` without transparency, :func:`from_data_url` gives identical
      pixels back) or as JPEG with ``fmt="JPEG"`` (quality :data:`JPEG_QUALITY`, alpha
      composited onto white).
    * A path, ``file://``/http(s) URL or bytes already in JPEG, PNG, WEBP or GIF keep
      their original bytes, labelled with the format Pillow detects in them (never the
      file extension), unless one of the conversions above applies; then, and for other
      formats (BMP, TIFF, ...), the image is re-encoded (JPEG stays JPEG, others PNG).
    * A data URL is checked (:func:`from_data_url`: the declared MIME type must match
      the bytes) and rebuilt in the one form vLLM's server decodes,
      ``data:<true mime>;base64,<standard base64, padded, no whitespace>``: vLLM 0.23's
      ``MediaConnector._load_data_url`` (vllm/multimodal/media/connector.py) requires the
      text between ``;`` and ``,`` to be exactly ``base64`` and decodes with
      ``pybase64.b64decode(..., validate=True)``, so ``;charset=utf-8;base64``,
      ``;BASE64``, ``; base64``, line breaks, URL-safe or %-encoded payloads would fail
      there. Its bytes are treated like the bytes of a file (below).

    Args:
        src: A PIL image, a path, a sample name, a ``file://`` or http(s) URL, a data
            URL (any variant :func:`from_data_url` reads) or raw bytes. Bare base64 text
            is refused.
        fmt: ``"PNG"``, ``"JPEG"`` (``"JPG"``) or ``None``: PNG for PIL images, the
            detected format for encoded bytes. Given for bytes in another format, the
            image is decoded and re-encoded.
        max_side: Optional payload saver: when the longer side exceeds it, the image is
            shrunk with LANCZOS so that side is ``max_side`` pixels, aspect ratio kept,
            and re-encoded (as RGB). InternVL tiles images into 448 px tiles anyway, so
            e.g. ``max_side=1344`` rarely changes an answer but cuts request size.
        timeout: Seconds to wait when ``src`` is an http(s) URL.

    Returns:
        The data URL as a ``str``.

    Raises:
        ValueError: Unknown ``fmt``, ``max_side < 1``, bare base64, a bad data URL,
            bytes that are not an image, or an image above ``PIL.Image.MAX_IMAGE_PIXELS``.
        FileNotFoundError: A path names no file.
        ImageFetchError: An http(s) URL could not be fetched.
        TypeError: ``src`` is of another type.

    """
    target = _normalise_fmt(fmt)
    if max_side is not None and (isinstance(max_side, bool) or int(max_side) < 1):
        raise ValueError(f"max_side must be a positive number of pixels or None, got {max_side}")
    if isinstance(src, Image.Image):
        img = _upright(src)
        if max_side is not None and max(img.size) > max_side:
            img = _downscale(img, int(max_side))
        return _data_url(*_encode(img, target or "PNG"))
    data, source = _read_source(src, timeout)
    img = _decode(data, source)
    if isinstance(src, str) and _is_data_url(src):
        _check_declared_format(src, img)
    detected = "JPEG" if img.format == "MPO" else img.format
    needs_resize = max_side is not None and max(img.size) > max_side
    keep = (
        detected in _PASS_THROUGH_MIME
        and (target is None or target == detected)
        and not needs_resize
        and _orientation(img) in (0, 1)
        and _server_safe(img) is img
    )
    if keep:
        return _data_url(data, _PASS_THROUGH_MIME[detected or ""])
    if target is None:
        target = "JPEG" if detected == "JPEG" else "PNG"
    img = _upright(img)
    if needs_resize:
        img = _downscale(img, int(max_side or 0))
    return _data_url(*_encode(img, target))


def image_for_server(
    src: ImageSource,
    *,
    allow_local_file_urls: bool = False,
    max_side: int | None = None,
) -> str:
    """Return the ``image_url`` string to send to an OpenAI-compatible vLLM server.

    * http(s) URLs pass through unchanged: the server fetches them itself.
    * Data URLs are checked (:func:`from_data_url`: MIME type matches the bytes) and
      rebuilt by :func:`to_data_url` as ``data:<true mime>;base64,<standard base64>``
      (a URL already in that form and server-safe comes back unchanged), because vLLM's
      server refuses variants such as ``;charset=utf-8;base64``, ``;BASE64`` or line
      breaks in the payload.
    * Local paths, sample names, PIL images and bytes become data URLs (:func:`to_data_url`), so the
      server needs no access to this machine's files.
    * A ``file://`` URL passes through only with ``allow_local_file_urls=True``, meaning
      the server was started with ``--allowed-local-media-path`` covering that file on
      the server's own file system; otherwise it is read here and sent as a data URL
      (a server started without the flag rejects ``file://`` URLs).

    Args:
        src: A PIL image, a path, a sample name, a URL (http(s), ``file://``, ``data:``)
            or raw bytes.
        allow_local_file_urls: Pass ``file://`` URLs through unchanged.
        max_side: Passed to :func:`to_data_url` for images turned into data URLs (and
            for data URLs given, which are then shrunk when larger).

    Returns:
        A URL string for ``{"type": "image_url", "image_url": {"url": ...}}``.

    Raises:
        ValueError: Bare base64 text, a bad data URL, bytes that are not an image, or an
            image above ``PIL.Image.MAX_IMAGE_PIXELS``.
        FileNotFoundError: A local path or ``file://`` URL names no file here.
        TypeError: ``src`` is of another type.

    """
    if isinstance(src, str):
        if _is_http_url(src):
            return src.strip()
        if _is_file_url(src) and allow_local_file_urls:
            _file_url_to_path(src)  # reject file://host/... before sending
            return src.strip()
    return to_data_url(src, max_side=max_side)


def describe_image(img: Image.Image) -> dict[str, Any]:
    """Return ``{"width", "height", "mode", "format"}`` of a PIL image (sizes in pixels).

    Args:
        img: A PIL image.

    Returns:
        A dict: ``width`` and ``height`` (int, pixels), ``mode`` (e.g. ``"RGB"``) and
        ``format`` (the file format it was read from, or ``None``).

    Raises:
        TypeError: ``img`` is not a PIL image.

    """
    if not isinstance(img, Image.Image):
        raise TypeError(f"describe_image expects a PIL.Image.Image, got {type(img).__name__}")
    return {"width": img.width, "height": img.height, "mode": img.mode, "format": img.format}


# --------------------------------------------------------------------------- samples


def _sample_names() -> str:
    offline = ", ".join(sorted(SAMPLE_IMAGES))
    online = ", ".join(sorted(ONLINE_SAMPLE_IMAGES))
    return f"offline samples: {offline}; online (vLLM assets, need internet): {online}"


def _unknown_sample(name: object) -> ValueError:
    return ValueError(f"unknown sample image {name!r}; {_sample_names()}")


def _skimage_data_dir() -> Path:
    """Return scikit-image's ``data`` directory without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the offline sample images come from scikit-image, which is not installed: "
            "pip install scikit-image (or the cookbook's `notebooks` extra)",
            name="skimage",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sample_image_path(name: str) -> Path:
    """Return the path of an offline sample photo in scikit-image's data directory.

    Args:
        name: A key of :data:`SAMPLE_IMAGES` (``"cat"``, ``"astronaut"``, ...).

    Returns:
        The ``pathlib.Path`` of the file shipped in scikit-image's wheel.

    Raises:
        ValueError: Unknown name (the message lists the known ones), or an online vLLM
            asset name, which has no local file.
        ModuleNotFoundError: scikit-image is not installed.
        FileNotFoundError: The file is missing from the installed scikit-image.

    """
    if name in ONLINE_SAMPLE_IMAGES:
        raise ValueError(
            f"sample image {name!r} is a vLLM asset downloaded on use and has no local "
            f"path; call sample_image({name!r}) (needs internet) or use an offline sample: "
            + ", ".join(sorted(SAMPLE_IMAGES))
        )
    if name not in SAMPLE_IMAGES:
        raise _unknown_sample(name)
    path = _skimage_data_dir() / SAMPLE_IMAGES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"sample image {name!r} should be {str(path)!r} but the installed scikit-image "
            "does not ship it; reinstall scikit-image from its wheel"
        )
    return path


def sample_image(name: str) -> Image.Image:
    """Return a sample photo by name as an RGB ``PIL.Image.Image``.

    Names of :data:`SAMPLE_IMAGES` load offline from scikit-image's data files. The names
    of :data:`ONLINE_SAMPLE_IMAGES` (``"cherry_blossom"``, ``"stop_sign"``, used in vLLM's
    own examples) load through ``vllm.assets.image.ImageAsset``, which downloads them.

    Args:
        name: A key of :data:`SAMPLE_IMAGES` or :data:`ONLINE_SAMPLE_IMAGES`.

    Returns:
        An RGB image (the "logo" sample's transparent background becomes white).

    Raises:
        ValueError: Unknown name; the message lists the known names.
        RuntimeError: An online asset could not be loaded (no internet access, or vLLM
            missing); the message suggests an offline sample such as ``"cat"``.
        ModuleNotFoundError: scikit-image is not installed (offline samples).

    """
    if name in ONLINE_SAMPLE_IMAGES:
        try:
            from vllm.assets.image import ImageAsset

            img = ImageAsset(name).pil_image  # type: ignore[arg-type]
        except Exception as exc:
            raise RuntimeError(
                f"sample image {name!r} is a vLLM asset that is downloaded on first use and "
                f"needs internet access; loading it failed ({type(exc).__name__}: {exc}). "
                f"Offline, use a bundled photo instead, e.g. sample_image('cat') "
                f"(all: {', '.join(sorted(SAMPLE_IMAGES))})."
            ) from exc
        return to_rgb(_upright(img))
    return load_image(sample_image_path(name))
