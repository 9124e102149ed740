"""Regression tests for what the fuzz harnesses (tests/fuzz/) found, and the boundary they rely on.

Every crash a harness found is here as a small generated input (or its bytes
inline when tiny), with the classified outcome it must now have. The HTTP cases
(multipart, the 500/503 split) are in ``test_api_errors.py``.
"""

from __future__ import annotations

import base64
import io
import json
import struct

import pytest
from PIL import Image, UnidentifiedImageError

import images
from pipeline.errors import (
    CorruptImage,
    DecompressionBomb,
    InvalidMessage,
    InvalidSpec,
    OutputTooLarge,
    TooManyPixels,
)
from pipeline.messages import parse_message
from pipeline.transform.engine import transform
from pipeline.transform.presets import get_preset
from pipeline.transform.probe import Probe, decoding, probe_header
from pipeline.transform.spec import Limits, VariantSpec, parse_operations

# --- the decode boundary: whatever a decoder raises is classified ---------------------------------

# What Pillow's plugins raise on malformed data: the list, and what fuzzing found besides.
DECODER_EXCEPTIONS = [
    KeyError("MPO"),
    IndexError("list index out of range"),
    TypeError("unsupported operand"),
    ZeroDivisionError("division by zero"),
    struct.error("unpack requires a buffer of 4 bytes"),
    SyntaxError("not a JPEG file"),
    OSError("image file is truncated"),
    ValueError("unknown raw mode"),
    EOFError("no more images"),
    RuntimeError("Failed to decode image"),
    UnidentifiedImageError("cannot identify image file"),
    AssertionError(),
]


@pytest.mark.parametrize("exc", DECODER_EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_whatever_a_decoder_raises_is_corrupt_image(exc: Exception) -> None:
    with pytest.raises(CorruptImage) as info, decoding("png"):
        raise exc
    assert (info.value.code, info.value.http_status) == ("corrupt_image", 422)
    assert type(exc).__name__ in info.value.message and info.value.__cause__ is exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (MemoryError(), MemoryError),  # an overloaded process, not a bad file: classify() makes it a 503
        (Image.DecompressionBombError("bomb"), DecompressionBomb),
        (ValueError("Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK"), DecompressionBomb),
        (TooManyPixels("over"), TooManyPixels),  # our own errors pass through
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else type(v).__name__,
)
def test_limits_and_memory_keep_their_own_codes(exc: Exception, expected: type[BaseException]) -> None:
    with pytest.raises(expected), decoding("png"):
        raise exc


# --- the upload probe -----------------------------------------------------------------------------

MAGIC = {
    "jpeg": b"\xff\xd8\xff",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "webp": b"RIFF\x00\x10\x00\x00WEBP",
    "tiff": b"MM\x00*",
    "bmp": b"BM" + b"\0" * 12 + b"\x7c\0\0\0",
}


@pytest.mark.parametrize("fmt", sorted(MAGIC))
def test_probe_of_garbage_after_a_magic_number(fmt: str) -> None:
    # Issue 9: JPEG magic + random bytes raised KeyError('MPO') out of the probe.
    data = MAGIC[fmt] + bytes(range(7, 250, 3)) * 3
    with pytest.raises(CorruptImage):
        probe_header(data, Limits(), complete=True)  # the whole file: broken
    assert probe_header(data, Limits()) == Probe(fmt, None, None)  # a prefix: maybe just cut


def test_a_multi_picture_jpeg_opens_through_the_jpeg_opener() -> None:
    first, second = images.photo_image(40, 30, seed=1), images.photo_image(40, 30, seed=2)
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[second])
    mpo = buf.getvalue()
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    assert probe_header(mpo, Limits(), complete=True) == Probe("jpeg", 40, 30)
    assert transform(mpo, [VariantSpec("a", 20)], Limits()).renditions[0].width == 20


