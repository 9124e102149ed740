"""Cheap input checks: what format is this, and how big does its header say it is?

:func:`detect_format` looks only at magic bytes. :func:`probe_header` adds the
width and height from the (possibly partial) header, read by Pillow without
decoding a single pixel, so the API can reject an upload from its first chunk.

:func:`pillow_guard` is the one place that configures Pillow's own safety nets
(``MAX_IMAGE_PIXELS``, decompression-bomb warnings, truncated images) for a
given :class:`Limits`, and :func:`decoding` the one place that turns whatever
Pillow raises on untrusted bytes into a classified error; the engine decodes
inside both too.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.errors import (
    CorruptImage,
    DecompressionBomb,
    NotAnImage,
    PixfleetError,
    TooManyPixels,
    UnsupportedFormat,
)
from pipeline.transform.spec import Limits

SUPPORTED_FORMATS = ("jpeg", "png", "gif", "webp", "avif", "tiff", "bmp")

# Our format name → the Pillow plugin allowed to open it (never let Pillow guess). JPEG's
# opener also returns multi-picture (MPO) files; "MPO" itself is not an opener (asking for it
# raised KeyError on every JPEG Pillow could not parse).
PILLOW_FORMATS = {
    "jpeg": ("JPEG",),
    "png": ("PNG",),
    "gif": ("GIF",),
    "webp": ("WEBP",),
    "avif": ("AVIF",),
    "tiff": ("TIFF",),
    "bmp": ("BMP",),
}

# Bytes a caller should pass to probe_header to be (almost always) sure the size is inside.
PROBE_BYTES = 256 * 1024

_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"}
_OTHER_IMAGE_BRANDS = {b"jpx ", b"jp2 ", b"jxl ", b"crx ", b"jpm "}  # ISO-BMFF stills we do not decode
_BMP_DIB_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

# (prefix, human name) of recognised image-ish formats we do not accept.
_UNSUPPORTED_PREFIXES = (
    (b"%PDF-", "PDF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"II\xbc", "JPEG XR"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"icns", "ICNS"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"BPG\xfb", "BPG"),
    (b"gimp xcf", "XCF"),
    (b"FLIF", "FLIF"),
    (b"farbfeld", "farbfeld"),
)


@dataclass(frozen=True)
class Probe:
    """What the header says: the format, and the size when the header was complete enough."""

    format: str
    width: int | None
    height: int | None

    @property
    def pixels(self) -> int | None:
        return None if self.width is None or self.height is None else self.width * self.height


def detect_format(head: bytes) -> str:
    """The format of ``head`` (the first bytes of a file) from its magic bytes.

    Returns one of :data:`SUPPORTED_FORMATS`. Raises :class:`UnsupportedFormat`
    for images we recognise but do not decode (HEIC/HEIF, PDF, SVG, PSD, ICO,
    JPEG 2000, JPEG XL, ...) and :class:`NotAnImage` for anything else,
    including empty input.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in _BMP_DIB_HEADER_SIZES:
        return "bmp"
    if head[4:8] == b"ftyp":
        return _iso_bmff_format(head)
    for prefix, name in _UNSUPPORTED_PREFIXES:
        if head.startswith(prefix):
            raise UnsupportedFormat(f"{name} images are not supported")
    if _looks_like_svg(head):
        raise UnsupportedFormat("SVG/XML images are not supported")
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        raise UnsupportedFormat("Netpbm images are not supported")
    raise NotAnImage("the data is not an image" if head else "the upload is empty")


def _iso_bmff_format(head: bytes) -> str:
    """AVIF, or a refusal, from an ISO-BMFF ``ftyp`` box (major and compatible brands)."""
    box_size = struct.unpack(">I", head[:4])[0]
    end = min(len(head), box_size if 16 <= box_size <= 4096 else 16)
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIF_BRANDS:
        raise UnsupportedFormat("HEIC/HEIF images are not supported")
    if brands & _OTHER_IMAGE_BRANDS:
        raise UnsupportedFormat(f"{head[8:12].decode('latin-1').strip()!r} images are not supported")
    raise NotAnImage("the data is an ISO media file (video/audio), not an image")


