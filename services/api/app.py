"""The upload API: an aiohttp app factory.

``create_app(settings)`` builds everything; shared aiobotocore clients live in a
cleanup context under typed ``web.AppKey``s (aiohttp's "no singletons" advice).
Handlers are plain functions listed in :data:`ROUTES`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.fleet_metrics import service_counts
from pipeline.aws import aws_clients, client_config, queue_depth
from pipeline.errors import (
    InternalError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PixfleetError,
    RetryableError,
    Unauthorized,
    UnsupportedFormat,
    classify,
    is_missing_readable_object,
)
from pipeline.manifest import INCOMING_PREFIX, Manifest, ManifestStore, incoming_key, reservation_key, upload_key
from pipeline.messages import JOB_ID_RE, JobMessage, job_id_for_object, new_job_id, utcnow_iso
from services.api.settings import ApiSettings
from pipeline.transform.presets import get_preset, presets_as_json
from pipeline.transform.spec import VariantSpec, parse_operations
from services.api import schemas
from services.api.body import form_parts, raw_reader
from services.api.openapi import STATIC_DIR, openapi_document, static_files
from services.api.schemas import MAX_FILES_PER_REQUEST, dump
from services.api.uploads import ByteBudget, StoredUpload, store_upload

log = logging.getLogger("pixfleet.api")


@dataclass
class Metrics:
    registry: CollectorRegistry
    uploads: Counter
    upload_bytes: Counter
    requests: Histogram

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            uploads=Counter("pixfleet_api_uploads", "Uploads by outcome", ["outcome"], registry=registry),
            upload_bytes=Counter(
                "pixfleet_api_upload_bytes", "Bytes accepted into the input bucket", registry=registry
            ),
            requests=Histogram(
                "pixfleet_api_request_seconds", "Request latency", ["route", "status"], registry=registry
            ),
        )


@dataclass
class FleetCache:
    """The last ``GET /v1/fleet`` answer, reused for ``ttl`` seconds: many open pages cost one read a second."""

    ttl: float = 1.0
    value: dict[str, Any] | None = None
    read_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


SETTINGS = web.AppKey("settings", ApiSettings)
S3: web.AppKey[Any] = web.AppKey("s3")
SQS: web.AppKey[Any] = web.AppKey("sqs")
BUDGET = web.AppKey("budget", ByteBudget)
METRICS = web.AppKey("metrics", Metrics)
HTTP = web.AppKey("http", aiohttp.ClientSession)
FLEET = web.AppKey("fleet", FleetCache)
REQUEST_ID = web.RequestKey("request_id", str)

# An incoming X-Request-Id is kept when it looks like an id (a proxy's or the client's); else we mint one.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


# --- middleware ----------------------------------------------------------------------------


def error_response(err: PixfleetError, **extra: Any) -> web.Response:
    """The one JSON error shape: ``{"error": {"code", "message", "request_id", ...}}``.

    Only a :class:`RetryableError` (503: a dependency is down) carries ``Retry-After``;
    a 500 does not, since the same request would hit the same bug.
    """
    body = {"error": {**err.to_dict(), **extra}}
    response = web.json_response(body, status=err.http_status)
    if isinstance(err, RetryableError):
        response.headers["Retry-After"] = str(max(1, round(err.retry_after)))
    if isinstance(err, PayloadTooLarge):
        response.force_close()  # do not drain an oversized body
    return response


def _log_failure(request: web.Request, err: PixfleetError, exc: BaseException) -> None:
    """One line per failed request: status, code, message, the exception (and its cause) and the request id.

    4xx at INFO (the client's problem), 503 at WARNING, a bug (500) at ERROR with the traceback.
    """
    kind = type(exc).__name__ + (f" from {type(exc.__cause__).__name__}" if exc.__cause__ else "")
    path = request.rel_url.raw_path  # still percent-encoded: a %0A in the path cannot forge a log line
    args = (request.method, path, err.http_status, err.code, err.message, kind, request[REQUEST_ID])
    line = "%s %s failed: %d %s: %s (%s) request_id=%s"
    if isinstance(err, InternalError):
        log.error(line, *args, exc_info=exc)
    elif err.http_status >= 500:
        log.warning(line, *args)
    else:
        log.info(line, *args)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error becomes the JSON shape with a request id and one log line; never a stack trace."""
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    given = request.headers.get("X-Request-Id", "")
    request[REQUEST_ID] = request_id = given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        reason = exc.reason.lower().replace(" ", "_")
        err = PixfleetError(exc.text or exc.reason, code=reason, http_status=exc.status)
        _log_failure(request, err, exc)
        response = error_response(err, request_id=request_id)
        if "Allow" in exc.headers:  # a 405 must say which methods the path has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        err = classify(exc)
        status = err.http_status
        _log_failure(request, err, exc)
        return error_response(err, request_id=request_id, **getattr(exc, "extra", {}))
    finally:
        request.app[METRICS].requests.labels(route, str(status)).observe(time.perf_counter() - started)


async def _send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer (streamed, static, error) names its request."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-Id"] = request_id


