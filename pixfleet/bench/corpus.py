"""A generated stand-in for a corpus of real photographs, reproducible from a seed.

The benchmarks are meant to run on real photographs (``pixfleet bench transform
DIR``); this module writes a stand-in for CI and for machines without one: a mix
of baseline and progressive JPEGs from 5 to 50 MP (one rotated by EXIF, as
portrait camera shots are), plus a PNG and a WebP.

The pictures imitate what a camera delivers rather than worst-case noise: a soft
low-frequency scene (sky-like gradients, blurred shapes), mid-frequency texture
(foliage, fabric), sharp edges and thin lines, and a little per-pixel sensor
grain, encoded at camera quality (JPEG q92, 4:2:0). Everything is drawn with
Pillow from :class:`random.Random` bytes, so the same seed gives the same files.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class CorpusImage:
    """One file of the stand-in corpus."""

    name: str
    width: int
    height: int
    format: str  # "jpeg" | "png" | "webp"
    progressive: bool = False
    orientation: int = 1

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


# 5-50 MP, like the cameras and phones that upload to us; stored size (before EXIF rotation).
DEFAULT_CORPUS = (
    CorpusImage("01-5mp-baseline.jpg", 2752, 1840, "jpeg"),
    CorpusImage("02-8mp-progressive.jpg", 3456, 2304, "jpeg", progressive=True),
    CorpusImage("03-12mp-baseline.jpg", 4000, 3000, "jpeg"),
    CorpusImage("04-12mp-portrait-exif6.jpg", 4032, 3024, "jpeg", orientation=6),
    CorpusImage("05-16mp-progressive.jpg", 4928, 3264, "jpeg", progressive=True),
    CorpusImage("06-24mp-baseline.jpg", 6000, 4000, "jpeg"),
    CorpusImage("07-33mp-progressive.jpg", 7008, 4672, "jpeg", progressive=True),
    CorpusImage("08-50mp-baseline.jpg", 8640, 5760, "jpeg"),
    CorpusImage("09-6mp.png", 3000, 2000, "png"),
    CorpusImage("10-9mp.webp", 3680, 2456, "webp"),
)


def scaled(corpus: tuple[CorpusImage, ...], scale: float) -> tuple[CorpusImage, ...]:
    """The same corpus with every side multiplied by ``scale`` (tests use tiny ones)."""
    if scale == 1.0:
        return corpus
    return tuple(
        CorpusImage(
            c.name,
            max(64, round(c.width * scale)),
            max(48, round(c.height * scale)),
            c.format,
            c.progressive,
            c.orientation,
        )
        for c in corpus
    )


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like RGB picture of ``width × height`` (see the module docstring)."""
    rng = random.Random(seed)
    # 1. The scene at 1/4 resolution: sky-like gradients and soft shapes.
    sw, sh = max(8, width // 4), max(8, height // 4)
    top = [rng.randrange(60, 200) for _ in range(3)]
    bottom = [rng.randrange(20, 160) for _ in range(3)]
    ramp = Image.linear_gradient("L").resize((sw, sh), Image.Resampling.BILINEAR)
    scene = Image.composite(Image.new("RGB", (sw, sh), tuple(bottom)), Image.new("RGB", (sw, sh), tuple(top)), ramp)
    draw = ImageDraw.Draw(scene)
    unit = max(2, min(sw, sh) // 10)
    for _ in range(30):
        x, y = rng.randrange(sw), rng.randrange(sh)
        rx, ry = rng.randint(unit // 2, unit * 4), rng.randint(unit // 2, unit * 3)
        color = tuple(rng.randrange(20, 240) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=color)
        else:
            draw.polygon([(x + rng.randint(-rx, rx), y + rng.randint(-ry, ry)) for _ in range(5)], fill=color)
    scene = scene.filter(ImageFilter.GaussianBlur(max(1.0, unit / 6)))
    im = scene.resize((width, height), Image.Resampling.BICUBIC)
    # 2. Sharp detail at full resolution: edges of objects and thin lines (branches, wires).
    draw = ImageDraw.Draw(im)
    for _ in range(25):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(max(2, width // 60), max(3, width // 12))
        draw.rectangle((x, y, x + r, y + r * rng.random()), fill=tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(80):
        pts = [(rng.randrange(width), rng.randrange(height)) for _ in range(2)]
        draw.line(pts, fill=tuple(rng.randrange(256) for _ in range(3)), width=rng.randint(1, 3))
    # 3. Texture (correlated over a few pixels) and fine sensor grain, as grey, blended lightly.
    tw, th = max(1, width // 3), max(1, height // 3)
    texture = Image.frombytes("L", (tw, th), rng.randbytes(tw * th)).resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.frombytes("L", (width, height), rng.randbytes(width * height))
    noise = Image.blend(texture, grain, 0.3)
    im = Image.blend(im, Image.merge("RGB", (noise, noise, noise)), 0.07)
    # 4. The lens: a slight softening, as every real optic and demosaicing step gives.
    return im.filter(ImageFilter.GaussianBlur(0.6))


_STORE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


def encode(spec: CorpusImage, seed: int) -> bytes:
    """The bytes of one corpus file (stored ``width × height``, displayed upright by its EXIF tag)."""
    upright = (spec.height, spec.width) if spec.orientation in (5, 6, 7, 8) else (spec.width, spec.height)
    im = photo(*upright, seed)
    if spec.orientation in _STORE:
        im = im.transpose(_STORE[spec.orientation])
    buf = io.BytesIO()
    if spec.format == "jpeg":
        exif = Image.Exif()
        exif[0x010F] = "pixfleet-bench"  # Make
        if spec.orientation != 1:
            exif[0x0112] = spec.orientation
        im.save(buf, "JPEG", quality=92, subsampling=2, progressive=spec.progressive, exif=exif.tobytes())
    elif spec.format == "png":
        im.save(buf, "PNG", compress_level=6)
    elif spec.format == "webp":
        im.save(buf, "WEBP", quality=90, method=4)
    else:  # pragma: no cover - the corpus lists only these
        raise ValueError(spec.format)
    return buf.getvalue()


def write_corpus(
    directory: Path,
    *,
    seed: int = 1,
    scale: float = 1.0,
    corpus: tuple[CorpusImage, ...] = DEFAULT_CORPUS,
    on_file: Callable[[Path], None] | None = None,
) -> list[Path]:
    """Write the corpus into ``directory`` (created); return the paths in order. Existing files are replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, spec in enumerate(scaled(corpus, scale)):
        path = directory / spec.name
        path.write_bytes(encode(spec, seed * 1000 + i))
        paths.append(path)
        if on_file:
            on_file(path)
    return paths