def _looks_like_svg(head: bytes) -> bool:
    text = head[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return (
        text.startswith((b"<?xml", b"<svg"))
        or (text.startswith(b"<!doctype svg"))
        or (text.startswith(b"<!--") and b"<svg" in text)
    )


@contextmanager
def pillow_guard(limits: Limits) -> Iterator[None]:
    """Run Pillow code with its safety nets matching ``limits``.

    Sets ``Image.MAX_IMAGE_PIXELS`` to ``limits.max_pixels`` (restored on exit),
    turns ``DecompressionBombWarning`` into an exception (so it can never be
    ignored) and makes sure ``ImageFile.LOAD_TRUNCATED_IMAGES`` is off.
    Pillow keeps these as process-wide settings, so concurrent threads with
    *different* limits would interfere; workers decode in processes.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@contextmanager
def decoding(fmt: str) -> Iterator[None]:
    """Parse or decode untrusted ``fmt`` bytes with Pillow: every failure is classified.

    Pillow's plugins raise almost anything on malformed data (``SyntaxError``,
    ``OSError``, ``EOFError``, ``ValueError``, ``struct.error``, ``IndexError``,
    ``KeyError``, ``TypeError``, ``ZeroDivisionError``, ...; fuzzing found more), so
    whatever escapes becomes :class:`CorruptImage` (422). Our own errors pass
    through, Pillow's decompression-bomb checks become :class:`DecompressionBomb`
    and ``MemoryError`` escapes unchanged (an overloaded process, not a bad file).
    The original exception stays attached as ``__cause__``.
    """
    try:
        yield
    except (PixfleetError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb("image decodes to more pixels than allowed") from exc
    except Exception as exc:
        if isinstance(exc, ValueError) and "too large" in str(exc).lower():  # PNG text/ICC chunks past Pillow's cap
            raise DecompressionBomb("image metadata inflates beyond the safety limit") from exc
        raise CorruptImage(f"the {fmt} data cannot be decoded ({type(exc).__name__})") from exc


def too_many_pixels(width: int, height: int, limits: Limits) -> TooManyPixels:
    """The error for an image over ``limits.max_pixels``."""
    return TooManyPixels(
        f"image is {width}x{height} ({width * height:,} pixels); the limit is {limits.max_pixels:,} pixels"
    )


def probe_header(head: bytes, limits: Limits, *, complete: bool = False) -> Probe:
    """Format and size of an upload from its first bytes, without decoding pixels.

    ``head`` may be a prefix of the file (the API passes the first chunk,
    :data:`PROBE_BYTES` is plenty for nearly every file). Raises like
    :func:`detect_format`, and :class:`TooManyPixels` when the header declares
    more than ``limits.max_pixels``. The size is the stored one (before EXIF
    orientation), which is all a pixel limit needs.

    When Pillow cannot parse the header (whatever it raises): with ``complete``
    (``head`` is the whole file) the file is broken, :class:`CorruptImage`;
    otherwise the header may just be cut, so width and height are ``None`` and
    the worker enforces the limits after the full upload.
    """
    fmt = detect_format(head)
    try:
        with pillow_guard(limits), decoding(fmt):
            try:
                with Image.open(io.BytesIO(head), formats=PILLOW_FORMATS[fmt]) as im:
                    width, height = im.size
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                # Pillow's own check fired inside open(): the header declares too many pixels.
                raise TooManyPixels(f"image has more than {limits.max_pixels:,} pixels") from None
            except UnidentifiedImageError as exc:
                raise CorruptImage(f"the {fmt} header cannot be read") from exc
    except CorruptImage:
        if complete:
            raise
        return Probe(fmt, None, None)
    if width * height > limits.max_pixels:
        raise too_many_pixels(width, height, limits)
    return Probe(fmt, width, height)