# Real inputs from the fuzz runs' corpora: the smallest one for each exception type Pillow raised
# (several escaped the probe or the engine on main), and what the whole-file probe says of it:
# corrupt_image, or None when the header parses and only the pixel data is broken.
FOUND = {
    # name: (what Pillow raised, what the whole-file probe says, base64 of the input)
    "jpeg-magic-only": (
        "KeyError('MPO') out of the probe on main",
        "corrupt_image",
        "/9j/",
    ),
    "jpeg-truncated-app2": (
        "OSError: Truncated File Read",
        "corrupt_image",
        "/9j////iSQI=",
    ),
    "bigtiff-bad-frame": (
        "ValueError: Unable to seek to frame",
        "corrupt_image",
        "SUkrAGlNUEYAaYw6hTXKpQ==",
    ),
    "png-short-chunk": (
        "struct.error in PIL/_binary.py",
        None,
        "iVBORw0KGgoAAAANSUhEUgAAABgAAAAQAQAAADgMXTqmAAAAS0lEQVR4",
    ),
    "png-broken-chunk": (
        "SyntaxError: broken PNG file",
        None,
        (
            "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAGEAIAAAAh95TvAAAANUlEQVR4nOXL0QAAMAxDwQcTmcLUIQyFqUxgtnns/w44aNKm"
            "tDG9U2aq12xKJq1AAAAAAAD6HgAAAABJRU5ErkJggg=="
        ),
    ),
    "tiff-unknown-tag": (
        "KeyError in TiffImagePlugin",
        None,
        (
            "SUkqAAgAAAAJAAABBAABAAAAEAAAAAEBBAABAAAADAAAAAIBAwABAAAAEAAAAAMBAwABAAAAAQAAAAYBAwABAAAAAQAAABEB"
            "BAABAAAAegAAABYBBAABAAAADAAAABcBBAABAAAAgAEAABwBAwABAAAAAAALAAsACx8AHwAfAB8AHwA="
        ),
    ),
    "gif-bad-lzw": (
        "IndexError in GifImagePlugin",
        None,
        (
            "R0lGODlhCAAGAIEAAP8AAAAAAAAAAAAAACH/C05FVFNDQVBFMi4wAwEAAAAh+QQACgAAACwAAAAACAAGAAAIDgABCAAAsKDB"
            "gwgTDgwIACH5BAEKAAEALAAAAAAIAP/Y/wD/////////////////////oMEtCBMAAAAIAAYAgQAA/wAAAAAAAJ4AAAAIDgAB"
            "CBxIsKDBgwgTDgwIADs="
        ),
    ),
    "avif-missing-item": (
        "RuntimeError out of probe and engine on main",
        "corrupt_image",
        (
            "AAAAIGZ0eXBhdmlmAAAAAGF2aWZtaWYxbWlhZk1BMUIAAADrbWV0YQAAAAAAAAAhaGRscgAAAAAAAAAAcGljdAAAAAAAAAAA"
            "AAAAAAAAAAAOcGl0bQAAAAAAAQAAAB5pbG9jAAAAAEQAAAEAAQAAAAEAAAETAAAASgAAAChpaW5mAAAAAAABAAAAGmluZmUC"
            "AAAAAAEAAGF2MDBDb2xvcgAAAABqaXBycAAAAEtpcGNvAAAAFGlzcGUAAAAAAAAAGAAAABAAAAAQcGl4aQAAAP//////////"
            "///////////////////d0000wsVUANWVmNt63ZX3L16l3jPFqitdVnlS9A20dn88daOEKfezEdA="
        ),
    ),
    "avif-bad-color-planes": (
        "RuntimeError out of load() on main: Decoding of color planes failed",
        None,
        (
            "AAAAIGZ0eXBhdmlmAAAAAGF2aWZtaWYxbWlhZk1BMUIAAADrbWV0YQAAAAAAAAAhaGRscgAAAAAAAAAAcGljdAAAAAAAAAAA"
            "AAAAAAAAAAAOcGl0bQAAAAAAAQAAAB5pbG9jAAAAAEQAAAEAAQAAAAEAAAETAAAASgAAAChpaW5mAAAAAAABAAAAGmluZmUC"
            "AAAAAAEAAGF2MDFDb2xvcgAAAABqaXBycAAAAEtpcGNvAAAAFGlzcGUAAAAAAAAAGAAAABAAAAAQcGl4aQAAAAADCAgIAAAA"
            "DGF2MUOBAAwAAAAAE2NvbHJuY2x4AAEADQAGgAAAABdpcG1hAAAAAAAAAAEAAQQBAoMEAAAAUm1kYXQSAAoJGElEQVQQ7+0Q"
            "ENBoQDI7HEeHhd3TTTTCxVQA1ZWY23rdlfcvXqXl3jPFqitdVnlS9A20dn88daOEKT2ia4syOTCSW6D9fPezEdA="
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_inputs_that_made_pillow_raise_are_classified(name: str) -> None:
    _, probe_says, b64 = FOUND[name]
    data = base64.b64decode("".join(b64))
    limits = Limits(max_pixels=1_000_000)
    with pytest.raises(CorruptImage) as info:
        transform(data, get_preset("thumbs"), limits)
    assert info.value.__cause__ is not None  # the decoder's own exception, kept for the log
    if probe_says is None:
        assert probe_header(data, limits, complete=True).width
    else:
        with pytest.raises(CorruptImage):
            probe_header(data, limits, complete=True)


# --- the engine: variants its encoder (or the pixel limit) cannot hold -----------------------------


def _strip(w: int, h: int) -> bytes:
    """A flat image of ``w x h``: a GIF, or a PNG when GIF cannot hold it (more than 65,535 a side)."""
    buf = io.BytesIO()
    Image.new("P", (w, h), 1).save(buf, "GIF" if max(w, h) <= 65_535 else "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "variants", "message"),
    [
        # Found by the engine harness: an 8 x 29798 GIF, fit to width 40 (never enlarged) as WebP.
        ((8, 29_798), [VariantSpec("b", 40, format="webp")], "'b' would be 8x29798; webp holds at most 16,383"),
        ((70_000, 1), [VariantSpec("o", format="jpeg")], "'o' would be 70000x1; jpeg holds at most 65,500"),
        # upscale may ask for any size: 10000 x 10000 from a 2 x 2 source is 100 MP, ...
        ((2, 2), [VariantSpec("u", 10_000, 10_000, mode="exact", upscale=True)], "'u' would be 10000x10000; the limit"),
        # ... and so may many variants that are each below the limit: 8 x 7000 x 7000 is 392 MP
        (
            (2, 2),
            [VariantSpec(f"v{i}", 7_000, 7_000 - i, mode="exact", upscale=True, format="png") for i in range(8)],
            "the variants would total 391,804,004 pixels; the limit is 100,000,000",
        ),
    ],
)
def test_variants_too_large_fail_before_rendering(
    size: tuple[int, int], variants: list[VariantSpec], message: str
) -> None:
    with pytest.raises(OutputTooLarge) as info:
        transform(_strip(*size), [VariantSpec("small", 16), *variants], Limits())
    assert (info.value.code, info.value.http_status) == ("output_too_large", 422)
    assert message in info.value.message


def test_variants_of_one_size_share_their_pixels_within_the_limit() -> None:
    # A full-size JPEG, PNG and WebP of a source at the pixel limit: one geometry, 3 x 1 MP < 2 x 1 MP.
    full = [VariantSpec("j"), VariantSpec("p", format="png"), VariantSpec("w", format="webp")]
    result = transform(_strip(1000, 1000), [*full, VariantSpec("half", 500)], Limits(max_pixels=1_000_000))
    assert [(r.width, r.height) for r in result.renditions] == [(1000, 1000)] * 3 + [(500, 500)]


def test_the_largest_variants_a_format_holds_still_render() -> None:
    result = transform(_strip(16_383, 2), [VariantSpec("w", format="webp"), VariantSpec("p", format="png")], Limits())
    assert [(r.width, r.height) for r in result.renditions] == [(16_383, 2), (16_383, 2)]


# --- job messages and S3 events -------------------------------------------------------------------

JOB_ID = "0123456789abcdef0123456789abcdef"


def _event(obj: object = None, bucket: object = "b", record: object = None) -> str:
    s3 = {"bucket": {"name": bucket}, "object": obj if obj is not None else {"key": "k"}}
    return json.dumps({"Records": [record if record is not None else {"eventName": "ObjectCreated:Put", "s3": s3}]})


def _job(**source: object) -> str:
    doc = {"type": "pixfleet.job", "version": 1, "job_id": JOB_ID, "source": {"bucket": "b", "key": "k", **source}}
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        # found by the messages harness: AttributeError out of unquote_plus, or a job S3 cannot serve
        (_event({"key": None}), "object key"),
        (_event({"key": ["a"]}), "object key"),
        (_event({"key": {"a": 1}}), "object key"),
        (_event({"key": ""}), "object key"),
        (_event(bucket=[{"": 1}]), "bucket name"),
        (_event(bucket={}), "bucket name"),
        (_event(bucket=""), "bucket name"),
        (_job(bucket=""), "source.bucket"),
        (_job(key=""), "source.bucket"),
        # found while writing the harness's oracle (what a valid job is), not yet by a run
        (_event({"key": "\ud800"}), "object key"),  # a lone surrogate: uuid5 cannot hash the key
        (_job(key="\udcff"), "source.bucket"),
        (_job(content_type={"a": 1}), "content_type"),
        ("[" * 100_000, "nested too deeply"),  # RecursionError out of json.loads
    ],
)
def test_malformed_messages_are_invalid_messages(body: str, fragment: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_message(body)
    assert fragment in info.value.message


@pytest.mark.parametrize(("size", "expected"), [(12, 12), (True, None), (-1, None), (1.5, None), ("9", None)])
def test_a_size_that_is_not_a_count_is_dropped(size: object, expected: int | None) -> None:
    (job,) = parse_message(_job(size=size))
    assert job.size == expected
    (job,) = parse_message(_event({"key": "k", "size": size}))
    assert job.size == expected


# --- operations -------------------------------------------------------------------------------------


def test_an_operation_without_a_name_lists_every_problem() -> None:
    # Found by the operations harness: the missing name surfaced as Python's own TypeError text.
    with pytest.raises(InvalidSpec) as info:
        parse_operations([{"width": 100, "colour": "red"}])
    assert info.value.message == "unknown field 'colour'; field 'name' is required"
