"""Sample images for the demo and the load tests: real image bytes, made with Pillow, deterministic.

Same arguments (and seed) → same bytes. Photo-like pictures mix gradients, shapes,
fine lines and grain, so the workers do the work a real photo costs; flat images
would compress to nothing and resize for free.

* :func:`demo_samples` — a small varied set: landscape and portrait photos in JPEG,
  PNG and WebP, an EXIF-rotated JPEG, a transparent PNG and one *poison* file (a
  truncated JPEG that passes the API's magic-byte check and fails in the worker
  with ``corrupt_image``).
* :func:`load_pool` — photos of mixed sizes and formats for ``pixfleet load``.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from pipeline.transform.media import EXTENSIONS, MEDIA_TYPES


# How a stored image must be transposed so that a viewer honouring the EXIF tag shows it upright.
_STORE_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class Sample:
    """One input image: its file name, bytes, and what the pipeline should make of it."""

    name: str
    data: bytes
    content_type: str
    description: str
    width: int  # as displayed (after EXIF orientation)
    height: int
    expect: str = "succeeded"  # or "failed"
    expect_error: str | None = None  # the error code a failing sample should get

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.name
        path.write_bytes(self.data)
        return path


# --- content ----------------------------------------------------------------------------------


def photo_image(w: int, h: int, *, seed: int = 0, marker: bool = False) -> Image.Image:
    """A photo-like RGB :class:`Image` (gradients, shapes, lines, texture, grain).

    Shapes are drawn at half resolution and enlarged, which softens their edges
    the way a lens does; texture and grain are added at full resolution.
    With ``marker`` a pure red square is painted in the top-left corner (side
    ``min(w, h) // 5``) so that corner can be found after orientation.
    """
    rng = random.Random(seed)
    sw, sh = max(1, w // 2), max(1, h // 2)
    # 256-level gradients: NEAREST enlarges them as well as any filter would, and fast.
    gx = Image.linear_gradient("L").resize((sw, sh), Image.Resampling.NEAREST)
    gy = Image.linear_gradient("L").rotate(90).resize((sw, sh), Image.Resampling.NEAREST)
    gd = Image.radial_gradient("L").resize((sw, sh), Image.Resampling.NEAREST)
    im = Image.merge("RGB", (gx, gy, gd))
    draw = ImageDraw.Draw(im)
    unit = max(2, min(sw, sh) // 12)
    for _ in range(40):
        x, y = rng.randrange(sw), rng.randrange(sh)
        rx, ry = rng.randint(unit // 2, unit * 3), rng.randint(unit // 2, unit * 3)
        color = (rng.randrange(40, 220), rng.randrange(40, 256), rng.randrange(40, 256))
        shape = rng.choice(("ellipse", "rectangle", "polygon"))
        if shape == "ellipse":
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=color)
        elif shape == "rectangle":
            draw.rectangle((x - rx, y - ry, x + rx, y + ry), fill=color)
        else:
            pts = [(x + rng.randint(-rx, rx), y + rng.randint(-ry, ry)) for _ in range(5)]
            draw.polygon(pts, fill=color)
    for _ in range(60):  # fine detail: thin lines
        pts = [(rng.randrange(sw), rng.randrange(sh)) for _ in range(2)]
        draw.line(pts, fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)), width=rng.randint(1, 2))
    im = im.resize((w, h), Image.Resampling.BILINEAR)
    # Texture: noise correlated over a few pixels (like foliage, skin, demosaiced sensor noise)
    # plus a little per-pixel grain, mixed as grey and blended over the picture once.
    texture = Image.frombytes("L", (w, h), rng.randbytes(w * h)).filter(ImageFilter.BoxBlur(1))
    texture = texture.point(lambda v: max(0, min(255, 128 + (v - 128) * 4)))
    grain = Image.frombytes("L", (w, h), rng.randbytes(w * h))
    noise = Image.blend(texture, grain, 0.25)
    im = Image.blend(im, Image.merge("RGB", (noise, noise, noise)), 0.08)
    if marker:
        side = max(2, min(w, h) // 5)
        im.paste((255, 0, 0), (0, 0, side, side))
    return im


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def photo(
    w: int, h: int, fmt: str = "JPEG", *, seed: int = 0, orientation: int | None = None, quality: int = 88
) -> bytes:
    """A photo-like image that *displays* as ``w × h`` in ``fmt`` (JPEG, PNG or WEBP).

    With ``orientation`` (EXIF 2..8, JPEG only) the pixels are stored transposed and
    the tag says how to show them upright — as a phone camera does.
    """
    im = photo_image(w, h, seed=seed, marker=orientation is not None)
    params: dict[str, object] = {}
    if fmt == "JPEG":
        params = {"quality": quality, "progressive": seed % 2 == 1}
        if orientation is not None:
            im = im.transpose(_STORE_TRANSPOSE[orientation])
            exif = Image.Exif()
            exif[0x0112] = orientation
            exif[0x010F] = "pixfleet sample camera"
            params["exif"] = exif.tobytes()
    elif fmt == "WEBP":
        params = {"quality": quality}
    elif fmt == "PNG":
        params = {"compress_level": 3}
    return _encode(im, fmt, **params)


def transparent_png(w: int, h: int, *, seed: int = 0) -> bytes:
    """An RGBA PNG: a photo inside a soft-edged transparent ellipse (a cut-out, like a product shot)."""
    im = photo_image(w, h, seed=seed).convert("RGBA")
    alpha = Image.new("L", (w, h), 0)
    inset = min(w, h) // 10
    ImageDraw.Draw(alpha).ellipse((inset, inset, w - inset, h - inset), fill=255)
    im.putalpha(alpha.filter(ImageFilter.GaussianBlur(max(1, inset // 4))))
    return _encode(im, "PNG", compress_level=3)


def poison_jpeg(w: int = 800, h: int = 600, *, seed: int = 0) -> bytes:
    """A JPEG cut in the middle of its entropy-coded data: its header (magic bytes, size) is intact,
    so the API accepts it; decoding fails in the worker (``corrupt_image``)."""
    data = photo(w, h, "JPEG", seed=seed)
    return data[: len(data) // 2]


# --- sets ---------------------------------------------------------------------------------------


def demo_samples(seed: int = 0) -> list[Sample]:
    """The demo's inputs: varied photos, an EXIF-rotated one, a transparent PNG and one poison file."""
    s = seed * 10
    return [
        Sample(
            "01-landscape.jpg",
            photo(1600, 1067, "JPEG", seed=s + 1),
            "image/jpeg",
            "photo-like JPEG, landscape",
            1600,
            1067,
        ),
        Sample(
            "02-portrait-exif-rotated.jpg",
            photo(900, 1200, "JPEG", seed=s + 2, orientation=6),
            "image/jpeg",
            "JPEG stored sideways with EXIF orientation 6 (red marker top-left when upright)",
            900,
            1200,
        ),
        Sample(
            "03-transparent.png",
            transparent_png(800, 600, seed=s + 3),
            "image/png",
            "RGBA PNG with a transparent background",
            800,
            600,
        ),
        Sample(
            "04-square.webp", photo(1024, 1024, "WEBP", seed=s + 4), "image/webp", "photo-like WebP, square", 1024, 1024
        ),
        Sample(
            "05-screenshot-like.png",
            photo(1280, 720, "PNG", seed=s + 5),
            "image/png",
            "photo-like PNG, 16:9",
            1280,
            720,
        ),
        Sample(
            "06-small.jpg", photo(480, 320, "JPEG", seed=s + 6), "image/jpeg", "small JPEG (never enlarged)", 480, 320
        ),
        Sample(
            "07-poison-truncated.jpg",
            poison_jpeg(800, 600, seed=s + 7),
            "image/jpeg",
            "poison: a JPEG cut in half (valid header, broken data)",
            800,
            600,
            expect="failed",
            expect_error="corrupt_image",
        ),
    ]


LOAD_SIZES = ((320, 240), (640, 480), (800, 600), (1024, 768), (1280, 960), (1600, 1200), (600, 800), (1080, 1080))
LOAD_FORMATS = (("JPEG", 6), ("WEBP", 3), ("PNG", 1))  # (format, weight)


def load_pool(seed: int = 0, count: int = 12) -> list[Sample]:
    """``count`` photos of mixed sizes and formats (mostly JPEG, some WebP and PNG; PNGs kept small)."""
    rng = random.Random(seed)
    formats = [fmt for fmt, weight in LOAD_FORMATS for _ in range(weight)]
    pool = []
    for i in range(count):
        fmt = rng.choice(formats)
        w, h = rng.choice(LOAD_SIZES[:4] if fmt == "PNG" else LOAD_SIZES)
        orientation = rng.choice((None, None, None, 6, 8)) if fmt == "JPEG" else None
        data = photo(w, h, fmt, seed=seed * 1000 + i, orientation=orientation)
        name = f"load-{i:03d}-{w}x{h}.{EXTENSIONS[fmt.lower()]}"
        pool.append(Sample(name, data, MEDIA_TYPES[fmt.lower()], f"photo-like {fmt} {w}×{h}", w, h))
    return pool


def poison_sample(seed: int = 0) -> Sample:
    """The poison file as a :class:`Sample` (for failure drills in load tests)."""
    return Sample(
        "poison-truncated.jpg",
        poison_jpeg(seed=seed),
        "image/jpeg",
        "truncated JPEG",
        800,
        600,
        expect="failed",
        expect_error="corrupt_image",
    )
