"""The ECS API over the orchestrator: clusters, task definitions, services, tasks, tags, container instances.

:class:`EcsControlPlane` is the behaviour behind ``X-Amz-Target: AmazonEC2ContainerServiceV20141113.*``;
:mod:`.protocol` has already checked the signature and the request's shape against botocore's model when an
action runs, and the answers are shaped by :mod:`.ecs_views`. The orchestrator keeps doing the work (the
control loop, the planner, the supervisor); this module keeps only what ECS shows and the orchestrator does
not need: clusters, tags, services' creation times and status (ACTIVE → DRAINING → INACTIVE), in
``ecs.json`` beside ``state.json``.

What matches ECS: every RegisterTaskDefinition makes a new revision; short names and ARNs are accepted
alike; unknown clusters, services and task definitions are refused with ECS's error types and messages;
ListTasks shows tasks whose desired status is RUNNING unless asked otherwise; stopped tasks stay
describable (the newest 200, where ECS keeps them about an hour); a task that does not fit the container
instance is not started (RunTask's ``failures[]`` say ``RESOURCE:CPU`` / ``RESOURCE:MEMORY``).

What is pixfleet's own: the machine is the single container instance of the orchestrator's cluster, so
services and tasks run only there (other clusters can be created, tagged, listed and deleted, and refuse
placement as an empty ECS cluster does); an omitted ``cluster`` means the orchestrator's cluster, not
``default``, unless a cluster named ``default`` was created; one essential container per task, so container
overrides name that container.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.orchestrator.awsapi.arns import Arns, parse_arn, short_name
from services.orchestrator.awsapi.ecs_views import (
    deployment_config,
    deployment_config_view,
    deployment_problems,
    deployment_views,
    tag_dict,
    tag_list,
    task_attributes,
    task_view,
)
from services.orchestrator.awsapi.errors import AwsApiError, client_exception, invalid_parameter
from services.orchestrator.awsapi.protocol import Action, AwsService, Call, now, page
from services.orchestrator.capacity import Resources
from services.orchestrator.model import DeploymentConfig, LoadBalancerRef, Service, ServiceConfig, Task, TaskState
from services.orchestrator.orchestrator import Orchestrator
from services.orchestrator.taskdefs import (
    ACTIVE,
    INACTIVE,
    TaskDefinition,
    TaskDefinitionError,
    UnknownTaskDefinition,
)

DRAINING = "DRAINING"
INACTIVE_KEEP = 50  # deleted services still describable
UNSUPPORTED_SERVICE_FIELDS = (
    "serviceRegistries",
    "capacityProviderStrategy",
    "placementConstraints",
    "placementStrategy",
    "serviceConnectConfiguration",
    "volumeConfigurations",
)


def cluster_not_found() -> AwsApiError:
    return AwsApiError("ClusterNotFoundException", "Cluster not found.")


def service_not_found() -> AwsApiError:
    return AwsApiError("ServiceNotFoundException", "Service not found.")


def unknown_taskdef() -> AwsApiError:
    return client_exception("Unable to describe task definition.")


class EcsControlPlane:
    """ECS's view of one orchestrator; :meth:`table` is the :class:`AwsService` for the JSON endpoint."""

    def __init__(self, orchestrator: Orchestrator, *, region: str, account: str, state_path: Path | None):
        self.orch = orchestrator
        self.arns = Arns(region, account)
        self.home = orchestrator.cluster
        self.state_path = state_path
        self.clusters: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}  # name → {cluster, createdAt, status, tags, config…}
        self.inactive: list[dict[str, Any]] = []  # descriptions of deleted services, newest last
        self.tags: dict[str, dict[str, str]] = {}  # ARN → tags
        self.instance_id = hashlib.sha256(f"{self.home}/{socket.gethostname()}".encode()).hexdigest()[:32]
        self.registered_at = now().timestamp()
        self._load()
        self.clusters.setdefault(self.home, {"status": "ACTIVE", "settings": [], "createdAt": now().timestamp()})
        self._adopt_services()

    # --- state ---------------------------------------------------------------------------------

    def _load(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        raw = json.loads(self.state_path.read_text())
        self.clusters = raw.get("clusters", {})
        self.services = raw.get("services", {})
        self.inactive = raw.get("inactive", [])
        self.tags = raw.get("tags", {})
        self.registered_at = raw.get("registeredAt", self.registered_at)

    def save(self) -> None:
        if self.state_path is None:
            return
        state = {
            "clusters": self.clusters,
            "services": self.services,
            "inactive": self.inactive[-INACTIVE_KEEP:],
            "tags": self.tags,
            "registeredAt": self.registered_at,
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)

    def _adopt_services(self) -> None:
        """Services created over the API are re-created (before the orchestrator restores its state);
        the services file's get their ECS bookkeeping; saved deployment configurations are re-applied."""
        for name, meta in self.services.items():
            if name not in self.orch.services and meta.get("status") in ("ACTIVE", DRAINING):
                bindings = tuple(LoadBalancerRef(**ref) for ref in meta.get("loadBalancers", []))
                config = ServiceConfig(
                    name, meta["taskDefinition"], meta.get("desiredCount", 0), load_balancers=bindings
                )
                self.orch.add_service(config, announce=False)
            service = self.orch.services.get(name)
            if service is not None and meta.get("deployment"):
                service.config = replace(service.config, deployment=DeploymentConfig(**meta["deployment"]))
            if service is not None and meta.get("status") == DRAINING:
                service.scaling = None  # a deleted service is not scaled back up (restore keeps it so)
        for name, service in self.orch.services.items():
            self.services.setdefault(
                name,
                {
                    "cluster": self.home,
                    "createdAt": now().timestamp(),
                    "status": "ACTIVE",
                    "taskDefinition": service.config.task_definition,
                },
            )
        self.save()

    def register_if_changed(self, doc: dict[str, Any], source: str = "<start-up>") -> TaskDefinition:
        """pixfleet's own start-up: reuse the latest ACTIVE revision when its content is identical."""
        return self.orch.registry.register(doc, source)

    # --- the table -----------------------------------------------------------------------------

    def table(self) -> AwsService:
        actions: dict[str, Action] = {
            name: getattr(self, _snake(name))
            for name in (
                "CreateCluster",
                "DescribeClusters",
                "ListClusters",
                "DeleteCluster",
                "RegisterTaskDefinition",
                "DescribeTaskDefinition",
                "ListTaskDefinitions",
                "ListTaskDefinitionFamilies",
                "DeregisterTaskDefinition",
                "CreateService",
                "UpdateService",
                "DescribeServices",
                "ListServices",
                "DeleteService",
                "RunTask",
                "StopTask",
                "DescribeTasks",
                "ListTasks",
                "TagResource",
                "UntagResource",
                "ListTagsForResource",
                "ListContainerInstances",
                "DescribeContainerInstances",
            )
        }
        return AwsService("ecs", actions, invalid_input="InvalidParameterException")

    # --- helpers -------------------------------------------------------------------------------

    def _cluster(self, params: dict[str, Any], *, key: str = "cluster") -> str:
        """The cluster a request names (omitted: the orchestrator's), or ClusterNotFoundException."""
        ref = params.get(key) or "default"
        name = short_name(ref, "cluster")
        if name == "default" and "default" not in self.clusters:
            name = self.home
        if self.clusters.get(name, {}).get("status") != "ACTIVE":
            raise cluster_not_found()
        return name

    def _placing_cluster(self, params: dict[str, Any]) -> str:
        cluster = self._cluster(params)
        if cluster != self.home:
            raise invalid_parameter("No Container Instances were found in your cluster.")
        return cluster

    def _taskdef(self, ref: str, *, active_only: bool = False) -> TaskDefinition:
        try:
            return self.orch.registry.get(short_name(ref, "task-definition"), active_only=active_only)
        except UnknownTaskDefinition:
            raise unknown_taskdef() from None

    def _taskdef_view(self, taskdef: TaskDefinition) -> dict[str, Any]:
        registry = self.orch.registry
        view = taskdef.to_ecs_json(self.arns.region, self.arns.account)
        view["taskDefinitionArn"] = self.arns.task_definition(taskdef.key)
        view["status"] = registry.status(taskdef.key)
        view["registeredAt"] = registry.registered_at(taskdef.key)
        view["compatibilities"] = ["EC2"]
        return view

    def _service_name(self, ref: str, cluster: str) -> str:
        name = short_name(ref, "service")
        if ref.startswith("arn:"):
            named = parse_arn(ref).cluster
            if named is not None and named != cluster:
                raise service_not_found()
        return name

    def _binding_problems(self, taskdef: TaskDefinition, bindings: tuple[LoadBalancerRef, ...]) -> list[str]:
        """CreateService's ``loadBalancers``: a known target group, and a container port the task maps."""
        problems = self.orch.load_balancer_problems(bindings)
        container = taskdef.main_container
        for ref in bindings:
            if ref.container_name != container.name:
                problems.append(
                    f"The container {ref.container_name} does not exist in the task definition {taskdef.key}."
                )
            elif ref.container_port not in {m.container_port for m in container.port_mappings}:
                problems.append(
                    f"The container {ref.container_name} did not have a container port {ref.container_port} "
                    f"defined in the task definition {taskdef.key}."
                )
        return problems

    def _live_service(self, params: dict[str, Any]) -> tuple[str, Service]:
        """The service a request names; ServiceNotFoundException / ServiceNotActiveException as ECS."""
        cluster = self._cluster(params)
        name = self._service_name(params["service"], cluster)
        meta = self.services.get(name)
        service = self.orch.services.get(name)
        if meta is None or meta["cluster"] != cluster or service is None:
            raise service_not_found()
        if meta["status"] != "ACTIVE":
            raise AwsApiError("ServiceNotActiveException", "Service was not ACTIVE.")
        return cluster, service

    def _settle(self) -> None:
        """DRAINING services whose tasks have all stopped become INACTIVE."""
        for name, meta in list(self.services.items()):
            if meta["status"] != DRAINING:
                continue
            service = self.orch.services.get(name)
            if service is not None and any(
                t.service == name and t.state != TaskState.STOPPED for t in self.orch.tasks.values()
            ):
                continue
            if service is not None:
                view = self._service_view(name, service, include_tags=True)
                self.orch.remove_service(name)
                view.update(status=INACTIVE, desiredCount=0, runningCount=0, pendingCount=0, deployments=[])
                self.inactive.append(json.loads(json.dumps(view, default=str)))
            del self.services[name]
            self.save()

    def _instance_arn(self) -> str:
        return self.arns.container_instance(self.home, self.instance_id)

    def _task_arn(self, task: Task) -> str:
        return self.arns.task(self.home, task.task_id)

    def _task_view(self, task: Task, include_tags: bool = False) -> dict[str, Any]:
        taskdef = self.orch.registry.get(task.taskdef)
        view = task_view(
            task,
            task_arn=self._task_arn(task),
            cluster_arn=self.arns.cluster(self.home),
            taskdef_arn=self.arns.task_definition(task.taskdef),
            instance_arn=self._instance_arn(),
            container_name=taskdef.main_container.name,
            image=taskdef.main_container.image,
            cpu=taskdef.cpu,
            memory=taskdef.memory,
            attributes=task_attributes(task, self.orch.targets.target_of(task) if self.orch.targets else ()),
        )
        if include_tags:
            view["tags"] = tag_list(self.tags.get(view["taskArn"], {}))
        return view

    def _task(self, ref: str, cluster: str) -> Task | None:
        if ref.startswith("arn:"):
            parsed = parse_arn(ref)
            if parsed.kind != "task" or (parsed.cluster is not None and parsed.cluster != cluster):
                return None
            ref = parsed.name
        return self.orch.tasks.get(ref)

    def _service_view(self, name: str, service: Service, *, include_tags: bool) -> dict[str, Any]:
        meta = self.services[name]
        orch = self.orch
        alive = orch.alive_tasks(service)
        cluster = meta["cluster"]
        view: dict[str, Any] = {
            "serviceArn": self.arns.service(cluster, name),
            "serviceName": name,
            "clusterArn": self.arns.cluster(cluster),
            "status": meta["status"],
            "desiredCount": service.desired_count,
            "runningCount": sum(1 for t in alive if t.state == TaskState.RUNNING),
            "pendingCount": sum(1 for t in alive if t.state == TaskState.PROVISIONING),
            "launchType": "EC2",
            "taskDefinition": self.arns.task_definition(service.primary.taskdef),
            "deploymentConfiguration": deployment_config_view(service.config.deployment),
            "deployments": deployment_views(
                service.deployments,
                [d for d, _ in service.failed_recently],
                service.desired_count,
                (t for t in orch.tasks.values() if t.service == name),
                self.arns.task_definition,
            ),
            "events": [
                {"id": e.id, "createdAt": e.created_at, "message": e.message}
                for e in orch.events.newest_first(100, service=name)
            ],
            "createdAt": meta["createdAt"],
            "schedulingStrategy": "REPLICA",
            "deploymentController": {"type": "ECS"},
            "propagateTags": meta.get("propagateTags", "NONE"),
            "enableECSManagedTags": bool(meta.get("enableECSManagedTags", False)),
        }
        bindings = [
            {k: lb[k] for k in ("targetGroupArn", "containerName", "containerPort") if k in lb}
            for lb in orch.load_balancers(name)
        ]
        if bindings:  # the service's target groups (their health: pixfleet status, DescribeTargetHealth's shape)
            view["loadBalancers"] = bindings
        if meta.get("createdBy"):
            view["createdBy"] = meta["createdBy"]
        if include_tags:
            view["tags"] = tag_list(self.tags.get(view["serviceArn"], {}))
        return view

    def _cluster_view(self, name: str, include: list[str]) -> dict[str, Any]:
        meta = self.clusters[name]
        home = name == self.home and meta["status"] == "ACTIVE"
        tasks = [t for t in self.orch.tasks.values() if home and t.alive]
        view: dict[str, Any] = {
            "clusterArn": self.arns.cluster(name),
            "clusterName": name,
            "status": meta["status"],
            "registeredContainerInstancesCount": 1 if home else 0,
            "runningTasksCount": sum(1 for t in tasks if t.state == TaskState.RUNNING),
            "pendingTasksCount": sum(1 for t in tasks if t.state == TaskState.PROVISIONING),
            "activeServicesCount": sum(
                1 for m in self.services.values() if m["cluster"] == name and m["status"] == "ACTIVE"
            ),
        }
        if "SETTINGS" in include:
            view["settings"] = meta.get("settings", [])
        if "TAGS" in include:
            view["tags"] = tag_list(self.tags.get(view["clusterArn"], {}))
        return view

    def _resource_exists(self, arn: str) -> bool:
        parsed = parse_arn(arn)
        if parsed.kind == "cluster":
            return self.clusters.get(parsed.name, {}).get("status") == "ACTIVE"
        if parsed.kind == "service":
            meta = self.services.get(parsed.name)
            return meta is not None and meta["cluster"] == parsed.cluster
        if parsed.kind == "task":
            return parsed.name in self.orch.tasks
        if parsed.kind == "task-definition":
            try:
                self.orch.registry.get(parsed.name)
            except UnknownTaskDefinition:
                return False
            return ":" in parsed.name
        return parsed.kind == "container-instance" and parsed.name == self.instance_id

    def _tag(self, arn: str, tags: list[dict[str, str]] | None) -> None:
        if tags:
            self.tags.setdefault(arn, {}).update(tag_dict(tags))

    # --- clusters ------------------------------------------------------------------------------

    async def create_cluster(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("clusterName") or "default"
        meta = self.clusters.get(name)
        if meta is None or meta["status"] != "ACTIVE":
            self.clusters[name] = {
                "status": "ACTIVE",
                "settings": params.get("settings", []),
                "createdAt": now().timestamp(),
            }
        self._tag(self.arns.cluster(name), params.get("tags"))
        self.save()
        return {"cluster": self._cluster_view(name, ["SETTINGS", "TAGS"])}

    async def describe_clusters(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        include = params.get("include") or []
        clusters, failures = [], []
        for ref in params.get("clusters") or ["default"]:
            name = short_name(ref, "cluster")
            if name == "default" and "default" not in self.clusters:
                name = self.home
            if name in self.clusters:
                clusters.append(self._cluster_view(name, include))
            else:
                failures.append(
                    {"arn": ref if ref.startswith("arn:") else self.arns.cluster(name), "reason": "MISSING"}
                )
        return {"clusters": clusters, "failures": failures}

    async def list_clusters(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        names = sorted(n for n, m in self.clusters.items() if m["status"] == "ACTIVE")
        arns, token = page([self.arns.cluster(n) for n in names], params)
        return {"clusterArns": arns, **({"nextToken": token} if token else {})}

    async def delete_cluster(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        name = self._cluster(params)
        if any(m["cluster"] == name and m["status"] in ("ACTIVE", DRAINING) for m in self.services.values()):
            raise AwsApiError(
                "ClusterContainsServicesException",
                "The Cluster cannot be deleted while Services are active.",
            )
        if name == self.home:
            raise AwsApiError(
                "ClusterContainsContainerInstancesException",
                "The Cluster cannot be deleted while Container Instances are active or draining.",
            )
        view = self._cluster_view(name, ["SETTINGS", "TAGS"])
        self.clusters[name]["status"] = INACTIVE
        self.save()
        return {"cluster": {**view, "status": INACTIVE}}

    # --- task definitions ----------------------------------------------------------------------

    async def register_task_definition(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in params.items() if k != "tags"}
        try:
            taskdef = self.orch.registry.register(
                body, f"RegisterTaskDefinition by {call.principal.arn}", always_new=True
            )
        except TaskDefinitionError as exc:
            raise client_exception(str(exc)) from None
        arn = self.arns.task_definition(taskdef.key)
        self._tag(arn, params.get("tags"))
        self.save()
        return {"taskDefinition": self._taskdef_view(taskdef), "tags": tag_list(self.tags.get(arn, {}))}

    async def describe_task_definition(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        taskdef = self._taskdef(params["taskDefinition"])
        answer: dict[str, Any] = {"taskDefinition": self._taskdef_view(taskdef)}
        if "TAGS" in (params.get("include") or []):
            answer["tags"] = tag_list(self.tags.get(self.arns.task_definition(taskdef.key), {}))
        return answer

    async def list_task_definitions(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        registry = self.orch.registry
        prefix = params.get("familyPrefix")
        status = params.get("status", ACTIVE)
        keys = [
            td.key
            for family in registry.families()
            if prefix is None or family == prefix
            for td in registry.revisions(family)
            if status == "ALL" or registry.status(td.key) == status
        ]
        if params.get("sort") == "DESC":
            keys.reverse()
        arns, token = page([self.arns.task_definition(k) for k in keys], params)
        return {"taskDefinitionArns": arns, **({"nextToken": token} if token else {})}

    async def list_task_definition_families(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        registry = self.orch.registry
        status = params.get("status", ACTIVE)
        prefix = params.get("familyPrefix") or ""
        families = []
        for family in registry.families():
            active = any(registry.status(td.key) == ACTIVE for td in registry.revisions(family))
            if family.startswith(prefix) and (status == "ALL" or (status == ACTIVE) == active):
                families.append(family)
        chunk, token = page(families, params)
        return {"families": chunk, **({"nextToken": token} if token else {})}

    async def deregister_task_definition(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        ref = short_name(params["taskDefinition"], "task-definition")
        if ":" not in ref:
            raise client_exception("Invalid revision number. Number: " + ref)
        try:
            taskdef = self.orch.registry.deregister(ref)
        except UnknownTaskDefinition:
            raise unknown_taskdef() from None
        view = self._taskdef_view(taskdef)
        view["deregisteredAt"] = now().timestamp()
        return {"taskDefinition": view}

    # --- services ------------------------------------------------------------------------------

    async def create_service(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        cluster = self._placing_cluster(params)
        unsupported = [f for f in UNSUPPORTED_SERVICE_FIELDS if params.get(f)]
        if params.get("schedulingStrategy") == "DAEMON":
            unsupported.append("schedulingStrategy DAEMON")
        if unsupported:
            raise invalid_parameter(f"pixfleet does not support {', '.join(unsupported)} in CreateService.")
        if "desiredCount" not in params:
            raise invalid_parameter("desiredCount is required for the REPLICA scheduling strategy.")
        name = params["serviceName"]
        taskdef = self._taskdef(params.get("taskDefinition") or "", active_only=True)
        bindings = load_balancer_refs(params.get("loadBalancers"))
        config = ServiceConfig(name, taskdef.key, params["desiredCount"], load_balancers=bindings)
        deployment = deployment_config(params.get("deploymentConfiguration"), config.deployment)
        problems = deployment_problems(deployment) + self._binding_problems(taskdef, bindings)
        if problems:
            raise invalid_parameter("; ".join(problems))
        existing = self.services.get(name)
        if existing is not None and existing["status"] in ("ACTIVE", DRAINING):
            service = self.orch.services[name]
            same = service.primary.taskdef == taskdef.key and existing["cluster"] == cluster
            if not same or existing["status"] != "ACTIVE":
                raise invalid_parameter("Creation of service was not idempotent.")
            return {"service": self._service_view(name, service, include_tags=False)}
        service = self.orch.add_service(replace(config, deployment=deployment))
        self.services[name] = {
            "cluster": cluster,
            "createdAt": now().timestamp(),
            "status": "ACTIVE",
            "taskDefinition": taskdef.key,
            "desiredCount": params["desiredCount"],
            "deployment": vars_of(deployment),
            "loadBalancers": [vars(ref) for ref in bindings],
            "createdBy": call.principal.arn,
            "propagateTags": params.get("propagateTags", "NONE"),
            "enableECSManagedTags": params.get("enableECSManagedTags", False),
        }
        self._tag(self.arns.service(cluster, name), params.get("tags"))
        self.save()
        return {"service": self._service_view(name, service, include_tags=False)}

    async def update_service(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        _, service = self._live_service(params)
        name = service.name
        deployment = deployment_config(params.get("deploymentConfiguration"), service.config.deployment)
        problems = deployment_problems(deployment)
        if problems:
            raise invalid_parameter("; ".join(problems))
        taskdef = None
        if params.get("taskDefinition"):
            taskdef = self._taskdef(params["taskDefinition"], active_only=True).key
        self.orch.update_service(
            name,
            desired_count=params.get("desiredCount"),
            task_definition=taskdef,
            deployment=deployment,
            force_new_deployment=bool(params.get("forceNewDeployment")),
        )
        meta = self.services[name]
        meta["deployment"] = vars_of(deployment)
        meta["taskDefinition"] = service.primary.taskdef
        meta["desiredCount"] = service.desired_count
        self.save()
        return {"service": self._service_view(name, service, include_tags=False)}

    async def describe_services(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        cluster = self._cluster(params)
        include_tags = "TAGS" in (params.get("include") or [])
        services, failures = [], []
        for ref in params["services"]:
            name = self._service_name(ref, cluster)
            meta = self.services.get(name)
            service = self.orch.services.get(name)
            if meta is not None and meta["cluster"] == cluster and service is not None:
                services.append(self._service_view(name, service, include_tags=include_tags))
                continue
            arn = self.arns.service(cluster, name)
            gone = next((s for s in reversed(self.inactive) if s["serviceArn"] == arn), None)
            if gone is not None:
                services.append(gone)
            else:
                failures.append({"arn": arn, "reason": "MISSING"})
        return {"services": services, "failures": failures}

    async def list_services(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        cluster = self._cluster(params)
        names = sorted(n for n, m in self.services.items() if m["cluster"] == cluster)
        arns, token = page([self.arns.service(cluster, n) for n in names], params, default=10)
        return {"serviceArns": arns, **({"nextToken": token} if token else {})}

    async def delete_service(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        _, service = self._live_service(params)
        name = service.name
        if service.desired_count > 0 and not params.get("force"):
            raise invalid_parameter(
                "The service cannot be stopped while it is scaled above 0; set desiredCount to 0 or use force."
            )
        service.scaling = None  # nothing may scale a deleted service back up
        if service.desired_count > 0:
            self.orch.update_service(name, desired_count=0)
        self.services[name]["status"] = DRAINING
        self.orch.events.add(name, "deleted: draining its tasks.")
        view = self._service_view(name, service, include_tags=False)
        self.save()
        self.orch.save()
        self._settle()
        return {"service": view}

    # --- tasks ---------------------------------------------------------------------------------

    async def run_task(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        self._placing_cluster(params)
        taskdef = self._taskdef(params["taskDefinition"], active_only=True)
        count = params.get("count", 1)
        if not 1 <= count <= 10:
            raise invalid_parameter("count must be between 1 and 10.")
        command, environment = self._container_overrides(taskdef, params.get("overrides") or {})
        fit, reason = self.orch.placement(Resources(taskdef.cpu, taskdef.memory), count)
        tasks = await self.orch.run_task(
            taskdef.key,
            fit,
            environment,
            command=command,
            started_by=params.get("startedBy"),
            group=params.get("group") or f"family:{taskdef.family}",
        )
        views = []
        for task in tasks:
            self._tag(self._task_arn(task), params.get("tags"))
            views.append(self._task_view(task))
        self.save()
        failures = [{"arn": self._instance_arn(), "reason": reason}] * (count - fit) if reason else []
        return {"tasks": views, "failures": failures}

    @staticmethod
    def _container_overrides(
        taskdef: TaskDefinition, overrides: dict[str, Any]
    ) -> tuple[list[str] | None, dict[str, str]]:
        unsupported = sorted(k for k in overrides if k != "containerOverrides" and overrides[k])
        if unsupported:
            raise invalid_parameter(f"pixfleet does not support overrides.{', overrides.'.join(unsupported)}.")
        command: list[str] | None = None
        environment: dict[str, str] = {}
        for i, override in enumerate(overrides.get("containerOverrides") or []):
            name = override.get("name")
            if name != taskdef.main_container.name:
                raise invalid_parameter(
                    f"overrides.containerOverrides[{i}].name: {name!r} is not a container of {taskdef.key}."
                )
            if "command" in override:
                command = list(override["command"])
            environment.update({e["name"]: e.get("value", "") for e in override.get("environment") or []})
        return command, environment

    async def stop_task(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params)
        task = self._task(params["task"], cluster) if cluster == self.home else None
        if task is None:
            raise invalid_parameter("The referenced task was not found.")
        if task.state != TaskState.STOPPED and task.desired_status != TaskState.STOPPED:
            task.stop_code = "UserInitiated"
            self.orch.supervisor.begin_stop(task, params.get("reason") or "Task stopped by user")
            self.orch.save()
        return {"task": self._task_view(task)}

    async def describe_tasks(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params)
        include_tags = "TAGS" in (params.get("include") or [])
        tasks, failures = [], []
        for ref in params["tasks"]:
            task = self._task(ref, cluster) if cluster == self.home else None
            if task is None:
                failures.append({"arn": ref, "reason": "MISSING"})
            else:
                tasks.append(self._task_view(task, include_tags))
        return {"tasks": tasks, "failures": failures}

    async def list_tasks(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params)
        if cluster != self.home:
            return {"taskArns": []}
        service = params.get("serviceName")
        if service is not None:
            service = self._service_name(service, cluster)
            if service not in self.services:
                raise service_not_found()
        family = params.get("family")
        wanted = params.get("desiredStatus", "RUNNING")
        started_by = params.get("startedBy")
        instance = params.get("containerInstance")
        if instance is not None and short_name(instance, "container-instance") != self.instance_id:
            raise invalid_parameter("The referenced container instance was not found.")
        tasks = sorted(self.orch.tasks.values(), key=lambda t: t.created_at)
        selected = [
            t
            for t in tasks
            if (service is None or t.service == service)
            and (family is None or t.taskdef.rpartition(":")[0] == family)
            and (started_by is None or t.started_by == started_by)
            and str(t.desired_status) == wanted
        ]
        arns, token = page([self._task_arn(t) for t in selected], params)
        return {"taskArns": arns, **({"nextToken": token} if token else {})}

    # --- tags ----------------------------------------------------------------------------------

    def _taggable(self, params: dict[str, Any]) -> str:
        arn = params["resourceArn"]
        if not self._resource_exists(arn):
            raise AwsApiError("ResourceNotFoundException", "The specified resource could not be found.")
        return arn

    async def tag_resource(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        self._tag(self._taggable(params), params["tags"])
        self.save()
        return {}

    async def untag_resource(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        tags = self.tags.get(self._taggable(params), {})
        for key in params["tagKeys"]:
            tags.pop(key, None)
        self.save()
        return {}

    async def list_tags_for_resource(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        return {"tags": tag_list(self.tags.get(self._taggable(params), {}))}

    # --- capacity ------------------------------------------------------------------------------

    async def list_container_instances(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params)
        status = params.get("status", "ACTIVE")
        arns = [self._instance_arn()] if cluster == self.home and status == "ACTIVE" else []
        chunk, token = page(arns, params)
        return {"containerInstanceArns": chunk, **({"nextToken": token} if token else {})}

    async def describe_container_instances(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        cluster = self._cluster(params)
        instances, failures = [], []
        for ref in params["containerInstances"]:
            if cluster == self.home and short_name(ref, "container-instance") == self.instance_id:
                instances.append(self._instance_view())
            else:
                failures.append({"arn": ref, "reason": "MISSING"})
        return {"containerInstances": instances, "failures": failures}

    def _instance_view(self) -> dict[str, Any]:
        capacity = self.orch.capacity or Resources(0, 0)
        remaining = capacity - self.orch.reserved()
        alive = [t for t in self.orch.tasks.values() if t.alive]

        def resources(r: Resources) -> list[dict[str, Any]]:
            return [
                {"name": "CPU", "type": "INTEGER", "integerValue": r.cpu},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": r.memory},
            ]

        return {
            "containerInstanceArn": self._instance_arn(),
            "ec2InstanceId": socket.gethostname(),
            "version": 1,
            "versionInfo": {"agentVersion": "pixfleet", "dockerVersion": self.orch.runtime.name},
            "registeredResources": resources(capacity),
            "remainingResources": resources(remaining),
            "status": "ACTIVE",
            "agentConnected": True,
            "runningTasksCount": sum(1 for t in alive if t.state == TaskState.RUNNING),
            "pendingTasksCount": sum(1 for t in alive if t.state == TaskState.PROVISIONING),
            "registeredAt": self.registered_at,
            "attributes": [
                {"name": "ecs.os-type", "value": "linux"},
                {"name": "ecs.cpu-count", "value": str(os.cpu_count() or 1)},
            ],
        }


def vars_of(config: DeploymentConfig) -> dict[str, Any]:
    return {
        "minimum_healthy_percent": config.minimum_healthy_percent,
        "maximum_percent": config.maximum_percent,
        "rollback": config.rollback,
        "failure_threshold": config.failure_threshold,
    }


def _snake(action: str) -> str:
    out = []
    for i, ch in enumerate(action):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def load_balancer_refs(entries: list[dict[str, Any]] | None) -> tuple[LoadBalancerRef, ...]:
    """CreateService's ``loadBalancers`` (target groups of an ALB: ``targetGroupArn``, container and port)."""
    refs = []
    for i, entry in enumerate(entries or []):
        if entry.get("loadBalancerName"):
            raise invalid_parameter("pixfleet's load balancer is an ALB: give targetGroupArn, not loadBalancerName.")
        missing = [k for k in ("targetGroupArn", "containerName", "containerPort") if entry.get(k) in (None, "")]
        if missing:
            raise invalid_parameter(f"loadBalancers[{i}] needs {', '.join(missing)}.")
        refs.append(LoadBalancerRef(entry["targetGroupArn"], entry["containerName"], int(entry["containerPort"])))
    if len(refs) > 5:
        raise invalid_parameter("A service can have at most 5 loadBalancers.")
    return tuple(refs)
