"""Fuzz explicit operations (variant lists from a request or a job message), parse to render.

``python -m tests.fuzz.operations [libFuzzer flags] [corpus_dir ...]``

An input's first byte picks the mode: even → the rest is JSON text (byte-level
mutations of generated operation lists, with a token dictionary); odd → the rest
drives a hypothesis strategy that builds operation lists field by field, any
value sometimes swapped for an arbitrary JSON value.

Oracle: :func:`parse_operations` raises a classified
:class:`~pipeline.errors.PermanentError` with a public message of our own words, or
returns specs that are valid, survive
a round trip through ``to_dict`` and a job message, plan to sane geometries on
extreme source shapes, and render: a valid spec either renders a tiny image or
fails with a classified error (an output over the limits), never anything else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.messages import JobMessage, parse_message
from pipeline.transform.engine import plan_geometry, transform
from pipeline.transform.spec import FORMATS, GRAVITIES, MODES, Limits, VariantSpec, parse_operations
from tests import images
from tests.fuzz._harness import Crash, classified, main, public
from tests.fuzz.messages import json_values, maybe

LIMITS = Limits(max_pixels=1_000_000)
SHAPES = ((1, 1), (1, 10_000), (10_000, 1), (640, 480), (7, 3), (50_000, 1_000))
SOURCES = (
    images.photo_jpeg(5, 3, quality=60),
    images.png_rgba(2, 7),
    images.animated_gif(1, 1, 2),
)


def _planned(spec: VariantSpec) -> None:
    for w, h in SHAPES:
        g = plan_geometry(w, h, spec)
        (ow, oh), (x0, y0, x1, y1) = g.out, g.region
        if ow < 1 or oh < 1 or not all(math.isfinite(v) for v in g.region):
            raise Crash(f"{spec} on {w}x{h}: geometry {g}", "degenerate geometry")
        if not (-1e-6 <= x0 < x1 <= w + 1e-6 and -1e-6 <= y0 < y1 <= h + 1e-6):
            raise Crash(f"{spec} on {w}x{h}: region {g.region} outside the source", "region outside the source")
        box = (spec.width or math.inf, spec.height or math.inf)
        if ow > box[0] or oh > box[1] or (not spec.upscale and (ow > w or oh > h)):
            raise Crash(f"{spec} on {w}x{h}: output {g.out} outside its box or enlarged", "output outside its box")


def check_value(raw: Any) -> str:
    try:
        specs = parse_operations(raw)
    except Exception as exc:
        outcome = classified(exc, library_causes=False)
        public(exc)
        return outcome
    if not (isinstance(specs, tuple) and 1 <= len(specs) <= 16 and all(isinstance(s, VariantSpec) for s in specs)):
        raise Crash(f"parse_operations returned {specs!r}", "not a tuple of 1..16 specs")
    if len({s.name for s in specs}) != len(specs):
        raise Crash(f"invalid specs accepted: {specs}", "invalid specs accepted")
    if parse_operations([s.to_dict() for s in specs]) != specs:  # each spec is valid, and survives
        raise Crash(f"to_dict round trip changed {specs}", "to_dict round trip")
    job = JobMessage("0" * 32, "b", "k", operations=specs)
    if parse_message(job.to_json()) != [job]:
        raise Crash(f"job message round trip changed {specs}", "job message round trip")
    for spec in specs:
        _planned(spec)
    source = SOURCES[len(specs) % len(SOURCES)]
    try:
        result = transform(source, specs, LIMITS)
    except Exception as exc:
        return "render-" + classified(exc)
    if len(result.renditions) != len(specs):
        raise Crash("renditions lost", "renditions lost")
    return f"ok-{len(specs)}"


def check_text(text: str) -> str:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return "not-json"
    return check_value(raw)


# --- structure-aware mode -----------------------------------------------------------------------

names = st.one_of(
    st.sampled_from(["a", "b", "w320", "thumb-2x"]), st.from_regex(r"[a-z0-9][a-z0-9_-]{0,41}", fullmatch=True)
)
dimension = st.one_of(st.integers(0, 10_001), st.none())
optional_fields: dict[str, st.SearchStrategy[Any]] = {
    "width": maybe(dimension),
    "height": maybe(dimension),
    "mode": maybe(st.sampled_from(MODES)),
    "format": maybe(st.sampled_from(FORMATS)),
    "quality": maybe(st.integers(0, 101)),
    "progressive": maybe(st.booleans()),
    "gravity": maybe(st.sampled_from(GRAVITIES)),
    "upscale": maybe(st.booleans()),
    "strip_metadata": maybe(st.booleans()),
    "grayscale": maybe(st.booleans()),
    "blur": maybe(st.floats(0, 101)),
    "sharpen": maybe(st.floats(0, 11)),
    "watermark": maybe(st.text(st.characters(codec="utf-8"), max_size=201)),
    "background": maybe(st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True)),
    "unknown": json_values,
}
operation = st.fixed_dictionaries({"name": maybe(names)}, optional=optional_fields)
OUTCOME: list[str] = [""]


@settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.lists(maybe(operation), min_size=0, max_size=17), json_values))
def structured(raw: Any) -> None:
    OUTCOME[0] = check_value(raw)


def check(data: bytes) -> str:
    if not data:
        return "empty"
    if data[0] % 2 == 0:
        return check_text(data[1:].decode("utf-8", "replace"))
    OUTCOME[0] = "hypothesis-rejected"
    structured.hypothesis.fuzz_one_input(data[1:])  # type: ignore[attr-defined]
    return OUTCOME[0]


def seeds() -> Iterable[bytes]:
    lists = [
        [{"name": "a", "width": 100}],
        [{"name": "sq", "width": 64, "height": 64, "mode": "fill", "format": "png", "grayscale": True}],
        [
            {"name": "x", "width": 30, "height": 20, "mode": "exact", "format": "webp", "upscale": True, "sharpen": 2},
            {"name": "y", "height": 9, "format": "avif", "quality": 40, "watermark": "© pixfleet", "blur": 0.5},
            {"name": "z", "width": 8, "height": 8, "mode": "fill", "gravity": "southwest", "background": "#00ff00"},
        ],
        [{"name": "a"}, {"name": "a"}],
        [{"name": "BAD", "width": -1, "mode": "stretch"}],
    ]
    for raw in lists:
        yield b"\x00" + json.dumps(raw).encode()
    for i in range(8):
        yield bytes([2 * i + 1]) + bytes(range(i * 11, i * 11 + 48))


TOKENS = [
    t.encode()
    for t in (
        '"name"',
        '"width"',
        '"height"',
        '"mode"',
        '"fit"',
        '"fill"',
        '"exact"',
        '"format"',
        '"jpeg"',
        '"png"',
        '"webp"',
        '"avif"',
        '"quality"',
        '"progressive"',
        '"gravity"',
        '"northeast"',
        '"upscale"',
        '"strip_metadata"',
        '"grayscale"',
        '"blur"',
        '"sharpen"',
        '"watermark"',
        '"background"',
        '"#ffffff"',
        "true",
        "false",
        "null",
        "10000",
        "10001",
        "0",
        "-1",
        "1e308",
        "NaN",
        "Infinity",
        "1.5",
    )
]


if __name__ == "__main__":
    main("operations", check, seeds, tokens=TOKENS, defaults=["-max_len=4096"])
