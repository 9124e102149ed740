"""The transform engine, its steps and presets, on real image bytes decoded by real Pillow.

Uses numpy (test-only) for the SSIM helper.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from pipeline.errors import (
    CorruptImage,
    DecompressionBomb,
    NotAnImage,
    PayloadTooLarge,
    PermanentError,
    RetryableError,
    TooManyFrames,
    TooManyPixels,
    UnknownPreset,
    UnsupportedFormat,
)
from pipeline.transform import (
    PRESETS,
    Limits,
    VariantSpec,
    get_preset,
    plan_decode_size,
    plan_geometry,
    presets_as_json,
    transform,
)
from pipeline.transform import steps
from pipeline.transform.presets import PRESET_DESCRIPTIONS
from pipeline.transform.spec import parse_operations
import images

LANCZOS = Image.Resampling.LANCZOS


# --- helpers -------------------------------------------------------------------------------------


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


DEFAULT_LIMITS = Limits()


def only(data: bytes, spec: VariantSpec, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """Render one variant and decode it."""
    return decode(transform(data, [spec], limits).renditions[0].data)


def _box_mean(a: np.ndarray, r: int) -> np.ndarray:
    k = 2 * r + 1
    c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), 0), 1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def ssim(a: Image.Image, b: Image.Image, radius: int = 3) -> float:
    """Mean SSIM over R, G, B with a (2r+1)² uniform window (scikit-image's default is 7×7)."""
    assert a.size == b.size, (a.size, b.size)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for ba, bb in zip(a.convert("RGB").split(), b.convert("RGB").split(), strict=True):
        x, y = np.asarray(ba, np.float64), np.asarray(bb, np.float64)
        mx, my = _box_mean(x, radius), _box_mean(y, radius)
        vx = _box_mean(x * x, radius) - mx * mx
        vy = _box_mean(y * y, radius) - my * my
        cxy = _box_mean(x * y, radius) - mx * my
        scores.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())
    return float(np.mean(scores))


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a.convert("RGB"), np.int16) - np.asarray(b.convert("RGB"), np.int16)).mean())


def is_red(px) -> bool:
    r, g, b = px[:3]
    return r > 200 and g < 60 and b < 60


@pytest.fixture(scope="module")
def photo_12mp() -> bytes:
    return images.photo_jpeg(4000, 3000, quality=90)


# --- presets -------------------------------------------------------------------------------------

PRESET_CASES = [
    # preset, source (w, h), expected [(name, format, w, h)]
    (
        "web",
        (1200, 900),
        [
            ("w1600", "JPEG", 1200, 900),
            ("w800", "JPEG", 800, 600),
            ("w320", "JPEG", 320, 240),
            ("w320-webp", "WEBP", 320, 240),
        ],
    ),
    (
        "web",
        (900, 1800),
        [
            ("w1600", "JPEG", 800, 1600),
            ("w800", "JPEG", 400, 800),
            ("w320", "JPEG", 160, 320),
            ("w320-webp", "WEBP", 160, 320),
        ],
    ),
    ("thumbs", (1200, 900), [("thumb", "WEBP", 256, 256)]),
    ("thumbs", (200, 150), [("thumb", "WEBP", 150, 150)]),  # never enlarged: the box shrinks, stays square
    ("avatar", (640, 480), [("avatar-webp", "WEBP", 128, 128), ("avatar-jpeg", "JPEG", 128, 128)]),
    ("original-webp", (640, 480), [("original", "WEBP", 640, 480)]),
]


@pytest.mark.parametrize(("preset", "size", "expected"), PRESET_CASES)
def test_preset_sizes_and_formats(preset, size, expected):
    result = transform(images.photo_jpeg(*size), get_preset(preset), Limits())
    got = []
    for r in result.renditions:
        im = decode(r.data)
        assert (r.width, r.height) == im.size
        assert r.content_type == Image.MIME[im.format] and r.extension == {"JPEG": "jpg", "WEBP": "webp"}[im.format]
        got.append((r.variant, im.format, *im.size))
    assert got == expected
    assert (result.source_format, result.source_width, result.source_height, result.frames) == ("jpeg", *size, 1)
    assert result.cpu_ms > 0


def test_web_preset_flags():
    w1600 = get_preset("web")[0]
    got = (w1600.width, w1600.height, w1600.mode, w1600.format, w1600.quality, w1600.progressive)
    assert got == (1600, 1600, "fit", "jpeg", 82, True)


