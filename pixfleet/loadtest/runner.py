"""The load test itself: submit on schedule, follow every job to its end, sample the fleet every second.

Three coroutines share one :class:`LoadTest`:

* the **submitter** uploads job ``i`` when the schedule says it is due, at most
  ``concurrency`` uploads at a time (when the API is slower than the schedule, the
  submitter falls behind rather than piling up requests: the lag is reported);
* the **follower** polls accepted jobs oldest first, a window at a time, so a
  backlog of thousands costs a bounded request rate;
* the **sampler** reads queue depth and workers (a :class:`FleetProbe`) once a second.

Latency is the job's own record: ``submitted_at`` (the API accepted it) to
``finished_at`` (the worker wrote its manifest), not when the follower noticed.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from pixfleet.loadtest.probes import READ_ERRORS, FleetProbe, FleetReading
from pixfleet.loadtest.schedule import Schedule
from pixfleet.loadtest.sources import ImageSource
from pipeline.manifest import TERMINAL

FOLLOW_WINDOW = 16  # jobs polled per round when some are still running
FOLLOW_CONCURRENCY = 6  # status requests in flight at once
FOLLOW_INTERVAL = 0.5  # seconds between rounds that found unfinished jobs


@dataclass
class LoadConfig:
    api: str
    preset: str = "thumbs"
    concurrency: int = 8
    drain_timeout: float = 300.0
    tail: float = 0.0
    api_key: str | None = None


@dataclass
class JobRecord:
    """One submission and what became of it. Times are wall-clock seconds (epoch)."""

    index: int
    file: str
    bytes: int
    submitted: float
    answered: float | None = None
    http_status: int | None = None
    job_id: str | None = None
    status_url: str | None = None
    status: str = "uploading"  # uploading | rejected | queued | processing | succeeded | failed | unfinished
    error_code: str | None = None
    error_message: str | None = None
    accepted_at: float | None = None  # the job's submitted_at (API clock)
    finished_at: float | None = None  # the job's finished_at (worker clock)
    latency_s: float | None = None

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "status_url"}


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class LoadTest:
    """State of one run; :meth:`run` drives it, the live view reads it."""

    config: LoadConfig
    schedule: Schedule
    source: ImageSource
    probe: FleetProbe | None
    records: list[JobRecord] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0  # wall clock
    ended: float = 0.0
    max_lag: int = 0
    probe_failures: int = 0
    interrupted: bool = False
    phase: str = "starting"

    def __post_init__(self) -> None:
        self._pending: list[JobRecord] = []  # accepted, not finished; oldest first
        self._stop = asyncio.Event()
        self._t0 = 0.0  # monotonic
        self.last_reading: FleetReading | None = None

    # --- what the live view and the report read ------------------------------------------------

    def count(self, *statuses: str) -> int:
        return sum(1 for r in self.records if r.status in statuses)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0 if self._t0 else 0.0

    def recent_throughput(self, window: float = 10.0) -> float:
        """Jobs finished per second over the last ``window`` seconds (by their own finish time)."""
        now = time.time()
        span = min(window, max(1e-9, now - self.started))
        return sum(1 for r in self.records if r.finished_at and now - r.finished_at <= window) / span

    def stop(self) -> None:
        """Stop submitting and waiting (Ctrl-C); the report covers what happened so far."""
        self.interrupted = True
        self._stop.set()

    # --- the run -------------------------------------------------------------------------------

    async def run(self) -> None:
        headers = {"X-API-Key": self.config.api_key} if self.config.api_key else {}
        timeout = aiohttp.ClientTimeout(total=120, sock_connect=10)
        connector = aiohttp.TCPConnector(limit=self.config.concurrency + FOLLOW_CONCURRENCY + 2)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as http:
            self._t0, self.started = time.monotonic(), time.time()
            sampler = asyncio.create_task(self._sample(http))
            self.phase = "submitting"
            follower = asyncio.create_task(self._follow(http))
            await self._submit(http)
            self.phase = "draining"
            await self._until(follower, self.config.drain_timeout)
            for record in self._pending:
                record.status, record.error_code = "unfinished", "unfinished"
                record.error_message = (
                    "not finished when the run was stopped"
                    if self.interrupted
                    else f"not finished {self.config.drain_timeout:g} s after the last submission"
                )
            if self.config.tail > 0 and not self._stop.is_set():
                self.phase = "watching the scale-in"
                await self._until(asyncio.create_task(self._stop.wait()), self.config.tail)
            self.phase = "done"
            self.ended = time.time()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            last = self.samples[-1]["t"] if self.samples else -1
            await self._sample_once(http, max(last + 1, math.ceil(time.monotonic() - self._t0)))  # the closing sample

    async def _until(self, task: asyncio.Task[Any], timeout: float) -> None:
        """Wait for ``task`` at most ``timeout`` seconds or until stopped; then cancel it."""
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({task, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for t in (task, stopper):
            t.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)

    async def _submit(self, http: aiohttp.ClientSession) -> None:
        slots = asyncio.Semaphore(self.config.concurrency)
        uploads: set[asyncio.Task[None]] = set()
        submitted, total = 0, self.schedule.total
        while submitted < total and not self._stop.is_set():
            due = self.schedule.due(time.monotonic() - self._t0)
            self.max_lag = max(self.max_lag, due - submitted)
            while submitted < due and not self._stop.is_set():
                await slots.acquire()
                task = asyncio.create_task(self._upload(http, submitted, slots))
                uploads.add(task)
                task.add_done_callback(uploads.discard)
                submitted += 1
            await asyncio.sleep(0.02)
        if uploads:
            await asyncio.gather(*uploads, return_exceptions=True)

    async def _upload(self, http: aiohttp.ClientSession, index: int, slots: asyncio.Semaphore) -> None:
        try:
            sample = await self.source.take(index)
            record = JobRecord(index=index, file=sample.name, bytes=len(sample.data), submitted=time.time())
            self.records.append(record)
            try:
                async with http.post(
                    f"{self.config.api}/v1/images",
                    params={"preset": self.config.preset},
                    data=sample.data,
                    headers={"Content-Type": sample.content_type},
                ) as response:
                    body = await response.json(content_type=None)
                    record.http_status = response.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                record.status, record.error_code = (
                    "rejected",
                    "timeout" if isinstance(exc, TimeoutError) else "connection_error",
                )
                record.error_message = str(exc) or type(exc).__name__
                return
            finally:
                record.answered = time.time()
            if record.http_status == 202 and isinstance(body, dict) and body.get("status_url"):
                record.status, record.job_id, record.status_url = "queued", body["job_id"], body["status_url"]
                self._pending.append(record)
            else:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                record.status = "rejected"
                record.error_code = error.get("code") or f"http_{record.http_status}"
                record.error_message = error.get("message")
        finally:
            slots.release()

    async def _follow(self, http: aiohttp.ClientSession) -> None:
        """Poll unfinished jobs, oldest first, until every submitted job has ended."""
        window = FOLLOW_WINDOW
        limit = asyncio.Semaphore(FOLLOW_CONCURRENCY)

        async def check(record: JobRecord) -> bool:
            async with limit:
                try:
                    async with http.get(record.status_url) as response:  # type: ignore[arg-type]
                        job = await response.json(content_type=None) if response.status == 200 else {}
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    return False
            return self._observe(record, job)

        while True:
            if self.phase != "submitting" and not self._pending:
                return
            batch = self._pending[:window]
            ended = sum(await asyncio.gather(*(check(r) for r in batch))) if batch else 0
            self._pending = [r for r in self._pending if r.status not in TERMINAL]
            if batch and ended == len(batch):
                window = min(256, window * 2)  # everything we looked at had finished: look further
                continue
            window = FOLLOW_WINDOW
            await asyncio.sleep(FOLLOW_INTERVAL if batch else 0.1)

    def _observe(self, record: JobRecord, job: dict[str, Any]) -> bool:
        status = job.get("status")
        if status == "processing":
            record.status = "processing"
        if status not in TERMINAL:
            return False
        record.status = status
        record.accepted_at = _epoch(job.get("submitted_at")) or record.answered
        record.finished_at = _epoch(job.get("finished_at")) or time.time()
        if record.accepted_at is not None:
            record.latency_s = max(0.0, record.finished_at - record.accepted_at)
        if status == "failed":
            error = job.get("error") or {}
            record.error_code, record.error_message = error.get("code", "failed"), error.get("message")
        return True

    async def _sample(self, http: aiohttp.ClientSession) -> None:
        """One sample per second, on the second (a slow read skips ahead rather than drifting)."""
        second = 0
        while True:
            await asyncio.sleep(max(0.0, self._t0 + second - time.monotonic()))
            await self._sample_once(http, second)
            second = max(second + 1, math.floor(time.monotonic() - self._t0) + 1)

    async def _sample_once(self, http: aiohttp.ClientSession, second: int) -> None:
        reading = FleetReading()
        if self.probe is not None:
            try:
                reading = await self.probe.read(http)
                self.last_reading = reading
            except READ_ERRORS:
                self.probe_failures += 1  # the sample records no reading; the plot shows a gap
        self.samples.append(
            {
                "t": second,
                "at": time.time(),
                **asdict(reading),
                "submitted": len(self.records),
                "accepted": sum(1 for r in self.records if r.job_id),
                "rejected": self.count("rejected"),
            }
        )
