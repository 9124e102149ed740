"""``pixfleet bench scaling`` — how fast the orchestrator reacts to a burst, measured side by side.

Two runs on the embedded stack, same burst (N job messages sent straight to the
queue, all referring to one stored source image):

* **pinned**: the worker service held at ``max`` tasks from the start — the
  ideal drain time at ``max`` workers;
* **autoscaled**: ``min`` → ``max`` driven by queue depth.

For the autoscaled run it reports seconds from the backlog's appearance (the
first message sent) to the first scale-out decision (the service event), to the
first job started by a task launched after the burst, and the drain time (last
job finished) as a ratio of the pinned run's.
Goals: decision ≤ 1 s, first new worker busy ≤ 3 s, drain ≤ 1.2× ideal.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from aiobotocore.session import get_session
from rich.console import Console
from rich.table import Table

from pipeline.aws import credential_kwargs
from pipeline.manifest import manifest_key, upload_key
from pipeline.messages import JobMessage, new_job_id
from pipeline.transform.presets import DEFAULT_PRESET

console = Console(stderr=True)

GOALS = {"decision_s": 1.0, "first_new_worker_busy_s": 3.0, "drain_ratio": 1.2}


@dataclass
class RunResult:
    mode: str
    jobs: int
    drain_s: float
    decision_s: float | None = None
    first_new_worker_busy_s: float | None = None
    max_running: int = 0


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _photo(width: int, height: int) -> bytes:
    """A photo-like JPEG made on the spot (gradients and noise), so the jobs do real work."""
    import io
    import random

    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(7)
    im = Image.merge(
        "RGB", [Image.linear_gradient("L").resize((width, height)).rotate(a, expand=False) for a in (0, 90, 180)]
    )
    draw = ImageDraw.Draw(im)
    for _ in range(60):
        x, y, r = rng.randrange(width), rng.randrange(height), rng.randrange(10, max(11, width // 6))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    im = Image.blend(im, Image.effect_noise((width, height), 40).convert("RGB"), 0.15).filter(ImageFilter.SMOOTH)
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


async def run_burst(
    *, mode: str, jobs: int, min_workers: int, max_workers: int, target: int, preset: str, image: bytes, state_dir: Path
) -> RunResult:
    from pixfleet.stack import EmbeddedConfig, EmbeddedStack

    pinned = mode == "pinned"
    config = EmbeddedConfig(
        state_dir=state_dir,
        workers=max_workers if pinned else min_workers,
        max_workers=max_workers,
        api_port=0,
        scaling={"TargetValue": target, "ScaleInCooldown": 60},
    )
    async with EmbeddedStack(config) as stack:
        aws = stack.aws
        kwargs = {"region_name": aws.region, "endpoint_url": aws.endpoint_url, **credential_kwargs(stack.bootstrap)}
        async with (
            get_session().create_client("s3", **kwargs) as s3,
            get_session().create_client("sqs", **kwargs) as sqs,
        ):
            source = upload_key(new_job_id())
            await s3.put_object(Bucket=aws.input_bucket, Key=source, Body=image, ContentType="image/jpeg")
            before = {t["taskId"][:8] for t in await stack.tasks("worker")}
            messages = [
                JobMessage(job_id=new_job_id(), bucket=aws.input_bucket, key=source, preset=preset) for _ in range(jobs)
            ]
            t0 = time.time()
            for i in range(0, jobs, 10):
                batch = messages[i : i + 10]
                await sqs.send_message_batch(
                    QueueUrl=aws.queue_url,
                    Entries=[{"Id": str(n), "MessageBody": m.to_json()} for n, m in enumerate(batch)],
                )
            result = RunResult(mode=mode, jobs=jobs, drain_s=0.0)
            # Watch the queue (one cheap call per tick, so the measurement does not load the emulator)
            # until it is empty, then read every manifest once.
            while True:
                result.max_running = max(result.max_running, (await stack.services())["worker"]["runningCount"])
                attrs = (
                    await sqs.get_queue_attributes(
                        QueueUrl=aws.queue_url,
                        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                    )
                )["Attributes"]
                if int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0:
                    break
                if time.time() - t0 > 600:
                    raise click.ClickException(f"queue not drained after 600 s: {attrs}")
                await asyncio.sleep(0.25)

            async def read(job_id: str) -> dict[str, Any]:
                obj = await s3.get_object(Bucket=aws.output_bucket, Key=manifest_key(job_id))
                return json.loads(await obj["Body"].read())

            finished = {m.job_id: await read(m.job_id) for m in messages}
        result.drain_s = max(_ts(d["finished_at"]) for d in finished.values()) - t0
        if not pinned:
            events = await stack.control.events("worker", limit=1000)
            decisions = [e["createdAt"] for e in events if "scaled out" in e["message"] and e["createdAt"] >= t0]
            result.decision_s = min(decisions) - t0 if decisions else None
            new_starts = [
                _ts(d["started_at"])
                for d in finished.values()
                if d.get("worker_id", "").removeprefix("worker-") not in before
            ]
            result.first_new_worker_busy_s = min(new_starts) - t0 if new_starts else None
        failed = [d for d in finished.values() if d["status"] != "succeeded"]
        if failed:
            raise click.ClickException(f"{len(failed)} jobs failed, e.g. {failed[0]['error']}")
    return result


@click.command("scaling")
@click.option("--jobs", default=200, show_default=True, help="Messages in the burst.")
@click.option("--min-workers", default=1, show_default=True, help="Autoscaling floor of the autoscaled run.")
@click.option("--max-workers", default=4, show_default=True, help="Workers of the pinned run; the autoscaled ceiling.")
@click.option("--target", default=10, show_default=True, help="Target backlog per task.")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="Preset of variants to render.")
@click.option("--size", default="1200x900", show_default=True, help="Source image WxH.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the results here."
)
def scaling(
    jobs: int, min_workers: int, max_workers: int, target: int, preset: str, size: str, json_path: Path | None
) -> None:
    """Burst → scale-out decision, first new worker busy, drain time vs the ideal at max workers."""
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter("use WxH, e.g. 1200x900", param_hint="--size") from None
    image = _photo(width, height)

    async def both() -> list[RunResult]:
        results = []
        with tempfile.TemporaryDirectory(prefix="pixfleet-bench-") as tmp:
            for mode in ("pinned", "autoscaled"):
                workers = str(max_workers) if mode == "pinned" else f"{min_workers}..{max_workers}"
                with console.status(f"{mode} run: {jobs} jobs, workers {workers}…"):
                    results.append(
                        await run_burst(
                            mode=mode,
                            jobs=jobs,
                            min_workers=min_workers,
                            max_workers=max_workers,
                            target=target,
                            preset=preset,
                            image=image,
                            state_dir=Path(tmp) / mode,
                        )
                    )
        return results

    pinned, auto = asyncio.run(both())
    ratio = auto.drain_s / pinned.drain_s
    table = Table(
        title=f"bench scaling: {jobs} jobs ({preset}, {size}), workers {min_workers}..{max_workers}, "
        f"target {target}/task",
        title_justify="left",
    )
    for col in ("measure", "value", "goal", "met"):
        table.add_column(col)

    def row(name: str, value: float | None, goal: float, unit: str) -> None:
        met = value is not None and value <= goal
        table.add_row(
            name, "n/a" if value is None else f"{value:.2f}{unit}", f"≤ {goal:g}{unit}", "yes" if met else "[red]no[/]"
        )

    row("backlog → first scale-out decision", auto.decision_s, GOALS["decision_s"], " s")
    row("backlog → first new worker busy", auto.first_new_worker_busy_s, GOALS["first_new_worker_busy_s"], " s")
    row(
        f"drain: autoscaled {auto.drain_s:.1f} s / pinned at {max_workers} {pinned.drain_s:.1f} s",
        ratio,
        GOALS["drain_ratio"],
        "×",
    )
    Console().print(table)
    if json_path:
        json_path.write_text(
            json.dumps(
                {"goals": GOALS, "pinned": asdict(pinned), "autoscaled": asdict(auto), "drain_ratio": ratio}, indent=2
            )
            + "\n"
        )