def test_presets_are_valid_and_described():
    assert {"web", "thumbs"} <= set(PRESETS)
    for name, variants in PRESETS.items():
        assert parse_operations([v.to_dict() for v in variants]) == variants, name  # valid, names unique
        assert PRESET_DESCRIPTIONS[name]
    listed = json.loads(json.dumps(presets_as_json()))["presets"]
    assert [p["name"] for p in listed] == list(PRESETS)
    assert listed[0]["variants"][0]["name"] == "w1600"


def test_unknown_preset_lists_known_ones():
    with pytest.raises(UnknownPreset) as info:
        get_preset("huge")
    assert info.value.http_status == 400 and info.value.code == "unknown_preset"
    assert "web" in info.value.message and "thumbs" in info.value.message


# --- geometry planning (pure) --------------------------------------------------------------------


def spec(**kw) -> VariantSpec:
    return VariantSpec("v", **kw)


GEOMETRY_CASES = [
    # source, spec, out, region
    ((4000, 3000), spec(width=1600, height=1600), (1600, 1200), (0, 0, 4000, 3000)),
    ((3000, 4000), spec(width=1600, height=1600), (1200, 1600), (0, 0, 3000, 4000)),
    ((4000, 3000), spec(width=1000), (1000, 750), (0, 0, 4000, 3000)),
    ((4000, 3000), spec(height=300), (400, 300), (0, 0, 4000, 3000)),
    ((4000, 3000), spec(), (4000, 3000), (0, 0, 4000, 3000)),
    ((200, 100), spec(width=800, height=800), (200, 100), (0, 0, 200, 100)),  # no upscale
    ((200, 100), spec(width=800, height=800, upscale=True), (800, 400), (0, 0, 200, 100)),
    ((300, 100), spec(width=100, height=100, mode="fill"), (100, 100), (100, 0, 200, 100)),
    ((300, 100), spec(width=100, height=100, mode="fill", gravity="west"), (100, 100), (0, 0, 100, 100)),
    ((300, 100), spec(width=100, height=100, mode="fill", gravity="east"), (100, 100), (200, 0, 300, 100)),
    ((300, 100), spec(width=100, height=100, mode="fill", gravity="northeast"), (100, 100), (200, 0, 300, 100)),
    ((100, 300), spec(width=50, height=50, mode="fill", gravity="north"), (50, 50), (0, 0, 100, 100)),
    ((100, 300), spec(width=50, height=50, mode="fill", gravity="south"), (50, 50), (0, 200, 100, 300)),
    ((100, 300), spec(width=50, height=50, mode="fill", gravity="southwest"), (50, 50), (0, 200, 100, 300)),
    ((200, 150), spec(width=256, height=256, mode="fill"), (150, 150), (25, 0, 175, 150)),  # box shrinks
    ((200, 150), spec(width=256, height=256, mode="fill", upscale=True), (256, 256), (25, 0, 175, 150)),
    ((400, 300), spec(width=400, height=100, mode="fill"), (400, 100), (0, 100, 400, 200)),
    ((200, 100), spec(width=50, height=80, mode="exact"), (50, 80), (0, 0, 200, 100)),
    ((100, 100), spec(width=200, height=50, mode="exact"), (100, 25), (0, 0, 100, 100)),  # no upscale
    ((100, 100), spec(width=200, height=50, mode="exact", upscale=True), (200, 50), (0, 0, 100, 100)),
]


@pytest.mark.parametrize(("source", "variant", "out", "region"), GEOMETRY_CASES)
def test_plan_geometry(source, variant, out, region):
    g = plan_geometry(*source, variant)
    assert g.out == out
    assert g.region == pytest.approx(region)


DECODE_CASES = [
    # source (upright), variants, orientation, requested decode size (stored axes)
    ((4000, 3000), get_preset("web"), 1, (1600, 1200)),
    ((4000, 3000), get_preset("web"), 6, (1200, 1600)),  # stored pixels are portrait
    ((4000, 3000), get_preset("thumbs"), 1, (342, 256)),  # fill needs the cover size
    ((4000, 3000), get_preset("thumbs"), 8, (256, 342)),
    ((4000, 3000), (spec(width=100, height=1000, mode="fill"),), 1, (1334, 1000)),  # cover: 1/3 of the frame
    ((4000, 3000), (spec(width=100, height=100, mode="exact"), spec(width=50)), 1, (100, 100)),
    ((400, 300), (spec(width=800, upscale=True),), 1, (400, 300)),  # never more than the source
]


