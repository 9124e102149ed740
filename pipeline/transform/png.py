"""PNG pixels through libspng (the ``pyspng`` wheel) where it is exact and faster than Pillow.

Pillow stays the PNG parser: it opens the file, checks the header and reads every chunk
before the pixels (size, ``iCCP``, ``tRNS``, text limits). Only the pixel decode of plain
8-bit truecolour images (``RGB``/``RGBA``, no ``tRNS``, not animated) goes to libspng,
which is about twice as fast on the real-photo corpus (`pixfleet bench transform`:
e.g. 5120×2880 RGBA 208 → 128 ms, 1920×1080 RGB 46 → 21 ms; Pillow's decoder is
zlib-ng inflate plus per-row unfiltering and unpacking, libspng unfilters with SIMD).
Palette, grey, 16-bit, ``tRNS`` and APNG files keep Pillow's decoder (palette PNGs
decode faster there, since they stay one byte per pixel).

Everything else the engine reads from the opened image must stay valid without Pillow
decoding the pixels: Pillow only reaches chunks *after* the image data while decoding,
so a file with orientation metadata there (``eXIf``, XMP, "Raw profile type exif"
text) is left to Pillow, and otherwise the image's EXIF is marked as read (so
``getexif()`` does not decode the whole image again).

An image with an alpha channel that is opaque everywhere (most "RGBA" wallpapers and
screenshots) is returned as ``RGB``: the check costs 3 ms for 15 MP on the decoded array,
against 36 ms for ``Image.getextrema()``, and the working-mode step then has nothing to do.
"""

from __future__ import annotations

import struct
from functools import cache
from types import ModuleType

from PIL import Image

from pipeline.errors import CorruptImage

# Pillow's raw mode of the pixel data → what libspng is asked for.
_FORMATS = {"RGB": "RGB", "RGBA": "RGBA"}
_TRAILING_ORIENTATION_TEXT = (b"XML:com.adobe.xmp", b"Raw profile type exif", b"Raw profile type APP1")


@cache
def spng() -> ModuleType | None:
    """``pyspng``, imported on first use: it brings numpy (~20 MB), which only render processes need."""
    try:
        import pyspng
    except ImportError:  # pragma: no cover - a dependency of the package; without it Pillow decodes
        return None
    return pyspng


def fast_decodable(im: Image.Image) -> bool:
    """Whether :func:`decode` can deliver the pixels of ``im`` (an opened, unloaded PNG)."""
    if im.format != "PNG" or getattr(im, "is_animated", False) or spng() is None:
        return False
    tile = getattr(im, "tile", [])  # an opened ImageFile: how Pillow would decode the pixel data
    if "transparency" in im.info or len(tile) != 1:
        return False
    return tile[0].args in _FORMATS and im.mode == tile[0].args


def decode(im: Image.Image, data: bytes) -> Image.Image | None:
    """The pixels of ``im``, opened by Pillow from ``data``; None when Pillow must decode them.

    Raises :class:`~pipeline.errors.CorruptImage` when libspng cannot decode the data
    (truncated or corrupt), as Pillow's decoder would.
    """
    if not fast_decodable(im) or _orientation_after_pixels(data):
        return None
    mode = im.mode
    try:
        pixels = spng().load(data, _FORMATS[mode])  # type: ignore[union-attr]
    except (RuntimeError, ValueError, MemoryError) as exc:
        raise CorruptImage(f"image data is truncated or corrupt ({exc})") from exc
    if pixels.shape[:2] != (im.height, im.width):
        raise CorruptImage("image data does not match the PNG header")
    im.info.setdefault("exif", b"")  # no EXIF anywhere: Pillow's getexif() would decode to look for it
    image = Image.fromarray(pixels)  # RGBA shares the array's memory; RGB is unpacked to 4 bytes a pixel
    if mode == "RGBA" and int(pixels[..., 3].min()) == 255:
        return image.convert("RGB")  # 10 ms for 9 MP; a strided view of the array would cost 75
    return image


def _orientation_after_pixels(data: bytes) -> bool:
    """Whether a chunk after the first ``IDAT`` may carry EXIF orientation (Pillow reads those while decoding).

    Walks chunk headers only (lengths and names, no decompression).
    """
    pos, seen_pixels = 8, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IEND":
            return False
        if kind == b"IDAT":
            seen_pixels = True
        elif seen_pixels:
            if kind == b"eXIf":
                return True
            if kind in (b"tEXt", b"zTXt", b"iTXt"):
                keyword = data[pos + 8 : pos + 8 + min(length, 80)].split(b"\0", 1)[0]
                if keyword in _TRAILING_ORIENTATION_TEXT:
                    return True
        pos += 12 + length
    return False
