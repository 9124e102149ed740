"""state.json (services/orchestrator/state.py): atomic, private, and readable across versions."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from services.orchestrator.model import (
    Deployment,
    DeploymentStatus,
    HealthStatus,
    RolloutState,
    Service,
    ServiceConfig,
    Task,
    TaskState,
)
from services.orchestrator.runtime import TaskHandle
from services.orchestrator.state import StateStore


def test_a_saved_state_loads_back_private_and_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    assert store.load() is None  # a first start
    service = Service(ServiceConfig("worker", "app:1"), 3, [Deployment.new("app:1", "service created")])
    task = Task(
        "a" * 32,
        "app:1",
        "worker",
        "service:worker",
        state=TaskState.RUNNING,
        health=HealthStatus.HEALTHY,
        handle=TaskHandle(task_id="a" * 32, pid=4242, ports={8081: 40001}, log="/tmp/app.log"),
        overrides={"X": "1"},
        token="secret",
    )
    store.save("pixfleet", [service], [task])
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # written beside it, then renamed
    raw = json.loads(store.path.read_text())
    assert raw["tasks"][0]["state"] == "RUNNING" and raw["services"][0]["deployments"][0]["status"] == "PRIMARY"
    saved = store.load()
    assert saved is not None
    assert saved.cluster == "pixfleet" and saved.tasks == [task]
    restored = Service(ServiceConfig("worker", "app:1"), 1, [])
    restored.restore(saved.services["worker"])
    assert restored.desired_count == 3 and restored.deployments == service.deployments


def test_the_older_layout_still_loads(tmp_path: Path) -> None:
    """Before typed handles, overrides lived inside the handle dict and states were bare strings."""
    old = {
        "cluster": "pixfleet",
        "services": [
            {
                "name": "worker",
                "desired_count": 2,
                "deployments": [
                    {
                        "deployment_id": "ecs-svc/1",
                        "taskdef": "app:1",
                        "status": "ACTIVE",
                        "rollout_state": "FAILED",
                        "reason": "",
                        "failed_tasks": 3,
                        "created_at": 1.0,
                    }
                ],
                "scaling": None,
            }
        ],
        "tasks": [
            {
                "task_id": "b" * 32,
                "taskdef": "app:1",
                "service": None,
                "group": "run-task:app",
                "state": "STOPPING",
                "desired_status": "STOPPED",
                "health": "UNKNOWN",
                "created_at": 1.0,
                "started_at": 2.0,
                "stopping_at": 3.0,
                "stopped_at": None,
                "stop_reason": "asked",
                "exit_code": None,
                "handle": {
                    "pid": 77,
                    "task_id": "b" * 32,
                    "ports": {"8080": 40000},
                    "log": "x.log",
                    "overrides": {"IDLE": "2"},
                },
                "token": "t",
                "health_failures": 0,
                "last_health": None,
                "healthy_at": None,
            },
            {"task_id": "c" * 32, "taskdef": "app:1", "service": "worker", "group": "g", "handle": {"overrides": {}}},
        ],
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(old))
    saved = StateStore(path).load()
    assert saved is not None
    running, never_started = saved.tasks
    assert running.state == TaskState.STOPPING and running.desired_status == TaskState.STOPPED
    assert running.handle == TaskHandle(task_id="b" * 32, pid=77, ports={8080: 40000}, log="x.log")
    assert running.overrides == {"IDLE": "2"}
    assert never_started.handle is None and never_started.state == TaskState.PROVISIONING
    deployment = Deployment.from_state(saved.services["worker"]["deployments"][0])
    assert (deployment.status, deployment.rollout_state) == (DeploymentStatus.ACTIVE, RolloutState.FAILED)


def test_handles_round_trip_through_json() -> None:
    for handle in (
        TaskHandle(task_id="t", pid=1, ports={80: 8080}, log="l"),
        TaskHandle(task_id="t", container_id="abc", ports={8081: 8081}, name="pixfleet-worker-t"),
    ):
        assert TaskHandle.from_json(json.loads(json.dumps(handle.to_json()))) == handle