@pytest.mark.parametrize(("source", "variants", "orientation", "expected"), DECODE_CASES)
def test_plan_decode_size(source, variants, orientation, expected):
    geometries = [plan_geometry(*source, v) for v in variants]
    assert plan_decode_size(*source, geometries, orientation) == expected


# --- draft (DCT scaling) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "orientation", "decoded"),
    [
        ("web", None, (4000, 3000)),  # 2.5× from 12 MP to 1600 px: too little left for a DCT scale
        ("web", 6, (3000, 4000)),
        ("thumbs", None, (2000, 1500)),
        ("thumbs", 5, (1500, 2000)),
        ("avatar", None, (2000, 1500)),
    ],
)
def test_jpeg_is_decoded_at_draft_scale(monkeypatch, preset, orientation, decoded):
    requests = []
    real_draft = JpegImageFile.draft

    def spy(self, mode, size):
        requests.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    data = images.photo_jpeg(4000, 3000, orientation=orientation, quality=60)
    result = transform(data, get_preset(preset), Limits())
    assert len(requests) == 1
    assert (result.decoded_width, result.decoded_height) == decoded
    assert (result.source_width, result.source_height) == (4000, 3000)
    # The draft never goes below what the largest variant needs (no quality loss).
    assert result.decoded_width >= requests[0][0] and result.decoded_height >= requests[0][1]


def test_one_decode_per_job(monkeypatch):
    decoders = []
    real_getdecoder = Image._getdecoder

    def spy(mode, decoder_name, args, extra=()):
        decoders.append(decoder_name)
        return real_getdecoder(mode, decoder_name, args, extra)

    data = images.photo_jpeg(800, 600)
    monkeypatch.setattr(Image, "_getdecoder", spy)
    transform(data, get_preset("web") + get_preset("avatar"), Limits())
    assert decoders == ["jpeg"]


def test_ssim_against_naive_pillow_on_12mp(photo_12mp):
    """Engine (draft + resize chain) vs naive Pillow (full decode, LANCZOS from full size)."""
    full = decode(photo_12mp)
    lossless = tuple(dataclasses.replace(v, format="png") for v in get_preset("web"))
    result = transform(photo_12mp, lossless, Limits())
    assert (result.decoded_width, result.decoded_height) == (4000, 3000)
    for r in result.renditions:
        reference = full.resize((r.width, r.height), LANCZOS)
        assert ssim(decode(r.data), reference) >= 0.98, r.variant

    # The shipped (lossy) web preset vs the naive pipeline with the same encoder settings:
    # JPEG/WebP noise on both sides lowers the score, so the bar is lower.
    for r in transform(photo_12mp, get_preset("web"), Limits()).renditions:
        spec_ = next(v for v in get_preset("web") if v.name == r.variant)
        naive = decode(steps.encode(full.resize((r.width, r.height), LANCZOS), spec_))
        assert ssim(decode(r.data), naive) >= 0.95, r.variant


