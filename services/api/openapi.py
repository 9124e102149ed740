"""The OpenAPI 3.1 document of the upload API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from pipeline.settings import ApiSettings

_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def openapi_document(settings: ApiSettings) -> dict[str, Any]:
    """Describe every route, request and response the API serves."""
    preset_param = {
        "name": "preset",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "default": settings.default_preset},
        "description": "Preset name (see GET /v1/presets).",
    }
    job_id_param = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
    security = [{"apiKey": []}] if settings.api_keys else []
    image_types = {t: {"schema": {"type": "string", "contentMediaType": t}} for t in ("image/jpeg", "image/png", "image/webp", "image/gif", "image/avif", "image/tiff", "image/bmp")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pixfleet upload API",
            "version": "1",
            "description": "Upload images; workers render them into variants; poll the job for outputs.",
        },
        "security": security,
        "paths": {
            "/v1/images": {
                "post": {
                    "summary": "Upload one or more images and queue a job for each",
                    "parameters": [preset_param],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "file": {"type": "array", "items": {"type": "string", "contentMediaType": "application/octet-stream"}},
                                        "operations": {"type": "string", "description": "JSON list of variant specs, instead of a preset"},
                                    },
                                    "required": ["file"],
                                }
                            },
                            **image_types,
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted: one job, or a list of jobs for several files",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Accepted"},
                                            {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}},
                                        ]
                                    }
                                }
                            },
                        },
                        "400": _err("Unknown preset or malformed request"),
                        "401": _err("Missing or wrong X-API-Key"),
                        "413": _err(f"Body larger than {settings.limits.max_bytes} bytes"),
                        "415": _err("Not an image, or an unsupported format"),
                        "422": _err(f"Image header declares more than {settings.limits.max_pixels} pixels"),
                        "503": _err("AWS (or the emulator) unavailable; see Retry-After"),
                    },
                }
            },
            "/v1/uploads": {
                "post": {
                    "summary": "Get a presigned POST for a direct upload to S3",
                    "parameters": [preset_param],
                    "responses": {
                        "201": {"description": "Presigned POST", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PresignedUpload"}}}},
                        "400": _err("Unknown preset"),
                        "503": _err("AWS unavailable"),
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "A job's status and outputs",
                    "parameters": [job_id_param],
                    "responses": {
                        "200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
                        "404": _err("No such job"),
                        "503": _err("AWS unavailable"),
                    },
                }
            },
            "/v1/jobs/{job_id}/outputs/{variant}": {
                "get": {
                    "summary": "Download one rendered variant",
                    "parameters": [job_id_param, {"name": "variant", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "The image bytes", "content": image_types}, "404": _err("No such output")},
                }
            },
            "/v1/presets": {"get": {"summary": "Available presets", "responses": {"200": {"description": "Presets and their variants", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/fleet": {
                "get": {
                    "summary": "Queue depth and running workers (cached for about a second), for the web page's live panel",
                    "responses": {
                        "200": {"description": "Queue depth by kind; workers null when the orchestrator is unknown or silent", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Fleet"}}}},
                        "401": _err("Missing or wrong X-API-Key"),
                        "503": _err("The queue could not be read"),
                    },
                }
            },
            "/": {"get": {"summary": "The upload page (HTML; its scripts and styles under /static/)", "security": [], "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/healthz": {
                "get": {
                    "summary": "Health: S3 and SQS reachable",
                    "security": [],
                    "responses": {"200": {"description": "Healthy", "content": {"application/json": {"schema": {"type": "object"}}}}, "503": {"description": "Unhealthy", "content": {"application/json": {"schema": {"type": "object"}}}}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": [], "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "request_id": {"type": "string"}}}},
                },
                "Accepted": {"type": "object", "required": ["job_id", "status_url"], "properties": {"job_id": {"type": "string"}, "status_url": {"type": "string", "format": "uri"}}},
                "PresignedUpload": {
                    "type": "object",
                    "properties": {
                        "job_id": {"type": "string"},
                        "status_url": {"type": "string"},
                        "upload": {"type": "object", "properties": {"url": {"type": "string"}, "fields": {"type": "object"}}},
                        "max_bytes": {"type": "integer"},
                        "expires_at": {"type": "string", "format": "date-time"},
                    },
                },
                "Fleet": {
                    "type": "object",
                    "required": ["queue", "workers"],
                    "properties": {
                        "queue": {
                            "type": "object",
                            "properties": {"visible": {"type": "integer"}, "in_flight": {"type": "integer"}, "delayed": {"type": "integer"}},
                        },
                        "workers": {"type": ["integer", "null"], "description": "Running worker tasks"},
                        "desired_workers": {"type": ["integer", "null"]},
                        "sampled_at": {"type": "string", "format": "date-time"},
                    },
                },
                "Job": {
                    "type": "object",
                    "required": ["job_id", "status", "outputs", "error"],
                    "properties": {
                        "job_id": {"type": "string"},
                        "status": {"enum": ["queued", "processing", "succeeded", "failed"]},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "variant": {"type": "string"},
                                    "format": {"type": "string"},
                                    "width": {"type": "integer"},
                                    "height": {"type": "integer"},
                                    "bytes": {"type": "integer"},
                                    "url": {"type": "string", "format": "uri"},
                                },
                            },
                        },
                        "error": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}]},
                    },
                },
            },
        },
    }
