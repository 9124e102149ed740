"""``pixfleet chaos`` — a soak under faults: jobs through the stack while workers die and the emulator freezes.

What it does, in one run:

* submits ``jobs`` uploads at ``rate`` per second (clients retry a 503 after its ``Retry-After``, as
  clients should);
* every 3–5 s SIGKILLs a *busy* worker task (``docker kill`` in the compose stack) — preferring one that
  holds a job already on its second or later delivery, so that some messages do reach their last
  delivery — until at least ``min_kills`` kills;
* once, after ``pause_after`` of the submissions, SIGSTOPs the emulator for ``pause`` seconds (``docker
  pause`` in the compose stack);
* samples the worker service every half second (time with zero healthy workers);
* waits for every accepted job to end, then audits the output bucket against the manifests.

It reports accepted, succeeded, failed (by reason), lost (accepted, never recorded), stuck (not final),
outputs that differ from their manifest, extra objects, redeliveries, jobs that reached their last
delivery, DLQ depth, time with zero healthy workers, the kills and the pause. It passes when nothing was
lost, stuck, bad or extra, every failure has a reason, and the faults happened as asked.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from pipeline.manifest import TERMINAL
from pixfleet.orchestrator_client import OrchestratorClient

FOLLOW_WINDOW = 40


@dataclass
class ChaosConfig:
    jobs: int = 1000
    rate: float = 25.0
    concurrency: int = 8
    kill_every: tuple[float, float] = (3.0, 5.0)
    min_kills: int = 15
    pause: float = 10.0
    pause_after: float = 0.3
    preset: str = "thumbs"
    drain_timeout: float = 300.0
    seed: int = 0
    pool: int = 12


@dataclass
class Audit:
    """What the output bucket holds, compared with the manifests."""

    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id → manifest
    bad_outputs: list[str] = field(default_factory=list)  # "job/variant: why"
    extra_objects: list[str] = field(default_factory=list)


class Target(Protocol):
    """The stack under test and its faults."""

    name: str
    api_url: str

    async def status(self) -> dict[str, Any]:
        """:meth:`OrchestratorClient.status`: queue depth, services and tasks (ECS's answers, summarised)."""

    async def kill(self, task: dict[str, Any]) -> None: ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def audit(self, job_ids: list[str]) -> Audit: ...


async def audit_bucket(s3: Any, bucket: str, job_ids: list[str], *, whole_bucket: bool = True) -> Audit:
    """Every object under ``results/`` against the manifests of ``job_ids``.

    With ``whole_bucket`` (a stack the run started itself) any other job's object is extra too; without
    it (a stack others use) only objects under the run's own jobs' prefixes are looked at.
    """
    audit = Audit()
    objects: dict[str, int] = {}
    async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="results/"):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = obj["Size"]
    slots = asyncio.Semaphore(8)

    async def read(job_id: str) -> None:
        key = f"results/{job_id}/manifest.json"
        if key not in objects:
            return
        async with slots:
            for attempt in range(5):  # a busy emulator may stall a read: the audit must not give up on it
                try:
                    answer = await s3.get_object(Bucket=bucket, Key=key)
                    async with answer["Body"] as body:
                        audit.manifests[job_id] = json.loads(await body.read())
                    return
                except Exception:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1 + attempt)

    await asyncio.gather(*(read(job_id) for job_id in job_ids))
    expected: set[str] = set()
    for job_id, manifest in audit.manifests.items():
        expected.add(f"results/{job_id}/manifest.json")
        for output in manifest.get("outputs", []) if manifest.get("status") == "succeeded" else []:
            expected.add(output["key"])
            size = objects.get(output["key"])
            if size is None:
                audit.bad_outputs.append(f"{job_id}/{output['variant']}: missing")
            elif size != output["bytes"]:
                audit.bad_outputs.append(f"{job_id}/{output['variant']}: {size} bytes, manifest says {output['bytes']}")
    ours = {f"results/{job_id}/" for job_id in job_ids}
    audit.extra_objects = sorted(
        key for key in objects if key not in expected and (whole_bucket or key[: len("results/") + 33] in ours)
    )
    return audit


