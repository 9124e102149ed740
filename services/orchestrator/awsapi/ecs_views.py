"""The orchestrator's nouns in ECS's answer shapes: tasks, deployments, services' deployment configuration.

Pure functions of the orchestrator's state (no I/O), so they can be table-tested; :mod:`.ecs` calls them.
What is guaranteed: every field they write is in botocore's ECS model (the tests validate answers against
it). What is not: fields pixfleet does not track (network interfaces, attachments) are left out, never
invented.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.orchestrator.model import Deployment, DeploymentConfig, DeploymentStatus, RolloutState, Task, TaskState

NO_BREAKER = 1_000_000_000
PID_ATTRIBUTE = "pixfleet.pid"
IN_FLIGHT_ATTRIBUTE = "pixfleet.jobsInFlight"
TARGET_ATTRIBUTE = "pixfleet.target."  # failure threshold of a disabled circuit breaker: never trips


def deployment_config(body: dict[str, Any] | None, current: DeploymentConfig) -> DeploymentConfig:
    """ECS's ``deploymentConfiguration`` over the current one (missing members keep their values)."""
    if not body:
        return current
    breaker = body.get("deploymentCircuitBreaker")
    rollback, threshold = current.rollback, current.failure_threshold
    if breaker is not None:
        enabled = bool(breaker.get("enable"))
        rollback = enabled and bool(breaker.get("rollback"))
        default = DeploymentConfig().failure_threshold
        threshold = current.failure_threshold if current.failure_threshold != NO_BREAKER else default
        threshold = threshold if enabled else NO_BREAKER
    return DeploymentConfig(
        minimum_healthy_percent=body.get("minimumHealthyPercent", current.minimum_healthy_percent),
        maximum_percent=body.get("maximumPercent", current.maximum_percent),
        rollback=rollback,
        failure_threshold=threshold,
    )


def deployment_config_view(config: DeploymentConfig) -> dict[str, Any]:
    return {
        "deploymentCircuitBreaker": {"enable": config.failure_threshold < NO_BREAKER, "rollback": config.rollback},
        "maximumPercent": config.maximum_percent,
        "minimumHealthyPercent": config.minimum_healthy_percent,
    }


def deployment_problems(config: DeploymentConfig) -> list[str]:
    """What ECS refuses in a deployment configuration (as InvalidParameterException)."""
    problems = []
    if not 0 <= config.minimum_healthy_percent <= 100:
        problems.append("deploymentConfiguration.minimumHealthyPercent must be between 0 and 100")
    if config.maximum_percent < 100 and not (config.maximum_percent == 100 and config.minimum_healthy_percent == 0):
        problems.append("deploymentConfiguration.maximumPercent must be at least 100")
    if config.maximum_percent <= config.minimum_healthy_percent and config.maximum_percent < 100:
        problems.append("deploymentConfiguration.maximumPercent must be greater than minimumHealthyPercent")
    return problems


@dataclass(frozen=True)
class Counts:
    running: int = 0
    pending: int = 0


def counts_by_revision(tasks: Iterable[Task]) -> dict[str, Counts]:
    """RUNNING and PROVISIONING tasks that nobody asked to stop, per task definition."""
    counts: dict[str, Counts] = {}
    for task in tasks:
        if task.desired_status != TaskState.RUNNING or not task.alive:
            continue
        c = counts.get(task.taskdef, Counts())
        running = task.state == TaskState.RUNNING
        counts[task.taskdef] = Counts(c.running + running, c.pending + (not running))
    return counts


def rollout_reason(deployment: Deployment, rollback_of: str | None) -> str:
    if deployment.rollout_state == RolloutState.FAILED:
        return (
            f"ECS deployment circuit breaker: {deployment.failed_tasks or 'too many'} tasks failed to start "
            "or become healthy; the deployment was rolled back."
        )
    if rollback_of is not None:
        return f"ECS deployment circuit breaker: rolling back from {rollback_of}."
    if deployment.rollout_state == RolloutState.COMPLETED:
        return f"ECS deployment {deployment.deployment_id} completed."
    return f"ECS deployment {deployment.deployment_id} in progress."


def deployment_views(
    deployments: list[Deployment],
    failed_recently: list[Deployment],
    desired: int,
    tasks: Iterable[Task],
    taskdef_arn: Callable[[str], str],
) -> list[dict[str, Any]]:
    """ECS's ``deployments[]``: the PRIMARY, the ACTIVE ones being replaced, and the ones the circuit
    breaker failed until the rollback completes. Tasks count towards the newest deployment of their revision."""
    shown = [d for d in deployments if d.status != DeploymentStatus.INACTIVE]
    shown += [d for d in failed_recently if d not in shown]
    counts = counts_by_revision(tasks)
    claimed: set[str] = set()
    views = []
    for d in sorted(shown, key=lambda d: d.created_at, reverse=True):
        c = Counts() if d.taskdef in claimed else counts.get(d.taskdef, Counts())
        claimed.add(d.taskdef)
        primary = d.status == DeploymentStatus.PRIMARY
        rollback_of = d.reason.removeprefix("rollback of ") if d.reason.startswith("rollback of ") else None
        views.append(
            {
                "id": d.deployment_id,
                "status": "PRIMARY" if primary else "ACTIVE",
                "taskDefinition": taskdef_arn(d.taskdef),
                "desiredCount": desired if primary else c.running + c.pending,
                "pendingCount": c.pending,
                "runningCount": c.running,
                "failedTasks": d.failed_tasks,
                "createdAt": d.created_at,
                "updatedAt": d.created_at,
                "launchType": "EC2",
                "rolloutState": str(d.rollout_state),
                "rolloutStateReason": rollout_reason(d, rollback_of),
            }
        )
    return views


