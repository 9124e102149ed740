"""The upload API's JSON bodies as pydantic models: one description, two renderings.

The handlers build every JSON answer through these models (``dump(model)``), and
:mod:`services.api.openapi` generates the document's ``components/schemas`` from the
same classes, so the document cannot drift from what the API sends.

What is guaranteed: a body a handler sends validates against its model (and so against
the document). Enums come from the modules that own the values (job statuses from
:mod:`pipeline.manifest`, formats from :mod:`pipeline.transform.spec`, preset names from
:mod:`pipeline.transform.presets`), never spelled twice. Operations are described by the
models that validate them, :class:`~pipeline.transform.spec.VariantSpec` and
:class:`~pipeline.transform.spec.Operations` (the worker runs the same validation), so the
schemathesis run checks that every schema-valid operation list is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import core_schema

from pipeline.manifest import ATTEMPT_OUTCOMES, STATUSES
from pipeline.messages import JOB_ID_PATTERN
from pipeline.transform.spec import FORMATS, NAME_PATTERN, Operations, VariantSpec

MAX_FILES_PER_REQUEST = 20


@dataclass(frozen=True)
class OneOf:
    """``Annotated[str, OneOf(values)]``: a string enum whose values live in a tuple elsewhere.

    pydantic's ``Literal`` needs the values spelled in the annotation; this validates the
    same way (a literal schema) and renders ``{"type": "string", "enum": [...]}``.
    """

    values: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.literal_schema(list(self.values))


JobStatus = Annotated[str, OneOf(STATUSES)]
OutputFormat = Annotated[str, OneOf(FORMATS)]
Uri = Annotated[str, Field(json_schema_extra={"format": "uri"})]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]

Pixels = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]


class Model(BaseModel):
    """Base of the response bodies: fields in declaration order, unknown input kept out."""

    model_config = ConfigDict(extra="ignore")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def absent(**constraints: Any) -> Any:
    """A field the JSON leaves out until it is known, never ``null``: optional, with no default shown."""
    return Field(default=None, json_schema_extra=_no_default, **constraints)


def dump(model: BaseModel) -> Any:
    """The JSON-ready value of ``model``: fields a handler did not set are left out.

    ``exclude_unset`` keeps optional fields a handler leaves out (a queued job has no
    timings yet) out of the JSON instead of sending them as ``null``.
    """
    return model.model_dump(mode="json", exclude_unset=True)


# --- errors ----------------------------------------------------------------------------------


class ErrorDetail(Model):
    """``{"code", "message"}`` plus context: the file's index and name for an upload's part."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    code: str = Field(description="Stable machine-readable code, e.g. unknown_preset, too_many_pixels.")
    message: str = Field(description="Human-readable reason, safe to show.")
    file: Count | SkipJsonSchema[None] = absent(description="Index of the rejected file of a multipart upload.")
    filename: str | SkipJsonSchema[None] = absent(description="Its filename, when the part had one.")
    request_id: str | SkipJsonSchema[None] = absent(description="500: the id of the request, as in the API's log.")
    unconfirmed_job_id: JobId | SkipJsonSchema[None] = absent(
        description="503 while queueing: the job whose message the queue did not confirm (it may still run)."
    )


class Error(Model):
    """The one error shape of every 4xx and 5xx answer."""

    error: ErrorDetail


# --- jobs ------------------------------------------------------------------------------------


class Accepted(Model):
    """One queued job (``202`` from ``POST /v1/images``)."""

    job_id: JobId
    status_url: Uri


class Output(Model):
    variant: str = Field(pattern=NAME_PATTERN)
    format: OutputFormat
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    bytes: int = Field(ge=0)
    url: Uri = Field(description="GET /v1/jobs/{job_id}/outputs/{variant}")


class JobError(Model):
    """Why a job failed: a code from the error taxonomy and a message (plus any detail the worker adds)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    code: str
    message: str


class JobSource(Model):
    """The job's input object and, once the worker probed it, what it holds (fields absent until known)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    bucket: str | SkipJsonSchema[None] = absent()
    key: str | SkipJsonSchema[None] = absent()
    content_type: str | None = None
    bytes: Count | None = None
    format: str | SkipJsonSchema[None] = absent()
    object_version: str | SkipJsonSchema[None] = absent(description="Direct uploads: the ETag or version id rendered.")
    width: Pixels | SkipJsonSchema[None] = absent()
    height: Pixels | SkipJsonSchema[None] = absent()
    frames: Pixels | SkipJsonSchema[None] = absent()


class Attempt(Model):
    """One delivery of the job's message that started work, and how it ended."""

    attempt: Count
    worker_id: str | None = None
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    outcome: Annotated[str, OneOf(ATTEMPT_OUTCOMES)] = Field(
        description="succeeded, failed, error (retried later) or interrupted (the worker stopped without finishing)"
    )
    error: JobError | None = None


class Job(Model):
    """``GET /v1/jobs/{job_id}``: a queued or awaiting job has only the first five fields (and ``expires_at``)."""

    job_id: JobId
    status: JobStatus
    outputs: list[Output]
    error: JobError | None
    history: list[Attempt] = Field(default_factory=list, description="Every attempt so far, oldest first.")
    expires_at: Timestamp | SkipJsonSchema[None] = absent(
        description="awaiting_upload: when the presigned POST expires (the job is unknown afterwards)."
    )
    preset: str | None = Field(default=None, description="The preset rendered, or null for explicit operations.")
    source: JobSource | SkipJsonSchema[None] = absent()
    submitted_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict, description="Milliseconds per stage.")
    attempts: int = Field(default=1, ge=0, description="Deliveries of the job's message so far.")
    worker_id: str | None = Field(default=None, description="The worker of the latest attempt.")


# --- direct uploads --------------------------------------------------------------------------


class PresignedPost(Model):
    url: Uri
    fields: dict[str, str] = Field(description="Form fields to send, as given, before the file.")
    method: Literal["POST"] = "POST"
    file_field: Literal["file"] = "file"


class PresignedUpload(Model):
    """``201`` from ``POST /v1/uploads``: where and how to POST the file to S3 yourself."""

    job_id: JobId
    status_url: Uri
    upload: PresignedPost
    max_bytes: int = Field(ge=1)
    expires_at: Timestamp


# --- presets, fleet, health ------------------------------------------------------------------


class PresetInfo(Model):
    name: str
    description: str
    variants: list[VariantSpec]


class Presets(Model):
    """``GET /v1/presets``."""

    presets: list[PresetInfo]


class QueueDepth(Model):
    visible: int = Field(ge=0)
    in_flight: int = Field(ge=0)
    delayed: int = Field(ge=0)


class Fleet(Model):
    """``GET /v1/fleet``: queue depth, and workers (null when the orchestrator is unknown or silent)."""

    queue: QueueDepth
    workers: Count | None = Field(description="Running worker tasks")
    desired_workers: Count | None
    sampled_at: Timestamp


class HealthChecks(Model):
    s3: str = Field(description='"ok" or "error: <reason>"')
    sqs: str = Field(description='"ok" or "error: <reason>"')


class Health(Model):
    """``GET /healthz``: 200 when every check is ok, else 503."""

    status: Literal["ok", "unavailable"]
    checks: HealthChecks


COMPONENTS: tuple[type[BaseModel], ...] = (
    Error,
    Accepted,
    Job,
    PresignedUpload,
    Presets,
    Fleet,
    Health,
    Operations,
)
