"""Magic-byte detection and header probing on real (and partial) image bytes."""

from __future__ import annotations

import struct

import pytest
from PIL import ImageFile

from pipeline.errors import NotAnImage, PermanentError, TooManyPixels, UnsupportedFormat
from pipeline.transform.probe import PROBE_BYTES, Probe, detect_format, probe_header
from pipeline.transform.spec import Limits
import images


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", len(body) + 4) + body + b"\0" * 32


SUPPORTED = [
    ("jpeg", lambda: images.photo_jpeg(64, 48)),
    ("jpeg-progressive", lambda: images.photo_jpeg(64, 48, progressive=True)),
    ("png", lambda: images.png_rgba(64, 48)),
    ("gif", lambda: images.animated_gif(64, 48)),
    ("webp", lambda: images.webp(64, 48)),
    ("avif", lambda: images.encode_photo(64, 48, "AVIF")),
    ("tiff", lambda: images.encode_photo(64, 48, "TIFF")),
    ("bmp", lambda: images.encode_photo(64, 48, "BMP")),
]


@pytest.mark.parametrize(("name", "make"), SUPPORTED, ids=[s[0] for s in SUPPORTED])
def test_detect_and_probe_supported_formats(name, make):
    data = make()
    fmt = name.split("-")[0]
    assert detect_format(data) == fmt
    assert probe_header(data, Limits()) == Probe(fmt, 64, 48)


@pytest.mark.parametrize(
    ("head", "expected", "error"),
    [
        (_ftyp(b"avif", b"mif1", b"miaf"), "avif", None),
        (_ftyp(b"mif1", b"avif", b"miaf"), "avif", None),  # AVIF announced only as a compatible brand
        (_ftyp(b"avis", b"msf1"), "avif", None),
        (images.heic_like(), None, UnsupportedFormat),
        (_ftyp(b"heix", b"mif1"), None, UnsupportedFormat),
        (_ftyp(b"mif1", b"heic"), None, UnsupportedFormat),
        (_ftyp(b"msf1", b"hevc"), None, UnsupportedFormat),
        (_ftyp(b"jxl "), None, UnsupportedFormat),
        (_ftyp(b"isom", b"mp41"), None, NotAnImage),  # an MP4 video
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", None, UnsupportedFormat),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10"/>', None, UnsupportedFormat),
        (b'\xef\xbb\xbf<?xml version="1.0"?>\n<svg/>', None, UnsupportedFormat),
        (b"  <!DOCTYPE svg PUBLIC>", None, UnsupportedFormat),
        (b"8BPS\x00\x01" + b"\0" * 20, None, UnsupportedFormat),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10" + b"\0" * 20, None, UnsupportedFormat),  # ICO
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 20, None, UnsupportedFormat),  # JP2
        (b"\xff\x4f\xff\x51\x00\x2f" + b"\0" * 20, None, UnsupportedFormat),  # J2K codestream
        (b"\xff\x0a\xfa\x7f" + b"\0" * 20, None, UnsupportedFormat),  # JPEG XL codestream
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n" + b"\0" * 20, None, UnsupportedFormat),
        (b"P6\n10 10\n255\n" + b"\0" * 300, None, UnsupportedFormat),
        (b"", None, NotAnImage),
        (images.not_an_image(), None, NotAnImage),
        (b"<!doctype html><html><body>hi</body></html>", None, NotAnImage),
        (b"BM" + b"\0" * 40, None, NotAnImage),  # "BM" without a valid DIB header
        (b"\xff\xd8", None, NotAnImage),  # too short to be a JPEG
        (bytes(range(256)), None, NotAnImage),
    ],
)
def test_detect_format_table(head, expected, error):
    if error is None:
        assert detect_format(head) == expected
        return
    with pytest.raises(error) as info:
        detect_format(head)
    assert isinstance(info.value, PermanentError)
    assert info.value.http_status == 415
    assert info.value.code == {UnsupportedFormat: "unsupported_format", NotAnImage: "not_an_image"}[error]


def test_probe_reads_size_from_a_partial_header():
    png = images.png_rgba(300, 200)
    assert probe_header(png[:64], Limits()) == Probe("png", 300, 200)
    jpeg = images.photo_jpeg(320, 240, orientation=6)  # stored 240x320; the probe reports stored size
    assert probe_header(jpeg[:2048], Limits()) == Probe("jpeg", 240, 320)
    gif = images.animated_gif(120, 90, 4)
    assert probe_header(gif[:64], Limits()) == Probe("gif", 120, 90)


def test_probe_returns_unknown_size_when_header_is_cut_before_the_size():
    # A JPEG whose size (SOF) sits behind ~400 KiB of ICC data: not inside the first PROBE_BYTES.
    big_icc = images.icc_profile("adobe") + b"\0" * (400 * 1024)
    jpeg = images.photo_jpeg(64, 48, icc=big_icc)
    head = jpeg[:PROBE_BYTES]
    assert probe_header(head, Limits()) == Probe("jpeg", None, None)
    assert probe_header(jpeg, Limits()) == Probe("jpeg", 64, 48)
    assert probe_header(b"\x89PNG\r\n\x1a\n\0\0", Limits()) == Probe("png", None, None)


def test_probe_rejects_too_many_pixels_from_the_first_bytes():
    bomb = images.pixel_bomb_png(20_000, 20_000)
    with pytest.raises(TooManyPixels) as info:
        probe_header(bomb[:64], Limits())
    assert (info.value.code, info.value.http_status) == ("too_many_pixels", 422)
    # Even when Pillow's own (2x) bomb threshold would not fire:
    with pytest.raises(TooManyPixels):
        probe_header(images.photo_jpeg(100, 100), Limits(max_pixels=9_999))


@pytest.mark.parametrize(("max_pixels", "ok"), [(10_000, True), (9_999, False)])
def test_probe_limit_is_inclusive(max_pixels, ok):
    data = images.png_rgba(100, 100)
    if ok:
        assert probe_header(data, Limits(max_pixels=max_pixels)).pixels == 10_000
    else:
        with pytest.raises(TooManyPixels):
            probe_header(data, Limits(max_pixels=max_pixels))


def test_probe_never_decodes_pixels(monkeypatch):
    def forbidden(self):
        raise AssertionError("probe_header decoded pixel data")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    for _, make in SUPPORTED:
        probe = probe_header(make(), Limits())
        assert (probe.width, probe.height) == (64, 48)
    probe_header(images.pixel_bomb_png()[:128], Limits(max_pixels=10**9))


def test_probe_propagates_format_errors():
    with pytest.raises(UnsupportedFormat):
        probe_header(images.heic_like(), Limits())
    with pytest.raises(NotAnImage):
        probe_header(b"", Limits())