@web.middleware
async def api_key_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    keys = request.app[SETTINGS].api_keys
    if keys and request.path.startswith("/v1/") and request.headers.get("X-API-Key") not in keys:
        raise Unauthorized("a valid X-API-Key header is required")
    return await handler(request)


# --- helpers -------------------------------------------------------------------------------


def _variants(request: web.Request) -> tuple[str | None, tuple[VariantSpec, ...] | None]:
    """The request's preset (validated); a multipart ``operations`` field may replace it later."""
    preset = request.query.get("preset", request.app[SETTINGS].default_preset)
    get_preset(preset)  # raises UnknownPreset (400), also for an empty ?preset=
    return preset, None


def _status_url(request: web.Request, job_id: str) -> str:
    return str(request.url.with_path(f"/v1/jobs/{job_id}").with_query(None))


def _job_id(request: web.Request) -> str:
    job_id = request.match_info["job_id"]
    if not JOB_ID_RE.fullmatch(job_id):
        raise NotFound("no such job")
    return job_id


async def _send_job(request: web.Request, stored: StoredUpload, job_id: str, preset: str | None, ops: Any) -> None:
    settings = request.app[SETTINGS]
    message = JobMessage(
        job_id=job_id,
        bucket=stored.bucket,
        key=stored.key,
        preset=preset,
        operations=ops,
        submitted_at=utcnow_iso(),
        content_type=stored.content_type,
        size=stored.size,
    )
    await asyncio.wait_for(
        request.app[SQS].send_message(QueueUrl=settings.aws.queue_url, MessageBody=message.to_json()),
        settings.aws_timeout,
    )


async def _delete_quietly(request: web.Request, keys: list[str]) -> None:
    s3, bucket = request.app[S3], request.app[SETTINGS].aws.input_bucket
    for key in keys:
        try:
            await s3.delete_object(Bucket=bucket, Key=key)
        except Exception:
            log.warning("could not delete %s after a failed request", key, exc_info=True)


# --- handlers ------------------------------------------------------------------------------


