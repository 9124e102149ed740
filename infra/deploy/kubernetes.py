"""Render the one description as Kubernetes manifests, with KEDA scaling the worker.

:func:`render` is pure: :class:`~infra.deploy.description.Description` plus
where it runs (:class:`Target`: account, region, image registry and tag) in, a
list of manifest dicts out. The mapping from ECS, value by value:

=================================  ==========================================
ECS (infra/)                       Kubernetes
=================================  ==========================================
task definition ``cpu`` units      ``resources`` cpu, 1024 units = 1000m
task definition ``memory`` MiB     ``resources`` memory ``Mi`` (requests = limits)
container image, command, env      the Deployment's container (ports resolved)
``healthCheck``                    readiness and liveness ``exec`` probes
``stopTimeout``                    ``terminationGracePeriodSeconds`` minus preStop
``taskRoleArn``                    a ServiceAccount per role, IRSA-annotated
``desiredCount``                   ``replicas`` (not for a KEDA-scaled one)
``minimumHealthyPercent``/``max``  RollingUpdate ``maxUnavailable``/``maxSurge``
ALB + target group ``/healthz``    Service + Ingress (AWS Load Balancer Controller)
scalable target min/max            ScaledObject ``min``/``maxReplicaCount``
policy ``TargetValue``             ``aws-sqs-queue`` ``queueLength``
in-flight in the metric math       ``scaleOnInFlight``
``ScaleInCooldown``/``Out``        HPA ``behavior`` stabilization windows
``DisableScaleIn``                 ``scaleDown.selectPolicy: Disabled``
=================================  ==========================================

The preStop hook waits :data:`PRESTOP_SECONDS` before SIGTERM, so that
endpoints and the load balancer stop sending to a pod before it drains; the
grace period is that wait plus the task definition's ``stopTimeout``, which the
worker's own grace period (its ``PIXFLEET_WORKER_GRACE_PERIOD``) fits inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.deploy.description import Description, Scaling, Service
from infra.stack import role_arn

Manifest = dict[str, Any]

NAMESPACE = "pixfleet"
PRESTOP_SECONDS = 5
PRESTOP_COMMAND = ["python", "-c", f"import time; time.sleep({PRESTOP_SECONDS})"]  # the images have python
SERVICE_PORT = 80
KEDA_API = "keda.sh/v1alpha1"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


@dataclass(frozen=True)
class Target:
    """Where the manifests will run: the AWS account and region of the queue, buckets and roles."""

    account_id: str = "123456789012"
    region: str = "us-east-1"
    registry: str | None = None  # default: the account's ECR registry
    image_tag: str = "latest"
    namespace: str = NAMESPACE

    @property
    def image_registry(self) -> str:
        return self.registry or f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com"

    def queue_url(self, queue: str) -> str:
        return f"https://sqs.{self.region}.amazonaws.com/{self.account_id}/{queue}"


def cpu_quantity(units: int) -> str:
    """ECS CPU units as a Kubernetes quantity: 1024 units are one vCPU, 1000m."""
    return f"{units * 1000 // 1024}m"


def memory_quantity(mib: int) -> str:
    return f"{mib}Mi"


def grace_seconds(svc: Service) -> int:
    """``terminationGracePeriodSeconds``: the preStop wait, then the whole ECS stop timeout."""
    return PRESTOP_SECONDS + svc.stop_timeout


def _labels(svc: Service) -> dict[str, str]:
    return {"app.kubernetes.io/name": "pixfleet", "app.kubernetes.io/component": svc.name}


def _meta(name: str, target: Target, svc: Service | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": target.namespace}
    if svc is not None:
        meta["labels"] = _labels(svc)
    meta.update(extra)
    return meta


def _probe(svc: Service) -> dict[str, Any]:
    health = svc.health
    command = svc.health_command()
    if command[:1] == ["CMD"]:
        command = command[1:]
    return {
        "exec": {"command": command},
        "initialDelaySeconds": health.get("startPeriod", 0),
        "periodSeconds": health.get("interval", 30),
        "timeoutSeconds": health.get("timeout", 5),
        "failureThreshold": health.get("retries", 3),
    }


def _rolling_update(svc: Service) -> dict[str, Any]:
    deployment = svc.body.get("deploymentConfiguration", {})
    low = int(deployment.get("minimumHealthyPercent", 100))
    high = int(deployment.get("maximumPercent", 200))
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": f"{100 - low}%", "maxSurge": f"{high - 100}%"},
    }


def _deployment(svc: Service, target: Target, scaled: bool) -> Manifest:
    c = svc.container
    name = f"pixfleet-{svc.name}"
    container: dict[str, Any] = {
        "name": c["name"],
        "image": f"{target.image_registry}/{svc.repository}:{target.image_tag}",
        "command": list(c["command"]),
        "env": [{"name": k, "value": v} for k, v in svc.environment().items()],
        "envFrom": [{"configMapRef": {"name": "pixfleet-stack"}}],
        "ports": [
            {"containerPort": int(p["containerPort"]), "protocol": p.get("protocol", "tcp").upper()}
            for p in c.get("portMappings", [])
        ],
        "resources": {
            "requests": {"cpu": cpu_quantity(svc.cpu_units), "memory": memory_quantity(svc.memory_mib)},
            "limits": {"cpu": cpu_quantity(svc.cpu_units), "memory": memory_quantity(svc.memory_mib)},
        },
        "readinessProbe": _probe(svc),
        "livenessProbe": _probe(svc),
        # exec rather than the newer ``sleep`` action: clusters before 1.30 refuse that one.
        "lifecycle": {"preStop": {"exec": {"command": PRESTOP_COMMAND}}},
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": _labels(svc)},
        "strategy": _rolling_update(svc),
        "template": {
            "metadata": {"labels": _labels(svc)},
            "spec": {
                "serviceAccountName": svc.role_name,
                "terminationGracePeriodSeconds": grace_seconds(svc),
                "containers": [container],
            },
        },
    }
    if not scaled:  # KEDA's HPA owns the worker's replica count; applying one would fight it
        spec["replicas"] = int(svc.body.get("desiredCount", 1))
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, target, svc), "spec": spec}


def _service_account(role: str, target: Target) -> Manifest:
    arn = role_arn("aws", target.account_id, role)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(role, target, annotations={IRSA_ANNOTATION: arn}),
    }


def _api_network(api: Service, target: Target) -> list[Manifest]:
    name = f"pixfleet-{api.name}"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, target, api),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(api),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": api.port, "protocol": "TCP"}],
        },
    }
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(
            name,
            target,
            api,
            annotations={
                "alb.ingress.kubernetes.io/scheme": "internet-facing",
                "alb.ingress.kubernetes.io/target-type": "ip",
                "alb.ingress.kubernetes.io/healthcheck-path": "/healthz",
                "alb.ingress.kubernetes.io/target-group-attributes": (
                    f"deregistration_delay.timeout_seconds={api.stop_timeout}"
                ),
            },
        ),
        "spec": {
            "ingressClassName": "alb",
            "rules": [
                {
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": name, "port": {"number": SERVICE_PORT}}},
                            }
                        ]
                    }
                }
            ],
        },
    }
    return [service, ingress]


def _pdb(svc: Service, target: Target) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(f"pixfleet-{svc.name}", target, svc),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(svc)}},
    }


def _keda(svc: Service, scaling: Scaling, target: Target, queue: str) -> list[Manifest]:
    name = f"pixfleet-{svc.name}"
    auth = {
        "apiVersion": KEDA_API,
        "kind": "TriggerAuthentication",
        "metadata": _meta(f"{name}-sqs", target, svc),
        # The scaler reads the queue as the worker itself (its ServiceAccount's role may GetQueueAttributes).
        "spec": {"podIdentity": {"provider": "aws", "identityOwner": "workload"}},
    }
    tracking = scaling.tracking
    scale_down: dict[str, Any] = {"stabilizationWindowSeconds": scaling.scale_in_cooldown}
    if tracking.get("DisableScaleIn"):
        scale_down["selectPolicy"] = "Disabled"
    scaled = {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": _meta(name, target, svc),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "pollingInterval": 15,
            "minReplicaCount": int(scaling.target["MinCapacity"]),
            "maxReplicaCount": int(scaling.target["MaxCapacity"]),
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": scale_down,
                        "scaleUp": {"stabilizationWindowSeconds": scaling.scale_out_cooldown},
                    }
                }
            },
            "triggers": [
                {
                    "type": "aws-sqs-queue",
                    "authenticationRef": {"name": f"{name}-sqs"},
                    "metadata": {
                        "queueURL": target.queue_url(queue),
                        "queueLength": f"{scaling.target_value:g}",
                        "activationQueueLength": "0",
                        "scaleOnInFlight": "true" if scaling.counts_in_flight else "false",
                        "awsRegion": target.region,
                    },
                }
            ],
        },
    }
    return [auth, scaled]


def render(desc: Description, target: Target = Target()) -> list[Manifest]:
    """Every manifest of the stack, in the order ``kubectl apply`` should create them."""
    spec = desc.spec
    out: list[Manifest] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": target.namespace}}]
    out.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("pixfleet-stack", target),
            "data": {
                "AWS_REGION": target.region,
                "PIXFLEET_INPUT_BUCKET": spec.input_bucket,
                "PIXFLEET_OUTPUT_BUCKET": spec.output_bucket,
                "PIXFLEET_QUEUE_URL": target.queue_url(spec.queue),
                "PIXFLEET_DLQ_URL": target.queue_url(spec.dlq),
            },
        }
    )
    for role in dict.fromkeys(svc.role_name for svc in desc.services.values()):
        out.append(_service_account(role, target))
    for svc in desc.services.values():
        scaling = desc.scaling_for(svc.name)
        out.append(_deployment(svc, target, scaled=scaling is not None))
        if svc.name == "api":
            out.extend(_api_network(svc, target))
        if svc.name in ("api", "worker"):
            out.append(_pdb(svc, target))
        if scaling is not None:
            out.extend(_keda(svc, scaling, target, spec.queue))
    return out


def file_name(manifest: Manifest) -> str:
    """``NN-kind-name.yaml``-style name of a manifest, without the number."""
    return f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
