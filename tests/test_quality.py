"""The engine's shortcuts keep quality on generated worst cases (SSIM against naive LANCZOS).

The shortcuts are a JPEG's DCT-scaled decode (1/2, 1/4, 1/8) and Pillow's box ``reduce()``
before the final LANCZOS resample; both alias on fine periodic detail unless enough ratio
is left after them (:func:`pipeline.transform.engine.pre_shrink`). The worst cases here
are the kinds of content that exposed it: a zone plate (every frequency up to half the
source's Nyquist), fine coloured stripes, small text, and thin waves (a real 1080×1920
wallpaper of thin waves scored 0.968 with the old 1/8 draft). Each is rendered as a JPEG
(q90, 4:2:0) and as a PNG, at sizes that make the engine use every pre-shrink factor,
and every variant must score SSIM ≥ 0.98 against full-size decode + LANCZOS, on the
same metric as ``pixfleet bench transform``.
"""

from __future__ import annotations

import io
import math
from functools import cache

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from pixfleet.bench.transform import ssim
from pipeline.transform import Limits, VariantSpec, engine, plan_geometry, transform

SIZE = (2400, 1800)
SSIM_MIN = 0.98
# Output size → the pre-shrink it makes the engine use on a 2400×1800 source (see test_pre_shrink).
VARIANTS = {
    "fit-1200 (none)": VariantSpec("a", width=1200, height=1200, format="png"),
    "fit-380 (2)": VariantSpec("b", width=380, height=380, format="png"),
    "fill-100 (3: DCT 2)": VariantSpec("c", width=100, height=100, mode="fill", format="png"),
    "fill-72 (4: DCT 4)": VariantSpec("d", width=72, height=72, mode="fill", format="png"),
    "fill-36 (8: DCT 8)": VariantSpec("e", width=36, height=36, mode="fill", format="png"),
}


def zone_plate(w: int, h: int, f_max: float = 0.25) -> Image.Image:
    """cos(k r²): the local frequency grows linearly to ``f_max`` cycles/pixel at the corners."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    k = math.pi * f_max / math.hypot(w / 2, h / 2)
    grey = Image.fromarray((127.5 + 120 * np.cos(k * ((x - w / 2) ** 2 + (y - h / 2) ** 2))).astype(np.uint8))
    return Image.merge("RGB", (grey, grey, grey))


def stripes(w: int, h: int, period: float = 4.5, angle: float = 20) -> Image.Image:
    """Fine diagonal stripes, green against magenta (chroma detail too)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = math.radians(angle)
    g = (127.5 + 120 * np.sin(2 * math.pi * (x * math.cos(a) + y * math.sin(a)) / period)).astype(np.uint8)
    return Image.merge("RGB", (Image.fromarray(g), Image.fromarray(255 - g), Image.fromarray(g)))


