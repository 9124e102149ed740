"""Fuzz the upload probe (magic bytes + header size) on arbitrary bytes.

``python -m tests.fuzz.probe [libFuzzer flags] [corpus_dir ...]``

Oracle, for every input: :func:`detect_format` and :func:`probe_header` (as a
prefix, and as a whole file) either return a valid :class:`Probe` or raise a
classified :class:`~pipeline.errors.PermanentError`; a whole-file probe that
succeeds reports a size, and the prefix probe agrees with it.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.errors import PermanentError
from pipeline.transform.probe import SUPPORTED_FORMATS, Probe, detect_format, probe_header
from pipeline.transform.spec import Limits
from tests.fuzz._harness import Crash, classified, main
from tests.fuzz.seeds import IMAGE_TOKENS, image_seeds

LIMITS = Limits(max_pixels=50_000_000)
# Recognised-but-refused formats: the probe must say unsupported_format, not crash.
OTHER_MAGIC = (
    b"%PDF-1.7\n",
    b"8BPS\x00\x01" + b"\0" * 20,
    b"\x00\x00\x01\x00\x01\x00\x10\x10" + b"\0" * 20,
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isomavc1",
    b'<svg xmlns="http://www.w3.org/2000/svg"/>',
    b"P6\n10 10\n255\n" + b"\0" * 30,
    b"BM" + b"\0" * 12 + b"\x28\0\0\0",
)


def _valid(probe: Probe, *, sized: bool) -> None:
    if probe.format not in SUPPORTED_FORMATS:
        raise Crash(f"probe format {probe.format!r}")
    if (probe.width is None) != (probe.height is None):
        raise Crash(f"half a size: {probe}")
    if probe.width is None:
        if sized:
            raise Crash(f"a whole-file probe without a size: {probe}")
        return
    assert probe.width is not None and probe.height is not None
    if not (isinstance(probe.width, int) and isinstance(probe.height, int) and probe.width > 0 and probe.height > 0):
        raise Crash(f"bad size: {probe}")
    if probe.width * probe.height > LIMITS.max_pixels:
        raise Crash(f"over the pixel limit but accepted: {probe}")


def check(data: bytes) -> str:
    try:
        fmt = detect_format(data)
    except Exception as exc:
        return classified(exc)
    try:
        whole = probe_header(data, LIMITS, complete=True)
    except Exception as exc:
        label = classified(exc)
        try:
            probe_header(data, LIMITS)
        except PermanentError:
            pass  # a prefix may be refused too (over the limit); anything else is checked below
        except Exception as inner:
            classified(inner)
        return label
    _valid(whole, sized=True)
    if whole.format != fmt:
        raise Crash(f"detect_format says {fmt}, probe says {whole.format}")
    prefix = probe_header(data, LIMITS)
    _valid(prefix, sized=False)
    if prefix != whole:
        raise Crash(f"prefix probe {prefix} != whole-file probe {whole}")
    return f"ok-{fmt}"


def seeds() -> Iterable[bytes]:
    for _, data in image_seeds():
        yield data
        yield data[: max(16, len(data) // 3)]  # cut headers: the prefix path
    yield from OTHER_MAGIC


if __name__ == "__main__":
    main("probe", check, seeds, tokens=IMAGE_TOKENS, defaults=["-max_len=4096"])
