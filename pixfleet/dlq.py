"""``pixfleet dlq list`` and ``pixfleet dlq redrive`` — the dead-letter queue, for people.

``list`` shows every message in the DLQ with its job, why it failed (the job's manifest,
written by the worker or the dead-letter recorder) and how often it was delivered. It
receives each message briefly and hands it straight back, as the SQS console's "poll
for messages" does; nothing is deleted.

``redrive`` sends them back to the job queue with SQS's own ``StartMessageMoveTask``
(the embedded emulator implements it; LocalStack and AWS have it) and follows the task
with ``ListMessageMoveTasks`` until it completes. A redriven job that failed is
rendered again; one that succeeded meanwhile stays as it is.

Both find the stack through ``.pixfleet/stack.json`` (the emulator's admin keys) or, for
the compose stack and AWS, ``--endpoint-url``/``--dlq-url`` and the default credentials.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.aws import client_config, credential_kwargs
from pipeline.errors import PermanentError
from pipeline.manifest import ManifestStore
from pipeline.messages import parse_message
from pixfleet.endpoints import read_stack, require_stack

console = Console()
err = Console(stderr=True)


@dataclass(frozen=True)
class DlqTarget:
    endpoint_url: str | None
    region: str
    dlq_url: str
    queue_url: str
    output_bucket: str
    credentials: dict[str, str] | None


def discover(
    state_dir: Path, endpoint_url: str | None, dlq_url: str | None, queue_url: str | None, region: str | None
) -> DlqTarget:
    """The DLQ to work on: the options, else the running stack's ``stack.json``."""
    stack: dict[str, Any] = (read_stack(state_dir) or {}) if dlq_url else require_stack(state_dir, instead="--dlq-url")
    creds = stack.get("bootstrap_credentials") if not dlq_url else None
    return DlqTarget(
        endpoint_url=endpoint_url or stack.get("aws_endpoint_url"),
        region=region or stack.get("region") or "us-east-1",
        dlq_url=dlq_url or stack["dlq_url"],
        queue_url=queue_url or stack.get("queue_url", ""),
        output_bucket=stack.get("output_bucket", "pixfleet-output"),
        credentials=creds,
    )


@asynccontextmanager
async def _clients(target: DlqTarget) -> AsyncIterator[tuple[Any, Any]]:
    from aiobotocore.session import get_session

    session = get_session()
    kwargs = {
        "region_name": target.region,
        "endpoint_url": target.endpoint_url,
        "config": client_config(attempts=2),
        **credential_kwargs(target.credentials),
    }
    async with session.create_client("sqs", **kwargs) as sqs, session.create_client("s3", **kwargs) as s3:
        yield sqs, s3


