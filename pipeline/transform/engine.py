"""Render one source image into many variants with one decode.

The pipeline, in order (each step lives in :mod:`pipeline.transform.steps`):

1. **Limits before decode** — byte size, magic bytes, header dimensions and the
   frame count are checked before any pixel is decoded.
2. **Plan** — every variant's geometry (:func:`plan_geometry`) is computed
   from the upright source size; together they give the smallest resolution the
   decoder must deliver (:func:`plan_decode_size`).
3. **Decode once**, JPEGs at a draft scale: ``draft()`` makes libjpeg scale by
   1/2, 1/4 or 1/8 during the IDCT, but only by what :func:`pre_shrink` allows
   (enough ratio must be left for the final resample, or fine detail aliases),
   with the request rotated into stored axes when EXIF says the image is
   rotated. Plain 8-bit PNGs decode through libspng (:mod:`pipeline.transform.png`).
4. **Source steps** once: orientation, ICC → sRGB, working pixel mode.
5. **Resize chain**: variants are rendered largest first, each from the
   smallest already-resized *clean* intermediate that still has enough
   resolution (so ``w320`` is made from ``w800``, not from the 12 MP source):
   an integer box ``reduce()`` where :func:`pre_shrink` allows, then LANCZOS
   (see :data:`RESAMPLE`). Identical geometries are
   resized once (``w320`` JPEG and WebP share pixels). Fill crops are folded into
   the resize (``box=``), so cropped-away pixels are never resampled.
6. **Finishing steps** per variant on a new image (never on a shared
   intermediate), then encoding, with metadata stripped (or EXIF kept with
   orientation 1 when ``strip_metadata`` is false).

Animated inputs (GIF, WebP, APNG) and multi-page TIFFs are rendered from their
first frame only; the frame count is still checked against ``Limits.max_frames``
and reported in :attr:`TransformResult.frames`.
"""

from __future__ import annotations

import io
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from pipeline.errors import (
    CorruptImage,
    DecompressionBomb,
    OutputTooLarge,
    PayloadTooLarge,
    RetryableError,
    TooManyFrames,
    TooManyPixels,
)
from pipeline.transform import png, steps
from pipeline.transform.probe import PILLOW_FORMATS, decoding, detect_format, pillow_guard, too_many_pixels
from pipeline.transform.spec import Limits, VariantSpec
from pipeline.transform.steps import Canvas, SourceInfo

