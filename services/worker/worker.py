"""The worker: long-poll the job queue, render images in a process pool, record the outcome.

One :class:`Worker` per process. The event loop only does I/O (SQS, S3, the
health endpoint); Pillow runs in a process pool sized to the cores, because a
thread cannot be interrupted inside C code.

Delivery contract (at-least-once in, exactly-one-set-of-outputs out):

* outputs go to deterministic keys, the manifest is written last, and the
  message is deleted only after that — a crash at any point means redelivery,
  which overwrites the same objects;
* a permanent error (bad input) writes a failed manifest and moves the message
  to the DLQ at once; a retryable error leaves it on the queue with backoff,
  and once the queue's ``maxReceiveCount`` is reached the job is recorded as failed;
* SIGTERM stops receiving, lets running jobs finish within the grace period,
  hands back messages whose work never started (visibility 0) and exits 0.

The visibility timeout and the delivery bound are the job queue's own (``VisibilityTimeout``
and the redrive policy's ``maxReceiveCount``), read at startup unless the environment
overrides them: the stack is their one source.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pipeline.aws import aws_clients, client_config, queue_config
from pipeline.errors import (
    PayloadTooLarge,
    PermanentError,
    PixfleetError,
    SourceMissing,
    aws_error_code,
    classify,
    is_not_found,
)
from pipeline.manifest import Manifest, ManifestStore, Outcome, OutputRecord, output_key, planned_output_keys
from pipeline.messages import JobMessage, parse_message, utcnow_iso
from pipeline.transform.engine import TransformResult, transform
from pipeline.transform.presets import DEFAULT_PRESET, get_preset
from pipeline.transform.spec import VariantSpec
from services.worker.settings import WorkerSettings

log = logging.getLogger("pixfleet.worker")


class JobNotStarted(Exception):
    """Raised into a job that was still waiting for a CPU slot when the worker began to drain."""


class Superseded(Exception):
    """The job's source object was overwritten: this (older) version is not rendered."""


def _source_record(job: JobMessage) -> dict[str, Any]:
    source: dict[str, Any] = {"bucket": job.bucket, "key": job.key, "content_type": job.content_type, "bytes": job.size}
    if job.object_version:
        source["object_version"] = job.object_version
    if job.version_id:
        source["version_id"] = job.version_id
    return source


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry
    jobs: Counter
    job_seconds: Histogram
    in_flight: Gauge
    received: Counter

    @classmethod
    def create(cls) -> WorkerMetrics:
        r = CollectorRegistry()
        return cls(
            registry=r,
            jobs=Counter("pixfleet_worker_jobs", "Jobs finished, by outcome", ["outcome"], registry=r),
            job_seconds=Histogram(
                "pixfleet_worker_job_seconds",
                "Seconds from receive to outcome",
                buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
                registry=r,
            ),
            in_flight=Gauge("pixfleet_worker_in_flight", "Messages being worked on", registry=r),
            received=Counter("pixfleet_worker_messages_received", "Messages received", registry=r),
        )


def _warm_up() -> int:
    """Run once in each pool process so the first job does not pay for imports (the engine, libspng, numpy)."""
    from pipeline.transform import png

    png.spng()
    return 0


