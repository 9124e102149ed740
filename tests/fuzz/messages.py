"""Fuzz the job queue's message parser: pixfleet job messages and S3 event notifications.

``python -m tests.fuzz.messages [libFuzzer flags] [corpus_dir ...]``

An input's first byte picks the mode: even → the rest is the message body as
text (byte-level mutations of generated messages, with a JSON token
dictionary); odd → the rest drives a hypothesis strategy that builds messages
of the right shape with any part swapped for an arbitrary JSON value
(structure-aware; hypothesis turns the bytes into choices).

Oracle: :func:`parse_message` raises a classified
:class:`~pipeline.errors.PermanentError` whose public message holds no validation
library's or Python's words (:func:`~tests.fuzz._harness.public`), or returns jobs that are valid — a 32-hex
job id, a non-empty bucket and key that S3 can be asked for, fields of the types
the worker reads — and survive a round trip through :meth:`JobMessage.to_json`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.messages import JOB_ID_RE, JobMessage, parse_message
from pipeline.transform.spec import VariantSpec
from tests.fuzz._harness import Crash, classified, main, public

JOB_ID = "0123456789abcdef0123456789abcdef"


def valid_job(job: JobMessage) -> None:
    """Raise :class:`Crash` unless ``job`` is something the worker can act on."""
    problems = []
    if not (isinstance(job.job_id, str) and JOB_ID_RE.match(job.job_id)):
        problems.append(f"job_id {job.job_id!r}")
    for name in ("bucket", "key"):
        value = getattr(job, name)
        if not isinstance(value, str) or not value:
            problems.append(f"{name} {value!r}")
        else:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                problems.append(f"{name} {value!r} is not UTF-8 encodable")
    for name in ("preset", "content_type"):
        if getattr(job, name) is not None and not isinstance(getattr(job, name), str):
            problems.append(f"{name} {getattr(job, name)!r}")
    if job.size is not None and (type(job.size) is not int or job.size < 0):
        problems.append(f"size {job.size!r}")
    if not isinstance(job.submitted_at, str) or not isinstance(job.origin, str):
        problems.append(f"submitted_at/origin {job.submitted_at!r}/{job.origin!r}")
    if job.operations is not None and not (
        isinstance(job.operations, tuple)
        and job.operations
        and all(isinstance(op, VariantSpec) and VariantSpec.from_dict(op.to_dict()) == op for op in job.operations)
    ):
        problems.append(f"operations {job.operations!r}")
    if problems:
        fields = ", ".join(p.split()[0] for p in problems)
        raise Crash("invalid job: " + "; ".join(problems), f"invalid job: {fields}")
    again = parse_message(job.to_json())
    if again != [job]:
        raise Crash(f"round trip changed the job: {job} -> {again}", "round trip changed the job")


def check_body(body: str) -> str:
    try:
        jobs = parse_message(body)
    except Exception as exc:
        outcome = classified(exc, library_causes=False)
        public(exc)
        return outcome
    if not isinstance(jobs, list):
        raise Crash(f"parse_message returned {type(jobs).__name__}")
    for job in jobs:
        if not isinstance(job, JobMessage):
            raise Crash(f"parse_message returned a {type(job).__name__} in its list")
        valid_job(job)
    return f"ok-{len(jobs)}-jobs" if len(jobs) < 3 else "ok-many-jobs"


# --- structure-aware mode -----------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=6,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually ``strategy``; sometimes any JSON value instead."""
    return st.one_of(strategy, strategy, strategy, json_values)


