"""The libspng fast path for PNG pixels: exactly Pillow's pixels, or Pillow itself.

Every case is a real PNG written by Pillow (or patched chunk by chunk), decoded both ways.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from pipeline.errors import CorruptImage
from pipeline.transform import Limits, VariantSpec, png, transform

import images


def encode(im: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **params)
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunk_before_iend(data: bytes, kind: bytes, body: bytes) -> bytes:
    assert data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    return data[:-12] + chunk(kind, body) + data[-12:]


def pillow(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def photo(mode: str = "RGB") -> Image.Image:
    im = images.photo_image(97, 61)
    if mode == "RGBA":
        im.putalpha(Image.linear_gradient("L").resize(im.size))
    return im.convert(mode)


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("name", "data", "fast_mode"),
    [
        ("rgb", encode(photo()), "RGB"),
        ("rgba", encode(photo("RGBA")), "RGBA"),
        ("rgba, opaque alpha", encode(photo("RGB").convert("RGBA")), "RGB"),  # alpha dropped, as normalize_mode does
        ("grey", encode(photo("L")), None),
        ("palette", encode(photo().convert("P")), None),
        ("rgb with tRNS", encode(photo(), transparency=(0, 0, 0)), None),
        ("16-bit", images.png16(64, 8, color=True), None),
    ],
)
def test_fast_path_gives_pillows_pixels_or_declines(name: str, data: bytes, fast_mode: str | None) -> None:
    fast = png.decode(opened(data), data)
    if fast_mode is None:
        assert fast is None, name
        return
    assert fast is not None and fast.mode == fast_mode, name
    reference = pillow(data).convert(fast_mode)
    assert fast.size == reference.size and fast.tobytes() == reference.tobytes(), name


def test_animated_png_is_left_to_pillow() -> None:
    frames = [photo(), photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], save_all=True, append_images=frames[1:])
    assert png.decode(opened(data), data) is None


def test_exif_after_the_pixels_still_rotates() -> None:
    """An eXIf chunk after IDAT is only seen by Pillow's decoder: the fast path steps aside."""
    exif = Image.Exif()
    exif[0x0112] = 6
    tiff = exif.tobytes().removeprefix(b"Exif\x00\x00")  # the eXIf chunk holds the bare TIFF structure
    data = with_chunk_before_iend(encode(photo()), b"eXIf", tiff)
    assert png.decode(opened(data), data) is None
    result = transform(data, [VariantSpec("v", format="png")], Limits())
    assert (result.source_width, result.source_height) == (61, 97)


def test_harmless_text_after_the_pixels_keeps_the_fast_path() -> None:
    data = with_chunk_before_iend(encode(photo()), b"tEXt", b"Comment\x00made by a test")
    assert png.decode(opened(data), data) is not None


def test_no_exif_means_getexif_does_not_decode_again(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(photo())
    im = opened(data)
    assert png.decode(im, data) is not None
    monkeypatch.setattr(im, "load", lambda: pytest.fail("getexif() decoded the image again"))
    assert dict(im.getexif()) == {}


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_pixels_are_a_corrupt_image(cut: float) -> None:
    data = encode(photo("RGBA"))
    short = data[: int(len(data) * cut)]
    with pytest.raises(CorruptImage):
        png.decode(opened(short), short)
    with pytest.raises(CorruptImage):
        transform(short, [VariantSpec("v", format="png")], Limits())


def test_engine_output_is_the_same_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(photo("RGBA"))
    variants = [
        VariantSpec("a", width=50, format="png"),
        VariantSpec("b", width=20, height=20, mode="fill", format="webp"),
    ]
    fast = [r.data for r in transform(data, variants, Limits()).renditions]
    monkeypatch.setattr(png, "decode", lambda im, data: None)
    assert [r.data for r in transform(data, variants, Limits()).renditions] == fast
