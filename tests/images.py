"""Test image factories: real image *bytes*, built with Pillow, deterministic from a seed.

Every factory is a pure function (same arguments → same bytes) and writes no
files. Photo-like images mix gradients, shapes, fine lines and noise so that
resampling differences show up in SSIM; flat images would hide them.

``orientation`` (EXIF 1..8) stores the pixels so that a viewer honouring the tag
shows the *upright* ``w × h`` picture: the factory paints the upright picture,
then applies the inverse of the tag's transform before encoding.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache, cache

from PIL import Image, ImageCms

from pixfleet import samples

# The transform a viewer applies to *display* a stored image with a given EXIF orientation.
DISPLAY_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# ... and its inverse, used to produce the stored pixels.
_STORE_TRANSPOSE = {
    **DISPLAY_TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}

MARKER_COLOR = (255, 0, 0)


# --- content ----------------------------------------------------------------------------------


# The photo-like content is the package's own (the demo and load tests generate it too).
photo_image = samples.photo_image


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "pixfleet-test-camera"  # Make: proves EXIF is stripped, not just orientation
    return exif.tobytes()


# --- ICC profiles -----------------------------------------------------------------------------


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _rgb_icc(description: str, red, green, blue, gamma: float) -> bytes:
    """A minimal ICC v2 matrix/TRC display profile (D50 colorants, one gamma)."""
    desc_ascii = description.encode() + b"\0"
    # textDescriptionType: ASCII part, then empty Unicode and ScriptCode parts.
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(desc_ascii)) + desc_ascii + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0public domain test profile\0"),
        (b"wtpt", _xyz(0.9642, 1.0, 0.82491)),
        (b"rXYZ", _xyz(*red)),
        (b"gXYZ", _xyz(*green)),
        (b"bXYZ", _xyz(*blue)),
        (b"rTRC", curv),
        (b"gTRC", curv),
        (b"bTRC", curv),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + bytes((2, 0x10, 0, 0))
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24
        + b"\0\0\0\0"  # rendering intent
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.82491)
        + b"\0" * 4
    )
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


_SRGB_D50 = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
_ADOBE_D50 = ((0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087), (0.14919, 0.06322, 0.74457))


@cache
def icc_profile(kind: str) -> bytes:
    """ICC profile bytes: ``"srgb"`` (lcms built-in), ``"adobe"`` (Adobe RGB 1998-like),
    ``"swap-rg"`` (sRGB with red and green primaries swapped: stored red shows as green)."""
    if kind == "srgb":
        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if kind == "adobe":
        return _rgb_icc("Adobe RGB (1998) test", *_ADOBE_D50, gamma=563 / 256)
    if kind == "swap-rg":
        r, g, b = _SRGB_D50
        return _rgb_icc("swapped red/green test", g, r, b, gamma=2.2)
    raise ValueError(f"unknown ICC kind {kind!r}")


# --- factories --------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def photo_jpeg(
    w: int,
    h: int,
    *,
    progressive: bool = False,
    orientation: int | None = None,
    icc: str | bytes | None = None,
    quality: int = 90,
    seed: int = 0,
    marker: bool = False,
) -> bytes:
    """A photo-like JPEG that *displays* as ``w × h`` (see module docstring for ``orientation``)."""
    im = photo_image(w, h, seed=seed, marker=marker)
    params: dict = {"quality": quality, "progressive": progressive}
    if orientation is not None:
        if orientation in _STORE_TRANSPOSE:
            im = im.transpose(_STORE_TRANSPOSE[orientation])
        params["exif"] = _exif_with_orientation(orientation)
    if icc is not None:
        params["icc_profile"] = icc if isinstance(icc, bytes) else icc_profile(icc)
    return _encode(im, "JPEG", **params)


def solid(
    w: int, h: int, color: tuple[int, ...] | int, *, fmt: str = "PNG", mode: str = "RGB", icc: str | None = None
) -> bytes:
    """A flat-colour image in any Pillow format (``fmt``), optionally tagged with an ICC profile."""
    im = Image.new(mode, (w, h), color)
    params = {"icc_profile": icc_profile(icc)} if icc else {}
    return _encode(im, fmt, **params)


def cmyk_jpeg(w: int, h: int, *, seed: int = 0) -> bytes:
    """A CMYK JPEG (Pillow writes the Adobe APP14 marker and inverted CMYK, like Photoshop).

    The left quarter is pure red (C=0 M=255 Y=255 K=0) so colour handling can be checked.
    """
    rgb = photo_image(w, h, seed=seed)
    rgb.paste((255, 0, 0), (0, 0, max(1, w // 4), h))
    return _encode(rgb.convert("CMYK"), "JPEG", quality=92)


def cmyk_reference(w: int, h: int, *, seed: int = 0) -> Image.Image:
    """The RGB picture :func:`cmyk_jpeg` was made from (for comparisons)."""
    rgb = photo_image(w, h, seed=seed)
    rgb.paste((255, 0, 0), (0, 0, max(1, w // 4), h))
    return rgb


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(w: int, h: int, bit_depth: int, color_type: int, rows, extra_chunks: bytes = b"") -> bytes:
    comp = zlib.compressobj(6)
    idat = b"".join(comp.compress(b"\0" + row) for row in rows) + comp.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
        + extra_chunks
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png16(w: int, h: int, *, color: bool = False) -> bytes:
    """A 16-bit PNG with a horizontal ramp 0..65535 (grey, or RGB with R=ramp, G=65535-ramp, B=32768).

    The expected 8-bit value at column ``x`` is ``png16_value(x, w) / 257`` (rounded).
    """
    values = [png16_value(x, w) for x in range(w)]
    if color:
        row = b"".join(struct.pack(">HHH", v, 65535 - v, 32768) for v in values)
        return _png(w, h, 16, 2, [row] * h)
    row = struct.pack(f">{w}H", *values)
    return _png(w, h, 16, 0, [row] * h)


def png16_value(x: int, w: int) -> int:
    """The 16-bit sample :func:`png16` stores at column ``x``."""
    return round(x * 65535 / max(1, w - 1))


def png_rgba(w: int, h: int, *, seed: int = 0) -> bytes:
    """An RGBA PNG: photo content on the right half, fully transparent left half
    (its hidden colour is pure green, which must never show), half-transparent band at the bottom."""
    im = photo_image(w, h, seed=seed).convert("RGBA")
    alpha = Image.new("L", (w, h), 255)
    alpha.paste(0, (0, 0, w // 2, h))
    alpha.paste(128, (w // 2, h - max(1, h // 8), w, h))
    hidden = Image.new("RGB", (w // 2, h), (0, 255, 0))
    im.paste(hidden, (0, 0))
    im.putalpha(alpha)
    return _encode(im, "PNG")


def palette_png(w: int, h: int) -> bytes:
    """A palette PNG with a transparent index (left half transparent, right half blue)."""
    im = Image.new("P", (w, h), 0)
    im.putpalette([0, 255, 0, 0, 0, 255] + [0] * (254 * 3))
    im.paste(1, (w // 2, 0, w, h))
    return _encode(im, "PNG", transparency=0)


FRAME_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255))


def animated_gif(w: int, h: int, frames: int = 3) -> bytes:
    """An animated GIF whose frame ``i`` is flat ``FRAME_COLORS[i % 6]`` (frame 0 is red)."""
    ims = [Image.new("RGB", (w, h), FRAME_COLORS[i % len(FRAME_COLORS)]) for i in range(frames)]
    return _encode(ims[0], "GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)


def animated_webp(w: int, h: int, frames: int = 3) -> bytes:
    """An animated WebP, frame colours as :func:`animated_gif`."""
    ims = [Image.new("RGB", (w, h), FRAME_COLORS[i % len(FRAME_COLORS)]) for i in range(frames)]
    return _encode(ims[0], "WEBP", save_all=True, append_images=ims[1:], duration=100, lossless=True)


def webp(w: int, h: int, *, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-like lossy WebP."""
    return _encode(photo_image(w, h, seed=seed), "WEBP", quality=quality)