class EmbeddedTarget:
    """The embedded stack: kills through the orchestrator's API, the pause by SIGSTOP of moto's process."""

    name = "embedded"

    def __init__(self, stack: Any):
        self.stack = stack
        self.api_url = stack.api_url

    async def status(self) -> dict[str, Any]:
        return await self.stack.control.status()

    async def kill(self, task: dict[str, Any]) -> None:
        await self.stack.control.kill_task(task["taskId"])

    async def pause(self) -> None:
        os.kill(self.stack.emulator.pid, signal.SIGSTOP)

    async def resume(self) -> None:
        os.kill(self.stack.emulator.pid, signal.SIGCONT)

    async def audit(self, job_ids: list[str]) -> Audit:
        from aiobotocore.session import get_session

        from pipeline.aws import credential_kwargs

        aws = self.stack.aws
        kwargs = {
            "region_name": aws.region,
            "endpoint_url": aws.endpoint_url,
            **credential_kwargs(self.stack.bootstrap),
        }
        async with get_session().create_client("s3", **kwargs) as s3:
            return await audit_bucket(s3, aws.output_bucket, job_ids)


class DockerTarget:
    """The compose stack: ``docker kill`` of worker containers, ``docker pause`` of the emulator container.

    The audit runs inside the orchestrator container (the only one that may hold admin keys), since the
    emulator is not published to the host.
    """

    name = "docker"

    def __init__(self, api_url: str, orchestrator_url: str, project: str):
        import docker

        self.api_url, self.orchestrator_url, self.project = api_url.rstrip("/"), orchestrator_url.rstrip("/"), project
        self.docker = docker.from_env(timeout=60)

    def _service(self, name: str) -> Any:
        found = self.docker.containers.list(
            filters={"label": [f"com.docker.compose.project={self.project}", f"com.docker.compose.service={name}"]}
        )
        if not found:
            raise RuntimeError(f"no running '{name}' container in compose project {self.project!r}")
        return found[0]

    async def status(self) -> dict[str, Any]:
        return await OrchestratorClient.from_stack({}, self.orchestrator_url, timeout=5).status()

    async def kill(self, task: dict[str, Any]) -> None:
        await asyncio.to_thread(lambda: self.docker.containers.get(task["containerId"]).kill())

    async def pause(self) -> None:
        await asyncio.to_thread(self._service("aws").pause)

    async def resume(self) -> None:
        await asyncio.to_thread(self._service("aws").unpause)

    async def audit(self, job_ids: list[str]) -> Audit:
        orchestrator = self._service("orchestrator")
        bucket = json.loads(orchestrator.exec_run(["cat", "/var/lib/pixfleet/stack/outputs.json"]).output.decode())[
            "output_bucket"
        ]
        script = (
            "import asyncio, json, sys; from aiobotocore.session import get_session; "
            "from dataclasses import asdict; from pipeline.aws import client_config; "
            "from pixfleet.chaos import audit_bucket\n"
            "async def main():\n"
            "    ids = json.loads(sys.stdin.read())\n"
            "    async with get_session().create_client('s3', config=client_config()) as s3:\n"
            "        print(json.dumps(asdict(await audit_bucket(s3, sys.argv[1], ids, whole_bucket=False))))\n"
            "asyncio.run(main())\n"
        )
        # The job ids go in on stdin, through the environment (an argument list could be too long).
        result = await asyncio.to_thread(
            orchestrator.exec_run,
            ["sh", "-c", 'printf "%s" "$IDS" | python -c "$SCRIPT" "$BUCKET"'],
            environment={
                "AWS_PROFILE": "pixfleet-bootstrap",
                "IDS": json.dumps(job_ids),
                "SCRIPT": script,
                "BUCKET": bucket,
            },
        )
        if result.exit_code != 0:
            raise RuntimeError(f"audit in the orchestrator container failed: {result.output.decode()[-2000:]}")
        return Audit(**json.loads(result.output.decode().strip().splitlines()[-1]))


