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
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from pipeline.errors import InvalidMessage
from pipeline.transform.spec import VariantSpec, parse_operations

SCHEMA_VERSION = 1
MESSAGE_TYPE = "pixfleet.job"
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
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

    job_id: str
    bucket: str
    key: str
    preset: str | None = None
    operations: tuple[VariantSpec, ...] | None = None
    submitted_at: str = field(default_factory=utcnow_iso)
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
    if "Records" in doc:
        return _parse_s3_event(doc)
    if doc.get("type") == MESSAGE_TYPE:
        return [_parse_job(doc)]
    raise InvalidMessage("message is neither a pixfleet job nor an S3 event notification")


def _parse_job(doc: dict[str, Any]) -> JobMessage:
    if doc.get("version") != SCHEMA_VERSION:
        raise InvalidMessage(f"unsupported job message version {doc.get('version')!r}")
    job_id = doc.get("job_id")
    source = doc.get("source")
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise InvalidMessage("job_id must be 32 hex digits")
    if not isinstance(source, dict) or not _s3_name(source.get("bucket")) or not _s3_name(source.get("key")):
        raise InvalidMessage("source.bucket and source.key are required (non-empty UTF-8 strings)")
    content_type = source.get("content_type")
    if content_type is not None and not isinstance(content_type, str):
        raise InvalidMessage("source.content_type must be a string")
    operations = doc.get("operations")
    preset = doc.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise InvalidMessage("preset must be a string")
    size = source.get("size")
    return JobMessage(
        job_id=job_id,
        bucket=source["bucket"],
        key=source["key"],
        preset=preset,
        operations=parse_operations(operations) if operations else None,
        submitted_at=str(doc.get("submitted_at") or utcnow_iso()),
        content_type=content_type,
        size=_size(size),
        origin=str(doc.get("origin") or "api"),
        **{name: str(source[name]) for name in ("object_version", "version_id", "sequencer") if source.get(name)},
    )


def job_id_for_object(bucket: str, key: str) -> str:
    """The job of an object under ``incoming/``: the id in a key we minted, else a stable UUIDv5 of the key."""
    match = _INCOMING_KEY_RE.match(key)
    return match.group(1) if match else uuid.uuid5(uuid.NAMESPACE_URL, f"s3://{bucket}/{key}").hex


def _s3_name(value: Any) -> bool:
    """A bucket name or key S3 can be asked for: a non-empty string that encodes as UTF-8."""
    if not isinstance(value, str) or not value:
        return False
    try:
        value.encode("utf-8")  # JSON can carry lone surrogates ("\ud800"), which no S3 name holds
    except UnicodeEncodeError:
        return False
    return True


def _size(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None  # not a bool, not negative


def _parse_s3_event(doc: dict[str, Any]) -> list[JobMessage]:
    records = doc.get("Records")
    if not isinstance(records, list):
        raise InvalidMessage("Records must be a list")
    jobs = []
    for record in records:
        try:
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            raw_key = s3["object"]["key"]
        except (KeyError, TypeError) as exc:
            raise InvalidMessage("S3 event record without s3.bucket.name / s3.object.key") from exc
        key = unquote_plus(raw_key) if isinstance(raw_key, str) else ""
        if not _s3_name(bucket) or not _s3_name(key):
            raise InvalidMessage("S3 event record whose bucket name or object key is not a non-empty string")
        if not str(record.get("eventName", "ObjectCreated")).startswith("ObjectCreated"):
            continue
        obj = s3["object"]
        if not isinstance(obj, dict):
            raise InvalidMessage("S3 event record's s3.object must be an object")
        size, etag = obj.get("size"), obj.get("eTag") or obj.get("etag")
        version_id, sequencer = obj.get("versionId"), obj.get("sequencer")
        version = version_id or etag
        jobs.append(
            JobMessage(
                job_id=job_id_for_object(bucket, key),
                bucket=bucket,
                key=key,
                submitted_at=str(record.get("eventTime") or utcnow_iso()),
                size=_size(size),
                origin="s3-event",
                object_version=str(version).strip('"') if version else None,
                version_id=str(version_id) if version_id else None,
                sequencer=str(sequencer) if sequencer else None,
            )
        )
    return jobs