def encode_photo(w: int, h: int, fmt: str, *, seed: int = 0) -> bytes:
    """Photo-like content in any format Pillow can write (``"PNG"``, ``"TIFF"``, ``"BMP"``, ``"AVIF"``...)."""
    return _encode(photo_image(w, h, seed=seed), fmt)


def truncated_jpeg(w: int = 400, h: int = 300) -> bytes:
    """A JPEG cut in the middle of its entropy-coded data (header intact)."""
    data = photo_jpeg(w, h)
    return data[: len(data) // 2]


def not_an_image() -> bytes:
    """Plain text."""
    return b"hello, I am definitely not an image\n" * 4


def heic_like() -> bytes:
    """The start of an HEIC file: an ISO-BMFF ``ftyp`` box with brand ``heic``."""
    ftyp = b"ftypheic" + b"\0\0\0\0" + b"mif1heic"
    return struct.pack(">I", len(ftyp) + 4) + ftyp + b"\0\0\0\x08free" + b"\0" * 64


@lru_cache(maxsize=8)
def pixel_bomb_png(w: int = 20_000, h: int = 20_000) -> bytes:
    """A valid, complete 1-bit PNG of ``w × h`` black pixels: a few tens of KiB on disk,
    hundreds of megabytes once decoded."""
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (w + 7) // 8)
    block = row * 256
    parts = [comp.compress(block) for _ in range(h // 256)]
    parts.append(comp.compress(row * (h % 256)))
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


@lru_cache(maxsize=1)
def zip_bomb_png() -> bytes:
    """A tiny 8×8 PNG carrying a zTXt chunk that inflates to 64 MiB (a decompression bomb
    in the metadata, not in the pixels)."""
    comp = zlib.compressobj(9)
    text = comp.compress(b"\0" * (64 * 1024 * 1024)) + comp.flush()
    ztxt = _png_chunk(b"zTXt", b"Comment\0\0" + text)
    return _png(8, 8, 8, 0, [b"\x80" * 8] * 8, extra_chunks=ztxt)


def stripes(
    w: int, h: int, colors=((255, 0, 0), (0, 255, 0), (0, 0, 255)), *, vertical: bool = False, fmt: str = "PNG"
) -> bytes:
    """Equal flat stripes, left→right (or top→bottom with ``vertical``), to check crop gravity."""
    im = Image.new("RGB", (w, h))
    n = len(colors)
    for i, color in enumerate(colors):
        box = (0, h * i // n, w, h * (i + 1) // n) if vertical else (w * i // n, 0, w * (i + 1) // n, h)
        im.paste(color, box)
    return _encode(im, fmt)