async def upload_images(request: web.Request) -> web.Response:
    """POST /v1/images — multipart (``file`` fields) or a raw image body → 202 with job ids.

    All files of one request are stored first; the job messages are sent only when
    every file was accepted, so a rejected request leaves nothing behind.
    """
    settings = request.app[SETTINGS]
    preset, ops = _variants(request)  # unknown preset → 400 before reading the body
    declared = request.content_length
    stored: list[tuple[str, StoredUpload]] = []
    accepted: list[str] = []

    async def store(read: Any, index: int, filename: str | None) -> None:
        job_id = new_job_id()
        try:
            upload = await store_upload(
                read,
                s3=request.app[S3],
                bucket=settings.aws.input_bucket,
                key=upload_key(job_id),
                limits=settings.limits,
                part_size=settings.part_size,
                budget=request.app[BUDGET],
                expected_size=declared,
                metadata={"job-id": job_id},
                timeout=settings.aws_timeout,
            )
        except PixfleetError as exc:
            exc.extra = {"file": index, **({"filename": filename} if filename else {})}
            raise
        stored.append((job_id, upload))

    try:
        if request.content_type.startswith("multipart/"):
            index = 0
            async for part in form_parts(request):
                if part.name == "operations":  # explicit variants replace the preset (null is no list)
                    preset, ops = None, parse_operations(_json_field(await part.text()))
                    continue
                if part.name != "file":
                    raise InvalidRequest(f"unknown multipart field {part.name!r}: send 'file' fields and 'operations'")
                if index >= MAX_FILES_PER_REQUEST:
                    raise InvalidRequest(f"at most {MAX_FILES_PER_REQUEST} files per request")
                await store(part.read_chunk, index, part.filename)
                index += 1
            if not stored:
                raise InvalidRequest("no 'file' field in the multipart body")
        else:
            if not (request.content_type.startswith("image/") or request.content_type == "application/octet-stream"):
                raise UnsupportedFormat("send multipart/form-data or a body with an image/* Content-Type")
            if declared is not None and declared > settings.limits.max_bytes:
                raise PayloadTooLarge(f"the image is larger than the limit of {settings.limits.max_bytes} bytes")
            if declared == 0:
                raise InvalidRequest("the request body is empty")
            await store(raw_reader(request), 0, None)
        for job_id, upload in list(stored):
            try:
                await _send_job(request, upload, job_id, preset, ops)
            except Exception as exc:
                # A send that timed out may still have reached the queue: name the job, so a client that
                # retries can look it up (GET /v1/jobs/{id}) instead of guessing.
                exc.extra = {**getattr(exc, "extra", {}), "unconfirmed_job_id": job_id}  # type: ignore[attr-defined]
                raise
            stored.remove((job_id, upload))
            request.app[METRICS].uploads.labels("accepted").inc()
            request.app[METRICS].upload_bytes.inc(upload.size)
            accepted.append(job_id)
    except BaseException as exc:
        if isinstance(exc, PixfleetError):
            request.app[METRICS].uploads.labels(exc.code).inc()
        await asyncio.shield(_delete_quietly(request, [u.key for _, u in stored]))
        if accepted and not isinstance(exc, asyncio.CancelledError):
            log.warning("request failed after %d job(s) were queued: %s: %s", len(accepted), type(exc).__name__, exc)
        raise
    jobs = [dump(schemas.Accepted(job_id=j, status_url=_status_url(request, j))) for j in accepted]
    multi = request.content_type.startswith("multipart/") and len(jobs) > 1
    return web.json_response(jobs if multi else jobs[0], status=202)