def stop_code(task: Task) -> str | None:
    """ECS's ``stopCode``: who or what stopped the task."""
    if task.desired_status != TaskState.STOPPED and task.state != TaskState.STOPPED:
        return None
    if task.stop_code:
        return task.stop_code
    reason = task.stop_reason or ""
    if reason.startswith("CannotStartContainerError"):
        return "TaskFailedToStart"
    if reason.startswith("Essential container"):
        return "EssentialContainerExited"
    return "ServiceSchedulerInitiated" if task.service else "UserInitiated"


def task_view(
    task: Task,
    *,
    task_arn: str,
    cluster_arn: str,
    taskdef_arn: str,
    instance_arn: str,
    container_name: str,
    image: str,
    cpu: int,
    memory: int,
    attributes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """ECS's ``Task``: states, timestamps, the one essential container and its exit code.

    ``attributes``: what pixfleet knows of the task beyond ECS's fields (its process id, the jobs a worker
    holds, its target health), as the task's ``attributes`` (``name``/``value``, as ECS's custom attributes).
    """
    handle = task.handle
    ports = handle.ports if handle else {}
    container: dict[str, Any] = {
        "containerArn": f"{task_arn.replace(':task/', ':container/', 1)}/{container_name}",
        "taskArn": task_arn,
        "name": container_name,
        "image": image,
        "lastStatus": str(task.state),
        "healthStatus": str(task.health),
        "networkBindings": [
            {"bindIP": "0.0.0.0", "containerPort": c, "hostPort": h, "protocol": "tcp"} for c, h in ports.items()
        ],
        "cpu": str(cpu),
        "memory": str(memory),
    }
    if task.exit_code is not None:
        container["exitCode"] = task.exit_code
    if task.state == TaskState.STOPPED and task.stop_reason:
        container["reason"] = task.stop_reason[:255]
    if handle is not None and handle.container_id:
        container["runtimeId"] = handle.container_id
    override: dict[str, Any] = {"name": container_name}
    if task.command is not None:
        override["command"] = list(task.command)
    if task.overrides:
        override["environment"] = [{"name": k, "value": v} for k, v in task.overrides.items()]
    view: dict[str, Any] = {
        "taskArn": task_arn,
        "clusterArn": cluster_arn,
        "taskDefinitionArn": taskdef_arn,
        "containerInstanceArn": instance_arn,
        "lastStatus": str(task.state),
        "desiredStatus": str(task.desired_status),
        "healthStatus": str(task.health),
        "launchType": "EC2",
        "cpu": str(cpu),
        "memory": str(memory),
        "group": task.group,
        "createdAt": task.created_at,
        "containers": [container],
        "overrides": {"containerOverrides": [override]},
        "version": {TaskState.PROVISIONING: 1, TaskState.RUNNING: 2, TaskState.STOPPING: 3}.get(task.state, 4),
    }
    optional = {
        "startedAt": task.started_at,
        "stoppingAt": task.stopping_at,
        "stoppedAt": task.stopped_at,
        "stoppedReason": task.stop_reason if task.desired_status == TaskState.STOPPED else None,
        "stopCode": stop_code(task),
        "startedBy": task.started_by,
    }
    view.update({k: v for k, v in optional.items() if v is not None})
    if attributes:
        view["attributes"] = [{"name": k, "value": v[:128]} for k, v in attributes.items()]
    return view


def task_attributes(task: Task, targets: Iterable[tuple[str, Mapping[str, Any]]] = ()) -> dict[str, str]:
    """pixfleet's attributes of a task: ``pixfleet.pid``, ``pixfleet.jobsInFlight``, ``pixfleet.target.GROUP``
    (``PORT STATE [REASON]``, DescribeTargetHealth's words)."""
    found: dict[str, str] = {}
    if task.handle is not None and task.handle.pid:
        found[PID_ATTRIBUTE] = str(task.handle.pid)
    if task.in_flight is not None and task.state != TaskState.STOPPED:
        found[IN_FLIGHT_ATTRIBUTE] = str(task.in_flight)
    for group, health in targets:
        found[f"{TARGET_ATTRIBUTE}{group}"] = " ".join(
            str(part) for part in (health["port"], health["state"], health.get("reason")) if part
        )
    return found


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in tags or []}
