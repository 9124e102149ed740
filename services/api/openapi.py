"""The OpenAPI 3.1 document of the upload API (served at ``/openapi.json``).

The paths are written here; every body schema under ``components/schemas`` is
generated from the pydantic models in :mod:`services.api.schemas`, which the handlers
build their JSON with. The document is exact about what the API does: each operation
lists every status it can answer, enums come from the code that owns the values, and
limits (files per request, operations per job, the body size) come from the settings.
``tests/test_openapi.py`` checks that every route is documented and every documented
operation is routed, and runs schemathesis against the live API.

Two things the document leaves implicit, as HTTP does: ``HEAD`` for every ``GET``
(aiohttp answers it), and ``405`` with ``Allow`` for a method a path does not have
(``components/responses/MethodNotAllowed``; it is no answer of a documented operation).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from services.api.settings import ApiSettings
from pipeline.transform.presets import preset_names
from pipeline.transform.media import MEDIA_TYPES
from pipeline.transform.spec import FORMATS, NAME_PATTERN
from services.api import schemas
from services.api.schemas import MAX_FILES_PER_REQUEST

STATIC_DIR = Path(__file__).parent / "static"
INPUT_FORMATS = "JPEG, PNG, GIF, WebP, AVIF, TIFF or BMP"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@functools.cache
def component_schemas() -> dict[str, Any]:
    """``components/schemas``: the JSON Schemas of :data:`schemas.COMPONENTS` and what they use."""
    _, defs = models_json_schema(
        [(model, "validation") for model in schemas.COMPONENTS], ref_template="#/components/schemas/{model}"
    )
    return dict(sorted(defs["$defs"].items()))


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}
}


_ERROR_TEXTS = {
    400: "Malformed request",
    401: "Missing or wrong X-API-Key",
    403: "Forbidden",
    404: "Not found",
    500: "A bug: the body carries a request id to quote",
    503: "A dependency (S3, SQS) is unavailable or overloaded; retry after Retry-After seconds",
}


def _errors(settings: ApiSettings, *codes: int, v1: bool = True, text: dict[int, str] | None = None) -> dict[str, Any]:
    """The error answers ``codes``, plus 500 (a bug) always and 401 under /v1/ when keys are set."""
    texts = {
        **_ERROR_TEXTS,
        413: f"A file is larger than {settings.limits.max_bytes} bytes",
        415: f"Not an image, or not a supported format ({INPUT_FORMATS})",
        422: f"An image that cannot be decoded, or over {settings.limits.max_pixels} pixels "
        f"or {settings.limits.max_frames} frames",
        **(text or {}),
    }
    wanted = {*codes, 500} | ({401} if v1 and settings.api_keys else set())
    return {
        str(code): _json(ref("Error"), texts[code], **({"headers": _RETRY_AFTER} if code == 503 else {}))
        for code in sorted(wanted)
    }


def _preset_param(settings: ApiSettings) -> dict[str, Any]:
    return {
        "name": "preset",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": preset_names(), "default": settings.default_preset},
        "description": "Preset to render (GET /v1/presets lists them); ignored when `operations` is given.",
    }


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": schemas.JOB_ID_PATTERN},
}
_VARIANT = {
    "name": "variant",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": NAME_PATTERN},
    "description": "A variant name from the job's `outputs`",
}
_TO_JOB = {
    "operationId": "getJob",
    "parameters": {"job_id": "$response.body#/job_id"},
    "description": "The job just queued",
}
_TO_FIRST_JOB = {
    "operationId": "getJob",
    "parameters": {"job_id": "$response.body#/0/job_id"},
    "description": "The first job of several files",
}
_TO_OUTPUT = {
    "operationId": "getOutput",
    "parameters": {"job_id": "$response.body#/job_id"},
    "description": "An output of the job just queued (once it succeeded)",
}


def _upload_body(settings: ApiSettings) -> dict[str, Any]:
    image = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream", "minLength": 1}
    raw = {"schema": {"type": "string", "format": "binary", "minLength": 1}}
    return {
        "required": True,
        "description": f"Images ({INPUT_FORMATS}; the bytes decide the format, not the Content-Type), "
        f"each at most {settings.limits.max_bytes} bytes: as multipart `file` fields, "
        "or one image as the raw body.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": image,
                            "minItems": 1,
                            "maxItems": MAX_FILES_PER_REQUEST,
                            "description": "One job per file; all are stored before any is queued.",
                        },
                        "operations": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": ref("Operations"),
                            "description": "A JSON-encoded list of variant specs, instead of a preset.",
                        },
                    },
                    "additionalProperties": False,
                },
                "encoding": {"operations": {"contentType": "application/json"}},
            },
            "image/*": raw,
            "application/octet-stream": raw,
        },
    }


_STATIC_TYPES = {".css": "text/css", ".html": "text/html", ".js": "text/javascript"}


@functools.cache
def static_files() -> dict[str, str]:
    """File name → Content-Type of what ``/static/`` serves; the handler sends the same type.

    A fixed map, not :mod:`mimetypes`: that reads the machine's ``/etc/mime.types`` and
    spells JavaScript differently from one machine to the next.
    """
    files = sorted(p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in _STATIC_TYPES)
    return {p.name: f"{_STATIC_TYPES[p.suffix]}; charset=utf-8" for p in files}


def openapi_document(settings: ApiSettings) -> dict[str, Any]:
    """Describe every route, request and response the API serves, for these settings."""
    v1_security: list[dict[str, list[str]]] = [{"apiKey": []}] if settings.api_keys else []
    static = static_files()
    output_types = {t: {"schema": {"type": "string", "contentMediaType": t}} for t in (MEDIA_TYPES[f] for f in FORMATS)}
    output_headers = {
        name: {"schema": {"type": "string"}, "description": text}
        for name, text in (
            ("Cache-Control", "Outputs never change: cached for a year, immutable"),
            ("Content-Disposition", "inline; filename={job_id}-{variant}.{ext}"),
        )
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "pixfleet upload API",
            "version": "1",
            "description": "Upload images; workers render them into variants; poll the job for outputs. "
            "Every error is a JSON `Error`; a method a path does not have gets `405` with `Allow`.",
        },
        "paths": {
            "/v1/images": {
                "post": {
                    "operationId": "uploadImages",
                    "summary": "Upload one or more images and queue a job for each",
                    "security": v1_security,
                    "parameters": [_preset_param(settings)],
                    "requestBody": _upload_body(settings),
                    "responses": {
                        "202": _json(
                            {
                                "oneOf": [
                                    ref("Accepted"),
                                    {
                                        "type": "array",
                                        "items": ref("Accepted"),
                                        "minItems": 2,
                                        "maxItems": MAX_FILES_PER_REQUEST,
                                    },
                                ]
                            },
                            "Queued: one job, or a list of jobs (in file order) for several files",
                            links={"GetJob": _TO_JOB, "GetFirstJob": _TO_FIRST_JOB, "GetOutput": _TO_OUTPUT},
                        ),
                        **_errors(
                            settings,
                            400,
                            413,
                            415,
                            422,
                            503,
                            text={
                                400: "Unknown preset, bad operations, no file, more than "
                                f"{MAX_FILES_PER_REQUEST} files, an empty body, or malformed multipart",
                                415: f"Not an image, not a supported format ({INPUT_FORMATS}), or a body "
                                "that is neither multipart/form-data, image/* nor application/octet-stream",
                            },
                        ),
                    },
                }
            },
            "/v1/uploads": {
                "post": {
                    "operationId": "createUpload",
                    "summary": "Get a presigned POST for a direct upload to S3 (for large files)",
                    "security": v1_security,
                    "parameters": [
                        _preset_param(settings),
                        {
                            "name": "content_type",
                            "in": "query",
                            "required": False,
                            "description": "The file's media type, returned in `upload.fields` "
                            "(the policy accepts any image/*).",
                            "schema": {
                                "type": "string",
                                "pattern": "^image/[^\\x00-\\x1f]{1,94}$",
                                "default": "image/jpeg",
                            },
                        },
                    ],
                    "responses": {
                        "201": _json(
                            ref("PresignedUpload"),
                            "POST the file to `upload.url` with `upload.fields`, then poll `status_url`",
                            links={"GetJob": _TO_JOB},
                        ),
                        **_errors(settings, 400, 503, text={400: "Unknown preset, or content_type not image/*"}),
                    },
                }
            },
            "/v1/jobs": {
                "get": {
                    "operationId": "findJobByKey",
                    "summary": "The job of an object uploaded straight to the input bucket's incoming/ prefix",
                    "security": v1_security,
                    "parameters": [
                        {
                            "name": "key",
                            "in": "query",
                            "required": True,
                            "description": "The object's key, e.g. incoming/photo.jpg (as `aws s3 cp` wrote it).",
                            "schema": {"type": "string", "pattern": "^incoming/.*[^/]$", "maxLength": 1024},
                        }
                    ],
                    "responses": {
                        "200": _json(ref("Job"), "The job of the object's latest content"),
                        **_errors(
                            settings,
                            400,
                            404,
                            503,
                            text={400: "Not a key under incoming/", 404: "No such object or job"},
                        ),
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "operationId": "getJob",
                    "summary": "A job's status and outputs",
                    "security": v1_security,
                    "parameters": [_JOB_ID],
                    "responses": {
                        "200": _json(
                            ref("Job"),
                            "The job",
                            links={
                                "GetOutput": {
                                    "operationId": "getOutput",
                                    "parameters": {
                                        "job_id": "$request.path.job_id",
                                        "variant": "$response.body#/outputs/0/variant",
                                    },
                                    "description": "The job's first output",
                                }
                            },
                        ),
                        **_errors(settings, 404, 503, text={404: "No such job"}),
                    },
                }
            },
            "/v1/jobs/{job_id}/outputs/{variant}": {
                "get": {
                    "operationId": "getOutput",
                    "summary": "Download one rendered variant",
                    "security": v1_security,
                    "parameters": [_JOB_ID, _VARIANT],
                    "responses": {
                        "200": {"description": "The image", "headers": output_headers, "content": output_types},
                        **_errors(settings, 404, 503, text={404: "No such job or output"}),
                    },
                }
            },
            "/v1/presets": {
                "get": {
                    "operationId": "listPresets",
                    "summary": "Available presets and their variants",
                    "security": v1_security,
                    "responses": {"200": _json(ref("Presets"), "The presets"), **_errors(settings)},
                }
            },
            "/v1/fleet": {
                "get": {
                    "operationId": "getFleet",
                    "summary": "Queue depth and running workers (cached for about a second), for the web page",
                    "security": v1_security,
                    "responses": {
                        "200": _json(ref("Fleet"), "Queue depth by kind; workers null when the orchestrator is silent"),
                        **_errors(settings, 503, text={503: "The queue could not be read; retry after Retry-After"}),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "Health: S3 and SQS reachable",
                    "security": [],
                    "responses": {
                        "200": _json(ref("Health"), "Healthy"),
                        "503": _json(ref("Health"), "Unhealthy: the failed check says why", headers=_RETRY_AFTER),
                        **_errors(settings, v1=False),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(settings, v1=False),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object"}, "OpenAPI 3.1"),
                        **_errors(settings, v1=False),
                    },
                }
            },
            "/": {
                "get": {
                    "operationId": "index",
                    "summary": "The upload page (its scripts and styles under /static/)",
                    "security": [],
                    "responses": {
                        "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                        **_errors(settings, v1=False),
                    },
                }
            },
            "/static/{filename}": {
                "get": {
                    "operationId": "static",
                    "summary": "The upload page's scripts and styles",
                    "security": [],
                    "parameters": [
                        {
                            "name": "filename",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(static)},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The file",
                            "content": {
                                t.split(";")[0]: {"schema": {"type": "string"}} for t in sorted(set(static.values()))
                            },
                        },
                        **_errors(settings, 404, v1=False, text={404: "No such file"}),
                    },
                }
            },
        },
        "components": {
            "schemas": component_schemas(),
            "responses": {
                "MethodNotAllowed": _json(
                    ref("Error"),
                    "The path has no such method; `Allow` lists those it has",
                    headers={"Allow": {"schema": {"type": "string"}, "required": True, "description": "e.g. GET,HEAD"}},
                )
            },
        },
    }
    if settings.api_keys:
        document["components"]["securitySchemes"] = {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    return document
