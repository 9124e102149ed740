"""Create, update, inspect and delete the pixfleet stack on AWS (or an emulator) with boto3.

:class:`StackDeployer` drives CloudFormation with change sets and then checks
that what the endpoint reports is what the template declared. Real AWS applies
every property; an emulator's CloudFormation may not. moto 5.2 skips the
Application Auto Scaling resources and ``AWS::SQS::QueuePolicy``, drops the
buckets' ``NotificationConfiguration`` and the task definitions'
``taskRoleArn``, ``executionRoleArn``, ``cpu``, ``networkMode``,
``requiresCompatibilities``, and returns no stack outputs after a change set.
Each gap is *detected* by reading the resources back, never assumed from the
endpoint's name, and closed with the API calls a user would make
(``RegisterScalableTarget``, ``PutScalingPolicy``, ``SetQueueAttributes``,
``PutBucketNotificationConfiguration``, ``RegisterTaskDefinition`` +
``UpdateService``); every such step is reported ("filled in by API"), so a
deploy against AWS that needed one would say so.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.deploy.cloudformation import logical
from infra.deploy.description import Description

Report = Callable[[str], None]

DONE = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE")
FAILED = (
    "CREATE_FAILED",
    "ROLLBACK_COMPLETE",
    "ROLLBACK_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
    "DELETE_FAILED",
    "UPDATE_FAILED",
)
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")

# Task definition fields CloudFormation declares at the top level, as the ECS API names them.
TASKDEF_FIELDS = {
    "TaskRoleArn": "taskRoleArn",
    "ExecutionRoleArn": "executionRoleArn",
    "Cpu": "cpu",
    "Memory": "memory",
    "NetworkMode": "networkMode",
    "RequiresCompatibilities": "requiresCompatibilities",
    "RuntimePlatform": "runtimePlatform",
}
# What describe-task-definition adds that register-task-definition does not take.
DESCRIBED_ONLY = (
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
)


class DeployError(RuntimeError):
    """The stack could not be created, updated or deleted; the message says why."""


@dataclass
class Outcome:
    """What a deploy did: the stack status, its outputs and every gap closed by API."""

    status: str
    outputs: dict[str, str]
    repairs: list[str] = field(default_factory=list)
    changed: bool = True


class StackDeployer:
    """One stack on one endpoint; ``client(service)`` returns a boto3 client for it."""

    def __init__(self, stack_name: str, client: Callable[[str], Any], report: Report | None = None):
        self.stack_name = stack_name
        self.client = client
        self.cfn = client("cloudformation")
        self.report: Report = report or (lambda _message: None)

    # --- the stack ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any] | None:
        try:
            stacks = self.cfn.describe_stacks(StackName=self.stack_name)["Stacks"]
        except self.cfn.exceptions.ClientError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        return stacks[0] if stacks else None

    def exists(self) -> bool:
        stack = self.describe()
        return stack is not None and stack["StackStatus"] not in ("REVIEW_IN_PROGRESS", "DELETE_COMPLETE")

    def apply(
        self, template: dict[str, Any], parameters: dict[str, str], on_event: Callable[[dict[str, Any]], None]
    ) -> bool:
        """Create or update the stack through a change set; ``False`` when there was nothing to change."""
        kind = "UPDATE" if self.exists() else "CREATE"
        name = f"pixfleet-{uuid.uuid4().hex[:12]}"
        self.cfn.create_change_set(
            StackName=self.stack_name,
            ChangeSetName=name,
            ChangeSetType=kind,
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        change_set = self._wait_change_set(name)
        if change_set["Status"] == "FAILED":
            reason = change_set.get("StatusReason", "")
            if any(text in reason for text in NO_CHANGES):
                self.cfn.delete_change_set(StackName=self.stack_name, ChangeSetName=name)
                return False
            raise DeployError(f"change set {name} failed: {reason}")
        self.report(f"{kind.lower()}: {len(change_set.get('Changes', []))} resource change(s)")
        self.cfn.execute_change_set(StackName=self.stack_name, ChangeSetName=name)
        self.wait(on_event, DONE)
        return True

    def _wait_change_set(self, name: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            change_set = self.cfn.describe_change_set(StackName=self.stack_name, ChangeSetName=name)
            if change_set["Status"] in ("CREATE_COMPLETE", "FAILED"):
                return dict(change_set)
            if time.monotonic() > deadline:
                raise DeployError(f"change set {name} still {change_set['Status']} after {timeout:.0f} s")
            time.sleep(2)

    def wait(self, on_event: Callable[[dict[str, Any]], None], done: tuple[str, ...], timeout: float = 3600) -> str:
        """Follow the stack's events until it reaches one of ``done`` (or fails); return the status."""
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        while True:
            stack = self.describe()
            status = stack["StackStatus"] if stack else "DELETE_COMPLETE"
            if stack is not None:
                events = self.cfn.describe_stack_events(StackName=self.stack_name)["StackEvents"]
                for event in reversed(events):
                    key = event.get("EventId") or json.dumps(event, default=str, sort_keys=True)
                    if key not in seen:
                        seen.add(key)
                        on_event(event)
            if status in done:
                return status
            if status in FAILED or status.endswith("_FAILED"):
                reason = (stack or {}).get("StackStatusReason", "")
                raise DeployError(f"stack {self.stack_name} is {status}" + (f": {reason}" if reason else ""))
            if time.monotonic() > deadline:
                raise DeployError(f"stack {self.stack_name} still {status} after {timeout:.0f} s")
            time.sleep(3)

    def resources(self) -> dict[str, dict[str, Any]]:
        """Logical id → the stack's resource (those the endpoint actually created)."""
        listed = self.cfn.describe_stack_resources(StackName=self.stack_name)["StackResources"]
        return {r["LogicalResourceId"]: r for r in listed if r.get("LogicalResourceId") and r.get("PhysicalResourceId")}

    def outputs(self, template: dict[str, Any]) -> dict[str, str]:
        """The stack's outputs; those the endpoint did not return are read from the resources."""
        stack = self.describe() or {}
        found = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        missing = [key for key in template["Outputs"] if key not in found]
        if missing:
            found.update(self._derived_outputs(missing))
        return found

    def _derived_outputs(self, keys: list[str]) -> dict[str, str]:
        res = self.resources()
        physical = {k: r["PhysicalResourceId"] for k, r in res.items()}
        out: dict[str, str] = {}
        for key in keys:
            if key == "LoadBalancerUrl" and "LoadBalancer" in physical:
                lbs = self.client("elbv2").describe_load_balancers(LoadBalancerArns=[physical["LoadBalancer"]])
                out[key] = f"http://{lbs['LoadBalancers'][0]['DNSName']}"
            elif key == "QueueUrl" and "JobsQueue" in physical:
                out[key] = physical["JobsQueue"]
            elif key == "DeadLetterQueueUrl" and "DeadLetterQueue" in physical:
                out[key] = physical["DeadLetterQueue"]
            elif key.endswith("RepositoryUri") and key.removesuffix("Uri") in physical:
                repo = physical[key.removesuffix("Uri")]
                uri = self.client("ecr").describe_repositories(repositoryNames=[repo])["repositories"][0]
                out[key] = uri["repositoryUri"]
            elif key.endswith("ServiceName") and key.removesuffix("Name") in physical:
                out[key] = physical[key.removesuffix("Name")].rsplit("/", 1)[-1]
            elif key in physical:
                out[key] = physical[key]
            elif key in ("InputBucket", "OutputBucket", "ClusterName"):
                source = {"ClusterName": "Cluster"}.get(key, key)
                if source in physical:
                    out[key] = physical[source].rsplit("/", 1)[-1]
        return out

    # --- what the endpoint's CloudFormation may have left out ---------------------------------

    def repair_task_definitions(self, template: dict[str, Any], parameters: dict[str, str], cluster: str) -> list[str]:
        """Re-register task definitions whose top-level fields the endpoint dropped, and roll the services."""
        res = self.resources()
        ecs = self.client("ecs")
        repairs: list[str] = []
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] != "AWS::ECS::Service" or logical_id not in res:
                continue
            service_name = resource["Properties"]["ServiceName"]
            described = ecs.describe_services(cluster=cluster, services=[service_name])["services"]
            if not described:
                continue
            current = ecs.describe_task_definition(taskDefinition=described[0]["taskDefinition"])["taskDefinition"]
            declared = template["Resources"][resource["Properties"]["TaskDefinition"]["Ref"]]["Properties"]
            wanted = {
                api: self._resolve(declared[cfn], parameters, res)
                for cfn, api in TASKDEF_FIELDS.items()
                if cfn in declared
            }
            wanted = {k: _camel(v) for k, v in wanted.items()}
            missing = {k: v for k, v in wanted.items() if current.get(k) != v}
            if not missing:
                continue
            body = {k: v for k, v in current.items() if k not in DESCRIBED_ONLY and v not in (None, [], {})}
            body.update(missing)
            arn = ecs.register_task_definition(**body)["taskDefinition"]["taskDefinitionArn"]
            ecs.update_service(cluster=cluster, service=service_name, taskDefinition=arn)
            repairs.append(f"{service_name}: the endpoint dropped {', '.join(sorted(missing))}; registered {arn}")
        return repairs

    def repair_queue_policies(self, template: dict[str, Any], parameters: dict[str, str]) -> list[str]:
        """Set the queue policies (the S3 notification's permission) the endpoint did not attach."""
        res = self.resources()
        stack = self.describe() or {}
        _, _, _, region, account, _ = str(stack.get("StackId", "arn:aws:cloudformation:::")).split(":", 5)
        pseudo = {
            "AWS::AccountId": account,
            "AWS::Region": region,
            "AWS::Partition": str(stack.get("StackId", "arn:aws")).split(":")[1],
            "AWS::StackName": self.stack_name,
            **parameters,
        }
        sqs = self.client("sqs")
        repairs: list[str] = []
        for resource in template["Resources"].values():
            if resource["Type"] != "AWS::SQS::QueuePolicy":
                continue
            document = _substitute(resource["Properties"]["PolicyDocument"], pseudo)
            for queue in resource["Properties"]["Queues"]:
                url = res.get(queue["Ref"], {}).get("PhysicalResourceId")
                if url is None:
                    continue
                attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"]).get("Attributes", {})
                if "Policy" not in attributes:
                    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(document)})
                    repairs.append(f"{url.rsplit('/', 1)[-1]}: no queue policy after the stack; set it by API")
        return repairs

    def repair_bucket_notifications(self, template: dict[str, Any]) -> list[str]:
        """Attach the buckets' queue notifications (``incoming/`` → jobs) the endpoint did not."""
        res = self.resources()
        s3, sqs = self.client("s3"), self.client("sqs")
        repairs: list[str] = []
        for logical_id, resource in template["Resources"].items():
            declared = (
                resource["Properties"].get("NotificationConfiguration")
                if resource["Type"] == "AWS::S3::Bucket"
                else None
            )
            if not declared or logical_id not in res:
                continue
            bucket = res[logical_id]["PhysicalResourceId"]
            current = s3.get_bucket_notification_configuration(Bucket=bucket)
            if current.get("QueueConfigurations"):
                continue
            configs = []
            for c in declared.get("QueueConfigurations", []):
                url = res[c["Queue"]["Fn::GetAtt"][0]]["PhysicalResourceId"]
                arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                configs.append(
                    {
                        "QueueArn": arn,
                        "Events": [c["Event"]],
                        "Filter": {"Key": {"FilterRules": c["Filter"]["S3Key"]["Rules"]}},
                    }
                )
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs}
            )
            repairs.append(f"{bucket}: no event notification after the stack; put it by API")
        return repairs

    def _resolve(self, value: Any, parameters: dict[str, str], res: dict[str, dict[str, Any]]) -> Any:
        """The few intrinsic functions task definitions use: Ref to a parameter, GetAtt Role.Arn."""
        if isinstance(value, dict) and "Ref" in value:
            return parameters[value["Ref"]]
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            role = res[value["Fn::GetAtt"][0]]["PhysicalResourceId"]
            return self.client("iam").get_role(RoleName=role.rsplit("/", 1)[-1])["Role"]["Arn"]
        return value

    def ensure_scaling(self, desc: Description, parameters: dict[str, str]) -> list[str]:
        """Register the scalable targets and policies the endpoint's CloudFormation did not create."""
        aas = self.client("application-autoscaling")
        repairs: list[str] = []
        for scaling in desc.scaling:
            target = dict(scaling.target)
            name = logical(scaling.service)
            target["MinCapacity"] = int(parameters.get(f"{name}MinCapacity", target["MinCapacity"]))
            target["MaxCapacity"] = int(parameters.get(f"{name}MaxCapacity", target["MaxCapacity"]))
            found = aas.describe_scalable_targets(
                ServiceNamespace=target["ServiceNamespace"],
                ResourceIds=[target["ResourceId"]],
                ScalableDimension=target["ScalableDimension"],
            )["ScalableTargets"]
            if not found:
                aas.register_scalable_target(**target)
                repairs.append(f"{target['ResourceId']}: no scalable target after the stack; registered it by API")
            policies = aas.describe_scaling_policies(
                ServiceNamespace=target["ServiceNamespace"],
                ResourceId=target["ResourceId"],
                ScalableDimension=target["ScalableDimension"],
            )["ScalingPolicies"]
            if not any(p["PolicyName"] == scaling.policy["PolicyName"] for p in policies):
                aas.put_scaling_policy(**scaling.policy)
                repairs.append(f"{scaling.policy['PolicyName']}: no scaling policy after the stack; put it by API")
        return repairs

    def remove_scaling(self, desc: Description) -> list[str]:
        """Deregister the scalable targets the stack does not own (those :meth:`ensure_scaling` made)."""
        aas = self.client("application-autoscaling")
        owned = self.resources()
        removed: list[str] = []
        for scaling in desc.scaling:
            if f"{logical(scaling.service)}ScalableTarget" in owned:
                continue  # CloudFormation deletes its own
            t = scaling.target
            found = aas.describe_scalable_targets(
                ServiceNamespace=t["ServiceNamespace"],
                ResourceIds=[t["ResourceId"]],
                ScalableDimension=t["ScalableDimension"],
            )["ScalableTargets"]
            if found:
                aas.deregister_scalable_target(
                    ServiceNamespace=t["ServiceNamespace"],
                    ResourceId=t["ResourceId"],
                    ScalableDimension=t["ScalableDimension"],
                )
                removed.append(f"{t['ResourceId']}: deregistered the scalable target made by API")
        return removed

    def delete(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.cfn.delete_stack(StackName=self.stack_name)
        self.wait(on_event, ("DELETE_COMPLETE",))


def _substitute(value: Any, names: dict[str, str]) -> Any:
    """Resolve ``Fn::Sub`` strings (pseudo parameters and parameters only) and ``Ref`` to a parameter."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        text = str(value["Fn::Sub"])
        for key, replacement in names.items():
            text = text.replace("${" + key + "}", replacement)
        return text
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in names:
        return names[value["Ref"]]
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


def _camel(value: Any) -> Any:
    """CloudFormation's ``{"OperatingSystemFamily": …}`` as the ECS API's ``{"operatingSystemFamily": …}``."""
    if isinstance(value, dict):
        return {k[:1].lower() + k[1:]: _camel(v) for k, v in value.items()}
    return value