def text(w: int, h: int, size: int = 14) -> Image.Image:
    """Lines of small dark text on white, like a screenshot."""
    im = Image.new("RGB", (w, h), "white")
    draw, font = ImageDraw.Draw(im), ImageFont.load_default(size=size)
    line = "The quick brown fox jumps over the lazy dog 0123456789 " * (w // (size * 20) + 1)
    for i, y in enumerate(range(0, h, size + 2)):
        draw.text((2 - (i * 7) % 40, y), line, fill=(20, 20, 20), font=font)
    return im


def waves(w: int, h: int, spacing: int = 8) -> Image.Image:
    """Thin bright wavy lines on a dark ground, every ``spacing`` pixels."""
    im = Image.new("RGB", (w, h), (25, 30, 60))
    draw = ImageDraw.Draw(im)
    for y0 in range(-20, h + 20, spacing):
        points = [(x, y0 + 20 * math.sin(2 * math.pi * x / 120 + y0 / 37)) for x in range(0, w + 4, 4)]
        draw.line(points, fill=(230, 190, 90))
    return im


PATTERNS = {"zone plate": zone_plate, "stripes": stripes, "text": text, "waves": waves}


@cache
def source(pattern: str, fmt: str) -> tuple[bytes, Image.Image]:
    """The encoded worst case and its full-size decode (the reference's input)."""
    im = PATTERNS[pattern](*SIZE)
    buf = io.BytesIO()
    if fmt == "jpeg":
        im.save(buf, "JPEG", quality=90, subsampling=2)
    else:
        im.save(buf, "PNG", compress_level=1)
    data = buf.getvalue()
    full = Image.open(io.BytesIO(data))
    full.load()
    return data, full.convert("RGB")


def render(data: bytes, spec: VariantSpec) -> Image.Image:
    out = Image.open(io.BytesIO(transform(data, [spec], Limits()).renditions[0].data))
    out.load()
    return out.convert("RGB")


def naive(full: Image.Image, spec: VariantSpec) -> Image.Image:
    g = plan_geometry(full.width, full.height, spec)
    return full.resize(g.out, Image.Resampling.LANCZOS, box=g.region)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_worst_cases_keep_ssim_against_naive_lanczos(pattern: str, fmt: str) -> None:
    data, full = source(pattern, fmt)
    scores = {name: ssim(render(data, spec), naive(full, spec)) for name, spec in VARIANTS.items()}
    assert min(scores.values()) >= SSIM_MIN, {k: round(v, 4) for k, v in scores.items()}


def test_the_old_shortcuts_fail_these_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worst cases have teeth: drafting down to the output size, then BICUBIC, scores far below."""
    monkeypatch.setattr(engine, "RESAMPLE", Image.Resampling.BICUBIC)
    monkeypatch.setattr(engine, "pre_shrink", lambda ratio: max(1, int(ratio)))
    data, full = source("stripes", "jpeg")
    spec = VARIANTS["fit-380 (2)"]
    assert ssim(render(data, spec), naive(full, spec)) < 0.9


@pytest.mark.parametrize(
    ("ratio", "factor"),
    [
        (1.0, 1),
        (2.9, 1),
        (5.99, 1),
        (6.0, 2),
        (12.5, 2),
        (17.9, 2),
        (18.0, 3),
        (23.9, 3),
        (24.0, 4),
        (50.0, 8),
        (61.0, 10),
    ],
)
def test_pre_shrink(ratio: float, factor: int) -> None:
    """Factor 2 leaves at least 3× for LANCZOS, larger factors at least 6×."""
    assert engine.pre_shrink(ratio) == factor
    if factor > 1:
        assert ratio / factor >= (engine.PRE_SHRINK_2_KEEPS if factor == 2 else engine.PRE_SHRINK_KEEPS) - 1e-9


@pytest.mark.parametrize(
    ("size", "need", "scale"),
    [
        ((4000, 3000), (1600, 1200), 1),  # web from 12 MP: 2.5× is too little to shrink first
        ((4000, 3000), (342, 256), 2),  # thumbs
        ((4000, 3000), (171, 128), 2),  # avatar: factor 3 → the DCT's 2
        ((5120, 2880), (228, 128), 2),  # 22.5×: factor 3, the DCT's largest below is 2
        ((6144, 4096), (192, 128), 4),
        ((8000, 6000), (128, 96), 8),
        ((1080, 1920), (128, 228), 2),  # the thin-waves wallpaper: 1/8 before
    ],
)
def test_draft_scale(size: tuple[int, int], need: tuple[int, int], scale: int) -> None:
    assert engine.draft_scale(*size, need) == scale


def test_variants_use_the_pre_shrinks_they_are_named_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sizes above really exercise every factor (so the worst-case test covers them)."""
    data, _ = source("waves", "jpeg")
    decoded = {name: transform(data, [spec], Limits()).decoded_width for name, spec in VARIANTS.items()}
    assert decoded == {
        "fit-1200 (none)": 2400,
        "fit-380 (2)": 1200,
        "fill-100 (3: DCT 2)": 1200,
        "fill-72 (4: DCT 4)": 600,
        "fill-36 (8: DCT 8)": 300,
    }
    reduces: list[tuple] = []
    real_reduce = Image.Image.reduce
    monkeypatch.setattr(Image.Image, "reduce", lambda self, f, box=None: reduces.append(f) or real_reduce(self, f, box))
    png, _ = source("waves", "png")
    for spec in VARIANTS.values():
        transform(png, [spec], Limits())
    assert reduces == [(2, 2), (3, 3), (4, 4), (8, 8)]


def test_blurred_nyquist_zone_plate() -> None:
    """A zone plate up to the source's Nyquist, softened like a lens (σ 0.6 px), keeps the bar too."""
    im = zone_plate(*SIZE, f_max=0.5).filter(ImageFilter.GaussianBlur(0.6))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    full = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    for spec in VARIANTS.values():
        assert ssim(render(buf.getvalue(), spec), naive(full, spec)) >= SSIM_MIN, spec