@dataclass
class ChaosRun:
    """The state of one run; :meth:`run` drives it."""

    config: ChaosConfig
    target: Target
    samples: Any  # an ImageSource
    on_change: Callable[[ChaosRun], None] | None = None
    phase: str = "starting"
    submitted: int = 0
    accepted: dict[str, int] = field(default_factory=dict)  # job id → submission index
    rejected: dict[str, int] = field(default_factory=dict)  # error code → count
    retried_503: int = 0
    # Jobs a 503 named as queued-but-unconfirmed (a send that timed out may still reach the queue and run).
    unconfirmed: set[str] = field(default_factory=set)
    unconfirmed_ran: int = 0
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id → last GET /v1/jobs answer
    kills: list[dict[str, Any]] = field(default_factory=list)
    pause_window: tuple[float, float] | None = None
    zero_healthy_s: float = 0.0
    sample_failures: int = 0
    started: float = 0.0
    ended: float = 0.0

    def _changed(self) -> None:
        if self.on_change:
            self.on_change(self)

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started if self.started else 0.0

    def count(self, *statuses: str) -> int:
        return sum(1 for s in self.statuses.values() if s.get("status") in statuses)

    async def run(self) -> dict[str, Any]:
        self.started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=120, sock_connect=10)
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=self.config.concurrency + 8)
        ) as http:
            stop_faults = asyncio.Event()
            background = [
                asyncio.create_task(self._sample(stop_faults)),
                asyncio.create_task(self._kill_loop(stop_faults)),
                asyncio.create_task(self._follow(http, stop_faults)),
            ]
            pauser = asyncio.create_task(self._pause_once())
            self.phase = "submitting"
            await self._submit(http)
            self.phase = "draining"
            await pauser
            await self._drain(http)
            stop_faults.set()
            await asyncio.gather(*background, return_exceptions=True)
        self.phase = "auditing"
        self._changed()
        audit = await self.target.audit(sorted(self.accepted))
        # A job the API answered 503 for, naming it unconfirmed, may have run after all: its objects are
        # that job's, not strays (counted in the report as `unconfirmed_ran`).
        prefixes = {f"results/{job_id}/" for job_id in self.unconfirmed}
        ran = {key[: len("results/") + 33] for key in audit.extra_objects if key[: len("results/") + 33] in prefixes}
        audit.extra_objects = [key for key in audit.extra_objects if key[: len("results/") + 33] not in prefixes]
        self.unconfirmed_ran = len(ran)
        status = await self.target.status()
        self.ended = time.monotonic()
        self.phase = "done"
        return self._report(audit, status)

    # --- submitting ---------------------------------------------------------------------------

    async def _submit(self, http: aiohttp.ClientSession) -> None:
        slots = asyncio.Semaphore(self.config.concurrency)
        uploads = []
        t0 = time.monotonic()
        for index in range(self.config.jobs):
            due = t0 + index / self.config.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await slots.acquire()
            uploads.append(asyncio.create_task(self._upload(http, index, slots)))
        await asyncio.gather(*uploads)

    async def _upload(self, http: aiohttp.ClientSession, index: int, slots: asyncio.Semaphore) -> None:
        try:
            sample = await self.samples.take(index)
            deadline = time.monotonic() + 180
            code = "unknown"
            while time.monotonic() < deadline:
                try:
                    async with http.post(
                        f"{self.target.api_url}/v1/images",
                        params={"preset": self.config.preset},
                        data=sample.data,
                        headers={"Content-Type": sample.content_type},
                    ) as r:
                        body = await r.json(content_type=None)
                        if r.status == 202:
                            self.accepted[body["job_id"]] = index
                            return
                        code = (
                            (body.get("error") or {}).get("code", f"http_{r.status}")
                            if isinstance(body, dict)
                            else f"http_{r.status}"
                        )
                        if r.status != 503:
                            break
                        unconfirmed = (
                            (body.get("error") or {}).get("unconfirmed_job_id") if isinstance(body, dict) else None
                        )
                        if unconfirmed:
                            self.unconfirmed.add(unconfirmed)
                        self.retried_503 += 1
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    code = type(exc).__name__
                    await asyncio.sleep(1.0)
            self.rejected[code] = self.rejected.get(code, 0) + 1
        finally:
            self.submitted += 1
            slots.release()
            self._changed()

    # --- faults -------------------------------------------------------------------------------

    async def _pause_once(self) -> None:
        while self.submitted < self.config.pause_after * self.config.jobs:
            await asyncio.sleep(0.1)
        if self.config.pause <= 0:
            return
        started = time.monotonic()
        await self.target.pause()
        self._changed()
        try:
            await asyncio.sleep(self.config.pause)
        finally:
            await self.target.resume()
            self.pause_window = (started - self.started, time.monotonic() - self.started)
            self._changed()

    def _holder_of_a_redelivered_job(self, workers: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A busy worker holding a job on its second or later delivery, if any."""
        by_worker = {f"worker-{t['taskId'][:8]}": t for t in workers}
        for status in self.statuses.values():
            if status.get("status") == "processing" and (status.get("attempts") or 0) >= 2:
                task = by_worker.get(status.get("worker_id") or "")
                if task is not None:
                    return task
        return None

    async def _kill_loop(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.config.seed)
        lo, hi = self.config.kill_every
        while not stop.is_set():
            with _suppress_timeout():
                await asyncio.wait_for(stop.wait(), rng.uniform(lo, hi))
            if stop.is_set() or (self.phase != "submitting" and len(self.kills) >= self.config.min_kills):
                return
            try:
                status = await self.target.status()
            except Exception:
                continue
            workers = [
                t
                for t in status.get("tasks", [])
                if t.get("service") == "worker"
                and t.get("lastStatus") == "RUNNING"
                and t.get("healthStatus") == "HEALTHY"
            ]
            busy = [t for t in workers if (t.get("inFlight") or 0) > 0]
            victim = self._holder_of_a_redelivered_job(busy) or (rng.choice(busy) if busy else None)
            if victim is None:
                continue
            try:
                await self.target.kill(victim)
            except Exception:
                continue
            self.kills.append(
                {
                    "at_s": round(time.monotonic() - self.started, 1),
                    "task": victim["taskId"][:8],
                    "in_flight": victim.get("inFlight"),
                }
            )
            self._changed()

    async def _sample(self, stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            with _suppress_timeout():
                await asyncio.wait_for(stop.wait(), 0.5)
            now = time.monotonic()
            try:
                status = await self.target.status()
            except Exception:
                self.sample_failures += 1
                last = now
                continue
            worker: dict[str, Any] = next(
                (s for s in status.get("services", []) if s.get("serviceName") == "worker"), {}
            )
            if int(worker.get("healthyCount") or 0) == 0:
                self.zero_healthy_s += now - last
            last = now

    # --- following and draining ---------------------------------------------------------------

    async def _poll(self, http: aiohttp.ClientSession, job_id: str) -> None:
        try:
            async with http.get(
                f"{self.target.api_url}/v1/jobs/{job_id}", timeout=aiohttp.ClientTimeout(total=10)
            ) as r:
                if r.status == 200:
                    self.statuses[job_id] = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass

    def _open_jobs(self) -> list[str]:
        return [j for j in self.accepted if self.statuses.get(j, {}).get("status") not in TERMINAL]

    async def _follow(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            window = self._open_jobs()[:FOLLOW_WINDOW]
            await asyncio.gather(*(self._poll(http, j) for j in window))
            self._changed()
            with _suppress_timeout():
                await asyncio.wait_for(stop.wait(), 0.5)

    async def _drain(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + self.config.drain_timeout
        while self._open_jobs() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        for job_id in self._open_jobs():  # one last look at each
            await self._poll(http, job_id)

    # --- the report ---------------------------------------------------------------------------

    def _report(self, audit: Audit, status: dict[str, Any]) -> dict[str, Any]:
        manifests = audit.manifests
        final = {j: m for j, m in manifests.items() if m.get("status") in TERMINAL}
        failed = {j: m for j, m in final.items() if m["status"] == "failed"}
        by_code: dict[str, int] = {}
        for m in failed.values():
            code = (m.get("error") or {}).get("code") or "no reason"
            by_code[code] = by_code.get(code, 0) + 1
        histories = [len(m.get("attempts") or []) for m in final.values()]
        dead = (status.get("queue") or {}).get("dead_letters")
        report: dict[str, Any] = {
            "target": self.target.name,
            "settings": {**asdict(self.config), "kill_every": list(self.config.kill_every)},
            "submitted": self.submitted,
            "accepted": len(self.accepted),
            "rejected": self.rejected,
            "retried_503": self.retried_503,
            "unconfirmed_ran": self.unconfirmed_ran,
            "succeeded": sum(1 for m in final.values() if m["status"] == "succeeded"),
            "failed": len(failed),
            "failed_by_code": by_code,
            "failed_without_reason": by_code.get("no reason", 0),
            "lost": sorted(set(self.accepted) - set(manifests)),
            "stuck": sorted(j for j, m in manifests.items() if m.get("status") not in TERMINAL),
            "bad_outputs": audit.bad_outputs,
            "extra_objects": audit.extra_objects,
            "redeliveries": sum(max(0, n - 1) for n in histories),
            "reached_last_delivery": sum(
                1
                for m in final.values()
                if len(m.get("attempts") or []) >= 3 or (m.get("error") or {}).get("code") == "retries_exhausted"
            ),
            "dlq_depth": dead,
            "zero_healthy_workers_s": round(self.zero_healthy_s, 1),
            "kills": len(self.kills),
            "kill_log": self.kills,
            "pause_s": None if self.pause_window is None else [round(t, 1) for t in self.pause_window],
            "duration_s": round(self.elapsed, 1),
        }
        goals = {
            "nothing lost": not report["lost"],
            "nothing stuck": not report["stuck"],
            "outputs match manifests": not report["bad_outputs"],
            "no extra objects": not report["extra_objects"],
            "every failure has a reason": report["failed_without_reason"] == 0,
            "every accepted job final": report["succeeded"] + report["failed"] == report["accepted"],
            f">= {self.config.min_kills} kills": report["kills"] >= self.config.min_kills,
            "the emulator was paused": self.config.pause <= 0 or report["pause_s"] is not None,
        }
        report["goals"] = goals
        report["passed"] = all(goals.values())
        return report


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        return kind is TimeoutError


def render_report(report: dict[str, Any]) -> Any:
    """The report as a rich table (80 columns)."""
    from rich.table import Table

    table = Table(title=f"pixfleet chaos — {report['target']} stack", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold", max_width=52)
    rejected = sum(report["rejected"].values())
    rows = [
        (
            "submitted / accepted",
            f"{report['submitted']} / {report['accepted']}"
            + (f" ({rejected} refused: {report['rejected']})" if rejected else ""),
        ),
        ("503s retried", str(report["retried_503"])),
        ("unconfirmed jobs that ran", str(report["unconfirmed_ran"])),
        ("succeeded", str(report["succeeded"])),
        ("failed", f"{report['failed']} {report['failed_by_code'] or ''}".strip()),
        ("lost / stuck", f"{len(report['lost'])} / {len(report['stuck'])}"),
        ("bad outputs / extra objects", f"{len(report['bad_outputs'])} / {len(report['extra_objects'])}"),
        (
            "redeliveries",
            f"{report['redeliveries']} ({report['reached_last_delivery']} jobs reached their last delivery)",
        ),
        ("DLQ depth", str(report["dlq_depth"])),
        ("zero healthy workers", f"{report['zero_healthy_workers_s']} s of {report['duration_s']} s"),
        ("kills", str(report["kills"])),
        ("emulator paused", "no" if report["pause_s"] is None else f"{report['pause_s'][0]}–{report['pause_s'][1]} s"),
    ]
    for row in rows:
        table.add_row(*row)
    for goal, ok in report["goals"].items():
        table.add_row("goal", f"{'[green]✓' if ok else '[red]✗'}[/] {goal}")
    return table


def live_line(run: ChaosRun) -> str:
    final = run.count(*TERMINAL)
    pause = (
        " · emulator paused"
        if run.phase == "submitting"
        and run.pause_window is None
        and run.submitted >= run.config.pause_after * run.config.jobs
        else ""
    )
    return (
        f"{run.phase} · {run.submitted}/{run.config.jobs} sent · {len(run.accepted)} accepted · "
        f"{final} final · {len(run.kills)} kills{pause}"
    )


# --- the command line -------------------------------------------------------------------------------

import click  # noqa: E402 - the command sits below the machinery it drives


def _range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    try:
        low, high = float(lo), float(hi or lo)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected SECONDS or MIN-MAX") from None
    if not 0 < low <= high:
        raise click.BadParameter(f"{text!r}: need 0 < MIN <= MAX")
    return low, high


@click.command("chaos")
@click.option("--jobs", default=1000, show_default=True, type=click.IntRange(1), help="Uploads to submit.")
@click.option("--rate", default=25.0, show_default=True, help="Jobs submitted per second.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1), help="Uploads in flight at once.")
@click.option(
    "--kill-every", default="3-5", show_default=True, help="Seconds between kills of a busy worker (MIN-MAX)."
)
@click.option(
    "--min-kills", default=15, show_default=True, type=click.IntRange(0), help="Kill workers at least this often."
)
@click.option("--pause", default=10.0, show_default=True, help="Seconds the emulator is frozen, once (0: never).")
@click.option(
    "--pause-after", default=0.3, show_default=True, help="Fraction of the submissions sent before the pause."
)
@click.option("--preset", default="thumbs", show_default=True, help="Preset of variants to render.")
@click.option(
    "--drain-timeout", default=300.0, show_default=True, help="Seconds to wait for the last jobs after submitting."
)
@click.option("--seed", default=0, show_default=True, help="Seed of the images and of the kills' timing.")
@click.option("--workers", default=2, show_default=True, help="Embedded stack: worker service minimum.")
@click.option("--max-workers", default=4, show_default=True, help="Embedded stack: worker service maximum.")
@click.option(
    "--visibility-timeout", default=10, show_default=True, help="Embedded stack: seconds before a killed job reappears."
)
@click.option("--max-receive-count", default=3, show_default=True, help="Embedded stack: deliveries before the DLQ.")
@click.option("--docker", is_flag=True, help="Soak the compose stack instead (docker kill / docker pause).")
@click.option("--api", "api_url", default="http://127.0.0.1:8080", show_default=True, help="With --docker: the API.")
@click.option(
    "--orchestrator",
    "orchestrator_url",
    default="http://127.0.0.1:8090",
    show_default=True,
    help="With --docker: the orchestrator (its admin token in PIXFLEET_ORCHESTRATOR_TOKEN).",
)
@click.option(
    "--project",
    default="pixfleet",
    show_default=True,
    envvar="COMPOSE_PROJECT_NAME",
    help="With --docker: the compose project.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here."
)
def chaos(
    jobs: int,
    rate: float,
    concurrency: int,
    kill_every: str,
    min_kills: int,
    pause: float,
    pause_after: float,
    preset: str,
    drain_timeout: float,
    seed: int,
    workers: int,
    max_workers: int,
    visibility_timeout: int,
    max_receive_count: int,
    docker: bool,
    api_url: str,
    orchestrator_url: str,
    project: str,
    json_path: Path | None,
) -> None:
    """Soak the stack under faults: kill busy workers, freeze the emulator, lose nothing.

    \b
    pixfleet chaos            # 1000 jobs, a kill every 3-5 s, a 10 s pause
    pixfleet chaos --jobs 200 --min-kills 5 --pause 5
    pixfleet chaos --docker   # the compose stack: docker kill, docker pause

    Exit status 0 when every goal holds, 1 otherwise.
    """
    import tempfile

    from rich.console import Console
    from rich.live import Live

    from pixfleet.loadtest.sources import GeneratedImages

    config = ChaosConfig(
        jobs=jobs,
        rate=rate,
        concurrency=concurrency,
        kill_every=_range(kill_every),
        min_kills=min_kills,
        pause=pause,
        pause_after=pause_after,
        preset=preset,
        drain_timeout=drain_timeout,
        seed=seed,
    )
    console = Console(stderr=True)

    async def soak(target: Target) -> dict[str, Any]:
        with console.status("generating images…"):
            samples = GeneratedImages(seed, config.pool)
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            run = ChaosRun(config, target, samples, on_change=lambda r: live.update(live_line(r)))
            return await run.run()

    async def embedded() -> dict[str, Any]:
        from infra.stack import StackSpec
        from pixfleet.stack import EmbeddedConfig, EmbeddedStack

        with tempfile.TemporaryDirectory(prefix="pixfleet-chaos-") as state:
            stack_config = EmbeddedConfig(
                state_dir=Path(state),
                workers=workers,
                max_workers=max_workers,
                api_port=0,
                spec=StackSpec(visibility_timeout=visibility_timeout, max_receive_count=max_receive_count),
            )
            with console.status("starting the embedded stack…"):
                stack = EmbeddedStack(stack_config)
                await stack.__aenter__()
            try:
                return await soak(EmbeddedTarget(stack))
            finally:
                with console.status("stopping the embedded stack…"):
                    await stack.stop()

    report = asyncio.run(soak(DockerTarget(api_url, orchestrator_url, project)) if docker else embedded())
    Console().print(render_report(report))
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if report["passed"] else 1)
