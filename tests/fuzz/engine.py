"""Fuzz the transform engine on mutated images of every supported format.

``python -m tests.fuzz.engine [libFuzzer flags] [corpus_dir ...]``

An input is one selector byte (which set of variants to render) followed by
the image bytes. Seeds are the generated images of :mod:`tests.fuzz.seeds`; a
custom mutator repairs PNG chunk CRCs and the RIFF size of three mutants in four,
so mutations get past the checksums into the chunk parsers.

Oracle: :func:`transform` raises a classified
:class:`~pipeline.errors.PermanentError` (whose root cause, if any, was raised by
Pillow, not by our code), or returns renditions that decode to the format and
size they claim. And the API never refuses what the worker renders: when the
engine succeeds, the whole-file probe accepts the same bytes with the same size.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterable

from PIL import Image

from pipeline.transform.engine import TransformResult, transform
from pipeline.transform.probe import probe_header
from pipeline.transform.spec import Limits, VariantSpec
from tests.fuzz._harness import Crash, classified, main
from tests.fuzz.seeds import IMAGE_TOKENS, image_seeds

LIMITS = Limits(max_bytes=2 * 1024 * 1024, max_pixels=1_000_000, max_frames=64)

# Cheap variant sets that together reach every step: modes, gravity, upscale, kept EXIF,
# every output format, grayscale/blur/sharpen/watermark/flatten.
VARIANT_SETS: tuple[tuple[VariantSpec, ...], ...] = (
    (VariantSpec("a", 48, 48),),
    (VariantSpec("a", 32, 24, mode="fill", format="png", grayscale=True), VariantSpec("b", 40, format="webp")),
    (
        VariantSpec("a", 20, 30, mode="exact", format="webp", sharpen=1.0),
        VariantSpec("b", 64, 64, mode="fill", upscale=True, strip_metadata=False, gravity="northeast"),
    ),
    (VariantSpec("a", 16, 16, format="avif", quality=30),),
    (
        VariantSpec("a", 30, format="png", watermark="pixfleet", blur=1.5),
        VariantSpec("b", None, 12, format="jpeg", progressive=True, background="#ff0000"),
    ),
)


def _valid(result: TransformResult, variants: tuple[VariantSpec, ...]) -> None:
    if result.source_width < 1 or result.source_height < 1 or result.frames < 1:
        raise Crash(f"bad source facts: {result.source_width}x{result.source_height}, {result.frames} frames")
    if [r.variant for r in result.renditions] != [v.name for v in variants]:
        raise Crash("renditions do not match the variants")
    for spec, r in zip(variants, result.renditions, strict=True):
        if (spec.width and r.width > spec.width) or (spec.height and r.height > spec.height):
            raise Crash(f"{spec.name}: {r.width}x{r.height} outside its {spec.width}x{spec.height} box")
        with Image.open(io.BytesIO(r.data)) as out:
            if (out.format, out.size) != (spec.format.upper(), (r.width, r.height)):
                raise Crash(f"{spec.name}: claims {spec.format} {r.width}x{r.height}, is {out.format} {out.size}")
            out.load()


def check(data: bytes) -> str:
    if not data:
        return "empty"
    variants, image = VARIANT_SETS[data[0] % len(VARIANT_SETS)], data[1:]
    try:
        result = transform(image, variants, LIMITS)
    except Exception as exc:
        return classified(exc)
    _valid(result, variants)
    try:
        probe = probe_header(image, LIMITS, complete=True)
    except Exception as exc:
        raise Crash(f"the API would refuse ({type(exc).__name__}: {exc}) an image the worker renders") from exc
    if {probe.width, probe.height} != {result.source_width, result.source_height}:
        raise Crash(f"probe size {probe.width}x{probe.height}, engine {result.source_width}x{result.source_height}")
    return f"ok-{result.source_format}"


def repair_checksums(image: bytes) -> bytes:
    """Recompute PNG chunk CRCs (as far as the chunk structure holds) and the RIFF size."""
    buf = bytearray(image)
    if buf.startswith(b"\x89PNG\r\n\x1a\n"):
        pos = 8
        while pos + 12 <= len(buf):
            (length,) = struct.unpack_from(">I", buf, pos)
            end = pos + 8 + length
            if end + 4 > len(buf):
                break
            struct.pack_into(">I", buf, end, zlib.crc32(bytes(buf[pos + 4 : end])) & 0xFFFFFFFF)
            pos = end + 4
    elif buf.startswith(b"RIFF") and len(buf) >= 12:
        struct.pack_into("<I", buf, 4, len(buf) - 8)
    return bytes(buf)


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    import atheris

    mutant = atheris.Mutate(data, max_size)
    if random.Random(seed).random() < 0.75 and len(mutant) > 1:
        mutant = mutant[:1] + repair_checksums(mutant[1:])
    return mutant


def seeds() -> Iterable[bytes]:
    for i, (_, image) in enumerate(image_seeds()):
        for selector in (i, i + 1):  # each image with two variant sets
            yield bytes([selector % len(VARIANT_SETS)]) + image


if __name__ == "__main__":
    main("engine", check, seeds, tokens=IMAGE_TOKENS, mutator=mutate, defaults=["-max_len=16384"])