# Resampling, chosen with `pixfleet bench transform` on a real-photo corpus (SSIM of lossless
# renders against naive Pillow's full-size LANCZOS) and with generated worst cases (zone plate,
# fine stripes, text, thin waves; tests/test_quality.py):
# * LANCZOS for every resample. BICUBIC scores 0.92 on text shrunk 12× and 0.88 on coloured
#   stripes near the source's Nyquist, against the reference's own kernel; LANCZOS costs ~35 %
#   more taps, paid back by the cheap pre-shrinks it makes safe.
# * Pre-shrinking by an integer factor K before that — a JPEG's DCT scaling (``draft``: 2, 4, 8)
#   or Pillow's box ``reduce()`` (any K) — is nearly free but a poor low-pass filter: both alias
#   like a K×K box. LANCZOS cleans up after it only if enough ratio is left: K = 2 needs ≥ 3×
#   left (SSIM ≥ 0.989 on every worst case; 2× left: 0.948), K ≥ 3 needs ≥ 6× (K = 4 with 4×
#   left: 0.970 on text; the old draft to 1/8 with ~1× left: 0.31 on fine stripes, 0.93 on a
#   real 1680×1050 photo of dunes). libvips leaves 2× after shrink-on-load.
RESAMPLE = Image.Resampling.LANCZOS
PRE_SHRINK_2_KEEPS = 3.0
PRE_SHRINK_KEEPS = 6.0
_GRAVITY = {  # (x, y) anchor of the crop window: 0 = left/top, 0.5 = centre, 1 = right/bottom
    "center": (0.5, 0.5),
    "north": (0.5, 0.0),
    "south": (0.5, 1.0),
    "east": (1.0, 0.5),
    "west": (0.0, 0.5),
    "northeast": (1.0, 0.0),
    "northwest": (0.0, 0.0),
    "southeast": (1.0, 1.0),
    "southwest": (0.0, 1.0),
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Rendition:
    """One encoded output."""

    variant: str
    format: str
    width: int
    height: int
    data: bytes = field(repr=False)
    content_type: str
    extension: str


@dataclass(frozen=True)
class TransformResult:
    """Everything a job produced, renditions in the order the variants were given.

    ``source_width``/``source_height`` are the upright (post-orientation) size
    of the full-resolution source; ``decoded_width``/``decoded_height`` what the
    decoder actually delivered (smaller after a JPEG draft).
    """

    source_format: str
    source_width: int
    source_height: int
    frames: int
    renditions: list[Rendition]
    cpu_ms: float
    decoded_width: int
    decoded_height: int


@dataclass(frozen=True)
class Geometry:
    """Where a variant's pixels come from and how big it ends up.

    ``region`` is the part of the upright full-resolution source (float pixels)
    that is scaled to ``out``; ``scale`` is the resolution (output pixels per
    source pixel, per axis) the region needs.
    """

    out: tuple[int, int]
    region: tuple[float, float, float, float]
    full_frame: bool

    @property
    def scale(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.region
        return self.out[0] / (x1 - x0), self.out[1] / (y1 - y0)

    @property
    def uniform(self) -> bool:
        sx, sy = self.scale
        return math.isclose(sx, sy, rel_tol=0.02)


# --- planning (pure) ----------------------------------------------------------------------------


def plan_geometry(width: int, height: int, spec: VariantSpec) -> Geometry:
    """The geometry of ``spec`` applied to an upright ``width × height`` source.

    * ``fit``: the largest size inside the box keeping the aspect ratio.
    * ``fill``: the box, covered and cropped at ``spec.gravity``.
    * ``exact``: the box, stretched.

    Without ``spec.upscale`` nothing is enlarged: ``fit`` keeps the source size,
    ``fill`` and ``exact`` shrink the *box* (keeping its aspect ratio) until it
    fits inside the source.
    """
    full = (0.0, 0.0, float(width), float(height))
    tw, th = spec.width, spec.height
    if spec.mode == "fit":
        scale = min(tw / width if tw else math.inf, th / height if th else math.inf)
        if not spec.upscale or scale == math.inf:
            scale = min(scale, 1.0)
        out = (min(max(1, round(width * scale)), tw or 10**9), min(max(1, round(height * scale)), th or 10**9))
        return Geometry(out, full, True)
    assert tw is not None and th is not None, "fill/exact need both dimensions (validated by VariantSpec)"
    shrink = 1.0 if spec.upscale else min(1.0, width / tw, height / th)
    out = (max(1, round(tw * shrink)), max(1, round(th * shrink)))
    if spec.mode == "exact":
        return Geometry(out, full, True)
    cover = max(out[0] / width, out[1] / height)
    cw, ch = min(width, out[0] / cover), min(height, out[1] / cover)
    gx, gy = _GRAVITY[spec.gravity]
    x0, y0 = (width - cw) * gx, (height - ch) * gy
    return Geometry(out, (x0, y0, x0 + cw, y0 + ch), cw >= width - 1e-6 and ch >= height - 1e-6)


def plan_decode_size(width: int, height: int, geometries: Sequence[Geometry], orientation: int = 1) -> tuple[int, int]:
    """The smallest full-frame size, in *stored* axes, that serves every geometry.

    ``width``/``height`` are the upright source size; for EXIF orientations 5–8
    the request is swapped back because the decoder works on stored pixels.
    Passed to ``Image.draft``, which picks the largest DCT scale-down that stays
    at or above this size.
    """
    need_w = max((width * g.scale[0] for g in geometries), default=width)
    need_h = max((height * g.scale[1] for g in geometries), default=height)
    size = (min(width, max(1, math.ceil(need_w - 1e-6))), min(height, max(1, math.ceil(need_h - 1e-6))))
    return (size[1], size[0]) if orientation in steps.SWAPS_AXES else size


def pre_shrink(ratio: float) -> int:
    """The largest integer factor to box-shrink by (DCT scale or ``reduce()``) for a resize of ``ratio``.

    ``ratio`` is source pixels per output pixel along one axis; what is left after the
    shrink is resampled with LANCZOS and must stay at least :data:`PRE_SHRINK_2_KEEPS`
    (factor 2) or :data:`PRE_SHRINK_KEEPS` (larger factors).
    """
    if ratio >= 3 * PRE_SHRINK_KEEPS:
        return int(ratio / PRE_SHRINK_KEEPS + 1e-9)
    return 2 if ratio >= 2 * PRE_SHRINK_2_KEEPS - 1e-9 else 1


def draft_scale(width: int, height: int, need: tuple[int, int]) -> int:
    """The DCT scale-down (1, 2, 4 or 8) a JPEG of ``width × height`` is decoded at to serve ``need``."""
    factor = min(pre_shrink(width / need[0]), pre_shrink(height / need[1]))
    return next(k for k in (8, 4, 2, 1) if k <= factor)


def draft_request(im: Image.Image, variants: Sequence[VariantSpec]) -> tuple[int, int]:
    """The decode size (stored axes) the engine asks of ``im``, an opened but not loaded image.

    Only a JPEG's EXIF is known before decoding (and only a JPEG can use it for draft);
    other formats may keep it after the pixels (PNG eXIf), so they plan as orientation 1.
    The benchmark's "floor" decodes at exactly this size.
    """
    early = _orientation(im) if im.format in ("JPEG", "MPO") else 1
    need = plan_decode_size(*_upright(im.size, early), _plans(im.size, early, variants), early)
    k = draft_scale(im.width, im.height, need)
    return (im.width // k, im.height // k)  # Image.draft() picks the largest scale that stays at or above this


# --- the job ------------------------------------------------------------------------------------


def transform(
    data: bytes,
    variants: Sequence[VariantSpec],
    limits: Limits,
    *,
    deadline: float | None = None,
) -> TransformResult:
    """Decode ``data`` once and render every variant.

    Raises a :class:`~pipeline.errors.PermanentError` subclass for bad input
    (not an image, unsupported, corrupt, over a limit, decompression bomb) and for
    variants that would come out larger than their format holds or over the
    pixel limits (:class:`~pipeline.errors.OutputTooLarge`, see :func:`_check_outputs`). With
    ``deadline`` (a :func:`time.monotonic` value) it raises a
    :class:`~pipeline.errors.RetryableError` coded ``deadline_exceeded`` between
    steps once the deadline has passed.
    """
    started = time.process_time()
    check_deadline = _deadline_checker(deadline)
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"image is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes")
    fmt = detect_format(data[:4096])
    with pillow_guard(limits), decoding(fmt):  # whatever Pillow raises on these bytes is classified
        im = _open(data, fmt)
        stored_w, stored_h = im.size
        if stored_w * stored_h > limits.max_pixels:
            raise too_many_pixels(stored_w, stored_h, limits)
        frames = _frame_count(im)
        if frames > limits.max_frames:
            raise TooManyFrames(f"image has {frames} frames; the limit is {limits.max_frames}")
        stored = (stored_w, stored_h)
        canvas = _decode(im, draft_request(im, variants), data)
        orientation = _orientation(im)  # after load(): other formats may keep EXIF after the pixels
        width, height = _upright(stored, orientation)
        geometries = _plans(stored, orientation, variants)
        _check_outputs(variants, geometries, limits)
        info = SourceInfo(orientation=orientation, icc_profile=im.info.get("icc_profile"))
        exif = _kept_exif(im)
    decoded_w, decoded_h = canvas.image.size
    check_deadline()
    for step in steps.SOURCE_STEPS:
        canvas = step(canvas, info)
        check_deadline()
    canvas.image.info = {}  # nothing from the source travels by accident (ICC, XMP, comments...)

    chain = _ResizeChain(canvas, width, height)
    rendered: dict[int, Rendition] = {}
    order = sorted(range(len(variants)), key=lambda i: -(geometries[i].out[0] * geometries[i].out[1]))
    for i in order:
        spec, pixels = variants[i], chain.render(geometries[i])
        check_deadline()
        for finish in steps.FINISH_STEPS:
            pixels = finish(pixels, spec)
        payload = steps.encode(pixels, spec, exif=None if spec.strip_metadata else exif)
        rendered[i] = Rendition(
            spec.name, spec.format, pixels.width, pixels.height, payload, spec.content_type, spec.extension
        )
        check_deadline()
    return TransformResult(
        source_format=fmt,
        source_width=width,
        source_height=height,
        frames=frames,
        renditions=[rendered[i] for i in range(len(variants))],
        cpu_ms=(time.process_time() - started) * 1000,
        decoded_width=decoded_w,
        decoded_height=decoded_h,
    )


def _check_outputs(variants: Sequence[VariantSpec], geometries: Sequence[Geometry], limits: Limits) -> None:
    """Refuse, before rendering, variants their encoder cannot hold or that would take too many pixels.

    Upscaling can ask for any size: 8 variants of 7000x7000 from a 67-byte PNG took 7.6 s and
    1.5 GB. So each variant is at most ``limits.max_pixels`` and the distinct sizes of a job
    (variants of one geometry share their pixels) at most twice that: a full-size JPEG and WebP
    of the largest source still fit, with room for smaller ones.
    """
    distinct: dict[tuple, int] = {}
    for spec, g in zip(variants, geometries, strict=True):
        size, pixels = f"{g.out[0]}x{g.out[1]}", g.out[0] * g.out[1]
        side = steps.MAX_OUTPUT_SIDE[spec.format]
        if max(g.out) > side:
            raise OutputTooLarge(f"variant {spec.name!r} would be {size}; {spec.format} holds at most {side:,} a side")
        if pixels > limits.max_pixels:
            raise OutputTooLarge(f"variant {spec.name!r} would be {size}; the limit is {limits.max_pixels:,} pixels")
        distinct[(g.out, tuple(round(v, 3) for v in g.region))] = pixels
    if sum(distinct.values()) > 2 * limits.max_pixels:
        raise OutputTooLarge(
            f"the variants would total {sum(distinct.values()):,} pixels; the limit is {2 * limits.max_pixels:,}"
        )


class _ResizeChain:
    """Clean (unfinished) downscaled intermediates, reused by smaller variants.

    Only full-frame, uniformly scaled results join the chain; crops, stretches
    and enlargements are rendered from it but never become sources themselves.
    """

    def __init__(self, source: Canvas, width: int, height: int):
        self.width, self.height = width, height
        self.nodes = [source]
        self.source_scale = max(1.0, width / (source.box[2] - source.box[0]))  # the DCT scale-down, if any
        self.cache: dict[tuple, Image.Image] = {}

    def render(self, g: Geometry) -> Image.Image:
        key = (g.out, tuple(round(v, 3) for v in g.region))
        if key in self.cache:
            return self.cache[key]
        src = self._source_for(g)
        box = self._region_in(src, g.region)
        if src.image.size == g.out and box == (0.0, 0.0, float(g.out[0]), float(g.out[1])):
            pixels = src.image  # already exactly this size: share, steps never modify in place
        else:
            pixels = src.image.resize(g.out, RESAMPLE, box=box, reducing_gap=self._gap(src, box, g.out))
        self.cache[key] = pixels
        base = self.nodes[0]
        if g.full_frame and g.uniform and g.out[0] <= base.box[2] - base.box[0] and pixels is not src.image:
            self.nodes.append(Canvas.whole(pixels))
        return pixels

    def _gap(self, src: Canvas, box: tuple[float, float, float, float], out: tuple[int, int]) -> float | None:
        """Pillow's ``reducing_gap`` that makes it box-reduce by :func:`pre_shrink`'s factor, or None.

        The decoded source may already be DCT-scaled by ``k``: a further reduce counts with it
        (2 then 2 aliases like 4), so the factor is taken on the ratio to the full-size image.
        """
        rx, ry = (box[2] - box[0]) / out[0], (box[3] - box[1]) / out[1]
        k = self.source_scale if src is self.nodes[0] else 1.0
        fx, fy = (max(1, int(pre_shrink(r * k) / k + 1e-9)) for r in (rx, ry))
        if fx == 1 and fy == 1:
            return None
        return max(rx / (fx + 0.999), ry / (fy + 0.999))  # Pillow reduces by int(ratio / gap) per axis

    def _source_for(self, g: Geometry) -> Canvas:
        """The smallest node whose resolution is at least what ``g`` needs (else the source)."""
        sx, sy = g.scale
        need_w, need_h = self.width * sx - 1e-6, self.height * sy - 1e-6
        fits = [n for n in self.nodes if n.box[2] - n.box[0] >= need_w and n.box[3] - n.box[1] >= need_h]
        return min(fits, key=lambda n: n.image.width * n.image.height) if fits else self.nodes[0]

    def _region_in(self, node: Canvas, region: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        bx0, by0, bx1, by1 = node.box
        kx, ky = (bx1 - bx0) / self.width, (by1 - by0) / self.height
        x0, y0, x1, y1 = region
        return (bx0 + x0 * kx, by0 + y0 * ky, bx0 + x1 * kx, by0 + y1 * ky)


def _upright(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in steps.SWAPS_AXES else size


def _plans(stored: tuple[int, int], orientation: int, variants: Sequence[VariantSpec]) -> list[Geometry]:
    width, height = _upright(stored, orientation)
    return [plan_geometry(width, height, spec) for spec in variants]


# --- decoding helpers ----------------------------------------------------------------------------

# What Pillow plugins raise on malformed data (besides UnidentifiedImageError).
_CORRUPT = (
    OSError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    ValueError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)


def _open(data: bytes, fmt: str) -> Image.Image:
    """Parse the header (no pixels) with the one Pillow plugin the magic bytes allow."""
    try:
        return Image.open(io.BytesIO(data), formats=PILLOW_FORMATS[fmt])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels("image declares more pixels than allowed") from None
    except UnidentifiedImageError as exc:
        raise CorruptImage(f"the {fmt} header cannot be read") from exc
    except ValueError as exc:
        if "too large" in str(exc).lower():
            raise DecompressionBomb("image metadata inflates beyond the safety limit") from exc
        raise CorruptImage(f"the {fmt} header is invalid") from exc
    except _CORRUPT as exc:
        raise CorruptImage(f"the {fmt} header is invalid") from exc


def _frame_count(im: Image.Image) -> int:
    try:
        return int(getattr(im, "n_frames", 1))
    except _CORRUPT as exc:
        raise CorruptImage("the frame structure is invalid") from exc


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except _CORRUPT:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _kept_exif(im: Image.Image) -> bytes | None:
    """The source EXIF with orientation reset to 1 (for ``strip_metadata=False``), if it had any."""
    if not im.info.get("exif"):
        return None
    try:
        exif = im.getexif()
        exif[_EXIF_ORIENTATION] = 1
        return exif.tobytes()
    except _CORRUPT:
        return None


def _decode(im: Image.Image, request: tuple[int, int], data: bytes) -> Canvas:
    """Decode the first frame, JPEGs at the coarsest DCT scale still ≥ ``request``, plain PNGs with libspng."""
    box: tuple[float, float, float, float] = (0.0, 0.0, float(im.width), float(im.height))
    if im.format == "PNG" and (pixels := png.decode(im, data)) is not None:
        return Canvas(pixels, box)
    if im.format in ("JPEG", "MPO"):
        drafted = im.draft("RGB", request)
        if drafted is not None:
            box = tuple(float(v) for v in drafted[1])  # type: ignore[assignment]
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb("image decodes to more pixels than allowed") from exc
    except ValueError as exc:
        if "too large" in str(exc).lower():
            raise DecompressionBomb("image data inflates beyond the safety limit") from exc
        raise CorruptImage("image data is invalid") from exc
    except _CORRUPT as exc:
        raise CorruptImage(f"image data is truncated or corrupt ({exc})") from exc
    return Canvas(im, box)


def _deadline_checker(deadline: float | None):
    def check() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise RetryableError("transform exceeded its deadline", code="deadline_exceeded")

    return check