def _json_field(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidRequest("the 'operations' field must be JSON") from exc


async def create_upload(request: web.Request) -> web.Response:
    """POST /v1/uploads — a presigned POST for a direct upload to ``incoming/{job_id}/``.

    ``upload.fields`` holds every field the client must send (``Content-Type`` included: the policy
    requires ``image/*``; pass ``?content_type=`` for the file's own type, or change that field to
    any ``image/*`` value). Until the POST arrives or expires, the job reads ``awaiting_upload``.
    """
    settings = request.app[SETTINGS]
    preset, _ = _variants(request)
    content_type = request.query.get("content_type", "image/jpeg")
    if not content_type.startswith("image/") or len(content_type) > 100:
        raise InvalidRequest("content_type must be an image/* media type")
    job_id = new_job_id()
    key = incoming_key(job_id)
    post = await asyncio.wait_for(
        request.app[S3].generate_presigned_post(
            Bucket=settings.aws.input_bucket,
            Key=key,
            Fields={"x-amz-meta-preset": preset, "Content-Type": content_type},
            Conditions=[
                {"x-amz-meta-preset": preset},
                ["content-length-range", 1, settings.limits.max_bytes],
                ["starts-with", "$Content-Type", "image/"],
            ],
            ExpiresIn=settings.presign_expires,
        ),
        settings.aws_timeout,
    )
    url = post["url"]
    if settings.public_s3_url:
        # The API may reach S3 by an address the client cannot (e.g. a container name); a POST
        # policy's signature does not cover the host, so the client gets the public address.
        url = settings.public_s3_url.rstrip("/") + "/" + url.split("://", 1)[1].split("/", 1)[1]
    expires = (
        (datetime.now(UTC) + timedelta(seconds=settings.presign_expires))
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )
    reservation = {"job_id": job_id, "key": key, "preset": preset, "expires_at": expires}
    await asyncio.wait_for(
        request.app[S3].put_object(
            Bucket=settings.aws.input_bucket,
            Key=reservation_key(job_id),
            Body=json.dumps(reservation).encode(),
            ContentType="application/json",
        ),
        settings.aws_timeout,
    )
    answer = schemas.PresignedUpload(
        job_id=job_id,
        status_url=_status_url(request, job_id),
        upload=schemas.PresignedPost(url=url, fields=post["fields"], method="POST", file_field="file"),
        max_bytes=settings.limits.max_bytes,
        expires_at=expires,
    )
    return web.json_response(dump(answer), status=201)


async def _read_manifest(request: web.Request, job_id: str) -> Manifest | None:
    settings = request.app[SETTINGS]
    return await ManifestStore(request.app[S3], settings.aws.output_bucket, timeout=settings.aws_timeout).get(job_id)


async def _exists(request: web.Request, key: str) -> bool:
    s3, bucket = request.app[S3], request.app[SETTINGS].aws.input_bucket
    try:
        await asyncio.wait_for(s3.head_object(Bucket=bucket, Key=key), request.app[SETTINGS].aws_timeout)
        return True
    except Exception as exc:
        if not is_missing_readable_object(exc):
            raise
    return False


async def _reservation(request: web.Request, job_id: str) -> dict[str, Any] | None:
    """The unexpired reservation of a presigned upload that has not arrived yet, if any."""
    s3, settings = request.app[S3], request.app[SETTINGS]
    try:
        obj = await asyncio.wait_for(
            s3.get_object(Bucket=settings.aws.input_bucket, Key=reservation_key(job_id)), settings.aws_timeout
        )
    except Exception as exc:
        if is_missing_readable_object(exc):
            return None
        raise
    async with obj["Body"] as body:
        try:
            doc = json.loads(await body.read())
            expires = datetime.fromisoformat(str(doc["expires_at"]).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            return None
    return doc if expires > datetime.now(UTC) else None


async def _job_view(request: web.Request, job_id: str, key: str | None = None) -> web.Response:
    manifest = await _read_manifest(request, job_id)
    if manifest is None:
        keys = [key] if key else [upload_key(job_id), incoming_key(job_id)]
        for candidate in keys:
            if await _exists(request, candidate):
                return web.json_response(
                    dump(schemas.Job(job_id=job_id, status="queued", outputs=[], error=None, history=[]))
                )
        reservation = None if key else await _reservation(request, job_id)
        if reservation is None:
            raise NotFound("no such job")
        return web.json_response(
            dump(
                schemas.Job(
                    job_id=job_id,
                    status="awaiting_upload",
                    outputs=[],
                    error=None,
                    history=[],
                    expires_at=reservation["expires_at"],
                    source=schemas.JobSource(key=reservation.get("key")),
                )
            )
        )
    base = _status_url(request, job_id)
    job = schemas.Job.model_validate(
        {
            "job_id": job_id,
            "status": manifest.status,
            "preset": manifest.preset,
            "outputs": [
                {
                    "variant": o.variant,
                    "format": o.format,
                    "width": o.width,
                    "height": o.height,
                    "bytes": o.bytes,
                    "url": f"{base}/outputs/{o.variant}",
                }
                for o in manifest.outputs
            ],
            "error": manifest.error,
            "source": manifest.source,
            "submitted_at": manifest.submitted_at,
            "started_at": manifest.started_at,
            "finished_at": manifest.finished_at,
            "timings_ms": manifest.timings_ms,
            "attempts": manifest.attempt,
            "worker_id": manifest.worker_id,
            "history": [attempt.to_dict() for attempt in manifest.history()],
        }
    )
    return web.json_response(dump(job))


async def get_job(request: web.Request) -> web.Response:
    """GET /v1/jobs/{id} — status, outputs with download URLs, and the error if it failed."""
    return await _job_view(request, _job_id(request))


async def find_job(request: web.Request) -> web.Response:
    """GET /v1/jobs?key=incoming/… — the job of an object uploaded straight to the input bucket."""
    key = request.query.get("key", "")
    if not key.startswith(INCOMING_PREFIX) or len(key) > 1024 or key.endswith("/"):
        raise InvalidRequest(f"key must name an object under {INCOMING_PREFIX} (only those become jobs)")
    return await _job_view(request, job_id_for_object(request.app[SETTINGS].aws.input_bucket, key), key=key)


async def download_output(request: web.Request) -> web.StreamResponse:
    """GET /v1/jobs/{id}/outputs/{variant} — stream one rendered variant from the output bucket."""
    job_id = _job_id(request)
    manifest = await _read_manifest(request, job_id)
    record = next(
        (o for o in (manifest.outputs if manifest else []) if o.variant == request.match_info["variant"]), None
    )
    if record is None:
        raise NotFound("no such output")
    obj = await request.app[S3].get_object(Bucket=request.app[SETTINGS].aws.output_bucket, Key=record.key)
    response = web.StreamResponse(
        headers={
            "Content-Type": record.content_type,
            "Content-Length": str(obj["ContentLength"]),
            "Cache-Control": "public, max-age=31536000, immutable",
            "Content-Disposition": f'inline; filename="{job_id}-{record.variant}.{record.key.rsplit(".", 1)[-1]}"',
        }
    )
    await response.prepare(request)
    async with obj["Body"] as body:
        async for chunk in body.iter_chunks(256 * 1024):
            await response.write(chunk)
    await response.write_eof()
    return response


async def list_presets(request: web.Request) -> web.Response:
    return web.json_response(dump(schemas.Presets.model_validate(presets_as_json())))


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz — 200 when S3 and SQS answer, else 503 naming what failed."""
    settings = request.app[SETTINGS]
    checks: dict[str, str] = {}

    async def check(name: str, call: Any) -> None:
        try:
            await asyncio.wait_for(call, settings.aws_timeout)
            checks[name] = "ok"
        except Exception as exc:
            if name == "s3" and is_missing_readable_object(exc):
                checks[name] = "ok"  # S3 answered: the probe key simply does not exist
            else:
                checks[name] = f"error: {classify(exc).message}"

    await asyncio.gather(
        check("s3", request.app[S3].head_object(Bucket=settings.aws.input_bucket, Key="uploads/.healthz")),
        check(
            "sqs", request.app[SQS].get_queue_attributes(QueueUrl=settings.aws.queue_url, AttributeNames=["QueueArn"])
        ),
    )
    healthy = all(v == "ok" for v in checks.values())
    answer = schemas.Health(status="ok" if healthy else "unavailable", checks=schemas.HealthChecks(**checks))
    response = web.json_response(dump(answer), status=200 if healthy else 503)
    if not healthy:
        response.headers["Retry-After"] = "5"
    return response


async def metrics(request: web.Request) -> web.Response:
    budget = request.app[BUDGET]
    body = generate_latest(request.app[METRICS].registry)
    body += (
        "# HELP pixfleet_api_buffer_bytes_in_use Upload buffer bytes in use\n"
        "# TYPE pixfleet_api_buffer_bytes_in_use gauge\n"
        f"pixfleet_api_buffer_bytes_in_use {budget.in_use}\n"
    ).encode()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SETTINGS]))


async def fleet(request: web.Request) -> web.Response:
    """GET /v1/fleet — queue depth and running workers, for the web page's live panel (cached ~1 s)."""
    cache = request.app[FLEET]
    async with cache.lock:
        if cache.value is None or time.monotonic() - cache.read_at > cache.ttl:
            cache.value = await _read_fleet(request.app)
            cache.read_at = time.monotonic()
        return web.json_response(cache.value, headers={"Cache-Control": "no-store"})


async def _read_fleet(app: web.Application) -> dict[str, Any]:
    settings = app[SETTINGS]
    depth = await queue_depth(app[SQS], settings.aws.queue_url)
    workers = desired = None
    if settings.orchestrator_url:
        # The orchestrator's /metrics (what CloudWatch charts on AWS): no credentials, none of the control
        # plane's (a task's role cannot call it). If it does not answer, the panel shows "unknown".
        try:
            async with app[HTTP].get(f"{settings.orchestrator_url.rstrip('/')}/metrics") as response:
                response.raise_for_status()
                counts = service_counts(await response.text(), "worker")
            if counts is not None:
                workers, desired = counts
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            log.debug("orchestrator %s: %s", settings.orchestrator_url, exc)
    answer = schemas.Fleet(
        queue=schemas.QueueDepth(visible=depth.visible, in_flight=depth.in_flight, delayed=depth.delayed),
        workers=workers,
        desired_workers=desired,
        sampled_at=utcnow_iso(),
    )
    return dump(answer)


async def index(request: web.Request) -> web.FileResponse:
    """GET / — the upload page (plain HTML, CSS and JS from ``static/``; no build step)."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.FileResponse:
    """GET /static/{filename} — the page's scripts and styles; any other name is a JSON 404.

    A handler rather than ``web.static``: that answers a missing file with an empty
    ``application/octet-stream`` 404 and a directory with a 403, outside the error taxonomy.
    """
    content_type = static_files().get(request.match_info["filename"])
    if content_type is None:
        raise NotFound("no such file")
    return web.FileResponse(STATIC_DIR / request.match_info["filename"], headers={"Content-Type": content_type})


ROUTES = [
    web.post("/v1/images", upload_images),
    web.post("/v1/uploads", create_upload),
    web.get("/v1/jobs", find_job),
    web.get("/v1/jobs/{job_id}", get_job),
    web.get("/v1/jobs/{job_id}/outputs/{variant}", download_output),
    web.get("/v1/presets", list_presets),
    web.get("/healthz", healthz),
    web.get("/metrics", metrics),
    web.get("/openapi.json", openapi),
    web.get("/v1/fleet", fleet),
    web.get("/", index),
    web.get("/static/{filename}", static_file),
]


# --- factory -------------------------------------------------------------------------------


def _aws_clients(credentials: Mapping[str, str] | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def clients(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        # Fail fast: when AWS (or the emulator) is down or hangs, the client gets a 503 with
        # Retry-After within aws_timeout and retries itself; the API does not queue up waits.
        config = client_config(timeout=settings.aws_timeout, read_timeout=settings.aws_timeout, attempts=1)
        async with aws_clients(settings.aws, "s3", "sqs", config=config, credentials=credentials) as (s3, sqs):
            app[S3], app[SQS] = s3, sqs
            yield

    return clients


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    """A small HTTP client for read-only calls to the orchestrator."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        app[HTTP] = http
        yield


def create_app(settings: ApiSettings, *, credentials: Mapping[str, str] | None = None) -> web.Application:
    """Build the API application; AWS clients open on startup and close on cleanup.

    ``credentials`` is for tools and tests; a task leaves it out and gets its
    role's credentials from the default chain (the orchestrator's endpoint).
    """
    app = web.Application(middlewares=[errors_middleware, api_key_middleware], client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    app[BUDGET] = ByteBudget(settings.buffer_budget, wait=settings.buffer_wait)
    app[METRICS] = Metrics.create()
    app[FLEET] = FleetCache()
    app.cleanup_ctx.append(_aws_clients(credentials))
    app.cleanup_ctx.append(_http_client)
    app.on_response_prepare.append(_send_request_id)
    app.add_routes(ROUTES)
    return app
