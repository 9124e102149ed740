"""The job message schema (v1) and the parser for everything that arrives on the job queue.

Two kinds of message reach the queue:

* a pixfleet job (``{"type": "pixfleet.job", "version": 1, ...}``), sent by the API
  after it has stored the upload;
* an S3 event notification (``{"Records": [{"s3": ...}]}``), sent by S3 when a
  client uploads straight to ``incoming/`` with a presigned POST. Keys in S3
  events are URL-encoded (``+`` for spaces) and are decoded here. S3's
  ``s3:TestEvent`` (sent when the notification is configured) is dropped.

The job of an object uploaded straight to the bucket is named by the object's key
(:func:`job_id_for_object`: the id in a key we minted, else a UUIDv5 of the key), so a
client finds it with ``GET /v1/jobs?key=…``. The object's **version** (its version id
where versioning is on, else the event's ETag) travels with the job: the worker renders
a version only while it is still the object's current content and treats a second
delivery of the same version as a duplicate, so a newer upload to the same key wins and
a late event for older content never overwrites a newer result.

Both shapes are pydantic models (:class:`JobDocument`, :class:`S3Event`). Whatever a
message holds, :func:`parse_message` returns valid :class:`JobMessage` values or raises
:class:`~pipeline.errors.InvalidMessage` (or :class:`~pipeline.errors.InvalidSpec` for bad
operations) whose one public message names every bad field at once; a value that is only
informative (a size that is not a count, an event time that is not a string) is dropped
or coerced rather than failing the job, as before.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import unquote_plus

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from pipeline.errors import InvalidMessage, problem_list
from pipeline.transform.spec import VariantSpec, parse_operations

SCHEMA_VERSION = 1
MESSAGE_TYPE = "pixfleet.job"
JOB_ID_PATTERN = "^[0-9a-f]{32}$"
JOB_ID_RE = re.compile(JOB_ID_PATTERN)
_INCOMING_KEY_RE = re.compile(r"^incoming/([0-9a-f]{32})/[^/]+$")


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hex digits (no client input ever becomes a key)."""
    return uuid.uuid4().hex


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class JobMessage:
    """One unit of work: render ``bucket/key`` with a preset or explicit operations.

    ``preset`` is None for S3 events: the worker then reads it from the object's
    ``x-amz-meta-preset`` (set by the presigned POST) or falls back to its default.
    """

    job_id: Annotated[str, Field(pattern=JOB_ID_PATTERN)]
    bucket: str
    key: str
    preset: str | None = None
    operations: tuple[VariantSpec, ...] | None = None
    submitted_at: str = Field(default_factory=utcnow_iso)
    content_type: str | None = None
    size: int | None = None
    origin: str = "api"
    object_version: str | None = None  # S3 events: version id or ETag of the content this job renders
    version_id: str | None = None  # S3 events on a versioned bucket
    sequencer: str | None = None  # S3 events: orders events for one key

    def to_dict(self) -> dict[str, Any]:
        source: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "content_type": self.content_type,
            "size": self.size,
        }
        for name in ("object_version", "version_id", "sequencer"):
            if getattr(self, name):
                source[name] = getattr(self, name)
        return {
            "type": MESSAGE_TYPE,
            "version": SCHEMA_VERSION,
            "job_id": self.job_id,
            "source": source,
            "preset": self.preset,
            "operations": [op.to_dict() for op in self.operations] if self.operations else None,
            "submitted_at": self.submitted_at,
            "origin": self.origin,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


def job_id_for_object(bucket: str, key: str) -> str:
    """The job of an object under ``incoming/``: the id in a key we minted, else a stable UUIDv5 of the key."""
    match = _INCOMING_KEY_RE.match(key)
    return match.group(1) if match else uuid.uuid5(uuid.NAMESPACE_URL, f"s3://{bucket}/{key}").hex


# --- the two shapes on the wire ----------------------------------------------------------------


def _utf8(value: str) -> str:
    value.encode("utf-8")  # JSON can carry lone surrogates ("\ud800"), which no S3 name holds
    return value


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None  # not a bool, not negative


def _text_or(default: Any) -> Any:
    """Any truthy value as its text, else ``default`` (a field that only informs, never fails a job)."""
    return BeforeValidator(lambda value: str(value) if value else default)


S3Name = Annotated[str, Strict(), Field(min_length=1), AfterValidator(_utf8)]  # a bucket or key S3 can be asked for
Count = Annotated[int | None, BeforeValidator(_count)]
Note = Annotated[str | None, _text_or(None)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class JobSource(_Wire):
    bucket: S3Name
    key: S3Name
    content_type: Annotated[str, Strict()] | None = None
    size: Count = None
    object_version: Note = None
    version_id: Note = None
    sequencer: Note = None


class JobDocument(_Wire):
    """A pixfleet job message, v1 (the API sends it; :meth:`JobMessage.to_dict` writes it)."""

    job_id: Annotated[str, Strict(), Field(pattern=JOB_ID_PATTERN)]
    source: JobSource
    preset: Annotated[str, Strict()] | None = None
    operations: Any = None  # validated by parse_operations (an InvalidSpec, as from an upload)
    submitted_at: Annotated[str, _text_or(None)] = Field(default_factory=utcnow_iso)
    origin: Annotated[str, _text_or("api")] = "api"


class S3Bucket(_Wire):
    name: S3Name


class S3Object(_Wire):
    key: Annotated[S3Name, BeforeValidator(lambda k: unquote_plus(k) if isinstance(k, str) else k)]  # URL-encoded
    size: Count = None
    eTag: Note = None
    etag: Note = None
    versionId: Note = None
    sequencer: Note = None


class S3Entity(_Wire):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Wire):
    eventName: Annotated[str, _text_or("ObjectCreated")] = "ObjectCreated"
    eventTime: Annotated[str, _text_or(None)] = Field(default_factory=utcnow_iso)
    s3: S3Entity


class S3Event(_Wire):
    """An S3 event notification: the records of objects created under ``incoming/``."""

    Records: list[S3Record]


# What each field must be, in the words of the message (loc with list indices left out).
_RULES = {
    ("job_id",): "job_id must be 32 hex digits",
    ("source",): "source.bucket and source.key are required (non-empty UTF-8 strings)",
    ("source", "bucket"): "source.bucket and source.key are required (non-empty UTF-8 strings)",
    ("source", "key"): "source.bucket and source.key are required (non-empty UTF-8 strings)",
    ("source", "content_type"): "source.content_type must be a string",
    ("preset",): "preset must be a string",
    ("submitted_at",): "submitted_at must be a string",
    ("Records",): "Records must be a list",
    ("Records", "s3", "bucket", "name"): "the bucket name is missing or not a non-empty UTF-8 string",
    ("Records", "s3", "object", "key"): "the object key is missing or not a non-empty UTF-8 string",
}
_NOT_A_RECORD = "not an S3 event record with s3.bucket.name and s3.object.key"


def _problems(errors: list[ErrorDetails]) -> list[str]:
    problems: list[str] = []
    for error in errors:
        loc = error["loc"]
        fields = tuple(str(part) for part in loc if not isinstance(part, int))
        if len(loc) > 1 and loc[0] == "Records":  # one record of an event
            text = f"Records[{loc[1]}]: {_RULES.get(fields, _NOT_A_RECORD) if len(fields) > 1 else _NOT_A_RECORD}"
        else:
            text = _RULES.get(fields, "malformed job message")
        if text not in problems:
            problems.append(text)
    return problems


# --- parsing ------------------------------------------------------------------------------------


def parse_message(body: str) -> list[JobMessage]:
    """Parse a queue message body into zero or more jobs.

    Returns ``[]`` for ``s3:TestEvent``; raises :class:`InvalidMessage` for anything
    that is neither a v1 job nor an S3 event (such a message goes to the DLQ).
    """
    try:
        doc = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage("message body is not JSON") from exc
    except RecursionError as exc:  # e.g. "[" * 100_000: deeper than the parser's stack
        raise InvalidMessage("message body is nested too deeply") from exc
    if not isinstance(doc, dict):
        raise InvalidMessage("message body is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return []
    try:
        if "Records" in doc:
            return _jobs_of_event(S3Event.model_validate(doc))
        if doc.get("type") == MESSAGE_TYPE:
            if doc.get("version") != SCHEMA_VERSION:
                raise InvalidMessage(f"unsupported job message version {doc.get('version')!r}")
            return [_job(JobDocument.model_validate(doc))]
    except ValidationError as exc:
        raise InvalidMessage(problem_list(_problems(exc.errors()))) from None
    raise InvalidMessage("message is neither a pixfleet job nor an S3 event notification")


def _job(doc: JobDocument) -> JobMessage:
    source = doc.source
    return JobMessage(
        job_id=doc.job_id,
        bucket=source.bucket,
        key=source.key,
        preset=doc.preset,
        operations=parse_operations(doc.operations) if doc.operations else None,
        submitted_at=doc.submitted_at,
        content_type=source.content_type,
        size=source.size,
        origin=doc.origin,
        object_version=source.object_version,
        version_id=source.version_id,
        sequencer=source.sequencer,
    )


def _jobs_of_event(event: S3Event) -> list[JobMessage]:
    jobs = []
    for record in event.Records:
        if not record.eventName.startswith("ObjectCreated"):
            continue
        bucket, obj = record.s3.bucket.name, record.s3.object
        version = obj.versionId or obj.eTag or obj.etag
        jobs.append(
            JobMessage(
                job_id=job_id_for_object(bucket, obj.key),
                bucket=bucket,
                key=obj.key,
                submitted_at=record.eventTime,
                size=obj.size,
                origin="s3-event",
                object_version=version.strip('"') if version else None,
                version_id=obj.versionId,
                sequencer=obj.sequencer,
            )
        )
    return jobs