# --- orientation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_ends_up_upright(orientation):
    data = images.photo_jpeg(120, 80, orientation=orientation, marker=True)
    out = only(data, spec(width=60, height=60, format="png"))
    assert out.size == (60, 40)
    assert is_red(out.getpixel((3, 3)))
    assert not any(is_red(out.getpixel(p)) for p in ((56, 3), (3, 36), (56, 36)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_with_draft_matches_naive_pillow(orientation):
    """Odd sizes (not multiples of 8) exercise the sub-pixel box bookkeeping after draft + transpose."""
    data = images.photo_jpeg(1603, 1201, orientation=orientation, marker=True, quality=85)
    variant = spec(width=200, height=200, format="png")
    result = transform(data, [variant], Limits())
    assert result.decoded_width < 1000  # drafted
    out = decode(result.renditions[0].data)
    naive = ImageOps.exif_transpose(decode(data)).resize(out.size, LANCZOS)
    assert out.size == (200, 150)
    assert is_red(out.getpixel((4, 4)))
    assert mean_abs_diff(out, naive) < 2.5
    assert ssim(out, naive) > 0.95


# --- colour --------------------------------------------------------------------------------------


def test_icc_profile_is_converted_to_srgb():
    # A profile with red and green primaries swapped: stored red *means* green.
    out = only(images.solid(32, 32, (255, 0, 0), icc="swap-rg"), spec(format="png"))
    assert out.getpixel((5, 5))[:3] == pytest.approx((0, 255, 0), abs=2)
    assert "icc_profile" not in out.info


def test_icc_conversion_keeps_alpha():
    out = only(images.solid(32, 32, (255, 0, 0, 128), mode="RGBA", icc="swap-rg"), spec(format="png"))
    assert out.mode == "RGBA"
    assert out.getpixel((5, 5)) == pytest.approx((0, 255, 0, 128), abs=2)


def test_adobe_rgb_matches_lcms_reference():
    color = (200, 100, 50)
    out = only(images.solid(16, 16, color, icc="adobe"), spec(format="png"))
    adobe = ImageCms.ImageCmsProfile(io.BytesIO(images.icc_profile("adobe")))
    srgb = ImageCms.createProfile("sRGB")
    expected = ImageCms.profileToProfile(Image.new("RGB", (1, 1), color), adobe, srgb).getpixel((0, 0))
    assert out.getpixel((8, 8)) == pytest.approx(expected, abs=1)
    assert out.getpixel((8, 8)) != color


def test_srgb_tagged_image_is_left_alone():
    out = only(images.solid(16, 16, (200, 100, 50), icc="srgb"), spec(format="png"))
    assert out.getpixel((8, 8)) == (200, 100, 50)


def test_cmyk_jpeg_becomes_rgb_with_plausible_colours():
    data = images.cmyk_jpeg(400, 300)
    assert decode(data).mode == "CMYK"
    out = only(data, spec(width=200, format="png"))
    assert out.mode == "RGB" and out.size == (200, 150)
    assert is_red(out.getpixel((20, 75)))  # the pure red quarter
    reference = images.cmyk_reference(400, 300).resize((200, 150), LANCZOS)
    assert mean_abs_diff(out, reference) < 6


@pytest.mark.parametrize("color", [False, True])
def test_16_bit_png_is_scaled_to_8_bits(color):
    w = 256
    out = only(images.png16(w, 4, color=color), spec(format="png"))
    assert out.mode == ("RGB" if color else "L")
    for x in (0, 1, 60, 128, 200, 254, 255):
        v = images.png16_value(x, w) / 257
        expected = (v, 255 - v, 128) if color else v
        assert out.getpixel((x, 1)) == pytest.approx(expected, abs=1), x


def test_one_bit_and_palette_images():
    assert only(images.solid(16, 16, 1, mode="1"), spec(format="png")).getpixel((3, 3)) == 255
    out = only(images.palette_png(100, 50), spec(format="png"))
    assert out.mode == "RGBA"
    assert out.getpixel((10, 10))[3] == 0 and out.getpixel((90, 10)) == (0, 0, 255, 255)


# --- transparency --------------------------------------------------------------------------------


def test_alpha_flattens_onto_background_for_jpeg():
    data = images.png_rgba(200, 100)
    out = only(data, spec(width=100, format="jpeg", background="#ff00ff"))
    assert out.mode == "RGB"
    assert out.getpixel((10, 20)) == pytest.approx((255, 0, 255), abs=8)  # was transparent (hidden green)
    white = only(data, spec(width=100, format="jpeg"))
    assert white.getpixel((10, 20)) == pytest.approx((255, 255, 255), abs=8)


@pytest.mark.parametrize("fmt", ["png", "webp", "avif"])
def test_alpha_is_kept_for_formats_that_have_it(fmt):
    out = only(images.png_rgba(200, 100), spec(width=100, format=fmt))
    assert out.mode == "RGBA"
    assert out.getpixel((10, 20))[3] < 10
    assert out.getpixel((80, 20))[3] > 245
    assert 100 < out.getpixel((80, 47))[3] < 156  # the half-transparent band


def test_hidden_colour_of_transparent_pixels_does_not_bleed():
    # Palette PNG: left half transparent *green*, right half opaque blue. Resizing straight
    # (non-premultiplied) RGBA would tint the edge green.
    out = only(images.palette_png(101, 20), spec(width=37, format="png"))
    edge = [out.getpixel((x, 3)) for x in range(out.width) if 0 < out.getpixel((x, 3))[3] < 255]
    assert edge, "expected partially transparent pixels at the edge"
    assert all(px[1] < 30 for px in edge), edge


# --- frames --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [images.animated_gif, images.animated_webp], ids=["gif", "webp"])
def test_animated_input_renders_first_frame(make):
    result = transform(make(64, 48, 3), [spec(width=32, format="png")], Limits())
    assert result.frames == 3
    out = decode(result.renditions[0].data)
    assert getattr(out, "n_frames", 1) == 1
    assert out.getpixel((16, 12))[:3] == pytest.approx((255, 0, 0), abs=3)


# --- resize modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "vertical", "gravity", "expected"),
    [
        ((300, 100), False, "center", (0, 255, 0)),
        ((300, 100), False, "west", (255, 0, 0)),
        ((300, 100), False, "east", (0, 0, 255)),
        ((300, 100), False, "southeast", (0, 0, 255)),
        ((300, 100), False, "northwest", (255, 0, 0)),
        ((100, 300), True, "north", (255, 0, 0)),
        ((100, 300), True, "south", (0, 0, 255)),
        ((100, 300), True, "center", (0, 255, 0)),
        ((100, 300), True, "east", (0, 255, 0)),
    ],
)
def test_fill_crops_at_gravity(source, vertical, gravity, expected):
    variant = spec(width=50, height=50, mode="fill", gravity=gravity, format="png")
    out = only(images.stripes(*source, vertical=vertical), variant)
    assert out.size == (50, 50)
    for p in ((5, 5), (25, 25), (44, 44)):
        assert out.getpixel(p) == pytest.approx(expected, abs=2), (gravity, p)


def test_exact_stretches_and_never_upscales_unless_asked():
    data = images.photo_jpeg(200, 100)
    assert only(data, spec(width=50, height=80, mode="exact", format="png")).size == (50, 80)
    assert only(data, spec(width=400, height=400, mode="exact", format="png")).size == (100, 100)
    assert only(data, spec(width=800, height=800, format="png")).size == (200, 100)
    assert only(data, spec(width=800, height=800, upscale=True, format="png")).size == (800, 400)


# --- finishing steps ------------------------------------------------------------------------------


def _laplacian_energy(im: Image.Image) -> float:
    a = np.asarray(im.convert("L"), np.float64)
    return float(np.abs(4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:]).mean())


