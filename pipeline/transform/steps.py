"""The small steps a transform is made of, one short function each.

Every step starts with "nothing to do → return the input unchanged" and never
modifies its input in place: images produced by resizing are shared between
variants (see :mod:`pipeline.transform.engine`), so a step that changes pixels
always returns a new image.

Two lists, assembled into the pipeline by the engine:

* :data:`SOURCE_STEPS` run once per job on the decoded (draft-scaled) source and
  take a :class:`Canvas` plus the :class:`SourceInfo`: orientation, colour
  profile, working pixel mode.
* :data:`FINISH_STEPS` run once per variant on its resized pixels and take the
  :class:`VariantSpec`: un-premultiply, grayscale, blur, sharpen, watermark,
  flatten onto the background, encoder pixel mode. :func:`encode` comes last.

Working modes after :func:`normalize_mode` are ``RGB``, ``L`` and the
*premultiplied* ``RGBa``/``La``: resampling premultiplied pixels keeps hidden
colours of transparent pixels from bleeding into edges, and converting once per
job is cheaper than Pillow's convert-resize-convert on every resize.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import cast

from PIL import Image, ImageCms, ImageColor, ImageDraw, ImageFilter, ImageFont

from pipeline.errors import UnsupportedFormat
from pipeline.transform.spec import VariantSpec

Box = tuple[float, float, float, float]

# What a viewer does to show a stored image with EXIF orientation 2..8.
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_AXES = frozenset({5, 6, 7, 8})

PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}
UNPREMULTIPLIED = {v: k for k, v in PREMULTIPLIED.items()}

JPEG_SUBSAMPLING_420 = 2
PNG_COMPRESS_LEVEL = 6
WEBP_METHOD = 4
AVIF_SPEED = 8
AVIF_THREADS = 1  # workers run one job per process and core; extra threads only add contention
# The widest/tallest image each encoder takes (libjpeg-turbo, libwebp, libavif; PNG's is 2**31 - 1). A
# fit variant with one free axis keeps the source's extent on it, so a long strip can exceed these;
# the engine refuses such a variant before rendering (OutputTooLarge).
MAX_OUTPUT_SIDE = {"jpeg": 65_500, "png": 2**31 - 1, "webp": 16_383, "avif": 65_536}


@dataclass(frozen=True)
class Canvas:
    """Decoded pixels plus ``box``: where the full source frame lies in ``image``.

    After a JPEG draft the decoded image may cover a fraction of a pixel more
    than the frame (its size is rounded up); resizing from ``box`` instead of
    the whole image keeps geometry exact.
    """

    image: Image.Image
    box: Box

    @classmethod
    def whole(cls, image: Image.Image) -> Canvas:
        return cls(image, (0.0, 0.0, float(image.width), float(image.height)))


@dataclass(frozen=True)
class SourceInfo:
    """Facts read from the source file before its pixels are touched."""

    orientation: int = 1
    icc_profile: bytes | None = None


# --- source steps (once per job) ---------------------------------------------------------------


def orient(canvas: Canvas, info: SourceInfo) -> Canvas:
    """Rotate/flip to the EXIF orientation so the pixels are upright (all 8 cases)."""
    method = ORIENTATION_TRANSPOSE.get(info.orientation)
    if method is None:
        return canvas
    return Canvas(canvas.image.transpose(method), transpose_box(canvas.box, canvas.image.size, method))


def transpose_box(box: Box, size: tuple[int, int], method: Image.Transpose) -> Box:
    """Where ``box`` of an image of ``size`` lands after ``image.transpose(method)``."""
    w, h = size
    mappers: dict[Image.Transpose, Callable[[float, float], tuple[float, float]]] = {
        Image.Transpose.FLIP_LEFT_RIGHT: lambda x, y: (w - x, y),
        Image.Transpose.FLIP_TOP_BOTTOM: lambda x, y: (x, h - y),
        Image.Transpose.ROTATE_180: lambda x, y: (w - x, h - y),
        Image.Transpose.ROTATE_90: lambda x, y: (y, w - x),
        Image.Transpose.ROTATE_270: lambda x, y: (h - y, x),
        Image.Transpose.TRANSPOSE: lambda x, y: (y, x),
        Image.Transpose.TRANSVERSE: lambda x, y: (h - y, w - x),
    }
    (ax, ay), (bx, by) = (mappers[method](box[0], box[1]), mappers[method](box[2], box[3]))
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def to_srgb(canvas: Canvas, info: SourceInfo) -> Canvas:
    """Convert from the embedded ICC profile to sRGB (RGB, RGBA and CMYK sources).

    Untagged and already-sRGB images are returned unchanged, and so are images
    whose profile is broken or does not match their pixel mode (those are
    treated as sRGB, like browsers do).
    """
    if not info.icc_profile or canvas.image.mode not in ("RGB", "RGBA", "CMYK"):
        return canvas
    transform = _srgb_transform(info.icc_profile, canvas.image.mode)
    if transform is None:
        return canvas
    converted = ImageCms.applyTransform(canvas.image, transform)
    return canvas if converted is None else replace(canvas, image=converted)


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=32)
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if space != {"RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK"}[mode]:
            return None
        out_mode = "RGBA" if mode == "RGBA" else "RGB"
        transform = ImageCms.buildTransform(profile, _srgb_profile(), mode, out_mode, ImageCms.Intent.PERCEPTUAL)
        if space == "RGB" and _is_identity(transform, mode):
            return None  # an sRGB profile (under whatever name): skip a full-image pass
        return transform
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _is_identity(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    """True when ``transform`` moves no colour of a 6×6×6 grid by more than one level."""
    levels = (0, 51, 102, 153, 204, 255)
    grid = bytes(v for r in levels for g in levels for b in levels for v in (r, g, b))
    probe = Image.frombytes("RGB", (len(grid) // 3, 1), grid)
    if mode == "RGBA":
        probe = probe.convert("RGBA")
    out = ImageCms.applyTransform(probe, transform)
    if out is None:
        return False
    return max(abs(a - b) for a, b in zip(probe.tobytes(), out.tobytes(), strict=True)) <= 1


def normalize_mode(canvas: Canvas, info: SourceInfo) -> Canvas:
    """Bring any decoded pixel mode to a working mode: ``RGB``, ``L``, ``RGBa`` or ``La``.

    Palette and ``tRNS`` transparency become alpha; fully opaque alpha is
    dropped; 16-bit samples are scaled (not clipped) to 8 bits; 1-bit becomes
    ``L``; CMYK without a usable profile is converted naively.
    """
    im = canvas.image
    if im.mode in ("RGB", "L") and "transparency" not in im.info:
        return canvas
    return replace(canvas, image=_working_mode(im))


def _working_mode(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode in ("RGBa", "La"):
        return im
    if mode.startswith("I;16"):
        return im.point(lambda v: v / 257).convert("L")
    if mode == "I":
        _, high = cast(tuple[int, int], im.getextrema())
        return (im.point(lambda v: v / 257) if high > 255 else im).convert("L")
    if mode == "F":
        _, high_f = cast(tuple[float, float], im.getextrema())
        return (im.point(lambda v: v * 255) if high_f <= 1.0 else im).convert("L")
    if mode == "1":
        return im.convert("L")
    if mode in ("P", "PA") or "transparency" in im.info:
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA"):
        if cast(tuple[tuple[int, int], ...], im.getextrema())[-1][0] == 255:  # alpha is fully opaque: drop it
            return im.convert("RGB" if mode == "RGBA" else "L")
        return im.convert(PREMULTIPLIED[mode])
    if mode in ("RGB", "L"):
        return im
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise UnsupportedFormat(f"pixel mode {mode} is not supported") from exc


SourceStep = Callable[[Canvas, SourceInfo], Canvas]
SOURCE_STEPS: tuple[SourceStep, ...] = (orient, to_srgb, normalize_mode)


# --- finishing steps (once per variant) -----------------------------------------------------------


def unpremultiply(im: Image.Image, spec: VariantSpec) -> Image.Image:
    """Premultiplied working pixels back to straight alpha (``RGBa`` → ``RGBA``)."""
    if im.mode not in UNPREMULTIPLIED:
        return im
    return im.convert(UNPREMULTIPLIED[im.mode])


def grayscale(im: Image.Image, spec: VariantSpec) -> Image.Image:
    """Luma only (``L``/``LA``), when the variant asks for it."""
    if not spec.grayscale or im.mode in ("L", "LA"):
        return im
    return im.convert("LA" if "A" in im.mode else "L")


def blur(im: Image.Image, spec: VariantSpec) -> Image.Image:
    """Gaussian blur with radius ``spec.blur`` output pixels."""
    if spec.blur <= 0:
        return im
    return im.filter(ImageFilter.GaussianBlur(spec.blur))


def sharpen(im: Image.Image, spec: VariantSpec) -> Image.Image:
    """Unsharp mask, radius 1 px, strength ``spec.sharpen`` × 100 %, threshold 2."""
    if spec.sharpen <= 0:
        return im
    return im.filter(ImageFilter.UnsharpMask(radius=1.0, percent=round(spec.sharpen * 100), threshold=2))


WATERMARK_OPACITY = 0.6


def watermark(im: Image.Image, spec: VariantSpec) -> Image.Image:
    """Semi-transparent white text with a soft dark outline, bottom-right, sized to the image."""
    if not spec.watermark:
        return im
    w, h = im.size
    margin = max(2, min(w, h) // 40)
    size = max(6.0, min(w, h) / 16)
    font = ImageFont.load_default(size=size)
    width = font.getlength(spec.watermark)
    if width > w - 2 * margin and width > 0:  # long text: shrink to fit the width
        size = max(4.0, size * (w - 2 * margin) / width)
        font = ImageFont.load_default(size=size)
    stroke = max(1, round(size / 12))
    left, top, right, bottom = (int(v) for v in font.getbbox(spec.watermark, stroke_width=stroke))
    tw, th = right - left, bottom - top
    if tw <= 0 or th <= 0:
        return im
    x, y = max(0, w - margin - tw), max(0, h - margin - th)
    shadow, text = Image.new("L", (tw, th)), Image.new("L", (tw, th))
    shade = round(255 * WATERMARK_OPACITY * 0.6)
    ImageDraw.Draw(shadow).text(
        (-left, -top), spec.watermark, font=font, fill=shade, stroke_width=stroke, stroke_fill=shade
    )
    ImageDraw.Draw(text).text((-left, -top), spec.watermark, font=font, fill=round(255 * WATERMARK_OPACITY))
    out = im.copy()
    out.paste(ImageColor.getcolor("#000000", out.mode), (x, y, x + tw, y + th), shadow)
    out.paste(ImageColor.getcolor("#ffffff", out.mode), (x, y, x + tw, y + th), text)
    return out


def flatten(im: Image.Image, spec: VariantSpec) -> Image.Image:
    """Composite transparent pixels onto ``spec.background`` for formats without alpha (JPEG)."""
    if spec.format != "jpeg" or im.mode not in ("RGBA", "LA"):
        return im
    opaque_mode = im.mode[:-1]
    out = Image.new(opaque_mode, im.size, ImageColor.getcolor(spec.background, opaque_mode))
    out.paste(im, (0, 0), im)
    return out


def encoder_mode(im: Image.Image, spec: VariantSpec) -> Image.Image:
    """WebP and AVIF only take RGB(A): widen grey images for them."""
    if spec.format not in ("webp", "avif") or im.mode not in ("L", "LA"):
        return im
    return im.convert("RGBA" if im.mode == "LA" else "RGB")


FinishStep = Callable[[Image.Image, VariantSpec], Image.Image]
FINISH_STEPS: tuple[FinishStep, ...] = (unpremultiply, grayscale, blur, sharpen, watermark, flatten, encoder_mode)


# --- encoding ------------------------------------------------------------------------------------


def encode(im: Image.Image, spec: VariantSpec, exif: bytes | None = None) -> bytes:
    """Encode ``im`` as ``spec.format``; ``exif`` is embedded only when given.

    Nothing else travels: the engine clears ``im.info``, so no ICC profile,
    XMP, comment or text chunk is written.
    """
    params: dict[str, object] = {}
    if spec.format == "jpeg":
        params = {
            "quality": spec.quality,
            "optimize": False,
            "progressive": spec.progressive,
            "subsampling": JPEG_SUBSAMPLING_420,
        }
    elif spec.format == "png":
        params = {"compress_level": PNG_COMPRESS_LEVEL}
    elif spec.format == "webp":
        params = {"quality": spec.quality, "method": WEBP_METHOD}
    elif spec.format == "avif":
        params = {"quality": spec.quality, "speed": AVIF_SPEED, "max_threads": AVIF_THREADS}
    if exif:
        params["exif"] = exif
    buf = io.BytesIO()
    im.save(buf, spec.format.upper(), **params)
    return buf.getvalue()
