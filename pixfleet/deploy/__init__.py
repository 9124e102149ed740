"""``pixfleet deploy`` — take the stack past one machine: ECS on Fargate, or Kubernetes with KEDA.

``render`` writes what :mod:`infra.deploy` renders from the one description in
``infra/`` (a CloudFormation template, or Kubernetes manifests); ``aws``
creates or updates the stack with a change set and waits for it; ``status``
and ``delete`` look at and remove it. ``--endpoint-url`` targets an emulator.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.deploy import cloudformation, description, kubernetes

TARGETS = ("cloudformation", "kubernetes")


@click.group()
def deploy() -> None:
    """Deploy the stack onto AWS ECS (Fargate) or render it for Kubernetes.

    \b
      pixfleet deploy render --target cloudformation --out stack.json
      pixfleet deploy render --target kubernetes --out k8s/
      pixfleet deploy aws --stack-name pixfleet --region eu-west-1
      pixfleet deploy status --stack-name pixfleet
      pixfleet deploy delete --stack-name pixfleet
    """


# --- render --------------------------------------------------------------------------------------


@deploy.command()
@click.option("--target", type=click.Choice(TARGETS), required=True, help="What to render.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="cloudformation: the template file; kubernetes: a folder of manifests. Default: stdout.",
)
@click.option("--account-id", default="123456789012", show_default=True, help="kubernetes: the AWS account.")
@click.option("--region", default="us-east-1", show_default=True, help="kubernetes: the AWS region.")
@click.option("--registry", metavar="HOST", help="kubernetes: image registry (default: the account's ECR).")
@click.option("--image-tag", default="latest", show_default=True, help="kubernetes: tag of every image.")
def render(target: str, out: Path | None, account_id: str, region: str, registry: str | None, image_tag: str) -> None:
    """Render the stack from infra/ as a CloudFormation template or Kubernetes manifests."""
    desc = description.load()
    try:
        if target == "cloudformation":
            template = cloudformation.render(desc)
            _write(cloudformation.dumps(template), out)
            if out is not None:
                click.echo(f"wrote {out} ({len(template['Resources'])} resources)", err=True)
            return
        manifests = kubernetes.render(
            desc, kubernetes.Target(account_id=account_id, region=region, registry=registry, image_tag=image_tag)
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    import yaml

    if out is None:
        click.echo(yaml.safe_dump_all(manifests, sort_keys=False), nl=False)
        return
    out.mkdir(parents=True, exist_ok=True)
    for i, manifest in enumerate(manifests):
        path = out / f"{i:02d}-{kubernetes.file_name(manifest)}"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    click.echo(f"wrote {len(manifests)} manifests to {out}/\napply them with: kubectl apply -f {out}/", err=True)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


# --- aws -----------------------------------------------------------------------------------------


def _clients(region: str | None, endpoint_url: str | None) -> Any:
    import boto3

    session = boto3.session.Session(region_name=region)
    if session.region_name is None:
        raise click.ClickException("no AWS region: pass --region or set AWS_REGION")

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint_url)

    return client


def _stack_options(f: Any) -> Any:
    f = click.option("--endpoint-url", metavar="URL", help="An emulator's endpoint (moto, LocalStack, …).")(f)
    f = click.option("--region", metavar="REGION", help="AWS region (default: the AWS config's).")(f)
    return click.option("--stack-name", default="pixfleet", show_default=True, help="CloudFormation stack.")(f)


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", style="bold"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _follow(progress: Progress, task: Any) -> Any:
    done: set[str] = set()

    def on_event(event: dict[str, Any]) -> None:
        status = event.get("ResourceStatus", "")
        resource = event.get("LogicalResourceId", "")
        if status.endswith("_COMPLETE") and resource and event.get("ResourceType") != "AWS::CloudFormation::Stack":
            done.add(resource)
        progress.update(task, completed=len(done), description=f"{resource[:28]:<28} {status[:18]}")

    return on_event


@deploy.command()
@_stack_options
@click.option("--build/--no-build", default=True, show_default=True, help="Build and push the images first.")
@click.option("--image-tag", metavar="TAG", help="With --no-build: the tag already in the ECR repositories.")
@click.option("-p", "--parameter", "overrides", multiple=True, metavar="KEY=VALUE", help="A template parameter.")
def aws(
    stack_name: str,
    region: str | None,
    endpoint_url: str | None,
    build: bool,
    image_tag: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Create or update the stack on AWS with a change set; print the API and queue URLs."""
    from pixfleet.deploy.aws import DeployError, StackDeployer

    console = Console(stderr=True)
    desc = description.load()
    try:
        template = cloudformation.render(desc)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    parameters = _parameters(template, overrides)
    if image_tag:
        parameters.update({f"{cloudformation.logical(r)}ImageTag": image_tag for r in desc.repositories()})
    client = _clients(region, endpoint_url)
    deployer = StackDeployer(stack_name, client, report=lambda m: console.print(m))
    total = len(template["Resources"])
    try:
        with _progress(console) as progress:
            if build and not deployer.exists():
                # The repositories must exist before the images can be pushed: create the stack
                # with no tasks first, then push, then run the services.
                empty = {k: "0" for k in template["Parameters"] if k.endswith(("DesiredCount", "MinCapacity"))}
                task = progress.add_task("creating (no tasks yet)", total=total)
                deployer.apply(template, {**parameters, **empty}, _follow(progress, task))
                progress.update(task, completed=total)
            if build:
                from pixfleet.deploy.images import build_and_push

                outputs = deployer.outputs(template)
                uris = {r: outputs[f"{cloudformation.logical(r)}RepositoryUri"] for r in desc.repositories()}
                pushed = build_and_push(uris, client("ecr"), console)
                parameters.update({f"{cloudformation.logical(r)}ImageTag": t for r, t in pushed.items()})
            task = progress.add_task("deploying", total=total)
            changed = deployer.apply(template, parameters, _follow(progress, task))
            progress.update(task, completed=total, description="deployed" if changed else "no changes")
        repairs = deployer.repair_task_definitions(template, {**_defaults(template), **parameters}, desc.cluster_name)
        repairs += deployer.repair_queue_policies(template, {**_defaults(template), **parameters})
        repairs += deployer.repair_bucket_notifications(template)
        repairs += deployer.ensure_scaling(desc, {**_defaults(template), **parameters})
        outputs = deployer.outputs(template)
    except (DeployError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # botocore's ClientError, EndpointConnectionError, NoCredentialsError…
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    for line in repairs:
        console.print(f"[yellow]filled in by API:[/] {line}")
    # Plain lines, never cut: a URL must survive a narrow terminal whole, to be copied.
    click.echo(f"API (load balancer):\n  {outputs.get('LoadBalancerUrl', '?')}")
    click.echo(f"jobs queue:\n  {outputs.get('QueueUrl', '?')}")


def _defaults(template: dict[str, Any]) -> dict[str, str]:
    return {k: str(p["Default"]) for k, p in template["Parameters"].items() if "Default" in p}


def _parameters(template: dict[str, Any], overrides: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in template["Parameters"]:
            known = ", ".join(template["Parameters"])
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE with KEY one of: {known}", param_hint="-p")
        params[key] = value
    return params


# --- status, delete ----------------------------------------------------------------------------


@deploy.command()
@_stack_options
def status(stack_name: str, region: str | None, endpoint_url: str | None) -> None:
    """The stack's status, outputs, services and worker scaling."""
    from pixfleet.deploy.aws import StackDeployer

    desc = description.load()
    template = cloudformation.render(desc)
    client = _clients(region, endpoint_url)
    deployer = StackDeployer(stack_name, client)
    try:
        stack = deployer.describe()
        if stack is None:
            raise click.ClickException(f"no stack {stack_name}")
        outputs = deployer.outputs(template)
        services = client("ecs").describe_services(cluster=desc.cluster_name, services=list(desc.services))
        aas = client("application-autoscaling")
        targets = aas.describe_scalable_targets(
            ServiceNamespace="ecs", ResourceIds=[s.target["ResourceId"] for s in desc.scaling]
        )["ScalableTargets"]
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    console = Console()
    console.print(f"[bold]{stack_name}[/]: {stack['StackStatus']}")
    table = Table("service", "desired", "running", "task definition", box=None)
    for svc in services["services"]:
        table.add_row(
            svc["serviceName"],
            str(svc["desiredCount"]),
            str(svc["runningCount"]),
            svc["taskDefinition"].rsplit("/", 1)[-1],
        )
    console.print(table)
    for t in targets:
        console.print(f"scaling {t['ResourceId']}: {t['MinCapacity']}..{t['MaxCapacity']} tasks")
    for key, label in (("LoadBalancerUrl", "API (load balancer)"), ("QueueUrl", "jobs queue")):
        if key in outputs:
            click.echo(f"{label}:\n  {outputs[key]}")


@deploy.command()
@_stack_options
@click.option("--yes", is_flag=True, help="Do not ask first.")
def delete(stack_name: str, region: str | None, endpoint_url: str | None, yes: bool) -> None:
    """Delete the stack (the buckets must be empty for CloudFormation to remove them)."""
    from pixfleet.deploy.aws import DeployError, StackDeployer

    if not yes:
        click.confirm(f"Delete stack {stack_name} and everything in it?", abort=True)
    desc = description.load()
    console = Console(stderr=True)
    deployer = StackDeployer(stack_name, _clients(region, endpoint_url))
    try:
        if deployer.describe() is None:
            raise click.ClickException(f"no stack {stack_name}")
        for line in deployer.remove_scaling(desc):
            console.print(line)
        with _progress(console) as progress:
            task = progress.add_task("deleting", total=None)
            deployer.delete(_follow(progress, task))
    except click.ClickException:
        raise
    except DeployError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # e.g. DependencyViolation: something outside the stack still uses it
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    console.print(f"deleted {stack_name}")


__all__ = ["deploy"]
