"""The dead-letter recorder: a small service that watches the DLQ and records what it finds.

SQS moves a message to the dead-letter queue when it has been received
``maxReceiveCount`` times (the job queue's redrive policy, which the recorder reads at
startup) without being deleted — typically because the workers that held it were killed
mid-job. No worker sees that move, so without this service such a job would read
``processing`` forever. The recorder:

* watches the DLQ's depth every ``poll_interval`` and, when it changed (or every
  ``full_pass_interval`` anyway), reads every message in it, holding each one invisible
  only for the pass and handing all of them back at its end;
* for each job in a message whose manifest is not terminal (for that version of its
  source), writes a ``failed`` manifest with code ``retries_exhausted`` and the
  attempts' history — conditionally (S3 ``If-Match``), so a worker that finished the job
  meanwhile is never overwritten;
* **never deletes** a DLQ message: they stay for ``pixfleet dlq list`` and ``pixfleet dlq
  redrive`` (SQS ``StartMessageMoveTask``), which sends them back after a fix.

Messages the worker dead-lettered itself (bad input) already have a failed manifest and
are only counted. A message that is not a job at all has no manifest to write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pipeline.aws import aws_clients, client_config, queue_config, queue_depth
from pipeline.errors import PermanentError, classify
from pipeline.manifest import Manifest, ManifestConflict, ManifestStore, planned_output_keys
from pipeline.messages import JobMessage, parse_message, utcnow_iso
from services.deadletter.settings import DeadLetterSettings

log = logging.getLogger("pixfleet.deadletter")

RETRIES_EXHAUSTED = "retries_exhausted"
PASS_VISIBILITY = 30  # seconds a message stays hidden while a pass reads the DLQ (released at the end)
MAX_PER_PASS = 2000


@dataclass
class PassResult:
    messages: int = 0
    recorded: int = 0
    already_final: int = 0
    not_jobs: int = 0


class DeadLetterRecorder:
    """Watches the DLQ; see the module docstring."""

    def __init__(self, settings: DeadLetterSettings, *, credentials: dict[str, str] | None = None):
        self.settings = settings
        self.credentials = credentials
        self._stopping = asyncio.Event()
        self._sqs: Any = None
        self.manifests: ManifestStore = None  # type: ignore[assignment]  # set when the clients open
        self._seen: set[str] = set()  # DLQ message ids already looked at
        self._known_depth: int | None = None
        self._last_pass = 0.0
        self._last_poll = time.monotonic()
        self.recorded_total = 0
        self.health_url: str | None = None
        self.max_receive_count = settings.max_receive_count or 0  # the job queue's unless set: read at startup

    def stop(self) -> None:
        self._stopping.set()

    async def main(self) -> int:
        async with self._resources():
            while not self._stopping.is_set():
                try:
                    await self.tick()
                except Exception as exc:
                    log.warning("dead-letter pass failed (%s); retrying", classify(exc).message)
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.settings.poll_interval)
        return 0

    @asynccontextmanager
    async def _resources(self) -> AsyncIterator[None]:
        s = self.settings
        async with AsyncExitStack() as stack:
            config = client_config(timeout=5, read_timeout=15, attempts=3)
            s3, self._sqs = await stack.enter_async_context(
                aws_clients(s.aws, "s3", "sqs", config=config, credentials=self.credentials)
            )
            self.manifests = ManifestStore(s3, s.aws.output_bucket)
            if s.max_receive_count is None:
                self.max_receive_count = (await queue_config(self._sqs, s.aws.queue_url)).max_receive_count
            if s.health_port is not None:
                await stack.enter_async_context(self._health_server())
            yield

    async def tick(self) -> PassResult | None:
        """One poll: read the DLQ's depth; run a pass when it changed (or is due anyway)."""
        dlq = await queue_depth(self._sqs, self.settings.aws.dlq_url)
        self._last_poll = time.monotonic()
        depth = dlq.visible + dlq.in_flight
        due = time.monotonic() - self._last_pass > self.settings.full_pass_interval
        if depth == 0:
            self._known_depth = 0
            return None
        if depth == self._known_depth and not due:
            return None
        result = await self.run_pass()
        self._known_depth = depth
        return result

    async def run_pass(self) -> PassResult:
        """Read every message in the DLQ once, record the jobs not yet final, hand the messages back."""
        s, result, receipts = self.settings, PassResult(), list[str]()
        try:
            while len(receipts) < MAX_PER_PASS and not self._stopping.is_set():
                answer = await self._sqs.receive_message(
                    QueueUrl=s.aws.dlq_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=PASS_VISIBILITY,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                messages = answer.get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    receipts.append(message["ReceiptHandle"])
                    result.messages += 1
                    if message["MessageId"] in self._seen:
                        continue
                    await self._record(message, result)
                    self._seen.add(message["MessageId"])
        finally:
            await asyncio.shield(self._release(receipts))
        self._last_pass = time.monotonic()
        if result.recorded:
            log.info("dead-letter pass: %d message(s), %d job(s) recorded as failed", result.messages, result.recorded)
        return result

    async def _release(self, receipts: list[str]) -> None:
        # One call per message: IAM authorizes the batch call as ChangeMessageVisibility on AWS, but
        # moto wants a separate (non-existent on AWS) permission for it.
        async def release(receipt: str) -> None:
            try:
                await self._sqs.change_message_visibility(
                    QueueUrl=self.settings.aws.dlq_url, ReceiptHandle=receipt, VisibilityTimeout=0
                )
            except Exception as exc:
                log.warning("could not hand back a dead letter: %s", classify(exc).message)

        for start in range(0, len(receipts), 10):
            await asyncio.gather(*(release(r) for r in receipts[start : start + 10]))

    async def _record(self, message: dict[str, Any], result: PassResult) -> None:
        try:
            jobs = parse_message(message["Body"])
        except PermanentError:
            result.not_jobs += 1
            return
        for job in jobs:
            if await self.record_job(job, message):
                result.recorded += 1
                self.recorded_total += 1
            else:
                result.already_final += 1

    async def record_job(self, job: JobMessage, message: dict[str, Any] | None = None) -> bool:
        """Mark the job failed (``retries_exhausted``) unless it is final already; True when it was written."""
        for _ in range(5):  # a conditional write that lost re-reads and decides again
            current, etag = await self.manifests.read(job.job_id)
            if current is not None and current.terminal and current.source.get("object_version") == job.object_version:
                return False
            manifest = _failed_manifest(job, current, self.max_receive_count, message)
            # Its interrupted attempts may have written some outputs: a failed job keeps none.
            await self.manifests.remove(planned_output_keys(job.job_id, manifest.preset, job.operations))
            try:
                await self.manifests.write(manifest, if_match=etag, if_absent=current is None)
            except ManifestConflict:
                continue
            log.info(
                "job %s reached the DLQ unfinished: recorded as failed (%s)",
                job.job_id,
                manifest.error and manifest.error["message"],
            )
            return True
        raise RuntimeError(f"the manifest of job {job.job_id} keeps changing")

    # --- health ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self._last_poll
        healthy = age < 3 * self.settings.poll_interval + 30
        return healthy, {
            "status": "ok" if healthy else "stuck",
            "recorded": self.recorded_total,
            "dlq_depth": self._known_depth,
            "seconds_since_poll": round(age, 1),
        }

    @asynccontextmanager
    async def _health_server(self) -> AsyncIterator[None]:
        async def healthz(request: web.Request) -> web.Response:
            healthy, body = self.health()
            return web.json_response(body, status=200 if healthy else 503)

        app = web.Application()
        app.add_routes([web.get("/healthz", healthz)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.health_host, self.settings.health_port).start()
        self.health_url = f"http://{self.settings.health_host}:{runner.addresses[0][1]}"
        try:
            yield
        finally:
            await runner.cleanup()


def _failed_manifest(
    job: JobMessage, current: Manifest | None, max_receive_count: int, message: dict[str, Any] | None
) -> Manifest:
    history = current.history() if current is not None else []
    last = history[-1] if history else None
    if last is None:
        how = "no attempt got far enough to record itself (each worker was stopped first)"
    elif last.outcome == "interrupted":
        how = (
            f"the last attempt (#{last.attempt}, {last.worker_id}) was interrupted: "
            "its worker stopped without finishing"
        )
    else:
        error = last.error or {}
        how = f"the last attempt (#{last.attempt}) ended with {last.outcome}: {error.get('code', '?')}"
    deliveries = max(max_receive_count, len(history))
    base = current if current is not None else Manifest(job_id=job.job_id, status="failed")
    source = dict(base.source) or {
        "bucket": job.bucket,
        "key": job.key,
        "content_type": job.content_type,
        "bytes": job.size,
    }
    if job.object_version:
        source["object_version"] = job.object_version
    return Manifest(
        job_id=job.job_id,
        status="failed",
        source=source,
        preset=base.preset or job.preset,
        submitted_at=base.submitted_at or job.submitted_at,
        started_at=base.started_at,
        finished_at=utcnow_iso(),
        attempt=base.attempt if current is not None else 0,
        worker_id=base.worker_id,
        attempts=history,
        error={
            "code": RETRIES_EXHAUSTED,
            "message": f"the job's message reached the dead-letter queue after {deliveries} deliveries; {how}",
        },
    )
