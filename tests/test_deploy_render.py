"""`pixfleet deploy render`: the CloudFormation template and the Kubernetes manifests, from infra/.

Checked by tools nobody here wrote: cfn-lint (AWS's own linter and resource
specs) on the template, kubernetes-validate (the Kubernetes OpenAPI schemas,
offline, strict) on the built-in kinds; the KEDA objects against the model of
KEDA's documented spec in ``keda_model.py``. The table tests hold the rendered
numbers, roles and grace periods to the one description.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import cfnlint.api
import keda_model
import kubernetes_validate
import pydantic
import pytest
import yaml
from click.testing import CliRunner

from infra.deploy import cloudformation, description, kubernetes
from infra.deploy.description import Description, Service
from infra.stack import StackSpec, role_policies
from pixfleet.cli import main
from pixfleet.deploy.images import kit_keys
from services.worker.settings import WorkerSettings

DESC = description.load()
TEMPLATE = cloudformation.render(DESC)
TARGET = kubernetes.Target(account_id="210987654321", region="eu-west-1")
MANIFESTS = kubernetes.render(DESC, TARGET)
KUBERNETES_VERSIONS = ["1.29.0", "1.33.0", "1.37.0"]


def manifest(kind: str, name: str) -> dict[str, Any]:
    return next(m for m in MANIFESTS if m["kind"] == kind and m["metadata"]["name"] == name)


def resource(logical_id: str) -> dict[str, Any]:
    return TEMPLATE["Resources"][logical_id]["Properties"]


# --- CloudFormation ------------------------------------------------------------------------------


def test_cfn_lint_finds_no_errors() -> None:
    matches = cfnlint.api.lint(cloudformation.dumps(TEMPLATE), regions=["us-east-1", "eu-west-1"])
    errors = [f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.severity == "error"]
    assert errors == []
    # Warnings allowed are only the empty defaults of the existing-VPC parameters.
    others = {m.rule.id for m in matches if m.rule.severity != "error"}
    assert others <= {"W1030"}, others


def test_cfn_lint_catches_a_broken_template() -> None:
    """The lint test can fail: an ECS service without a cluster it can name is an error."""
    broken = copy.deepcopy(TEMPLATE)
    broken["Resources"]["WorkerService"]["Properties"]["LaunchType"] = "SPOT"
    del broken["Resources"]["ApiTaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Image"]
    matches = cfnlint.api.lint(cloudformation.dumps(broken), regions=["us-east-1"])
    assert {m.rule.severity for m in matches} >= {"error"}


def test_template_has_every_resource_the_issue_lists() -> None:
    types = sorted({r["Type"] for r in TEMPLATE["Resources"].values()})
    for wanted in [
        "AWS::EC2::VPC",
        "AWS::EC2::Subnet",
        "AWS::EC2::NatGateway",
        "AWS::ECR::Repository",
        "AWS::ECS::Cluster",
        "AWS::ECS::TaskDefinition",
        "AWS::ECS::Service",
        "AWS::Logs::LogGroup",
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        "AWS::ElasticLoadBalancingV2::Listener",
        "AWS::SQS::Queue",
        "AWS::SQS::QueuePolicy",
        "AWS::S3::Bucket",
        "AWS::IAM::Role",
        "AWS::ApplicationAutoScaling::ScalableTarget",
        "AWS::ApplicationAutoScaling::ScalingPolicy",
    ]:
        assert wanted in types
    subnets = [k for k, r in TEMPLATE["Resources"].items() if r["Type"] == "AWS::EC2::Subnet"]
    assert sorted(subnets) == ["PrivateSubnet1", "PrivateSubnet2", "PublicSubnet1", "PublicSubnet2"]
    assert resource("Cluster")["ClusterSettings"] == [{"Name": "containerInsights", "Value": "enabled"}]
    group = resource("ApiTargetGroup")
    assert (group["TargetType"], group["HealthCheckPath"]) == ("ip", "/healthz")
    assert {"ImageTag", "Cpu", "Memory", "DesiredCount", "MinCapacity", "MaxCapacity"} <= {
        key.removeprefix(prefix)
        for key in TEMPLATE["Parameters"]
        for prefix in ("PixfleetApi", "PixfleetWorker", "Worker", "Api", "Deadletter")
    }
    notification = resource("InputBucket")["NotificationConfiguration"]["QueueConfigurations"][0]
    assert notification["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "incoming/"}]
    assert notification["Queue"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}


def test_task_definitions_are_fargate_with_both_roles_and_awslogs() -> None:
    for svc in DESC.services.values():
        td = resource(f"{cloudformation.logical(svc.name)}TaskDefinition")
        assert td["RequiresCompatibilities"] == ["FARGATE"] and td["NetworkMode"] == "awsvpc"
        assert td["TaskRoleArn"] == {"Fn::GetAtt": [f"{cloudformation.logical(svc.name)}TaskRole", "Arn"]}
        assert td["ExecutionRoleArn"] == {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]}
        (container,) = td["ContainerDefinitions"]
        assert container["LogConfiguration"]["LogDriver"] == "awslogs"
        assert container["Command"] == svc.container["command"]
        assert "${PORT_" not in json.dumps(container)  # awsvpc: host port = container port


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("dash-separated", cloudformation.logical("pixfleet-api"), "PixfleetApi"),
        ("one word", cloudformation.logical("worker"), "Worker"),
        ("placeholder", description.resolve_ports("127.0.0.1:${PORT_8080}"), "127.0.0.1:8080"),
        ("no placeholder", description.resolve_ports("plain"), "plain"),
        (
            "sub wraps",
            cloudformation.sub("arn:aws:sqs:${AWS::Region}:q"),
            {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:q"},
        ),
        ("sub keeps literals", cloudformation.sub(["s3:GetObject", 3]), ["s3:GetObject", 3]),
        ("cpu quarter", kubernetes.cpu_quantity(256), "250m"),
        ("cpu one", kubernetes.cpu_quantity(1024), "1000m"),
        ("cpu four", kubernetes.cpu_quantity(4096), "4000m"),
        ("memory", kubernetes.memory_quantity(512), "512Mi"),
        (
            "image kit → ECR repositories",
            kit_keys(DESC.repositories()),
            {"api": "pixfleet-api", "worker": "pixfleet-worker"},
        ),
    ],
)
def test_small_functions(name: str, value: Any, expected: Any) -> None:
    assert value == expected


def _with_container(desc: Description, service: str, **changes: Any) -> Description:
    svc = desc.services[service]
    taskdef = copy.deepcopy(svc.taskdef)
    taskdef["containerDefinitions"][0].update(changes)
    return dataclasses.replace(desc, services={**desc.services, service: Service(svc.name, svc.body, taskdef)})


@pytest.mark.parametrize(
    ("case", "desc", "error"),
    [
        ("the shipped description", DESC, None),
        ("worker killed before its grace period ends", _with_container(DESC, "worker", stopTimeout=20), "grace period"),
        ("stop timeout beyond Fargate's 120 s", _with_container(DESC, "api", stopTimeout=600), "2..120"),
    ],
)
def test_render_refuses_an_undeployable_description(case: str, desc: Description, error: str | None) -> None:
    if error is None:
        assert cloudformation.render(desc)["Resources"]
    else:
        with pytest.raises(ValueError, match=error):
            cloudformation.render(desc)


# --- Kubernetes ----------------------------------------------------------------------------------


BUILT_IN = [m for m in MANIFESTS if not m["apiVersion"].startswith("keda.sh/")]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", BUILT_IN, ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_manifests_validate_against_the_kubernetes_schemas(doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_strict_schema_validation_can_fail() -> None:
    deployment = copy.deepcopy(manifest("Deployment", "pixfleet-worker"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # misspelt "resources"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_keda_objects_match_the_documented_spec() -> None:
    keda = [m for m in MANIFESTS if m["apiVersion"] == keda_model.API_VERSION]
    assert sorted(m["kind"] for m in keda) == ["ScaledObject", "TriggerAuthentication"]
    for doc in keda:
        keda_model.validate(doc)
    scaled = manifest("ScaledObject", "pixfleet-worker")
    (trigger,) = scaled["spec"]["triggers"]
    assert (
        trigger["authenticationRef"]["name"]
        == manifest("TriggerAuthentication", "pixfleet-worker-sqs")["metadata"]["name"]
    )
    assert scaled["spec"]["scaleTargetRef"]["name"] == manifest("Deployment", "pixfleet-worker")["metadata"]["name"]
    assert manifest("TriggerAuthentication", "pixfleet-worker-sqs")["spec"]["podIdentity"]["provider"] == "aws"


def _sqs_metadata(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(manifest("ScaledObject", "pixfleet-worker"))
    metadata = doc["spec"]["triggers"][0]["metadata"]
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return doc


@pytest.mark.parametrize(
    ("case", "doc", "is_error"),
    [
        ("as rendered", _sqs_metadata(), False),
        (
            "queue from the environment instead",
            _sqs_metadata(queueURL=None, queueURLFromEnv="PIXFLEET_QUEUE_URL"),
            False,
        ),
        ("no queue at all", _sqs_metadata(queueURL=None), True),
        ("no region", _sqs_metadata(awsRegion=None), True),
        ("a number, not a string", _sqs_metadata(queueLength=10), True),
        ("a misspelt key", _sqs_metadata(scaleOnInflight="true"), True),
        ("a boolean that is not 'true'/'false'", _sqs_metadata(scaleOnInFlight="yes"), True),
    ],
)
def test_keda_model_table(case: str, doc: dict[str, Any], is_error: bool) -> None:
    if is_error:
        with pytest.raises(pydantic.ValidationError):
            keda_model.validate(doc)
    else:
        keda_model.validate(doc)


def test_keda_model_refuses_role_and_owner_together() -> None:
    auth = copy.deepcopy(manifest("TriggerAuthentication", "pixfleet-worker-sqs"))
    auth["spec"]["podIdentity"]["roleArn"] = "arn:aws:iam::210987654321:role/pixfleet-worker"
    with pytest.raises(pydantic.ValidationError, match="mutually exclusive"):
        keda_model.validate(auth)


# --- one description, two renderings: the numbers, roles and grace periods -----------------------

SCALING = DESC.scaling_for("worker")
assert SCALING is not None
WORKER = DESC.services["worker"]
API = DESC.services["api"]
SO = manifest("ScaledObject", "pixfleet-worker")["spec"]
TRIGGER = SO["triggers"][0]["metadata"]
BEHAVIOR = SO["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
POLICY = resource("WorkerScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]
WORKER_POD = manifest("Deployment", "pixfleet-worker")["spec"]["template"]["spec"]
API_POD = manifest("Deployment", "pixfleet-api")["spec"]["template"]["spec"]
SCALING_FILE = json.loads((Path(description.ECS_DIR) / "scaling" / "worker.json").read_text())
GRACE = WorkerSettings.model_fields["grace_period"].default


@pytest.mark.parametrize(
    ("what", "from_description", "cloudformation_value", "kubernetes_value"),
    [
        (
            "fewest workers",
            SCALING_FILE["RegisterScalableTarget"]["MinCapacity"],
            TEMPLATE["Parameters"]["WorkerMinCapacity"]["Default"],
            SO["minReplicaCount"],
        ),
        (
            "most workers",
            SCALING_FILE["RegisterScalableTarget"]["MaxCapacity"],
            TEMPLATE["Parameters"]["WorkerMaxCapacity"]["Default"],
            SO["maxReplicaCount"],
        ),
        ("backlog per task", SCALING.target_value, POLICY["TargetValue"], float(TRIGGER["queueLength"])),
        (
            "scale-in cooldown",
            SCALING.scale_in_cooldown,
            POLICY["ScaleInCooldown"],
            BEHAVIOR["scaleDown"]["stabilizationWindowSeconds"],
        ),
        (
            "scale-out cooldown",
            SCALING.scale_out_cooldown,
            POLICY["ScaleOutCooldown"],
            BEHAVIOR["scaleUp"]["stabilizationWindowSeconds"],
        ),
        (
            "in-flight messages count",
            True,
            "ApproximateNumberOfMessagesNotVisible" in json.dumps(POLICY),
            TRIGGER["scaleOnInFlight"] == "true",
        ),
        ("queue", DESC.spec.queue, resource("JobsQueue")["QueueName"], TRIGGER["queueURL"].rsplit("/", 1)[-1]),
        (
            "worker cpu units",
            WORKER.taskdef["cpu"],
            TEMPLATE["Parameters"]["WorkerCpu"]["Default"],
            str(int(WORKER_POD["containers"][0]["resources"]["requests"]["cpu"].removesuffix("m")) * 1024 // 1000),
        ),
        (
            "worker memory (MiB)",
            WORKER.taskdef["memory"],
            TEMPLATE["Parameters"]["WorkerMemory"]["Default"],
            WORKER_POD["containers"][0]["resources"]["limits"]["memory"].removesuffix("Mi"),
        ),
        ("api role", API.taskdef["taskRoleArn"], StackSpec().api_role, API_POD["serviceAccountName"]),
        ("worker role", WORKER.taskdef["taskRoleArn"], StackSpec().worker_role, WORKER_POD["serviceAccountName"]),
    ],
)
def test_both_renderings_carry_the_description(
    what: str, from_description: Any, cloudformation_value: Any, kubernetes_value: Any
) -> None:
    assert from_description == cloudformation_value == kubernetes_value


def test_metric_math_is_backlog_per_running_task() -> None:
    metrics = {m["Id"]: m for m in POLICY["CustomizedMetricSpecification"]["Metrics"]}
    assert metrics["backlog_per_task"]["Expression"] == "(visible + in_flight) / tasks"
    assert [m["Id"] for m in metrics.values() if m["ReturnData"]] == ["backlog_per_task"]
    dims = {
        d["Name"]: d["Value"]
        for m in metrics.values()
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
    }
    # The dimensions name the resources of this very template.
    assert dims["QueueName"] == resource("JobsQueue")["QueueName"]
    assert dims["ClusterName"] == resource("Cluster")["ClusterName"]
    assert dims["ServiceName"] == resource("WorkerService")["ServiceName"]
    assert metrics["tasks"]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"


@pytest.mark.parametrize(
    ("what", "seconds", "at_least"),
    [
        ("worker grace period in its task definition = the worker's default", DESC.worker_grace_period(), GRACE),
        (
            "ECS worker stopTimeout ≥ grace",
            resource("WorkerTaskDefinition")["ContainerDefinitions"][0]["StopTimeout"],
            GRACE,
        ),
        (
            "k8s worker termination grace ≥ preStop + grace",
            WORKER_POD["terminationGracePeriodSeconds"],
            kubernetes.PRESTOP_SECONDS + GRACE,
        ),
        (
            "ALB deregistration delay ≥ the API's stop timeout",
            int(resource("ApiTargetGroup")["TargetGroupAttributes"][0]["Value"]),
            API.stop_timeout,
        ),
        (
            "k8s api termination grace ≥ preStop + stop timeout",
            API_POD["terminationGracePeriodSeconds"],
            kubernetes.PRESTOP_SECONDS + API.stop_timeout,
        ),
    ],
)
def test_grace_periods_cover_the_drain(what: str, seconds: float, at_least: float) -> None:
    assert seconds >= at_least
    assert math.isfinite(seconds)


def test_task_roles_are_the_local_least_privilege_policies() -> None:
    local = role_policies(StackSpec(), "${AWS::AccountId}", "${AWS::Region}")
    for svc in DESC.services.values():
        key = svc.role_name.removeprefix("pixfleet-")
        (policy,) = resource(f"{cloudformation.logical(svc.name)}TaskRole")["Policies"]
        rendered = json.dumps(policy["PolicyDocument"])
        expected = local[key]
        assert [s["Action"] for s in policy["PolicyDocument"]["Statement"]] == [
            s["Action"] for s in expected["Statement"]
        ]
        assert "*" not in [r for s in policy["PolicyDocument"]["Statement"] for r in s["Resource"]]
        assert "${InputBucketName}" in rendered or "${OutputBucketName}" in rendered
    annotations = {
        m["metadata"]["name"]: m["metadata"]["annotations"][kubernetes.IRSA_ANNOTATION]
        for m in MANIFESTS
        if m["kind"] == "ServiceAccount"
    }
    assert annotations == {
        role: f"arn:aws:iam::210987654321:role/{role}"
        for role in ("pixfleet-api", "pixfleet-deadletter", "pixfleet-worker")
    }


def test_rolling_update_follows_the_ecs_deployment_configuration() -> None:
    for svc in DESC.services.values():
        strategy = manifest("Deployment", f"pixfleet-{svc.name}")["spec"]["strategy"]["rollingUpdate"]
        config = svc.body["deploymentConfiguration"]
        assert strategy == {
            "maxUnavailable": f"{100 - config['minimumHealthyPercent']}%",
            "maxSurge": f"{config['maximumPercent'] - 100}%",
        }
    assert "replicas" not in manifest("Deployment", "pixfleet-worker")["spec"]  # KEDA owns it
    assert manifest("PodDisruptionBudget", "pixfleet-worker")["spec"]["maxUnavailable"] == 1


# --- the command ---------------------------------------------------------------------------------


def test_render_command_writes_the_template_and_the_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["deploy", "render", "--target", "cloudformation", "--out", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t.json").read_text()) == TEMPLATE
    monkeypatch.chdir(tmp_path)  # a short relative --out: the message is checked at 80 columns
    result = runner.invoke(
        main,
        [
            "deploy",
            "render",
            "--target",
            "kubernetes",
            "--out",
            "k8s",
            "--account-id",
            "210987654321",
            "--region",
            "eu-west-1",
        ],
    )
    assert result.exit_code == 0, result.output
    written = [yaml.safe_load(p.read_text()) for p in sorted(Path("k8s").glob("*.yaml"))]
    assert written == MANIFESTS
    assert all(len(line) <= 80 for line in result.output.splitlines())
    result = runner.invoke(main, ["deploy", "render", "--target", "kubernetes"])
    assert list(yaml.safe_load_all(result.output)) == kubernetes.render(DESC)
