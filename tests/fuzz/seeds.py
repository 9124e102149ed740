"""Seed images for the decoders' fuzz harnesses: small, generated here, every format and flavour we accept.

Nothing third-party is committed: each seed is made with Pillow (and
``tests/images.py``) when a harness starts. Small sizes keep every execution
cheap; the flavours are what reaches different plugin code (progressive JPEG,
EXIF orientation, ICC, CMYK, 16-bit/palette/alpha PNG, APNG, animated GIF/WebP,
multi-page and 16-bit TIFF, palette and 1-bit BMP, AVIF).
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

from PIL import Image

from tests import images


def _save(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _frames(w: int, h: int, n: int, mode: str = "RGB") -> list[Image.Image]:
    return [Image.new(mode, (w, h), images.FRAME_COLORS[i % 6]) for i in range(n)]


@lru_cache(maxsize=1)
def image_seeds() -> tuple[tuple[str, bytes], ...]:
    """``(label, bytes)`` of every seed image, deterministic."""
    photo = images.photo_image(24, 16, seed=3)
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((24, 16)))
    grey16 = Image.linear_gradient("L").resize((16, 12)).convert("I;16")
    seeds = [
        ("jpeg-baseline", images.photo_jpeg(24, 16, quality=70)),
        ("jpeg-progressive", images.photo_jpeg(24, 16, progressive=True, quality=70)),
        ("jpeg-exif-6", images.photo_jpeg(16, 24, orientation=6, quality=70)),
        ("jpeg-icc", images.photo_jpeg(16, 16, icc="adobe", quality=70)),
        ("jpeg-cmyk", images.cmyk_jpeg(16, 16)),
        ("jpeg-grey", _save(photo.convert("L"), "JPEG", quality=70)),
        ("png-rgb", _save(photo, "PNG")),
        ("png-rgba", images.png_rgba(16, 12)),
        ("png-16-grey", images.png16(12, 8)),
        ("png-16-rgb", images.png16(8, 6, color=True)),
        ("png-palette-trns", images.palette_png(16, 8)),
        ("png-1bit", _save(photo.convert("1"), "PNG")),
        ("png-la", _save(rgba.convert("LA"), "PNG")),
        ("png-icc-text", _save(photo, "PNG", icc_profile=images.icc_profile("swap-rg"), exif=b"Exif\0\0")),
        ("apng", _save(_frames(8, 8, 1)[0], "PNG", save_all=True, append_images=_frames(8, 8, 3)[1:])),
        ("gif", _save(photo.convert("P"), "GIF")),
        ("gif-animated", images.animated_gif(8, 6, 3)),
        ("gif-transparent", _save(photo.convert("P"), "GIF", transparency=0)),
        ("webp-lossy", images.webp(16, 12, quality=50)),
        ("webp-lossless-alpha", _save(rgba, "WEBP", lossless=True)),
        ("webp-animated", images.animated_webp(8, 6, 3)),
        ("avif", _save(photo, "AVIF", quality=30)),
        ("tiff-rgb", _save(photo, "TIFF")),
        ("tiff-lzw", _save(photo, "TIFF", compression="tiff_lzw")),
        ("tiff-multipage", _save(_frames(8, 6, 1)[0], "TIFF", save_all=True, append_images=_frames(8, 6, 3)[1:])),
        ("tiff-16-grey", _save(grey16, "TIFF")),
        ("tiff-cmyk", _save(photo.convert("CMYK"), "TIFF")),
        ("tiff-g4", _save(photo.convert("1"), "TIFF", compression="group4")),
        ("bmp-rgb", _save(photo, "BMP")),
        ("bmp-palette", _save(photo.convert("P"), "BMP")),
        ("bmp-1bit", _save(photo.convert("1"), "BMP")),
    ]
    return tuple(seeds)


# Magic numbers and header fragments the decoders branch on (for libFuzzer's -dict).
IMAGE_TOKENS = (
    b"\xff\xd8\xff",
    b"\xff\xe0",
    b"\xff\xe1",
    b"\xff\xe2",
    b"\xff\xdb",
    b"\xff\xc0",
    b"\xff\xc2",
    b"\xff\xc4",
    b"\xff\xda",
    b"\xff\xd9",
    b"\xff\xee",
    b"Exif\x00\x00",
    b"ICC_PROFILE\x00",
    b"MPF\x00",
    b"Adobe",
    b"\x89PNG\r\n\x1a\n",
    b"IHDR",
    b"PLTE",
    b"tRNS",
    b"IDAT",
    b"IEND",
    b"iCCP",
    b"zTXt",
    b"iTXt",
    b"tEXt",
    b"eXIf",
    b"acTL",
    b"fcTL",
    b"fdAT",
    b"GIF89a",
    b"GIF87a",
    b"NETSCAPE2.0",
    b"\x21\xf9\x04",
    b"\x2c",
    b"RIFF",
    b"WEBP",
    b"VP8 ",
    b"VP8L",
    b"VP8X",
    b"ANIM",
    b"ANMF",
    b"ALPH",
    b"ftypavif",
    b"ftypavis",
    b"meta",
    b"ispe",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"\x28\x00\x00\x00",
    b"\x7c\x00\x00\x00",
)
