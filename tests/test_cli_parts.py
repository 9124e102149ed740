"""The command line's pure parts, table-driven: scale planning, output names, cells, wrapping, stack records."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from rich.cells import cell_len
from rich.console import Console

from pixfleet.cli import fit_message
from pixfleet.client import output_names
from pixfleet.endpoints import NoRunningStack, is_stale, require_stack
from pixfleet.fleet import ScaleChange, plan_scale
from pixfleet.fleet_view import (
    DeploymentRow,
    FleetStatus,
    ServiceRow,
    TaskRow,
    age,
    deployments_cell,
    render_status,
    tasks_cell,
)
from pixfleet.lifecycle import env_exports
from pixfleet.processes import ProcessRecord
from pixfleet.submit import collect_inputs, looks_like_image

import images


@pytest.mark.parametrize(
    ("scaling", "kwargs", "expected", "is_error"),
    [
        (None, {"desired": 2}, ScaleChange(desired_count=2), False),
        (None, {"minimum": 1}, "not autoscaled", True),
        ((1, 4), {"minimum": 2}, ScaleChange(minimum=2), False),
        ((1, 4), {"minimum": 2, "maximum": 6}, ScaleChange(minimum=2, maximum=6), False),
        ((1, 4), {"maximum": 0}, "above --max", True),  # min 1 > max 0
        ((1, 4), {"desired": 3}, "--pin", True),  # the scaler would undo it
        ((1, 4), {"desired": 3, "pin": True}, ScaleChange(minimum=3, maximum=3), False),
        ((1, 4), {"desired": 0, "pin": True}, ScaleChange(minimum=0, maximum=0), False),
        ((1, 4), {"pin": True}, "--pin goes with --desired", True),
        ((1, 4), {"desired": 3, "minimum": 1, "pin": True}, "--pin goes with --desired", True),
        ((1, 4), {}, "give --min", True),
        (None, {"desired": -1}, "0 or more", True),
    ],
)
def test_plan_scale(scaling: tuple[int, int] | None, kwargs: dict, expected: object, is_error: bool) -> None:
    if is_error:
        with pytest.raises(click.UsageError, match=re.escape(str(expected))):
            plan_scale("worker", scaling, **kwargs)
    else:
        assert plan_scale("worker", scaling, **kwargs) == expected


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["a/photo.jpg", "b/photo.jpg", "c/photo.png"], ["photo", "photo-2", "photo-3"]),
        (["a.jpg", "a.png", "a-2.jpg"], ["a", "a-2", "a-2-2"]),  # a made-up name never collides with a real one
        (["Photo.jpg", "photo.jpg"], ["Photo", "photo-2"]),  # distinct on case-insensitive file systems too
        (["x/noext", "y/one.two.jpg"], ["noext", "one.two"]),
    ],
)
def test_output_names_are_unique_and_follow_the_inputs(files: list[str], expected: list[str]) -> None:
    assert output_names([Path(f) for f in files]) == expected


def test_collect_inputs_walks_folders_for_images_only(tmp_path: Path) -> None:
    (tmp_path / "sub" / ".hidden").mkdir(parents=True)
    (tmp_path / "a.jpg").write_bytes(images.photo_jpeg(20, 20))
    (tmp_path / "sub" / "b.png").write_bytes(images.png_rgba(8, 8))
    (tmp_path / "sub" / "noext").write_bytes(images.webp(8, 8))  # an image by its magic bytes
    (tmp_path / "sub" / "phone.heic").write_bytes(images.heic_like())  # refused by the API, but an image
    (tmp_path / "sub" / "broken.jpg").write_bytes(b"not really")  # an image by its name: the API says why not
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub" / "scan.pdf").write_bytes(b"%PDF-1.7\n")  # image-ish, but not a photo: skipped
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "sub" / ".hidden" / "c.jpg").write_bytes(images.photo_jpeg(8, 8))
    explicit = tmp_path / "notes.txt"
    found = collect_inputs([tmp_path, explicit, tmp_path / "a.jpg"])
    rel = [p.relative_to(tmp_path).as_posix() for p in found.files]
    assert rel == ["a.jpg", "sub/b.png", "sub/broken.jpg", "sub/noext", "sub/phone.heic", "notes.txt"]
    assert [p.name for p in found.skipped] == ["notes.txt", "scan.pdf"]  # skipped in the walk; sent when named
    assert looks_like_image(tmp_path / "sub" / "noext") and not looks_like_image(explicit)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(None, "-"), (5, "5s"), (119, "119s"), (600, "10m"), (3 * 3600, "3h"), (3 * 86400, "3d"), (-3, "0s")],
)
def test_age(seconds: float | None, expected: str) -> None:
    now = 1_000_000.0
    assert age(None if seconds is None else now - seconds, now) == expected


def _service(**overrides: object) -> ServiceRow:
    base: dict = dict(
        name="worker",
        task_definition="pixfleet-worker:1",
        desired=3,
        running=3,
        healthy=3,
        pending=0,
        stopping=0,
        scaling=(1, 4),
        deployments=(DeploymentRow("pixfleet-worker:1", "PRIMARY", "COMPLETED"),),
    )
    base.update(overrides)
    return ServiceRow(**base)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "3/3 running"),
        ({"running": 2, "healthy": 1, "pending": 1}, "2/3 running, 1 healthy, 1 starting"),
        ({"stopping": 2}, "3/3 running, 2 stopping"),
    ],
)
def test_tasks_cell(overrides: dict, expected: str) -> None:
    assert tasks_cell(_service(**overrides)) == expected


def test_a_rollout_with_long_names_fits_80_columns_without_cutting_a_cell() -> None:
    """Two deployments, a long family name, every task state at once: wrapped, never '…'."""
    long_family = "pixfleet-worker-with-a-rather-long-family-name"
    status = FleetStatus(
        queue=None,
        services=(
            _service(
                task_definition=f"{long_family}:12",
                deployments=(
                    DeploymentRow(f"{long_family}:12", "PRIMARY", "IN_PROGRESS", failed_tasks=1),
                    DeploymentRow(f"{long_family}:11", "ACTIVE", "COMPLETED"),
                ),
                running=2,
                healthy=1,
                pending=1,
                stopping=1,
                last_decision="backlog 94 (visible 90, in flight 4, delayed 0) at target 10/task: wants 4",
            ),
        ),
        tasks=(
            TaskRow("1" * 32, "worker", "service:worker", f"{long_family}:12", "PROVISIONING", "UNKNOWN", None, None),
            TaskRow("2" * 32, "worker", "service:worker", f"{long_family}:12", "RUNNING", "UNHEALTHY", 3, 0.0),
            TaskRow("3" * 32, "worker", "service:worker", f"{long_family}:11", "STOPPING", "HEALTHY", 1, 0.0),
            TaskRow("f" * 32, None, "run-task:pixfleet-worker", "pixfleet-worker:1", "RUNNING", "HEALTHY", 0, 0.0),
        ),
    )
    console = Console(width=80, record=True, color_system=None)
    for part in render_status(status, now=100.0):
        console.print(part)
    text = console.export_text()
    assert all(cell_len(line) <= 80 for line in text.splitlines()), text
    assert "…" not in text, text
    for word in ("PROVISIONING", "UNHEALTHY", "STOPPING", "run-task", "2/3 running"):
        assert word in text, (word, text)
    assert deployments_cell(status.services[0]).splitlines() == [
        f"{long_family}:12 in progress (1 failed)",
        f"{long_family}:11 active, completed",
    ]
    assert "depth unavailable" in text


@pytest.mark.parametrize(
    ("message", "width"),
    [
        ("short", 80),
        ("worker is autoscaled (1..4): its scaler sets the desired count and would undo --desired 3 " * 2, 80),
        ("a path /" + "x" * 150 + " and more words after it", 60),
        ("first paragraph\nsecond paragraph that is long " * 4, 40),
    ],
)
def test_fit_message_keeps_every_line_within_the_terminal(message: str, width: int) -> None:
    wrapped = "Error: " + fit_message(message, width)
    assert all(len(line) <= width for line in wrapped.splitlines()), wrapped
    assert "".join(wrapped.removeprefix("Error: ").split()) == "".join(message.split())  # nothing lost


def test_env_exports_name_the_stack_and_leave_room_for_the_ecs_endpoint(tmp_path: Path) -> None:
    stack = {
        "aws_endpoint_url": "http://127.0.0.1:5000",
        "region": "eu-west-1",
        "bootstrap_credentials": {"access_key_id": "AKIA1", "secret_access_key": "s3cr3t/+="},
        "api_url": "http://127.0.0.1:8080",
    }
    names = dict(env_exports(stack, tmp_path))
    assert names["AWS_ENDPOINT_URL"] == "http://127.0.0.1:5000" and names["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert names["AWS_SECRET_ACCESS_KEY"] == "s3cr3t/+=" and names["PIXFLEET_STATE_DIR"] == str(tmp_path.resolve())
    assert "AWS_ENDPOINT_URL_ECS" not in names
    names = dict(env_exports({**stack, "ecs_endpoint_url": "http://127.0.0.1:8090"}, tmp_path))
    assert names["AWS_ENDPOINT_URL_ECS"] == "http://127.0.0.1:8090"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("record", "stale"),
    [
        (lambda: ProcessRecord.current().to_json(), False),
        (lambda: {"pid": os.getpid(), "started_at": ProcessRecord.current().started_at - 3600}, True),  # pid reused
        (lambda: {"pid": _dead_pid(), "started_at": time.time()}, True),
        (lambda: None, False),  # an older stack.json: nothing to judge by
        (lambda: {"pid": "12", "started_at": 1.0}, False),  # malformed: no record
    ],
)
def test_a_stack_json_is_stale_when_its_process_is_gone(tmp_path: Path, record: object, stale: bool) -> None:
    stack = {"api_url": "http://127.0.0.1:1", "process": record()}  # type: ignore[operator]
    (tmp_path / "stack.json").write_text(json.dumps(stack))
    assert is_stale(stack) is stale
    if stale:
        with pytest.raises(NoRunningStack, match="stale"):
            require_stack(tmp_path)
    else:
        assert require_stack(tmp_path)["api_url"] == "http://127.0.0.1:1"


def test_status_from_ecs_answers() -> None:
    """DescribeServices / DescribeTasks / DescribeScalableTargets as boto3 answers them, summarised by the
    client and drawn by ``FleetStatus.from_snapshot``."""
    from datetime import UTC, datetime

    from pixfleet.fleet_view import FleetStatus
    from pixfleet.orchestrator_client import service_summary, task_summary

    arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/pixfleet-worker:"
    services = [
        {
            "serviceName": "worker",
            "taskDefinition": arn + "4",
            "desiredCount": 3,
            "runningCount": 2,
            "pendingCount": 1,
            "deployments": [
                {"id": "ecs-svc/2", "taskDefinition": arn + "4", "status": "PRIMARY", "rolloutState": "IN_PROGRESS"},
                {"id": "ecs-svc/1", "taskDefinition": arn + "3", "status": "ACTIVE", "rolloutState": "COMPLETED"},
            ],
        }
    ]
    started = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def task(n: str, last: str, health: str, desired: str = "RUNNING", group: str = "service:worker") -> dict:
        return {
            "taskArn": f"arn:aws:ecs:us-east-1:123456789012:task/pixfleet/{n}",
            "taskDefinitionArn": arn + "4",
            "group": group,
            "lastStatus": last,
            "desiredStatus": desired,
            "healthStatus": health,
            "startedAt": started,
            "containers": [{"name": "worker", "runtimeId": f"c-{n}"}],
            "attributes": [{"name": "pixfleet.jobsInFlight", "value": "2"}],
        }

    tasks = [
        task("a1", "RUNNING", "HEALTHY"),
        task("b2", "RUNNING", "UNKNOWN"),
        task("c3", "RUNNING", "HEALTHY", desired="STOPPED"),
        task("d4", "STOPPED", "UNKNOWN", desired="STOPPED", group="family:pixfleet-worker"),
    ]
    targets = [{"ResourceId": "service/pixfleet/worker", "MinCapacity": 1, "MaxCapacity": 4}]
    summaries = [task_summary(t) for t in tasks]
    summary = service_summary(
        services[0],
        summaries,
        target=targets[0],
        has_check={"pixfleet-worker:4": True},
        last_decision="backlog 30 wants 3",
    )
    assert not summary["steady"]  # two deployments, one task short
    status = FleetStatus.from_snapshot({"services": [summary], "tasks": summaries})
    (row,) = status.services
    assert (row.task_definition, row.desired, row.running, row.pending) == ("pixfleet-worker:4", 3, 2, 1)
    # healthy: a1 only (b2's health check has not passed, c3 is being stopped)
    assert (row.healthy, row.stopping, row.scaling, row.last_decision) == (1, 1, (1, 4), "backlog 30 wants 3")
    assert status.tasks[0].in_flight == 2
    assert [(d.task_definition, d.status, d.rollout_state) for d in row.deployments] == [
        ("pixfleet-worker:4", "PRIMARY", "IN_PROGRESS"),
        ("pixfleet-worker:3", "ACTIVE", "COMPLETED"),
    ]
    one_off = status.tasks[-1]
    assert (one_off.task_id, one_off.service, one_off.container_id) == ("d4", None, "c-d4")
    assert status.tasks[0].started_at == started.timestamp() and status.tasks[0].service == "worker"
