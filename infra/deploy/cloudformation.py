"""Render the one description as a CloudFormation template for ECS on Fargate.

:func:`render` is pure: :class:`~infra.deploy.description.Description` in,
template dict out. Every value comes from ``infra/`` — the task definitions'
images, commands, environment, sizes, health checks and stop timeouts, the
services' deployment configuration, the worker's scalable target and
target-tracking policy (metric math and cooldowns), and
:func:`infra.stack.render`'s buckets, queues, redrive, S3 notification and
least-privilege role documents. What AWS needs and pixfleet's one machine does
not (a VPC, a load balancer, ECR repositories, log groups, the execution role)
is added here, derived from those values:

* the target group's deregistration delay is the API's ``stopTimeout`` (its
  drain cannot outlast the SIGKILL that follows it);
* the worker's ``stopTimeout`` must be at least its grace period (checked);
* ``${PORT_n}`` placeholders become ``n``: each Fargate task has its own
  network namespace (``awsvpc``), so the host port is the container port.

Names that AWS scopes per account and region (cluster, queues, task
definition families) are the description's, so the metric math's dimensions
(``QueueName``, ``ClusterName``) match without rewriting; bucket names are
parameters (global), defaulting to the description's.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from infra.deploy.description import Description, Service
from infra.stack import ECS_TASKS_PRINCIPAL, POLICY_VERSION, StackSpec, render as render_stack

Template = dict[str, Any]

EXECUTION_POLICY = "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
LOG_RETENTION_DAYS = 14
LISTENER_PORT = 80
HEALTH_PATH = "/healthz"


def logical(name: str) -> str:
    """``"pixfleet-api"`` → ``"PixfleetApi"`` (CloudFormation logical ids are alphanumeric)."""
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-"))


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def att(name: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [name, attribute]}


def sub(value: Any) -> Any:
    """Wrap every string holding ``${...}`` in ``Fn::Sub``, everywhere in a document.

    :func:`infra.stack.render` is called with ``${AWS::AccountId}``-style values,
    so its ARNs become CloudFormation substitutions; ``arn:aws:`` takes the
    stack's partition.
    """
    if isinstance(value, str):
        text = value.replace("arn:aws:", "arn:${AWS::Partition}:")
        return {"Fn::Sub": text} if "${" in text else text
    if isinstance(value, list):
        return [sub(v) for v in value]
    if isinstance(value, dict):
        return {k: sub(v) for k, v in value.items()}
    return value


# Two public subnets (load balancer, NAT) and two private ones (tasks), one of each per zone.
_SUBNETS = (("Public", 1), ("Public", 2), ("Private", 1), ("Private", 2))


# --- parameters --------------------------------------------------------------------------------


def _parameters(desc: Description) -> Template:
    spec = desc.spec
    params: Template = {
        "VpcId": {
            "Type": "String",
            "Default": "",
            "Description": "An existing VPC; empty creates one with two public and two private subnets.",
        },
        "PublicSubnetIds": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "Two public subnets of VpcId, for the load balancer (with VpcId).",
        },
        "PrivateSubnetIds": {
            "Type": "CommaDelimitedList",
            "Default": "",
            "Description": "Two private subnets of VpcId with a route to the internet, for the tasks (with VpcId).",
        },
        "VpcCidr": {"Type": "String", "Default": "10.42.0.0/16", "Description": "CIDR of the created VPC."},
        **{
            f"{kind}Subnet{n}Cidr": {
                "Type": "String",
                "Default": f"10.42.{i}.0/24",
                "Description": f"CIDR of the created {kind.lower()} subnet {n}.",
            }
            for i, (kind, n) in enumerate(_SUBNETS)
        },
        "InputBucketName": {"Type": "String", "Default": spec.input_bucket, "Description": "Uploads land here."},
        "OutputBucketName": {"Type": "String", "Default": spec.output_bucket, "Description": "Results go here."},
    }
    for repo in desc.repositories():
        params[f"{logical(repo)}ImageTag"] = {
            "Type": "String",
            "Default": "latest",
            "Description": f"Tag of the {repo} image in its ECR repository.",
        }
    for svc in desc.services.values():
        name = logical(svc.name)
        params[f"{name}Cpu"] = {
            "Type": "String",
            "Default": str(svc.cpu_units),
            "Description": f"{svc.name} task CPU units (1024 = 1 vCPU).",
        }
        params[f"{name}Memory"] = {
            "Type": "String",
            "Default": str(svc.memory_mib),
            "Description": f"{svc.name} task memory (MiB).",
        }
        params[f"{name}DesiredCount"] = {
            "Type": "Number",
            "Default": int(svc.body.get("desiredCount", 1)),
            "MinValue": 0,
            "Description": f"{svc.name} tasks at creation (autoscaling moves the worker's afterwards).",
        }
    for scaling in desc.scaling:
        name = logical(scaling.service)
        params[f"{name}MinCapacity"] = {
            "Type": "Number",
            "Default": int(scaling.target["MinCapacity"]),
            "MinValue": 0,
            "Description": f"Fewest {scaling.service} tasks the autoscaler keeps.",
        }
        params[f"{name}MaxCapacity"] = {
            "Type": "Number",
            "Default": int(scaling.target["MaxCapacity"]),
            "MinValue": 1,
            "Description": f"Most {scaling.service} tasks the autoscaler starts.",
        }
    return params


# --- network -----------------------------------------------------------------------------------

_CREATE = "CreateVpc"


def _vpc() -> Template:
    """A VPC with two public subnets (ALB, NAT) and two private ones (tasks), when none is given."""
    res: Template = {
        "Vpc": {
            "Type": "AWS::EC2::VPC",
            "Condition": _CREATE,
            "Properties": {
                "CidrBlock": ref("VpcCidr"),
                "EnableDnsHostnames": True,
                "EnableDnsSupport": True,
                "Tags": [{"Key": "Name", "Value": ref("AWS::StackName")}],
            },
        },
        "InternetGateway": {"Type": "AWS::EC2::InternetGateway", "Condition": _CREATE},
        "GatewayAttachment": {
            "Type": "AWS::EC2::VPCGatewayAttachment",
            "Condition": _CREATE,
            "Properties": {"VpcId": ref("Vpc"), "InternetGatewayId": ref("InternetGateway")},
        },
        "PublicRouteTable": {"Type": "AWS::EC2::RouteTable", "Condition": _CREATE, "Properties": {"VpcId": ref("Vpc")}},
        "PublicDefaultRoute": {
            "Type": "AWS::EC2::Route",
            "Condition": _CREATE,
            "DependsOn": "GatewayAttachment",
            "Properties": {
                "RouteTableId": ref("PublicRouteTable"),
                "DestinationCidrBlock": "0.0.0.0/0",
                "GatewayId": ref("InternetGateway"),
            },
        },
        "NatAddress": {
            "Type": "AWS::EC2::EIP",
            "Condition": _CREATE,
            "DependsOn": "GatewayAttachment",
            "Properties": {"Domain": "vpc"},
        },
        "NatGateway": {
            "Type": "AWS::EC2::NatGateway",
            "Condition": _CREATE,
            "Properties": {"AllocationId": att("NatAddress", "AllocationId"), "SubnetId": ref("PublicSubnet1")},
        },
        "PrivateRouteTable": {
            "Type": "AWS::EC2::RouteTable",
            "Condition": _CREATE,
            "Properties": {"VpcId": ref("Vpc")},
        },
        "PrivateDefaultRoute": {
            "Type": "AWS::EC2::Route",
            "Condition": _CREATE,
            "Properties": {
                "RouteTableId": ref("PrivateRouteTable"),
                "DestinationCidrBlock": "0.0.0.0/0",
                "NatGatewayId": ref("NatGateway"),
            },
        },
    }
    for kind, n in _SUBNETS:
        public = kind == "Public"
        subnet = f"{kind}Subnet{n}"
        res[subnet] = {
            "Type": "AWS::EC2::Subnet",
            "Condition": _CREATE,
            "Properties": {
                "VpcId": ref("Vpc"),
                "AvailabilityZone": {"Fn::Select": [n - 1, {"Fn::GetAZs": ""}]},
                "CidrBlock": ref(f"{subnet}Cidr"),
                "MapPublicIpOnLaunch": public,
                "Tags": [{"Key": "Name", "Value": {"Fn::Sub": f"${{AWS::StackName}}-{kind.lower()}-{n}"}}],
            },
        }
        res[f"{subnet}RouteTableAssociation"] = {
            "Type": "AWS::EC2::SubnetRouteTableAssociation",
            "Condition": _CREATE,
            "Properties": {"SubnetId": ref(subnet), "RouteTableId": ref(f"{kind}RouteTable")},
        }
    return res


def _vpc_id() -> Any:
    return {"Fn::If": [_CREATE, ref("Vpc"), ref("VpcId")]}


def _subnets(kind: str) -> Any:
    return {"Fn::If": [_CREATE, [ref(f"{kind}Subnet1"), ref(f"{kind}Subnet2")], ref(f"{kind}SubnetIds")]}


def _security_groups(api: Service) -> Template:
    return {
        "LoadBalancerSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "pixfleet load balancer: HTTP from anywhere",
                "VpcId": _vpc_id(),
                "SecurityGroupIngress": [
                    {"IpProtocol": "tcp", "FromPort": LISTENER_PORT, "ToPort": LISTENER_PORT, "CidrIp": "0.0.0.0/0"}
                ],
            },
        },
        "TaskSecurityGroup": {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "pixfleet tasks: the API port from the load balancer only; all egress",
                "VpcId": _vpc_id(),
                "SecurityGroupIngress": [
                    {
                        "IpProtocol": "tcp",
                        "FromPort": api.port,
                        "ToPort": api.port,
                        "SourceSecurityGroupId": att("LoadBalancerSecurityGroup", "GroupId"),
                    }
                ],
            },
        },
    }


# --- data: buckets, queues ---------------------------------------------------------------------


def _cors(doc: dict[str, Any]) -> dict[str, Any]:
    rules = [
        {
            "Id": r["ID"],
            "AllowedMethods": r["AllowedMethods"],
            "AllowedOrigins": r["AllowedOrigins"],
            "AllowedHeaders": r["AllowedHeaders"],
            "ExposedHeaders": r["ExposeHeaders"],
            "MaxAge": r["MaxAgeSeconds"],
        }
        for r in doc["CORSRules"]
    ]
    return {"CorsRules": rules}


def _lifecycle(doc: dict[str, Any]) -> dict[str, Any]:
    rules = [
        {
            "Id": r["ID"],
            "Status": r["Status"],
            "Prefix": r["Filter"]["Prefix"],
            "AbortIncompleteMultipartUpload": r["AbortIncompleteMultipartUpload"],
        }
        for r in doc["Rules"]
    ]
    return {"Rules": rules}


def _notification(doc: dict[str, Any], queue_logical: dict[str, str]) -> dict[str, Any]:
    configs = []
    for c in doc.get("QueueConfigurations", []):
        queue_name = c["QueueArn"].rsplit(":", 1)[-1]
        for event in c["Events"]:
            configs.append(
                {
                    "Event": event,
                    "Queue": att(queue_logical[queue_name], "Arn"),
                    "Filter": {"S3Key": {"Rules": c["Filter"]["Key"]["FilterRules"]}},
                }
            )
    return {"QueueConfigurations": configs}


def _data(state: dict[str, Any], spec: StackSpec) -> Template:
    res: Template = {}
    queue_logical = {spec.queue: "JobsQueue", spec.dlq: "DeadLetterQueue"}
    bucket_param = {spec.input_bucket: "InputBucketName", spec.output_bucket: "OutputBucketName"}
    for name, queue in state["queues"].items():
        props: dict[str, Any] = {"QueueName": name}
        for key, value in queue["attributes"].items():
            if key == "RedrivePolicy":
                dlq = value["deadLetterTargetArn"].rsplit(":", 1)[-1]
                props[key] = {
                    "deadLetterTargetArn": att(queue_logical[dlq], "Arn"),
                    "maxReceiveCount": value["maxReceiveCount"],
                }
            elif key == "Policy":
                res["JobsQueuePolicy"] = {
                    "Type": "AWS::SQS::QueuePolicy",
                    "Properties": {"Queues": [ref(queue_logical[name])], "PolicyDocument": sub(value)},
                }
            else:
                props[key] = value
        res[queue_logical[name]] = {"Type": "AWS::SQS::Queue", "Properties": props}
    for name, bucket in state["buckets"].items():
        key = bucket_param[name]
        props = {
            "BucketName": ref(key),
            "LifecycleConfiguration": _lifecycle(bucket["lifecycle"]),
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        }
        if bucket["cors"]:
            props["CorsConfiguration"] = _cors(bucket["cors"])
        resource: dict[str, Any] = {"Type": "AWS::S3::Bucket", "Properties": props}
        if bucket["notification"]:
            props["NotificationConfiguration"] = _notification(bucket["notification"], queue_logical)
            resource["DependsOn"] = "JobsQueuePolicy"  # S3 tests the destination when it is configured
        res[key.removesuffix("Name")] = resource
    return res


# --- roles ---------------------------------------------------------------------------------------


def _tasks_trust() -> dict[str, Any]:
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ECS_TASKS_PRINCIPAL},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}},
            }
        ],
    }


def _roles(desc: Description, state: dict[str, Any]) -> Template:
    res: Template = {
        "TaskExecutionRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": "ECS pulls the images from ECR and writes the awslogs streams",
                "AssumeRolePolicyDocument": _tasks_trust(),
                "ManagedPolicyArns": [{"Fn::Sub": EXECUTION_POLICY}],
            },
        }
    }
    by_name = {role["name"]: role for role in state["roles"].values()}
    for svc in desc.services.values():
        role = by_name[svc.role_name]
        res[f"{logical(svc.name)}TaskRole"] = {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"pixfleet {svc.name} tasks: the same least-privilege policy as locally",
                "AssumeRolePolicyDocument": _tasks_trust(),
                "Policies": [
                    {"PolicyName": name, "PolicyDocument": sub(doc)} for name, doc in role["policies"].items()
                ],
            },
        }
    return res


# --- ECS ---------------------------------------------------------------------------------------


def _stack_environment() -> list[dict[str, Any]]:
    """What the local orchestrator hands every task, as stack references."""
    return [
        {"Name": "PIXFLEET_INPUT_BUCKET", "Value": ref("InputBucket")},
        {"Name": "PIXFLEET_OUTPUT_BUCKET", "Value": ref("OutputBucket")},
        {"Name": "PIXFLEET_QUEUE_URL", "Value": ref("JobsQueue")},
        {"Name": "PIXFLEET_DLQ_URL", "Value": ref("DeadLetterQueue")},
    ]


def _task_definition(svc: Service) -> dict[str, Any]:
    name = logical(svc.name)
    c = svc.container
    health = svc.health
    repo = logical(svc.repository)
    container: dict[str, Any] = {
        "Name": c["name"],
        "Image": {"Fn::Sub": f"${{{repo}Repository.RepositoryUri}}:${{{repo}ImageTag}}"},
        "Essential": True,
        "Command": list(c["command"]),
        "Environment": [{"Name": k, "Value": v} for k, v in svc.environment().items()] + _stack_environment(),
        "PortMappings": [
            {"ContainerPort": int(p["containerPort"]), "Protocol": p.get("protocol", "tcp")}
            for p in c.get("portMappings", [])
        ],
        "StopTimeout": svc.stop_timeout,
        "HealthCheck": {
            "Command": svc.health_command(),
            "Interval": health["interval"],
            "Timeout": health["timeout"],
            "Retries": health["retries"],
            "StartPeriod": health["startPeriod"],
        },
        "LogConfiguration": {
            "LogDriver": "awslogs",
            "Options": {
                "awslogs-group": ref(f"{name}LogGroup"),
                "awslogs-region": ref("AWS::Region"),
                "awslogs-stream-prefix": svc.name,
            },
        },
    }
    return {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": svc.family,
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": ref(f"{name}Cpu"),
            "Memory": ref(f"{name}Memory"),
            "TaskRoleArn": att(f"{name}TaskRole", "Arn"),
            "ExecutionRoleArn": att("TaskExecutionRole", "Arn"),
            "RuntimePlatform": {"OperatingSystemFamily": "LINUX", "CpuArchitecture": "X86_64"},
            "ContainerDefinitions": [container],
        },
    }


def _service(svc: Service, api: str) -> dict[str, Any]:
    name = logical(svc.name)
    deployment = svc.body.get("deploymentConfiguration", {})
    breaker = deployment.get("deploymentCircuitBreaker", {"enable": True, "rollback": True})
    props: dict[str, Any] = {
        "Cluster": ref("Cluster"),
        "ServiceName": svc.name,
        "TaskDefinition": ref(f"{name}TaskDefinition"),
        "DesiredCount": ref(f"{name}DesiredCount"),
        "LaunchType": "FARGATE",
        "DeploymentConfiguration": {
            "MinimumHealthyPercent": deployment.get("minimumHealthyPercent", 100),
            "MaximumPercent": deployment.get("maximumPercent", 200),
            "DeploymentCircuitBreaker": {"Enable": breaker["enable"], "Rollback": breaker["rollback"]},
        },
        "NetworkConfiguration": {
            "AwsvpcConfiguration": {
                "Subnets": _subnets("Private"),
                "SecurityGroups": [ref("TaskSecurityGroup")],
                "AssignPublicIp": "DISABLED",
            }
        },
        "EnableECSManagedTags": True,
        "PropagateTags": svc.body.get("propagateTags", "SERVICE"),
        "Tags": [{"Key": t["key"], "Value": t["value"]} for t in svc.body.get("tags", [])],
    }
    resource: dict[str, Any] = {"Type": "AWS::ECS::Service", "Properties": props}
    if svc.name == api:
        props["LoadBalancers"] = [
            {"ContainerName": svc.container["name"], "ContainerPort": svc.port, "TargetGroupArn": ref("ApiTargetGroup")}
        ]
        props["HealthCheckGracePeriodSeconds"] = (
            svc.health["startPeriod"] + svc.health["interval"] * svc.health["retries"]
        )
        resource["DependsOn"] = "ApiListener"
    return resource


def _load_balancer(api: Service) -> Template:
    return {
        "LoadBalancer": {
            "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "Properties": {
                "Type": "application",
                "Scheme": "internet-facing",
                "Subnets": _subnets("Public"),
                "SecurityGroups": [ref("LoadBalancerSecurityGroup")],
                "LoadBalancerAttributes": [{"Key": "idle_timeout.timeout_seconds", "Value": "60"}],
            },
        },
        "ApiTargetGroup": {
            "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
            "Properties": {
                "TargetType": "ip",
                "Protocol": "HTTP",
                "Port": api.port,
                "VpcId": _vpc_id(),
                "HealthCheckPath": HEALTH_PATH,
                "HealthCheckProtocol": "HTTP",
                "HealthCheckIntervalSeconds": max(api.health["interval"], 5),
                "HealthCheckTimeoutSeconds": min(api.health["timeout"], max(api.health["interval"], 5) - 1),
                "HealthyThresholdCount": 2,
                "UnhealthyThresholdCount": max(api.health["retries"], 2),
                "Matcher": {"HttpCode": "200"},
                "TargetGroupAttributes": [
                    {"Key": "deregistration_delay.timeout_seconds", "Value": str(deregistration_delay(api))}
                ],
            },
        },
        "ApiListener": {
            "Type": "AWS::ElasticLoadBalancingV2::Listener",
            "Properties": {
                "LoadBalancerArn": ref("LoadBalancer"),
                "Port": LISTENER_PORT,
                "Protocol": "HTTP",
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": ref("ApiTargetGroup")}],
            },
        },
    }


def deregistration_delay(api: Service) -> int:
    """Seconds the ALB keeps draining a deregistered API task: its whole stop timeout."""
    return api.stop_timeout


def _scaling(desc: Description) -> Template:
    res: Template = {}
    for scaling in desc.scaling:
        name = logical(scaling.service)
        tracking = scaling.tracking
        res[f"{name}ScalableTarget"] = {
            "Type": "AWS::ApplicationAutoScaling::ScalableTarget",
            "Properties": {
                "ServiceNamespace": scaling.target["ServiceNamespace"],
                "ScalableDimension": scaling.target["ScalableDimension"],
                "ResourceId": {"Fn::Join": ["/", ["service", ref("Cluster"), att(f"{name}Service", "Name")]]},
                "MinCapacity": ref(f"{name}MinCapacity"),
                "MaxCapacity": ref(f"{name}MaxCapacity"),
            },
        }
        res[f"{name}ScalingPolicy"] = {
            "Type": "AWS::ApplicationAutoScaling::ScalingPolicy",
            "Properties": {
                "PolicyName": scaling.policy["PolicyName"],
                "PolicyType": scaling.policy["PolicyType"],
                "ScalingTargetId": ref(f"{name}ScalableTarget"),
                "TargetTrackingScalingPolicyConfiguration": tracking,
            },
        }
    return res


def _outputs(desc: Description) -> Template:
    outputs: Template = {
        "LoadBalancerUrl": {
            "Description": "The upload API, behind the load balancer",
            "Value": {"Fn::Sub": "http://${LoadBalancer.DNSName}"},
        },
        "QueueUrl": {"Description": "The jobs queue", "Value": ref("JobsQueue")},
        "DeadLetterQueueUrl": {"Description": "The dead-letter queue", "Value": ref("DeadLetterQueue")},
        "InputBucket": {"Value": ref("InputBucket")},
        "OutputBucket": {"Value": ref("OutputBucket")},
        "ClusterName": {"Value": ref("Cluster")},
    }
    for repo in desc.repositories():
        outputs[f"{logical(repo)}RepositoryUri"] = {
            "Description": f"Push the {repo} image here",
            "Value": att(f"{logical(repo)}Repository", "RepositoryUri"),
        }
    for svc in desc.services.values():
        outputs[f"{logical(svc.name)}ServiceName"] = {"Value": att(f"{logical(svc.name)}Service", "Name")}
    return outputs


def check(desc: Description) -> list[str]:
    """Every reason the description cannot be deployed as it stands; empty when fine."""
    found = []
    grace = desc.worker_grace_period()
    if desc.services["worker"].stop_timeout < grace:
        found.append(f"worker stopTimeout {desc.services['worker'].stop_timeout} s < its grace period {grace:g} s")
    for svc in desc.services.values():
        if not 2 <= svc.stop_timeout <= 120:
            found.append(f"{svc.name}: Fargate takes a stopTimeout of 2..120 s (got {svc.stop_timeout})")
    if "api" not in desc.services:
        found.append("no api service to put behind the load balancer")
    return found


def render(desc: Description) -> Template:
    """The CloudFormation template (a JSON-compatible dict) of the whole stack on Fargate."""
    problems = check(desc)
    if problems:
        raise ValueError("cannot deploy this description: " + "; ".join(problems))
    spec = dataclasses.replace(desc.spec, input_bucket="${InputBucketName}", output_bucket="${OutputBucketName}")
    state = render_stack(spec, "${AWS::AccountId}", "${AWS::Region}")
    # Key the buckets by the description's names again (their names above are parameter references).
    state["buckets"] = {
        desc.spec.input_bucket: state["buckets"][spec.input_bucket],
        desc.spec.output_bucket: state["buckets"][spec.output_bucket],
    }
    api = desc.services["api"]
    resources: Template = {}
    resources.update(_vpc())
    resources.update(_security_groups(api))
    for repo in desc.repositories():
        resources[f"{logical(repo)}Repository"] = {
            "Type": "AWS::ECR::Repository",
            "Properties": {
                "RepositoryName": repo,
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "ImageTagMutability": "MUTABLE",
                "EmptyOnDelete": True,  # images pushed by `deploy aws` must not block `deploy delete`
            },
        }
    resources["Cluster"] = {
        "Type": "AWS::ECS::Cluster",
        "Properties": {
            "ClusterName": desc.cluster_name,
            "ClusterSettings": [{"Name": s["name"], "Value": s["value"]} for s in desc.cluster.get("settings", [])],
            "Tags": [{"Key": t["key"], "Value": t["value"]} for t in desc.cluster.get("tags", [])],
        },
    }
    resources.update(_roles(desc, state))
    resources.update(_data(state, desc.spec))
    for svc in desc.services.values():
        name = logical(svc.name)
        resources[f"{name}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/ecs/${{AWS::StackName}}/{svc.name}"},
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        }
        resources[f"{name}TaskDefinition"] = _task_definition(svc)
        resources[f"{name}Service"] = _service(svc, api.name)
    resources.update(_load_balancer(api))
    resources.update(_scaling(desc))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "pixfleet on ECS Fargate, rendered from infra/ by `pixfleet deploy render`",
        "Parameters": _parameters(desc),
        "Conditions": {_CREATE: {"Fn::Equals": [ref("VpcId"), ""]}},
        "Resources": resources,
        "Outputs": _outputs(desc),
    }


def dumps(template: Template) -> str:
    """The template as indented JSON, as written to a file."""
    return json.dumps(template, indent=2) + "\n"
