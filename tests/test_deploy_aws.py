"""`pixfleet deploy aws` against moto's server over HTTP: what the stack creates, read back by boto3.

Proven here (moto 5.2, over HTTP, by the real CLI in a subprocess): the rendered
template is accepted by a CloudFormation implementation and creates the ECR
repositories, ECS cluster, task definitions and services, the IAM task and
execution roles with their inline policies, the SQS queues with the redrive,
the S3 buckets with the ``incoming/`` notification, the load balancer, target
group and listener; after ``deploy aws`` the ECS API reports the task and
execution roles, Fargate sizes and ECR images, and Application Auto Scaling
reports the scalable target and the target-tracking policy with the metric
math. moto's CloudFormation skips the Application Auto Scaling resources and
the queue policy, and drops the bucket notification and the task definitions'
roles and sizes; ``deploy aws`` detects each by reading it back, fills it in by
API, and says so (asserted below). So against moto the *values* are proven to
come from the one description, while "CloudFormation itself applies them" is
proven only by cfn-lint's resource specs, not by a run.

Not proven here (only AWS can): that tasks start on Fargate, pull from ECR,
pass the ``/healthz`` checks behind the ALB, and that CloudWatch drives the
policy. moto runs no tasks and evaluates no alarms.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from infra.deploy import cloudformation, description
from infra.emulator import MotoServer
from infra.stack import StackSpec, role_policies
from pixfleet.deploy.aws import StackDeployer

REGION = "us-east-1"
DESC = description.load()
TEMPLATE = cloudformation.render(DESC)


def pixfleet(server: MotoServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "deploy-test",
        "AWS_SECRET_ACCESS_KEY": "deploy-test",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "COLUMNS": "80",
    }
    return subprocess.run(
        [sys.executable, "-m", "pixfleet", "deploy", *args, "--region", REGION, "--endpoint-url", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _document(doc: Any) -> Any:
    """An IAM policy document as boto3 returns it; moto 5.2 returns CloudFormation's inline ones as a
    Python repr string (``{'Version': ...}``), which the literal parser reads."""
    if not isinstance(doc, str):
        return doc
    try:
        return json.loads(doc)
    except json.JSONDecodeError:
        return ast.literal_eval(doc)


def clients(server: MotoServer) -> Callable[[str], Any]:
    session = boto3.session.Session(
        aws_access_key_id="deploy-test", aws_secret_access_key="deploy-test", region_name=REGION
    )
    return lambda service: session.client(service, endpoint_url=server.url)


@pytest.fixture
def deployed(fresh_moto: Callable[[], MotoServer]) -> tuple[MotoServer, subprocess.CompletedProcess[str]]:
    server = fresh_moto()
    result = pixfleet(server, "aws", "--stack-name", "pf", "--no-build", "--image-tag", "t1")
    assert result.returncode == 0, result.stderr
    return server, result


def test_deploy_creates_services_with_roles_sizes_and_images(deployed: tuple[MotoServer, Any]) -> None:
    server, result = deployed
    client = clients(server)
    ecs, iam, ecr = client("ecs"), client("iam"), client("ecr")
    uris = {r["repositoryName"]: r["repositoryUri"] for r in ecr.describe_repositories()["repositories"]}
    assert sorted(uris) == ["pixfleet-api", "pixfleet-worker"]
    services = ecs.describe_services(cluster="pixfleet", services=["api", "worker", "deadletter"])["services"]
    assert sorted(s["serviceName"] for s in services) == ["api", "deadletter", "worker"]
    local = role_policies(StackSpec(), "123456789012", REGION)
    for svc in services:
        spec = DESC.services[svc["serviceName"]]
        td = ecs.describe_task_definition(taskDefinition=svc["taskDefinition"])["taskDefinition"]
        assert td["family"] == spec.family
        assert (td["cpu"], td["memory"]) == (spec.taskdef["cpu"], spec.taskdef["memory"])
        assert td["networkMode"] == "awsvpc" and td["requiresCompatibilities"] == ["FARGATE"]
        (container,) = td["containerDefinitions"]
        assert container["image"] == f"{uris[spec.repository]}:t1"
        assert container["stopTimeout"] == spec.stop_timeout
        assert container["logConfiguration"]["logDriver"] == "awslogs"
        env = {e["name"]: e["value"] for e in container["environment"]}
        assert env["PIXFLEET_QUEUE_URL"].endswith("/pixfleet-jobs")
        # The task role: its own role, with the same least-privilege statements as locally.
        role = iam.get_role(RoleName=td["taskRoleArn"].rsplit("/", 1)[-1])["Role"]
        assert role["Arn"] == td["taskRoleArn"]
        (policy_name,) = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
        doc = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=policy_name)["PolicyDocument"]
        doc = _document(doc)
        assert doc == local[spec.role_name.removeprefix("pixfleet-")]
        execution = iam.get_role(RoleName=td["executionRoleArn"].rsplit("/", 1)[-1])["Role"]
        assert execution["Arn"] != role["Arn"]
    task_roles = {
        ecs.describe_task_definition(taskDefinition=s["taskDefinition"])["taskDefinition"]["taskRoleArn"]
        for s in services
    }
    assert len(task_roles) == 3  # the roles stay separate
    # moto's CloudFormation dropped the task definitions' roles and sizes; deploy said so.
    assert "filled in by API" in result.stderr


def test_deploy_creates_the_scaling_with_the_metric_math(deployed: tuple[MotoServer, Any]) -> None:
    server, result = deployed
    aas = clients(server)("application-autoscaling")
    (target,) = aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert (target["ResourceId"], target["ScalableDimension"]) == (
        "service/pixfleet/worker",
        "ecs:service:DesiredCount",
    )
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    (policy,) = aas.describe_scaling_policies(ServiceNamespace="ecs")["ScalingPolicies"]
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    scaling = DESC.scaling_for("worker")
    assert scaling is not None
    assert config["TargetValue"] == scaling.target_value
    assert (config["ScaleOutCooldown"], config["ScaleInCooldown"]) == (0, 30)
    metrics = {m["Id"]: m for m in config["CustomizedMetricSpecification"]["Metrics"]}
    assert metrics["backlog_per_task"]["Expression"] == "(visible + in_flight) / tasks"
    assert metrics["tasks"]["MetricStat"]["Metric"]["MetricName"] == "RunningTaskCount"
    assert metrics["visible"]["MetricStat"]["Metric"]["Dimensions"] == [{"Name": "QueueName", "Value": "pixfleet-jobs"}]
    assert "no scalable target after the stack; registered it by API" in " ".join(result.stderr.split())
    # Detected, not assumed: once they exist, nothing more is filled in.
    deployer = StackDeployer("pf", clients(server))
    assert deployer.ensure_scaling(DESC, {}) == []


def test_deploy_creates_queues_buckets_and_load_balancer(deployed: tuple[MotoServer, Any]) -> None:
    server, result = deployed
    client = clients(server)
    sqs, s3, elbv2 = client("sqs"), client("s3"), client("elbv2")
    jobs = sqs.get_queue_url(QueueName="pixfleet-jobs")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=jobs, AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(
        QueueUrl=sqs.get_queue_url(QueueName="pixfleet-jobs-dlq")["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert json.loads(attrs["RedrivePolicy"]) == {"deadLetterTargetArn": dlq, "maxReceiveCount": 3}
    policy = json.loads(attrs["Policy"])
    assert policy["Statement"][0]["Principal"] == {"Service": "s3.amazonaws.com"}
    notification = s3.get_bucket_notification_configuration(Bucket="pixfleet-input")
    (queue_config,) = notification["QueueConfigurations"]
    assert queue_config["QueueArn"] == attrs["QueueArn"]
    (rule,) = queue_config["Filter"]["Key"]["FilterRules"]
    assert (rule["Name"].lower(), rule["Value"]) == ("prefix", "incoming/")
    (lb,) = elbv2.describe_load_balancers()["LoadBalancers"]
    (group,) = elbv2.describe_target_groups()["TargetGroups"]
    assert (group["TargetType"], group["HealthCheckPath"], group["Port"]) == ("ip", "/healthz", 8080)
    # The deploy prints the URLs, whole, at 80 columns.
    assert f"http://{lb['DNSName']}" in result.stdout.split()
    assert jobs.rsplit("/", 1)[-1] in result.stdout
    assert all(len(line) <= 80 for line in (result.stdout + result.stderr).splitlines())


def test_deploy_again_changes_nothing_and_status_reports(deployed: tuple[MotoServer, Any]) -> None:
    server, _ = deployed
    again = pixfleet(server, "aws", "--stack-name", "pf", "--no-build", "--image-tag", "t1")
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stderr and "filled in by API" not in again.stderr
    status = pixfleet(server, "status", "--stack-name", "pf")
    assert status.returncode == 0, status.stderr
    assert "pf: CREATE_COMPLETE" in status.stdout
    assert "scaling service/pixfleet/worker: 1..4 tasks" in status.stdout
    assert all(len(line) <= 80 for line in status.stdout.splitlines())


def test_deploy_into_an_existing_vpc_then_delete(fresh_moto: Callable[[], MotoServer]) -> None:
    server = fresh_moto()
    ec2 = clients(server)("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"{REGION}{'ab'[i % 2]}")["Subnet"][
            "SubnetId"
        ]
        for i in range(4)
    ]
    result = pixfleet(
        server,
        "aws",
        "--stack-name",
        "pf",
        "--no-build",
        "--image-tag",
        "t2",
        "-p",
        f"VpcId={vpc}",
        "-p",
        f"PublicSubnetIds={subnets[0]},{subnets[1]}",
        "-p",
        f"PrivateSubnetIds={subnets[2]},{subnets[3]}",
        "-p",
        "WorkerMaxCapacity=7",
    )
    assert result.returncode == 0, result.stderr
    vpcs = ec2.describe_vpcs()["Vpcs"]
    assert [v["VpcId"] for v in vpcs if not v.get("IsDefault")] == [vpc]  # none created
    (group,) = clients(server)("elbv2").describe_target_groups()["TargetGroups"]
    assert group["VpcId"] == vpc
    aas = clients(server)("application-autoscaling")
    (target,) = aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert target["MaxCapacity"] == 7
    deleted = pixfleet(server, "delete", "--stack-name", "pf", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"] == []
    gone = pixfleet(server, "status", "--stack-name", "pf")
    assert gone.returncode == 1 and "no stack pf" in gone.stderr


def test_unknown_parameter_is_refused_with_the_known_ones(fresh_moto: Callable[[], MotoServer]) -> None:
    result = pixfleet(fresh_moto(), "aws", "--no-build", "-p", "WorkerMax=9")
    assert result.returncode == 2
    assert "WorkerMaxCapacity" in result.stderr