def test_grayscale_blur_sharpen_watermark():
    data = images.photo_jpeg(400, 300)
    plain = only(data, spec(width=200, format="png"))
    assert only(data, spec(width=200, format="png", grayscale=True)).mode == "L"
    assert only(data, spec(width=200, format="jpeg", grayscale=True)).mode == "L"
    assert _laplacian_energy(only(data, spec(width=200, format="png", blur=2))) < 0.5 * _laplacian_energy(plain)
    assert _laplacian_energy(only(data, spec(width=200, format="png", sharpen=1.5))) > 1.2 * _laplacian_energy(plain)
    marked = only(data, spec(width=200, format="png", watermark="© pixfleet"))
    a, b = np.asarray(plain, np.int16), np.asarray(marked, np.int16)
    assert np.abs(a - b)[100:, 100:].max() > 40  # text drawn bottom-right...
    assert np.abs(a - b)[:100, :100].max() == 0  # ...and nowhere else
    long_text = only(data, spec(width=200, format="png", watermark="x" * 200))
    assert long_text.size == (200, 150)


def test_finishing_steps_do_not_leak_into_derived_variants():
    data = images.photo_jpeg(800, 600)
    small = VariantSpec("small", width=100, format="png")
    fancy = VariantSpec("big", width=400, format="png", grayscale=True, blur=1, sharpen=2, watermark="WM")
    plain_big = VariantSpec("big", width=400, format="png")
    with_fancy = transform(data, [fancy, small], Limits()).renditions[1].data
    with_plain = transform(data, [plain_big, small], Limits()).renditions[1].data
    assert with_fancy == with_plain
    assert decode(with_fancy).mode == "RGB"


def test_identical_geometries_share_pixels_but_not_finishing():
    data = images.photo_jpeg(800, 600)
    a = VariantSpec("a", width=300, format="png")
    b = VariantSpec("b", width=300, format="png", grayscale=True)
    c = VariantSpec("c", width=300, format="png")
    ra, rb, rc = transform(data, [a, b, c], Limits()).renditions
    assert decode(ra.data).mode == "RGB" and decode(rb.data).mode == "L" and ra.data == rc.data


def test_renditions_keep_the_order_given():
    data = images.photo_jpeg(800, 600)
    variants = [VariantSpec("s", width=50), VariantSpec("l", width=700), VariantSpec("m", width=300, format="webp")]
    assert [r.variant for r in transform(data, variants, Limits()).renditions] == ["s", "l", "m"]


@pytest.mark.parametrize(
    "step",
    [s for s in steps.FINISH_STEPS],
    ids=[s.__name__ for s in steps.FINISH_STEPS],
)
def test_finish_steps_return_input_unchanged_when_nothing_to_do(step):
    im = Image.new("RGB", (8, 8), (1, 2, 3))
    assert step(im, VariantSpec("v")) is im


