"""Where a job's results live and the manifest that records its outcome.

Output layout in the output bucket (deterministic, so a redelivered or
duplicated message overwrites the same objects instead of adding new ones)::

    results/{job_id}/{variant}.{ext}     one object per variant
    results/{job_id}/manifest.json       written first as "processing", last as the outcome

The manifest is the job's record: the API reads it to answer ``GET /v1/jobs/{id}``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("queued", "processing", "succeeded", "failed")
TERMINAL = ("succeeded", "failed")


def results_prefix(job_id: str) -> str:
    return f"results/{job_id}/"


def output_key(job_id: str, variant: str, extension: str) -> str:
    return f"results/{job_id}/{variant}.{extension}"


def manifest_key(job_id: str) -> str:
    return f"results/{job_id}/manifest.json"


def upload_key(job_id: str) -> str:
    """Where the API streams an upload in the input bucket."""
    return f"uploads/{job_id}/original"


def incoming_key(job_id: str) -> str:
    """Where a presigned POST puts a direct upload (this prefix triggers the S3 event)."""
    return f"incoming/{job_id}/original"


@dataclass
class OutputRecord:
    variant: str
    format: str
    width: int
    height: int
    bytes: int
    key: str
    content_type: str


@dataclass
class Manifest:
    """The recorded state of one job."""

    job_id: str
    status: str
    source: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    outputs: list[OutputRecord] = field(default_factory=list)
    error: dict[str, str] | None = None
    submitted_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempt: int = 1
    worker_id: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    version: int = 1

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Manifest:
        doc = json.loads(raw)
        outputs = [OutputRecord(**o) for o in doc.pop("outputs", [])]
        known = {f for f in cls.__dataclass_fields__}
        return cls(outputs=outputs, **{k: v for k, v in doc.items() if k in known})