class Worker:
    """Consumes the job queue until :meth:`stop` (SIGTERM) or, in batch mode, until it stays empty."""

    def __init__(self, settings: WorkerSettings, *, credentials: dict[str, str] | None = None):
        self.settings = settings
        self.credentials = credentials
        self.metrics = WorkerMetrics.create()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cpu_slots = asyncio.Semaphore(settings.processes)
        self._started: set[asyncio.Task[None]] = set()
        self._last_poll = time.monotonic()
        self._last_activity = time.monotonic()
        self._pool: Executor | None = None
        self._sqs: Any = None
        self._s3: Any = None
        self.manifests: ManifestStore = None  # type: ignore[assignment]  # set when the clients open
        self.health_url: str | None = None
        self._jobs_done = 0
        self._job_seconds = 0.0
        # The job queue's own unless the environment set them: read when the clients open.
        self.visibility_timeout = settings.visibility_timeout or 0
        self.max_receive_count = settings.max_receive_count or 0

    # --- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful drain (the SIGTERM handler calls this)."""
        if not self._stopping.is_set():
            log.info("draining: no more receives; %d job(s) in flight", len(self._tasks))
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def main(self) -> int:
        """Run until stopped; return the process exit code (0 after a clean drain)."""
        async with self._resources():
            await self._receive_loop()
            await self._drain()
        return 0

    @asynccontextmanager
    async def _resources(self) -> AsyncIterator[None]:
        s = self.settings
        async with AsyncExitStack() as stack:
            config = client_config(timeout=5, read_timeout=s.wait_time + 10, attempts=3, pool=s.concurrency * 4 + 4)
            self._s3, self._sqs = await stack.enter_async_context(
                aws_clients(s.aws, "s3", "sqs", config=config, credentials=self.credentials)
            )
            self.manifests = ManifestStore(self._s3, s.aws.output_bucket)
            if s.visibility_timeout is None or s.max_receive_count is None:
                queue = await queue_config(self._sqs, s.aws.queue_url)
                self.visibility_timeout = s.visibility_timeout or queue.visibility_timeout
                self.max_receive_count = s.max_receive_count or queue.max_receive_count
            log.info("visibility timeout %ds, %d deliveries per job", self.visibility_timeout, self.max_receive_count)
            self._pool = self._new_pool()
            stack.callback(self._shutdown_pool)
            if s.health_port is not None:
                await stack.enter_async_context(self._health_server())
            yield

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _new_pool(self) -> Executor:
        pool = ProcessPoolExecutor(self.settings.processes, mp_context=multiprocessing.get_context("spawn"))
        for _ in range(self.settings.processes):
            pool.submit(_warm_up)
        return pool

    # --- the receive loop ------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        s = self.settings
        slot_freed = asyncio.Event()

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._started.discard(task)
            self.metrics.in_flight.set(len(self._tasks))
            slot_freed.set()

        while not self.stopping:
            free = s.concurrency - len(self._tasks)
            if free <= 0:
                slot_freed.clear()
                await _first(slot_freed.wait(), self._stopping.wait())
                continue
            if s.idle_exit_after and not self._tasks and time.monotonic() - self._last_activity > s.idle_exit_after:
                log.info("queue stayed empty for %.0fs: batch worker exits", s.idle_exit_after)
                self.stop()
                break
            wait_time = s.wait_time
            if s.idle_exit_after:  # a batch worker must notice an empty queue in time
                idle_left = s.idle_exit_after - (time.monotonic() - self._last_activity)
                wait_time = max(1, min(wait_time, math.ceil(idle_left)))
            receive = asyncio.ensure_future(
                self._sqs.receive_message(
                    QueueUrl=s.aws.queue_url,
                    MaxNumberOfMessages=min(s.batch_size, free),
                    WaitTimeSeconds=wait_time,
                    VisibilityTimeout=self.visibility_timeout,
                    AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                    MessageAttributeNames=["All"],
                )
            )
            await _first(receive, self._stopping.wait())
            if not receive.done():
                # Draining: let the long poll end (at most wait_time) and hand back what it brings.
                # A cancelled poll is not cancelled at SQS: its messages would stay invisible for
                # the whole visibility timeout.
                with suppress(Exception):
                    for message in (await receive).get("Messages", []):
                        await self._release(message["ReceiptHandle"])
                break
            try:
                messages = receive.result().get("Messages", [])
                self._last_poll = time.monotonic()
            except Exception as exc:
                err = classify(exc)
                log.warning("receive failed (%s); retrying", err.message)
                await _first(asyncio.sleep(min(5.0, s.retry_base or 1.0)), self._stopping.wait())
                continue
            for message in messages:
                self.metrics.received.inc()
                self._last_activity = time.monotonic()
                task = asyncio.create_task(self._handle(message))
                self._tasks.add(task)
                self.metrics.in_flight.set(len(self._tasks))
                task.add_done_callback(done)

    async def _drain(self) -> None:
        """Hand back jobs that never started, give running ones the grace period, then cancel."""
        for task in list(self._tasks - self._started):
            task.cancel(JobNotStarted.__name__)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=self.settings.grace_period)
        if pending:
            log.warning("grace period over: handing back %d unfinished job(s)", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    # --- one message -----------------------------------------------------------------------

    async def _handle(self, message: dict[str, Any]) -> None:
        receipt = message["ReceiptHandle"]
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        started = time.perf_counter()
        heartbeat = asyncio.create_task(self._heartbeat(receipt))
        job: JobMessage | None = None
        try:
            jobs = parse_message(message["Body"])
            for job in jobs:
                await self._process(job, receive_count)
            await self._sqs.delete_message(QueueUrl=self.settings.aws.queue_url, ReceiptHandle=receipt)
            outcome = "succeeded" if jobs else "ignored"
        except asyncio.CancelledError:
            await self._release(receipt)
            outcome = "released"
            raise
        except PermanentError as exc:
            log.info("job %s failed permanently: %s (%s)", job.job_id if job else "?", exc.code, exc.message)
            await self._dead_letter(message, exc)
            outcome = "failed"
        except Exception as exc:
            err = classify(exc)
            if isinstance(exc, BrokenProcessPool):
                self._pool = self._new_pool()
            if receive_count >= self.max_receive_count:
                # Outside a job's own work (e.g. the delete failed): the dead-letter recorder
                # marks the job failed unless it already finished.
                log.error(
                    "message of job %s failed after %d attempts: %s",
                    job.job_id if job else "?",
                    receive_count,
                    err.message,
                )
                await self._dead_letter(message, err)
                outcome = "failed"
            else:
                delay = min(self.visibility_timeout, self.settings.retry_base * 2 ** (receive_count - 1))
                log.warning(
                    "job %s attempt %d failed (%s); retry in %.1fs",
                    job.job_id if job else "?",
                    receive_count,
                    err.message,
                    delay,
                )
                await self._set_visibility(receipt, round(delay))
                outcome = "retried"
        finally:
            heartbeat.cancel()
        elapsed = time.perf_counter() - started
        self.metrics.jobs.labels(outcome).inc()
        self.metrics.job_seconds.observe(elapsed)
        if outcome == "succeeded":
            self._jobs_done += 1
            self._job_seconds += elapsed

    async def _process(self, job: JobMessage, attempt: int) -> None:
        """Render one job; write outputs, then the manifest. Idempotent for redeliveries.

        A job that already succeeded (for this version of its source) is not rendered
        again; one that failed is (that is what a redrive after a fix is for). Every
        attempt is recorded in the manifest's history. On the last allowed delivery a
        retryable failure becomes ``retries_exhausted``.
        """
        manifest: Manifest | None = None
        try:
            current = await self.manifests.get(job.job_id)
            if (
                current is not None
                and current.status == "succeeded"
                and current.source.get("object_version") == job.object_version
            ):
                log.info("job %s already succeeded: duplicate delivery, nothing to do", job.job_id)
                return
            t0 = time.perf_counter()
            data, object_preset = await self._download(job)
            async with self._cpu_slots:
                # Started only now: a job handed back on drain while it waited for a slot leaves no trace.
                self._mark_started()
                manifest = self._attempt_manifest(job, attempt, current)
                await self._write_manifest(manifest)
                log.info("job %s attempt %d started", job.job_id, attempt)
                manifest.preset = job.preset or (None if job.operations else object_preset or DEFAULT_PRESET)
                variants = job.operations or get_preset(manifest.preset or DEFAULT_PRESET)
                t1 = time.perf_counter()
                result = await self._render(data, variants)
                del data
                t2 = time.perf_counter()
            await self._check_still_current(job)
            manifest.outputs = await self._upload_outputs(job.job_id, result)
            t3 = time.perf_counter()
        except Superseded as exc:
            log.info("job %s: %s; its newer content has an event of its own", job.job_id, exc)
            return
        except PermanentError as exc:
            await self._record_failure(job, exc, attempt, manifest, outcome="failed")
            raise
        except Exception as exc:
            err = classify(exc)
            if attempt >= self.max_receive_count:
                failure = PermanentError(f"gave up after {attempt} attempts: {err.message}", code="retries_exhausted")
                await self._record_failure(job, failure, attempt, manifest, outcome="error", attempt_error=err)
                raise failure from exc
            if manifest is not None:
                await self._record_retry(manifest, err)
            raise
        manifest.source.update(
            format=result.source_format, width=result.source_width, height=result.source_height, frames=result.frames
        )
        manifest.status, manifest.finished_at = "succeeded", utcnow_iso()
        manifest.attempts = [*manifest.attempts, manifest.attempt_record("succeeded", ended_at=manifest.finished_at)]
        manifest.timings_ms = {
            "download": round((t1 - t0) * 1000, 1),
            "transform": round((t2 - t1) * 1000, 1),
            "transform_cpu": round(result.cpu_ms, 1),
            "upload": round((t3 - t2) * 1000, 1),
        }
        await self._write_manifest(manifest)
        log.info("job %s succeeded in %.0f ms (%d outputs)", job.job_id, (t3 - t0) * 1000, len(manifest.outputs))

    async def _download(self, job: JobMessage) -> tuple[bytes, str | None]:
        """The job's source bytes (and the preset stored with the object), of the version the job names."""
        extra: dict[str, str] = {}
        if job.version_id:
            extra["VersionId"] = job.version_id
        elif job.object_version:
            extra["IfMatch"] = job.object_version
        try:
            obj = await self._s3.get_object(Bucket=job.bucket, Key=job.key, **extra)
        except Exception as exc:
            if aws_error_code(exc) in ("PreconditionFailed", "412"):
                raise Superseded(f"{job.key} no longer holds version {job.object_version}") from exc
            if is_not_found(exc):
                raise SourceMissing(f"the source object {job.key} does not exist") from exc
            raise
        async with obj["Body"] as body:
            if obj["ContentLength"] > self.settings.limits.max_bytes:
                raise PayloadTooLarge(f"the image is larger than the limit of {self.settings.limits.max_bytes} bytes")
            data = await body.read()
        if job.version_id:
            await self._check_still_current(job)  # an old version is still readable by its id
        return data, obj.get("Metadata", {}).get("preset")

    async def _check_still_current(self, job: JobMessage) -> None:
        """Raise :class:`Superseded` when the job's source object was overwritten since its event."""
        if not job.object_version:
            return  # an API upload: its key is never written twice
        try:
            head = await self._s3.head_object(Bucket=job.bucket, Key=job.key)
        except Exception as exc:
            if is_not_found(exc):
                raise SourceMissing(f"the source object {job.key} does not exist") from exc
            raise
        current = head.get("VersionId") if job.version_id else str(head.get("ETag", "")).strip('"')
        if current and current != job.object_version:
            raise Superseded(f"{job.key} now holds version {current}, not {job.object_version}")

    def _mark_started(self) -> None:
        """The current job's work began: a drain gives it the grace period instead of handing it back."""
        task = asyncio.current_task()
        assert task is not None
        self._started.add(task)

    async def _render(self, data: bytes, variants: tuple[VariantSpec, ...]) -> TransformResult:
        """Run the engine in the pool (the caller holds a CPU slot)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, transform, data, variants, self.settings.limits)

    async def _upload_outputs(self, job_id: str, result: TransformResult) -> list[OutputRecord]:
        records = [
            OutputRecord(
                variant=r.variant,
                format=r.format,
                width=r.width,
                height=r.height,
                bytes=len(r.data),
                key=output_key(job_id, r.variant, r.extension),
                content_type=r.content_type,
            )
            for r in result.renditions
        ]
        await asyncio.gather(
            *(
                self._s3.put_object(
                    Bucket=self.settings.aws.output_bucket, Key=rec.key, Body=r.data, ContentType=rec.content_type
                )
                for rec, r in zip(records, result.renditions, strict=True)
            )
        )
        return records

    async def _record_failure(
        self,
        job: JobMessage,
        error: PixfleetError,
        attempt: int,
        manifest: Manifest | None = None,
        *,
        outcome: Outcome,
        attempt_error: PixfleetError | None = None,
    ) -> None:
        """Write the job's failed manifest, with this attempt (how it ended) in its history."""
        if manifest is None:
            manifest = self._attempt_manifest(job, attempt, await self.manifests.get(job.job_id))
        # An interrupted attempt may have written some outputs: a failed job keeps none (the manifest is last).
        await self.manifests.remove(planned_output_keys(job.job_id, manifest.preset or job.preset, job.operations))
        finished = utcnow_iso()
        ended = manifest.attempt_record(outcome, ended_at=finished, error=(attempt_error or error).to_dict())
        manifest.status, manifest.finished_at, manifest.outputs = "failed", finished, []
        manifest.attempts = [*manifest.attempts, ended]
        manifest.error = error.to_dict()
        await self._write_manifest(manifest)

    async def _record_retry(self, manifest: Manifest, error: PixfleetError) -> None:
        """This attempt failed in a way a later one may not: back to ``queued``, the attempt in the history."""
        ended = manifest.attempt_record("error", ended_at=utcnow_iso(), error=error.to_dict())
        manifest.status, manifest.attempts = "queued", [*manifest.attempts, ended]
        try:
            await self._write_manifest(manifest)
        except Exception as exc:
            log.warning("could not record the failed attempt of job %s: %s", manifest.job_id, classify(exc).message)

    # --- S3 / SQS helpers ------------------------------------------------------------------

    def _attempt_manifest(self, job: JobMessage, attempt: int, current: Manifest | None) -> Manifest:
        """The manifest of an attempt that starts now, with the earlier attempts' history."""
        return Manifest(
            job_id=job.job_id,
            status="processing",
            source=_source_record(job),
            preset=job.preset,
            submitted_at=job.submitted_at,
            started_at=utcnow_iso(),
            attempt=attempt,
            worker_id=self.settings.worker_id,
            attempts=current.history() if current else [],
        )

    async def _write_manifest(self, manifest: Manifest) -> None:
        await self.manifests.write(manifest)

    async def _dead_letter(self, message: dict[str, Any], error: PixfleetError) -> None:
        """Move a message to the DLQ now (permanent errors need no more attempts)."""
        s = self.settings
        if s.aws.dlq_url:
            await self._sqs.send_message(
                QueueUrl=s.aws.dlq_url,
                MessageBody=message["Body"],
                MessageAttributes={
                    "error_code": {"DataType": "String", "StringValue": error.code},
                    "error_message": {"DataType": "String", "StringValue": error.message[:1000]},
                },
            )
        await self._sqs.delete_message(QueueUrl=s.aws.queue_url, ReceiptHandle=message["ReceiptHandle"])

    async def _set_visibility(self, receipt: str, seconds: int) -> None:
        try:
            await self._sqs.change_message_visibility(
                QueueUrl=self.settings.aws.queue_url, ReceiptHandle=receipt, VisibilityTimeout=seconds
            )
        except Exception as exc:
            log.warning("could not change visibility: %s", classify(exc).message)

    async def _release(self, receipt: str) -> None:
        await asyncio.shield(self._set_visibility(receipt, 0))

    @property
    def heartbeat_interval(self) -> float:
        """How often a running job's visibility timeout is extended."""
        return max(1.0, self.visibility_timeout / 3)

    async def _heartbeat(self, receipt: str) -> None:
        """Keep a running job invisible to other workers."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._set_visibility(receipt, self.visibility_timeout)

    # --- health ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while the receive loop polls (or drains) and the pool is alive."""
        age = time.monotonic() - self._last_poll
        healthy = self.stopping or age < 3 * self.settings.wait_time + 30
        return healthy, {
            "status": "ok" if healthy else "stuck",
            "worker_id": self.settings.worker_id,
            "in_flight": self.in_flight,
            "draining": self.stopping,
            "jobs_succeeded": self._jobs_done,
            "mean_job_seconds": round(self._job_seconds / self._jobs_done, 4) if self._jobs_done else None,
            "seconds_since_poll": round(age, 1),
        }

    @asynccontextmanager
    async def _health_server(self) -> AsyncIterator[None]:
        async def healthz(request: web.Request) -> web.Response:
            healthy, body = self.health()
            return web.json_response(body, status=200 if healthy else 503)

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        app = web.Application()
        app.add_routes([web.get("/healthz", healthz), web.get("/metrics", metrics)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.health_host, self.settings.health_port)
        await site.start()
        port = runner.addresses[0][1]
        self.health_url = f"http://{self.settings.health_host}:{port}"
        log.info("health and metrics on %s", self.health_url)
        try:
            yield
        finally:
            await runner.cleanup()


async def _first(*aws: Any) -> None:
    """Wait until the first of several awaitables finishes; cancel the helper tasks we created."""
    tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t, a in zip(tasks, aws, strict=True):
            if t is not a and not t.done():
                t.cancel()
