"""Application Auto Scaling for ECS services: ``AnyScaleFrontendService.<Action>`` on the control plane.

Scalable targets (``RegisterScalableTarget``: ``ecs:service:DesiredCount`` of ``service/CLUSTER/SERVICE``, min
and max) and target-tracking policies (``PutScalingPolicy``) are kept in ``autoscaling.json`` in the
orchestrator's state directory, and turned into the service's :class:`~services.orchestrator.scaling.ScalingPolicy`
by :mod:`services.orchestrator.scaling_config` at every change (and again after a restart). The scaler itself
is unchanged: its pure ``decide()`` runs in the control loop twice a second; only its configuration arrives
here, in AWS's shapes.

What is guaranteed:

* what the scaler cannot evaluate is refused with AWS's ``ValidationException`` and a message saying what it
  can (metric math of the stack's own queue ÷ the service's ``RunningTaskCount``, ``TargetTrackingScaling``
  only, one policy per target) — never accepted and then ignored;
* a target without a policy keeps the count within min..max and otherwise holds it; a deregistered target
  turns the scaler off and the service keeps its desired count;
* every scale-out or scale-in the scaler decides is a scaling activity (``DescribeScalingActivities``, newest
  first), ``InProgress`` until the service runs that many tasks, then ``Successful``; a decision clamped by
  MaxCapacity says so in its ``StatusMessage``, and a backlog beyond MaxCapacity while the count is already
  there is a not-scaled activity (``IncludeNotScaledActivities``, ``AlreadyAtMaxCapacity``). The newest
  :data:`~.scaling_activities.KEEP_ACTIVITIES` survive restarts (``scaling-activities.jsonl``).

Not guaranteed: alarms are synthetic (their names are answered, no CloudWatch alarm exists); scheduled and
step scaling, and predictive policies, are not implemented.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.orchestrator.awsapi.errors import AwsApiError, validation_exception
from services.orchestrator.awsapi.protocol import AwsService, Call, page
from services.orchestrator.awsapi.scaling_activities import ActivityLog, clamp_message, write_atomically
from services.orchestrator.model import Service, TaskState
from services.orchestrator.orchestrator import Orchestrator
from services.orchestrator.scaling import Decision, ScalingPolicy
from services.orchestrator.scaling_config import DIMENSION, ScalingConfigError, resource_id, scaling_policy

NAMESPACE = "ecs"
_SUSPENDED = ("DynamicScalingInSuspended", "DynamicScalingOutSuspended", "ScheduledScalingSuspended")


def object_not_found(message: str) -> AwsApiError:
    return AwsApiError("ObjectNotFoundException", message)


def _epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def suspended(policy: ScalingPolicy, state: Mapping[str, bool]) -> ScalingPolicy:
    """The policy with a target's ``SuspendedState`` applied: the scaler's ``disable_scale_in`` (as with the
    policy's ``DisableScaleIn``) and ``disable_scale_out``. Scheduled scaling does not exist here."""
    if state.get("DynamicScalingInSuspended"):
        policy = replace(policy, disable_scale_in=True)
    if state.get("DynamicScalingOutSuspended"):
        policy = replace(policy, disable_scale_out=True)
    return policy


# --- the API --------------------------------------------------------------------------------------


class ApplicationAutoScaling:
    """Scalable targets, policies and activities of one orchestrator's services; :meth:`service` is the
    table the AWS JSON endpoint serves."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        queue_names: Iterable[str],
        region: str,
        account: str,
        state_dir: Path,
    ):
        self.orch = orchestrator
        self.queue_names = set(queue_names)
        self.region = region
        self.account = account
        self.path = state_dir / "autoscaling.json"
        self.targets: dict[str, dict[str, Any]] = {}  # ResourceId → the target, as DescribeScalableTargets says
        self.policies: dict[str, dict[str, Any]] = {}  # ResourceId → its (one) policy
        self.deregistered: set[str] = set()  # targets removed by the API: their services keep the scaler off
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            self.targets = saved.get("targets", {})
            self.policies = saved.get("policies", {})
            self.deregistered = set(saved.get("deregistered", []))
        self.activities = ActivityLog(state_dir / "scaling-activities.jsonl")
        orchestrator.scaling_listeners.append(self._observed)

    def service(self) -> AwsService:
        return AwsService(
            "application-autoscaling",
            {
                "RegisterScalableTarget": self.register_scalable_target,
                "DescribeScalableTargets": self.describe_scalable_targets,
                "DeregisterScalableTarget": self.deregister_scalable_target,
                "PutScalingPolicy": self.put_scaling_policy,
                "DescribeScalingPolicies": self.describe_scaling_policies,
                "DeleteScalingPolicy": self.delete_scaling_policy,
                "DescribeScalingActivities": self.describe_scaling_activities,
            },
            invalid_input="ValidationException",
        )

    def apply_saved(self) -> None:
        """After the orchestrator restored its state: the saved targets and policies drive the scaler again."""
        for rid in [*self.targets, *self.deregistered]:
            name = rid.split("/")[-1]
            if name in self.orch.services:
                self._apply(rid, "scaling restored from autoscaling.json")

    # --- bookkeeping ----------------------------------------------------------------------------

    def _save(self) -> None:
        doc = {"targets": self.targets, "policies": self.policies, "deregistered": sorted(self.deregistered)}
        write_atomically(self.path, json.dumps(doc, indent=1))

    def _service_of(self, params: Mapping[str, Any], *, must_exist: bool = True) -> tuple[str, Service | None]:
        """The ResourceId and its service, after checking namespace and dimension as AWS does."""
        if params["ServiceNamespace"] != NAMESPACE:
            raise validation_exception(
                f"pixfleet's control plane scales ECS services only: ServiceNamespace must be {NAMESPACE!r}"
            )
        if params.get("ScalableDimension", DIMENSION) != DIMENSION:
            raise validation_exception(
                f"Unsupported scalable dimension {params['ScalableDimension']!r} for service namespace ecs: "
                f"pixfleet scales {DIMENSION}"
            )
        rid = params["ResourceId"]
        parts = rid.split("/")
        if len(parts) != 3 or parts[0] != "service" or not all(parts):
            raise validation_exception(f"Unsupported resource ID {rid!r}: expected service/CLUSTER/SERVICE")
        service = self.orch.services.get(parts[2]) if parts[1] == self.orch.cluster else None
        if service is None and must_exist:
            raise validation_exception(f"ECS service doesn't exist: {rid}")
        return rid, service

    def _not_registered(self, rid: str) -> AwsApiError:
        return object_not_found(
            f"No scalable target registered for service namespace: {NAMESPACE}, resource ID: {rid}, "
            f"scalable dimension: {DIMENSION}"
        )

    def _policy_for(self, rid: str, target: Mapping[str, Any], body: Mapping[str, Any] | None) -> ScalingPolicy:
        """The scaler's policy for a target and its policy body, with the target's suspended state applied."""
        cluster, name = rid.split("/")[1:]
        try:
            policy = scaling_policy(target, body, queue_names=self.queue_names, cluster=cluster, service=name)
        except ScalingConfigError as exc:
            raise validation_exception(str(exc)) from None
        return suspended(policy, target.get("SuspendedState") or {})

    def _apply(self, rid: str, why: str) -> None:
        name = rid.split("/")[-1]
        target = self.targets.get(rid)
        if target is None:
            self.orch.set_scaling(name, None, why)
            return
        self.orch.set_scaling(name, self._policy_for(rid, target, self.policies.get(rid)), why)

    def _alarms(self, rid: str, policy_id: str, disable_scale_in: bool) -> list[dict[str, str]]:
        kinds = ["AlarmHigh"] if disable_scale_in else ["AlarmHigh", "AlarmLow"]
        names = [f"TargetTracking-{rid}-{kind}-{policy_id}" for kind in kinds]
        return [
            {"AlarmName": n, "AlarmARN": f"arn:aws:cloudwatch:{self.region}:{self.account}:alarm:{n}"} for n in names
        ]

    # --- activities -----------------------------------------------------------------------------

    def _finish(self, activity: dict[str, Any], note: str = "Change successfully fulfilled by ecs.") -> None:
        done = f"Successfully set desired count to {activity['Desired']}. {note}"
        clamped = activity.get("StatusMessage")
        message = f"{done} {clamped}" if clamped else done
        self.activities.put({**activity, "StatusCode": "Successful", "EndTime": time.time(), "StatusMessage": message})

    def _activity(self, rid: str, desired: int, cause: str, message: str | None = None) -> dict[str, Any]:
        for earlier in self.activities.in_progress(rid):
            self._finish(earlier, "A later activity changed it before the service ran that many tasks.")
        activity: dict[str, Any] = {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": NAMESPACE,
            "ResourceId": rid,
            "ScalableDimension": DIMENSION,
            "Description": f"Setting desired count to {desired}.",
            "Cause": cause,
            "StartTime": time.time(),
            "StatusCode": "InProgress",
            "Desired": desired,
        }
        if message:
            activity["StatusMessage"] = message
        return self.activities.put(activity)

    def _observed(self, service: Service, previous: int, decision: Decision) -> None:
        """The scaler's tick of a service: a scale-out or scale-in is an activity; finished ones are settled."""
        rid = resource_id(self.orch.cluster, service.name)
        if decision.action != "hold" and decision.desired != previous and service.scaling is not None:
            policy = self.policies.get(rid)
            alarm = "AlarmHigh" if decision.action == "scale_out" else "AlarmLow"
            trigger = (
                f"monitor alarm TargetTracking-{rid}-{alarm} in state ALARM triggered policy {policy['PolicyName']}"
                if policy
                else "the scaler"
            )
            self._activity(
                rid, decision.desired, f"{trigger}: {decision.reason}", clamp_message(service.scaling, decision)
            )
        elif decision.action == "hold" and service.scaling is not None:
            self._not_scaled(rid, service.scaling, previous, decision)
        self._settle(rid, service)

    def _not_scaled(self, rid: str, policy: ScalingPolicy, current: int, decision: Decision) -> None:
        """The scaler at MaxCapacity while the backlog asks for more: one not-scaled activity per episode
        (``IncludeNotScaledActivities``), so the ceiling shows even when nothing changes."""
        if decision.backlog is None or current != policy.max:
            return
        wanted = math.ceil(decision.backlog / policy.target(None))
        newest = next(iter(self.activities.newest_first(rid)), None)
        if wanted <= policy.max or (newest is not None and newest.get("NotScaled")):
            return
        self.activities.put(
            {
                "ActivityId": str(uuid.uuid4()),
                "ServiceNamespace": NAMESPACE,
                "ResourceId": rid,
                "ScalableDimension": DIMENSION,
                "Description": f"Attempting to set desired count to {wanted}.",
                "Cause": f"the scaler: {decision.reason}",
                "StartTime": time.time(),
                "EndTime": time.time(),
                "StatusCode": "Failed",
                "StatusMessage": f"Failed to set desired count to {wanted}: "
                f"already at the maximum capacity of {policy.max} tasks.",
                "NotScaledReasons": [
                    {"Code": "AlreadyAtMaxCapacity", "MaxCapacity": policy.max, "CurrentCapacity": current}
                ],
                "NotScaled": True,
                "Desired": current,
            }
        )

    def _settle(self, rid: str, service: Service | None) -> None:
        if service is None:
            return
        running = sum(1 for t in self.orch.alive_tasks(service) if t.state == TaskState.RUNNING)
        for activity in self.activities.in_progress(rid):
            if running == activity["Desired"] == service.desired_count:
                self._finish(activity)

    # --- actions --------------------------------------------------------------------------------

    async def register_scalable_target(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        rid, service = self._service_of(params)
        assert service is not None
        existing = self.targets.get(rid)
        if existing is None and ("MinCapacity" not in params or "MaxCapacity" not in params):
            raise validation_exception("MinCapacity and MaxCapacity are required to register a new scalable target")
        target: dict[str, Any] = (
            dict(existing)
            if existing
            else {
                "ServiceNamespace": NAMESPACE,
                "ResourceId": rid,
                "ScalableDimension": DIMENSION,
                "RoleARN": params.get("RoleARN")
                or f"arn:aws:iam::{self.account}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_ECSService",
                "CreationTime": time.time(),
                "ScalableTargetARN": f"arn:aws:application-autoscaling:{self.region}:{self.account}:scalable-target/"
                f"0ec{uuid.uuid4().hex[:29]}",
                "SuspendedState": {key: False for key in _SUSPENDED},
            }
        )
        for key in ("MinCapacity", "MaxCapacity"):
            if key in params:
                target[key] = params[key]
        if "SuspendedState" in params:
            target["SuspendedState"] = {**target["SuspendedState"], **params["SuspendedState"]}
        if target["MinCapacity"] > target["MaxCapacity"]:
            raise validation_exception(
                f"Minimum capacity ({target['MinCapacity']}) cannot be greater than maximum capacity "
                f"({target['MaxCapacity']})"
            )
        policy = self._policy_for(rid, target, self.policies.get(rid))  # refuses before anything changes
        self.targets[rid] = target
        self.deregistered.discard(rid)
        self._save()
        before = service.desired_count
        self.orch.set_scaling(service.name, policy, "scalable target registered (RegisterScalableTarget)")
        if service.desired_count != before:
            edge = "minimum" if service.desired_count > before else "maximum"
            self._activity(rid, service.desired_count, f"{edge} capacity was set to {service.desired_count}")
        return {"ScalableTargetARN": target["ScalableTargetARN"]}

    def _target_view(self, target: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **{k: v for k, v in target.items() if k != "CreationTime"},
            "CreationTime": _epoch(target["CreationTime"]),
        }

    async def describe_scalable_targets(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        if params["ServiceNamespace"] != NAMESPACE:
            return {"ScalableTargets": []}
        wanted = set(params.get("ResourceIds") or [])
        dimension = params.get("ScalableDimension")
        targets = [
            self._target_view(t)
            for rid, t in sorted(self.targets.items())
            if (not wanted or rid in wanted) and dimension in (None, DIMENSION)
        ]
        chunk, token = _page(targets, params)
        return {"ScalableTargets": chunk, **({"NextToken": token} if token else {})}

    async def deregister_scalable_target(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        rid, service = self._service_of(params, must_exist=False)
        if rid not in self.targets:
            raise object_not_found(
                f"No scalable target found for service namespace: {NAMESPACE}, resource ID: {rid}, "
                f"scalable dimension: {DIMENSION}"
            )
        del self.targets[rid]
        self.policies.pop(rid, None)  # as on AWS, its policies go with it
        self.deregistered.add(rid)
        self._save()
        if service is not None:
            self._apply(rid, "scalable target deregistered (DeregisterScalableTarget)")
        return {}

    async def put_scaling_policy(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        rid, service = self._service_of(params)
        assert service is not None
        target = self.targets.get(rid)
        if target is None:
            raise self._not_registered(rid)
        name = params["PolicyName"]
        existing = self.policies.get(rid)
        if existing is not None and existing["PolicyName"] != name:
            raise validation_exception(
                f"pixfleet evaluates one scaling policy per scalable target: {rid} has policy "
                f"{existing['PolicyName']!r}; put the new configuration under that name, or delete it first"
            )
        for other in ("StepScalingPolicyConfiguration", "PredictiveScalingPolicyConfiguration"):
            if other in params:
                raise validation_exception(f"pixfleet evaluates TargetTrackingScaling policies only, not {other}")
        body: dict[str, Any] = {
            k: params[k]
            for k in ("PolicyName", "PolicyType", "TargetTrackingScalingPolicyConfiguration")
            if k in params
        }
        policy = self._policy_for(rid, target, body)
        policy_id = existing["PolicyId"] if existing else str(uuid.uuid4())
        config = params["TargetTrackingScalingPolicyConfiguration"]
        stored = {
            "PolicyARN": f"arn:aws:autoscaling:{self.region}:{self.account}:scalingPolicy:{policy_id}:"
            f"resource/{NAMESPACE}/{rid}:policyName/{name}",
            "PolicyName": name,
            "PolicyId": policy_id,
            "ServiceNamespace": NAMESPACE,
            "ResourceId": rid,
            "ScalableDimension": DIMENSION,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": config,
            "Alarms": self._alarms(rid, policy_id, bool(config.get("DisableScaleIn"))),
            "CreationTime": existing["CreationTime"] if existing else time.time(),
        }
        self.policies[rid] = stored
        self._save()
        self.orch.set_scaling(service.name, policy, f"scaling policy {name} put (PutScalingPolicy)")
        return {"PolicyARN": stored["PolicyARN"], "Alarms": stored["Alarms"]}

    async def describe_scaling_policies(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        if params["ServiceNamespace"] != NAMESPACE:
            return {"ScalingPolicies": []}
        names = set(params.get("PolicyNames") or [])
        rid, dimension = params.get("ResourceId"), params.get("ScalableDimension")
        policies = [
            {
                **{k: v for k, v in p.items() if k not in ("CreationTime", "PolicyId")},
                "CreationTime": _epoch(p["CreationTime"]),
            }
            for key, p in sorted(self.policies.items())
            if (not names or p["PolicyName"] in names) and rid in (None, key) and dimension in (None, DIMENSION)
        ]
        chunk, token = _page(policies, params, default=10)
        return {"ScalingPolicies": chunk, **({"NextToken": token} if token else {})}

    async def delete_scaling_policy(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        rid, service = self._service_of(params, must_exist=False)
        existing = self.policies.get(rid)
        if existing is None or existing["PolicyName"] != params["PolicyName"]:
            raise object_not_found(
                f"No scaling policy found for service namespace: {NAMESPACE}, resource ID: {rid}, "
                f"scalable dimension: {DIMENSION}, policy name: {params['PolicyName']}"
            )
        del self.policies[rid]
        self._save()
        if service is not None:
            self._apply(rid, f"scaling policy {params['PolicyName']} deleted (DeleteScalingPolicy)")
        return {}

    async def describe_scaling_activities(self, call: Call, params: dict[str, Any]) -> dict[str, Any]:
        if params["ServiceNamespace"] != NAMESPACE or params.get("ScalableDimension", DIMENSION) != DIMENSION:
            return {"ScalingActivities": []}
        rid = params.get("ResourceId")
        include_not_scaled = bool(params.get("IncludeNotScaledActivities"))
        for key in [rid] if rid else list(self.targets):
            self._settle(key, self.orch.services.get(key.split("/")[-1]))
        activities = [
            {
                **{k: v for k, v in a.items() if k not in ("StartTime", "EndTime", "Desired", "NotScaled")},
                "StartTime": _epoch(a["StartTime"]),
                **({"EndTime": _epoch(a["EndTime"])} if a.get("EndTime") else {}),
            }
            for a in self.activities.newest_first(rid)
            if include_not_scaled or not a.get("NotScaled")
        ]
        chunk, token = _page(activities, params, default=50)
        return {"ScalingActivities": chunk, **({"NextToken": token} if token else {})}


def _page(items: list[Any], params: Mapping[str, Any], default: int = 50) -> tuple[list[Any], str | None]:
    """AWS's paging with Application Auto Scaling's limit (50) and error type."""
    try:
        return page(items, params, default=default, limit=50)
    except AwsApiError as exc:
        raise validation_exception(exc.message) from None
