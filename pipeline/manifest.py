"""Where a job's results live and the manifest that records its outcome.

Output layout in the output bucket (deterministic, so a redelivered or
duplicated message overwrites the same objects instead of adding new ones)::

    results/{job_id}/{variant}.{ext}     one object per variant
    results/{job_id}/manifest.json       written first as "processing", last as the outcome

The manifest is the job's record: the API reads it to answer ``GET /v1/jobs/{id}``.
``attempts`` is its history: one entry per delivery that started work, with how it
ended (``succeeded``, ``failed``, ``error`` — retried later — or ``interrupted``: the
worker stopped without finishing, e.g. it was killed). :class:`ManifestStore` is the
one place that reads and writes manifests; writes can be conditional on the version
read (S3 ``If-Match`` / ``If-None-Match``), so two writers never silently overwrite
each other's outcome.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

Status = Literal["awaiting_upload", "queued", "processing", "succeeded", "failed"]
Outcome = Literal["succeeded", "failed", "error", "interrupted"]
STATUSES: tuple[str, ...] = get_args(Status)
TERMINAL = ("succeeded", "failed")
ATTEMPT_OUTCOMES: tuple[str, ...] = get_args(Outcome)


def results_prefix(job_id: str) -> str:
    return f"results/{job_id}/"


def output_key(job_id: str, variant: str, extension: str) -> str:
    return f"results/{job_id}/{variant}.{extension}"


def manifest_key(job_id: str) -> str:
    return f"results/{job_id}/manifest.json"


def upload_key(job_id: str) -> str:
    """Where the API streams an upload in the input bucket."""
    return f"uploads/{job_id}/original"


INCOMING_PREFIX = "incoming/"


def reservation_key(job_id: str) -> str:
    """Where the API notes a presigned upload it handed out (the job is ``awaiting_upload`` until it arrives)."""
    return f"uploads/{job_id}/reservation.json"


def incoming_key(job_id: str) -> str:
    """Where a presigned POST puts a direct upload (this prefix triggers the S3 event)."""
    return f"incoming/{job_id}/original"


# Records we wrote ourselves: a field a newer writer adds is kept out, not refused.
_RECORD = ConfigDict(extra="ignore")


@dataclass(config=_RECORD)
class OutputRecord:
    variant: str
    format: str
    width: int
    height: int
    bytes: int
    key: str
    content_type: str


@dataclass(frozen=True, config=_RECORD)
class Attempt:
    """One delivery of the job's message that started work, and how it ended."""

    attempt: int
    outcome: Outcome
    worker_id: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    error: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(config=_RECORD)
class Manifest:
    """The recorded state of one job."""

    job_id: str
    status: Status
    source: dict[str, Any] = Field(default_factory=dict)
    preset: str | None = None
    outputs: list[OutputRecord] = Field(default_factory=list)
    error: dict[str, str] | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempt: int = 1
    worker_id: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    attempts: list[Attempt] = Field(default_factory=list)
    version: int = 1

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def attempt_record(
        self, outcome: Outcome, *, ended_at: str | None = None, error: dict[str, str] | None = None
    ) -> Attempt:
        """This manifest's current attempt as a history entry that ended with ``outcome``."""
        return Attempt(
            attempt=self.attempt,
            worker_id=self.worker_id,
            started_at=self.started_at,
            ended_at=ended_at,
            outcome=outcome,
            error=error,
        )

    def history(self) -> list[Attempt]:
        """Every attempt so far; an attempt still recorded as running counts as interrupted (nobody finished it)."""
        attempts = list(self.attempts)
        if self.status == "processing" and not any(a.attempt == self.attempt for a in attempts):
            attempts.append(self.attempt_record("interrupted"))
        return attempts

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Manifest:
        """Validate a stored manifest (raises pydantic's ``ValidationError`` for one that is not)."""
        return _MANIFEST.validate_json(raw)


_MANIFEST = TypeAdapter(Manifest)


class ManifestConflict(Exception):
    """A conditional manifest write lost: someone else wrote the manifest since it was read."""


def planned_output_keys(job_id: str, preset: str | None, operations: Any = None) -> list[str]:
    """The keys a job's variants are written to (what a failed job must not leave behind).

    ``operations`` are the job's explicit variants (VariantSpecs), else the preset's; an unknown preset plans none.
    """
    from pipeline.errors import PermanentError
    from pipeline.transform.presets import DEFAULT_PRESET, get_preset

    variants = operations
    if not variants:
        try:
            variants = get_preset(preset or DEFAULT_PRESET)
        except PermanentError:
            return []
    return [output_key(job_id, spec.name, spec.extension) for spec in variants]


class ManifestStore:
    """Reads and writes job manifests in the output bucket (the one place that does)."""

    def __init__(self, s3: Any, bucket: str, *, timeout: float | None = None):
        self.s3 = s3
        self.bucket = bucket
        self.timeout = timeout

    async def _call(self, coro: Any) -> Any:
        return await (asyncio.wait_for(coro, self.timeout) if self.timeout else coro)

    async def read(self, job_id: str) -> tuple[Manifest | None, str | None]:
        """The job's manifest and its ETag, or ``(None, None)`` when there is none yet."""
        from pipeline.errors import InternalError, is_missing_readable_object

        try:
            obj = await self._call(self.s3.get_object(Bucket=self.bucket, Key=manifest_key(job_id)))
        except Exception as exc:
            if is_missing_readable_object(exc):
                return None, None
            raise
        async with obj["Body"] as body:
            raw = await self._call(body.read())
        try:
            return Manifest.from_json(raw), obj.get("ETag")
        except ValidationError as exc:  # our own record, so a bug (or someone else's write) if it is not one
            fields = sorted({".".join(map(str, e["loc"])) or "(the document)" for e in exc.errors()})
            raise InternalError(f"the manifest of job {job_id} is malformed: {', '.join(fields)}") from None

    async def remove(self, keys: list[str]) -> None:
        """Delete objects (a failed job's partial outputs); a key that is not there is no error."""
        await asyncio.gather(*(self._call(self.s3.delete_object(Bucket=self.bucket, Key=key)) for key in keys))

    async def get(self, job_id: str) -> Manifest | None:
        return (await self.read(job_id))[0]

    async def write(self, manifest: Manifest, *, if_match: str | None = None, if_absent: bool = False) -> str | None:
        """Store the manifest; with ``if_match`` (an ETag) or ``if_absent`` only if nobody wrote it since.

        Raises :class:`ManifestConflict` when the condition fails. Returns the new ETag.
        """
        from pipeline.errors import aws_error_code

        conditions: dict[str, str] = {}
        if if_match:
            conditions["IfMatch"] = if_match
        elif if_absent:
            conditions["IfNoneMatch"] = "*"
        try:
            answer = await self._call(
                self.s3.put_object(
                    Bucket=self.bucket,
                    Key=manifest_key(manifest.job_id),
                    Body=manifest.to_json(),
                    ContentType="application/json",
                    **conditions,
                )
            )
        except Exception as exc:
            if conditions and aws_error_code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                raise ManifestConflict(manifest.job_id) from exc
            raise
        return answer.get("ETag")