async def _settle(sqs: Any, url: str, timeout: float = 15.0) -> None:
    """Wait (bounded) until no message of the queue is held by someone else (e.g. the recorder's pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attrs = (
            await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
        )["Attributes"]
        if int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)) == 0:
            return
        await asyncio.sleep(0.3)


async def read_dead_letters(target: DlqTarget, limit: int = 1000) -> list[dict[str, Any]]:
    """Every message in the DLQ (up to ``limit``) with its jobs' state; the messages stay in the DLQ."""
    async with _clients(target) as (sqs, s3):
        await _settle(sqs, target.dlq_url)
        store = ManifestStore(s3, target.output_bucket)
        receipts: list[str] = []
        rows: list[dict[str, Any]] = []
        try:
            while len(rows) < limit:
                answer = await sqs.receive_message(
                    QueueUrl=target.dlq_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=30,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                messages = answer.get("Messages", [])
                if not messages:
                    break
                for message in messages:
                    receipts.append(message["ReceiptHandle"])
                    rows.extend(await _describe(message, store))
        finally:
            for start in range(0, len(receipts), 10):
                await asyncio.gather(
                    *(
                        sqs.change_message_visibility(QueueUrl=target.dlq_url, ReceiptHandle=r, VisibilityTimeout=0)
                        for r in receipts[start : start + 10]
                    )
                )
        return rows[:limit]


async def _describe(message: dict[str, Any], store: ManifestStore) -> list[dict[str, Any]]:
    attributes = message.get("Attributes", {})
    sent = int(attributes.get("SentTimestamp", "0")) / 1000
    base = {
        "message_id": message["MessageId"],
        "sent_at": datetime.fromtimestamp(sent, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if sent
        else None,
        "dead_lettered_by": "worker" if "error_code" in message.get("MessageAttributes", {}) else "sqs redrive policy",
    }
    try:
        jobs = parse_message(message["Body"])
    except PermanentError as exc:
        return [
            {
                **base,
                "job_id": None,
                "status": "not a job",
                "error": {"code": exc.code, "message": exc.message},
                "attempts": 0,
            }
        ]
    rows = []
    for job in jobs:
        manifest = await store.get(job.job_id)
        rows.append(
            {
                **base,
                "job_id": job.job_id,
                "key": job.key,
                "status": manifest.status if manifest else "unknown",
                "error": manifest.error if manifest else None,
                "attempts": len(manifest.attempts) if manifest else 0,
            }
        )
    return rows


async def redrive(target: DlqTarget, rate: int | None, progress: Progress | None = None) -> dict[str, Any]:
    """Move every DLQ message back to the job queue with ``StartMessageMoveTask``; returns the last task's record."""
    async with _clients(target) as (sqs, _):
        arns = {}
        for url in (target.dlq_url, target.queue_url):
            arns[url] = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
                "QueueArn"
            ]
        moved, task_record = 0, {}
        for _ in range(5):  # messages held by someone during a task are moved by the next one
            await _settle(sqs, target.dlq_url)
            depth = int(
                (
                    await sqs.get_queue_attributes(
                        QueueUrl=target.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
                    )
                )["Attributes"]["ApproximateNumberOfMessages"]
            )
            if depth == 0:
                break
            args: dict[str, Any] = {"SourceArn": arns[target.dlq_url], "DestinationArn": arns[target.queue_url]}
            if rate:
                args["MaxNumberOfMessagesPerSecond"] = rate
            await sqs.start_message_move_task(**args)
            bar = progress.add_task("redriving", total=depth) if progress else None
            while True:
                (task_record,) = (await sqs.list_message_move_tasks(SourceArn=arns[target.dlq_url], MaxResults=1))[
                    "Results"
                ]
                if progress is not None and bar is not None:
                    progress.update(
                        bar,
                        completed=task_record.get("ApproximateNumberOfMessagesMoved", 0),
                        total=task_record.get("ApproximateNumberOfMessagesToMove") or depth,
                    )
                if task_record["Status"] not in ("RUNNING", "CANCELLING"):
                    break
                await asyncio.sleep(0.2)
            if task_record["Status"] != "COMPLETED":
                raise click.ClickException(
                    f"the move task ended {task_record['Status']}: {task_record.get('FailureReason', '')}"
                )
            moved += int(task_record.get("ApproximateNumberOfMessagesMoved", 0))
        return {**task_record, "moved_in_all": moved}


dlq_options = [
    click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        default=Path(".pixfleet"),
        envvar="PIXFLEET_STATE_DIR",
        show_default=True,
        help="State directory of the running stack (its stack.json).",
    ),
    click.option(
        "--endpoint-url",
        envvar="AWS_ENDPOINT_URL",
        help="Emulator URL ($AWS_ENDPOINT_URL, else the running stack's; none for AWS).",
    ),
    click.option("--dlq-url", help="The dead-letter queue (default: the running stack's)."),
    click.option("--queue-url", help="Where redrive sends messages (default: the running stack's job queue)."),
    click.option("--region", envvar="AWS_REGION", help="Region ($AWS_REGION, else the running stack's)."),
]


def _with_options(fn: Any) -> Any:
    for option in reversed(dlq_options):
        fn = option(fn)
    return fn


@click.group()
def dlq() -> None:
    """The dead-letter queue: jobs that failed for good, and sending them back after a fix."""


@dlq.command("list")
@_with_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--limit", default=1000, show_default=True, help="Read at most this many messages.")
def list_command(
    state_dir: Path,
    endpoint_url: str | None,
    dlq_url: str | None,
    queue_url: str | None,
    region: str | None,
    as_json: bool,
    limit: int,
) -> None:
    """Every message in the DLQ: its job, why it failed, how many attempts it had."""
    target = discover(state_dir, endpoint_url, dlq_url, queue_url, region)
    rows = asyncio.run(read_dead_letters(target, limit))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("the dead-letter queue is empty")
        return
    table = Table(title=f"{len(rows)} dead letter(s)", title_justify="left", expand=False)
    table.add_column("job", no_wrap=True)
    table.add_column("status")
    table.add_column("error", overflow="fold", max_width=34)
    table.add_column("tries", justify="right")
    table.add_column("sent", no_wrap=True)
    for row in rows:
        error = row.get("error") or {}
        table.add_row(
            (row["job_id"] or "-")[:12],
            row["status"],
            error.get("code", "-"),
            str(row["attempts"]),
            (row.get("sent_at") or "-")[11:19],
        )
    console.print(table)
    console.print("[dim]pixfleet dlq list --json for the messages in full; pixfleet dlq redrive sends them back[/]")


@dlq.command("redrive")
@_with_options
@click.option("--max-per-second", type=click.IntRange(1, 500), help="MaxNumberOfMessagesPerSecond of the move task.")
def redrive_command(
    state_dir: Path,
    endpoint_url: str | None,
    dlq_url: str | None,
    queue_url: str | None,
    region: str | None,
    max_per_second: int | None,
) -> None:
    """Send every DLQ message back to the job queue (SQS StartMessageMoveTask)."""
    target = discover(state_dir, endpoint_url, dlq_url, queue_url, region)
    if not target.queue_url:
        raise click.ClickException("--queue-url is required without a running stack")
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        result = asyncio.run(redrive(target, max_per_second, progress))
    moved = result.get("moved_in_all", 0)
    console.print(
        f"moved {moved} message(s) back to the job queue"
        if moved
        else "the dead-letter queue is empty: nothing to move"
    )