keys = st.one_of(
    st.just(f"incoming/{JOB_ID}/original"),
    st.builds(lambda k: f"incoming/{k}", any_text),
    any_text,
    st.just("a+b%2Fc%ZZ%e2%82"),
)
operation = st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["a", "b", "w320"]))},
    optional={
        "width": maybe(st.integers(0, 10_001)),
        "height": maybe(st.integers(0, 10_001)),
        "mode": maybe(st.sampled_from(["fit", "fill", "exact"])),
        "format": maybe(st.sampled_from(["jpeg", "png", "webp", "avif"])),
        "quality": maybe(st.integers(0, 101)),
    },
)
job_doc = st.fixed_dictionaries(
    {"type": maybe(st.just("pixfleet.job")), "version": maybe(st.just(1)), "job_id": maybe(st.just(JOB_ID))},
    optional={
        "source": maybe(
            st.fixed_dictionaries(
                {"bucket": maybe(st.just("pixfleet-input")), "key": maybe(keys)},
                optional={"content_type": maybe(st.just("image/jpeg")), "size": maybe(st.integers(-1, 10**12))},
            )
        ),
        "preset": maybe(st.sampled_from(["web", "thumbs", None])),
        "operations": maybe(st.lists(maybe(operation), max_size=3)),
        "submitted_at": maybe(st.just("2026-01-01T00:00:00.000Z")),
        "origin": maybe(st.sampled_from(["api", "s3-event"])),
    },
)
record = st.fixed_dictionaries(
    {
        "s3": maybe(
            st.fixed_dictionaries(
                {
                    "bucket": maybe(st.fixed_dictionaries({"name": maybe(st.just("pixfleet-input"))})),
                    "object": maybe(
                        st.fixed_dictionaries({"key": maybe(keys)}, optional={"size": maybe(st.integers(-1, 10**9))})
                    ),
                }
            )
        )
    },
    optional={
        "eventName": maybe(st.sampled_from(["ObjectCreated:Post", "ObjectCreated:Put", "ObjectRemoved:Delete"])),
        "eventTime": maybe(st.just("2026-01-01T00:00:00.000Z")),
    },
)
s3_event = st.one_of(
    st.fixed_dictionaries({"Records": maybe(st.lists(maybe(record), max_size=3))}),
    st.fixed_dictionaries({"Event": maybe(st.just("s3:TestEvent"))}),
)
OUTCOME: list[str] = [""]


@settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(job_doc, s3_event, json_values))
def structured(doc: Any) -> None:
    OUTCOME[0] = check_body(json.dumps(doc))


def check(data: bytes) -> str:
    if not data:
        return "empty"
    if data[0] % 2 == 0:
        return check_body(data[1:].decode("utf-8", "replace"))
    OUTCOME[0] = "hypothesis-rejected"
    structured.hypothesis.fuzz_one_input(data[1:])  # type: ignore[attr-defined]
    return OUTCOME[0]


def seeds() -> Iterable[bytes]:
    job = JobMessage(JOB_ID, "pixfleet-input", f"uploads/{JOB_ID}/original", preset="web", size=1234)
    ops = (VariantSpec("a", 64, 64, mode="fill", format="png"), VariantSpec("b", 100))
    texts = [
        job.to_json(),
        JobMessage(JOB_ID, "b", "k", operations=ops, content_type="image/png").to_json(),
        json.dumps({"Event": "s3:TestEvent", "Bucket": "pixfleet-input"}),
        json.dumps(
            {
                "Records": [
                    {
                        "eventName": "ObjectCreated:Post",
                        "eventTime": "2026-01-01T00:00:00.000Z",
                        "s3": {
                            "bucket": {"name": "pixfleet-input"},
                            "object": {"key": f"incoming/{JOB_ID}/original", "size": 10, "sequencer": "0A1B"},
                        },
                    },
                    {
                        "eventName": "ObjectCreated:Put",
                        "s3": {"bucket": {"name": "b"}, "object": {"key": "my+photo%C3%A9.jpg"}},
                    },
                    {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "b"}, "object": {"key": "x"}}},
                ]
            }
        ),
        "[" * 200 + "]" * 200,
        "not json",
    ]
    for text in texts:
        yield b"\x00" + text.encode()
    for i in range(8):
        yield bytes([2 * i + 1]) + bytes(range(i * 7, i * 7 + 40))


TOKENS = [
    t.encode()
    for t in (
        '"type"',
        '"pixfleet.job"',
        '"version"',
        '"job_id"',
        '"source"',
        '"bucket"',
        '"key"',
        '"content_type"',
        '"size"',
        '"preset"',
        '"operations"',
        '"submitted_at"',
        '"origin"',
        '"Records"',
        '"s3"',
        '"object"',
        '"name"',
        '"eventName"',
        '"eventTime"',
        '"ObjectCreated:Put"',
        '"Event"',
        '"s3:TestEvent"',
        "null",
        "true",
        "false",
        "NaN",
        "-Infinity",
        "1e999",
        '"\\ud800"',
        '"\\u0000"',
        "%2F",
        "%ZZ",
        "+",
        "[[[[",
        "{}",
        '"incoming/"',
        JOB_ID,
    )
]


if __name__ == "__main__":
    main("messages", check, seeds, tokens=TOKENS, defaults=["-max_len=8192"], instrument_prefixes=("json", "urllib"))
