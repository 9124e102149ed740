"""The one description of the stack, read from ``infra/`` for the deploy renderers.

Everything a deployment needs is already declared in AWS's own request shapes:

* ``infra/taskdefs/*.json`` — ``RegisterTaskDefinition`` bodies (with pixfleet's
  ``${PORT_n}`` placeholders and bare role names);
* ``infra/ecs/cluster.json`` — ``CreateCluster``;
* ``infra/ecs/services/*.json`` — ``CreateService`` bodies;
* ``infra/ecs/scaling/*.json`` — ``RegisterScalableTarget`` + ``PutScalingPolicy``;
* :class:`infra.stack.StackSpec` — buckets, queues, redrive and the task roles'
  least-privilege policies.

:func:`load` reads them (the only I/O here); the renderers in this package are
pure functions of the :class:`Description` it returns, so what runs locally and
what is deployed cannot drift apart. Nothing here is a second copy: a value the
renderers need is looked up in these files, or computed from them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import INFRA_DIR, TASKDEFS_DIR
from infra.stack import StackSpec

ECS_DIR = INFRA_DIR / "ecs"
_PLACEHOLDER = re.compile(r"\$\{PORT_([0-9]{1,5})\}")

# The worker's task definition states its SIGTERM grace period here (services/worker/settings.py reads it).
GRACE_ENV = "PIXFLEET_WORKER_GRACE_PERIOD"


@dataclass(frozen=True)
class Service:
    """One ECS service: its ``CreateService`` body and the task definition it runs."""

    name: str
    body: dict[str, Any]
    taskdef: dict[str, Any]

    @property
    def container(self) -> dict[str, Any]:
        """The one essential container (pixfleet runs one container per task)."""
        return next(c for c in self.taskdef["containerDefinitions"] if c.get("essential", True))

    @property
    def family(self) -> str:
        return str(self.taskdef["family"])

    @property
    def role_name(self) -> str:
        """The task role's name (``taskRoleArn`` may be a bare name or an ARN)."""
        return str(self.taskdef["taskRoleArn"]).rsplit("/", 1)[-1]

    @property
    def cpu_units(self) -> int:
        return int(self.taskdef["cpu"])

    @property
    def memory_mib(self) -> int:
        return int(self.taskdef["memory"])

    @property
    def port(self) -> int:
        return int(self.container["portMappings"][0]["containerPort"])

    @property
    def stop_timeout(self) -> int:
        return int(self.container.get("stopTimeout", 30))

    @property
    def repository(self) -> str:
        """The image's repository name, without its tag."""
        return str(self.container["image"]).rsplit(":", 1)[0]

    def environment(self) -> dict[str, str]:
        """The container's environment with ``${PORT_n}`` resolved to the container port.

        On Fargate and Kubernetes every task has its own network namespace
        (``awsvpc``), so the host port *is* the container port.
        """
        return {e["name"]: resolve_ports(str(e["value"])) for e in self.container.get("environment", [])}

    def health_command(self) -> list[str]:
        """The health check's command (``CMD`` form), placeholders resolved."""
        return [resolve_ports(arg) for arg in self.container["healthCheck"]["command"]]

    @property
    def health(self) -> dict[str, int]:
        check = self.container["healthCheck"]
        return {k: int(check[k]) for k in ("interval", "timeout", "retries", "startPeriod") if k in check}


@dataclass(frozen=True)
class Scaling:
    """The worker's ``RegisterScalableTarget`` and its one target-tracking ``PutScalingPolicy``."""

    target: dict[str, Any]
    policy: dict[str, Any]

    @property
    def service(self) -> str:
        return str(self.target["ResourceId"]).split("/")[-1]

    @property
    def tracking(self) -> dict[str, Any]:
        return dict(self.policy["TargetTrackingScalingPolicyConfiguration"])

    @property
    def target_value(self) -> float:
        return float(self.tracking["TargetValue"])

    @property
    def scale_in_cooldown(self) -> int:
        return int(self.tracking.get("ScaleInCooldown", 300))

    @property
    def scale_out_cooldown(self) -> int:
        return int(self.tracking.get("ScaleOutCooldown", 300))

    @property
    def counts_in_flight(self) -> bool:
        """Whether the backlog counts in-flight (not visible) messages as well as visible ones."""
        metrics = self.tracking["CustomizedMetricSpecification"]["Metrics"]
        names = {m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m}
        return "ApproximateNumberOfMessagesNotVisible" in names


@dataclass(frozen=True)
class Description:
    """The whole stack as ``infra/`` declares it."""

    cluster: dict[str, Any]
    services: dict[str, Service]
    scaling: tuple[Scaling, ...]
    spec: StackSpec = field(default_factory=StackSpec)

    @property
    def cluster_name(self) -> str:
        return str(self.cluster["clusterName"])

    def scaling_for(self, service: str) -> Scaling | None:
        return next((s for s in self.scaling if s.service == service), None)

    def repositories(self) -> list[str]:
        """The image repositories the services need, each once, in service order."""
        return list(dict.fromkeys(s.repository for s in self.services.values()))

    def worker_grace_period(self) -> float:
        """How long the worker lets running jobs finish after SIGTERM (its task definition says)."""
        return float(self.services["worker"].environment()[GRACE_ENV])


def resolve_ports(value: str) -> str:
    """``${PORT_n}`` → ``n``: with one network namespace per task, host port = container port."""
    return _PLACEHOLDER.sub(lambda m: m.group(1), value)


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def load(infra_dir: Path = INFRA_DIR, spec: StackSpec | None = None) -> Description:
    """Read the description from ``infra_dir`` (the shipped ``infra/`` by default)."""
    ecs = infra_dir / "ecs"
    taskdefs_dir = infra_dir / TASKDEFS_DIR.name
    taskdefs = {doc["family"]: doc for doc in map(_read, sorted(taskdefs_dir.glob("*.json")))}
    services: dict[str, Service] = {}
    for path in sorted((ecs / "services").glob("*.json")):
        body = _read(path)
        family = str(body["taskDefinition"]).split(":")[0]
        services[body["serviceName"]] = Service(body["serviceName"], body, taskdefs[family])
    scaling: list[Scaling] = []
    for path in sorted((ecs / "scaling").glob("*.json")):
        doc = _read(path)
        for policy in doc["PutScalingPolicy"]:
            if policy["PolicyType"] == "TargetTrackingScaling":
                scaling.append(Scaling(doc["RegisterScalableTarget"], policy))
    return Description(_read(ecs / "cluster.json"), services, tuple(scaling), spec or StackSpec())