@pytest.mark.parametrize("step", steps.SOURCE_STEPS, ids=[s.__name__ for s in steps.SOURCE_STEPS])
def test_source_steps_return_input_unchanged_when_nothing_to_do(step):
    canvas = steps.Canvas.whole(Image.new("RGB", (8, 8)))
    assert step(canvas, steps.SourceInfo()) is canvas


# --- metadata ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "avif"])
def test_metadata_is_stripped_by_default(fmt):
    data = images.photo_jpeg(300, 200, orientation=6, icc="adobe")
    out = only(data, spec(width=100, format=fmt))
    assert not out.getexif()
    for key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment"):
        assert key not in out.info, key


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_exif_kept_with_orientation_reset_when_asked(fmt):
    data = images.photo_jpeg(300, 200, orientation=6)
    out = only(data, spec(width=100, format=fmt, strip_metadata=False))
    exif = out.getexif()
    assert exif[0x0112] == 1 and exif[0x010F] == "pixfleet-test-camera"
    assert out.size == (100, 67)  # pixels already upright


# --- limits and bad input -------------------------------------------------------------------------

ERROR_CASES = [
    # id, data factory, limits, error class (its code and HTTP status are checked too)
    ("too-many-bytes", lambda: images.photo_jpeg(64, 64), Limits(max_bytes=100), PayloadTooLarge),
    ("pixel-bomb", lambda: images.pixel_bomb_png(), Limits(), TooManyPixels),
    (
        "pixel-bomb-below-pillow-2x",
        lambda: images.pixel_bomb_png(12_000, 12_000),
        Limits(max_pixels=10**8),
        TooManyPixels,
    ),
    ("too-many-pixels", lambda: images.photo_jpeg(400, 300), Limits(max_pixels=100_000), TooManyPixels),
    ("too-many-frames", lambda: images.animated_gif(16, 16, 5), Limits(max_frames=3), TooManyFrames),
    ("ztxt-bomb", images.zip_bomb_png, Limits(), DecompressionBomb),
    ("truncated-jpeg", images.truncated_jpeg, Limits(), CorruptImage),
    ("header-only-png", lambda: images.png_rgba(64, 64)[:60], Limits(), CorruptImage),
    ("broken-png-data", lambda: images.png16(64, 64)[:80] + b"\xff" * 200, Limits(), CorruptImage),
    ("jpeg-magic-only", lambda: b"\xff\xd8\xff\xe0" + b"\0" * 100, Limits(), CorruptImage),
    ("text", images.not_an_image, Limits(), NotAnImage),
    ("empty", lambda: b"", Limits(), NotAnImage),
    ("heic", images.heic_like, Limits(), UnsupportedFormat),
    ("pdf", lambda: b"%PDF-1.4\n" + b"\0" * 100, Limits(), UnsupportedFormat),
]
PUBLIC_CODES = {
    PayloadTooLarge: ("payload_too_large", 413),
    TooManyPixels: ("too_many_pixels", 422),
    TooManyFrames: ("too_many_frames", 422),
    DecompressionBomb: ("decompression_bomb", 422),
    CorruptImage: ("corrupt_image", 422),
    NotAnImage: ("not_an_image", 415),
    UnsupportedFormat: ("unsupported_format", 415),
}


@pytest.mark.parametrize(("data", "limits", "error"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_limits_and_bad_input_raise_permanent_errors(data, limits, error):
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(error) as info:
        transform(data(), get_preset("web"), limits)
    assert isinstance(info.value, PermanentError)
    assert (info.value.code, info.value.http_status) == PUBLIC_CODES[error]
    assert before == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_image_exactly_at_the_pixel_limit_passes_without_warnings():
    data = images.photo_jpeg(400, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = transform(data, [spec(width=100)], Limits(max_pixels=120_000))
    assert result.renditions[0].width == 100


def test_deadline_is_checked_between_steps():
    with pytest.raises(RetryableError) as info:
        transform(images.photo_jpeg(64, 64), get_preset("web"), Limits(), deadline=time.monotonic() - 1)
    assert info.value.code == "deadline_exceeded"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "WEBP", "AVIF"])
def test_other_input_formats(fmt):
    result = transform(images.encode_photo(300, 200, fmt), [spec(width=150, format="jpeg")], Limits())
    assert result.source_format == fmt.lower()
    assert decode(result.renditions[0].data).size == (150, 100)
