"""``pixfleet images`` — build the container images (``build``), show what the registry holds
(``list``) and regenerate the images' locks (``lock``)."""

from __future__ import annotations

from pathlib import Path

import click

from infra.images.locks import LOCKS


def _keys(value: str | None) -> tuple[str, ...]:
    return tuple(key.strip() for key in (value or "").split(",") if key.strip())


@click.group()
def images() -> None:
    """Container images for the compose stack (docker-compose.yml)."""


@images.command()
@click.option(
    "--offline", is_flag=True, help="Pull nothing: debootstrap a Debian base, build LocalStack from PyPI too."
)
@click.option(
    "--base-image",
    metavar="IMAGE",
    help="Build on this local image instead (default: python:3.13-slim, or the debootstrap base offline).",
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Extra CA certificates pip trusts in the build stages (a TLS-intercepting proxy's). "
    "Default: the host's bundle.",
)
@click.option(
    "--host-ca/--no-host-ca",
    default=True,
    show_default=True,
    help="Without --ca-bundle, trust the host's CA bundle while building.",
)
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, path_type=Path),
    help="Fill this folder with `pip download` on the host and build from it with no index (no network in the builds).",
)
@click.option(
    "--only", metavar="KEYS", help="Comma-separated subset: base,api,worker,orchestrator,moto,lb,registry,localstack."
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to pin the images (default: .env beside docker-compose.yml).",
)
@click.option("--rebuild-base", is_flag=True, help="Debootstrap the base again even if one of the same recipe exists.")
@click.option("--mirror", default=None, metavar="URL", help="Debian mirror for debootstrap.")
@click.option(
    "--registry",
    metavar="URL",
    help="Push the images there and pin them by digest (default: http://127.0.0.1:5000 when it answers).",
)
@click.option("--no-push", is_flag=True, help="Push to no registry, even if one answers; pin the local tags.")
def build(
    offline: bool,
    base_image: str | None,
    ca_bundle: Path | None,
    host_ca: bool,
    wheelhouse: Path | None,
    only: str | None,
    env_file: Path | None,
    rebuild_base: bool,
    mirror: str | None,
    registry: str | None,
    no_push: bool,
) -> None:
    """Build the images and pin them in .env, so `docker compose up` runs them.

    With --offline nothing is pulled from any registry: the base image comes from
    debootstrap + docker import, LocalStack 4.14.0 from its PyPI packages. When an
    image registry answers (the compose stack's: `docker compose up -d registry`),
    every image but the registry's own is pushed to it and pinned by digest.
    """
    from rich.console import Console

    from infra.images.build import (
        DEFAULT_MIRROR,
        ENV_FILE,
        HOST_CA_BUNDLE,
        BuildOptions,
        ImageBuildError,
        ImageKit,
        summary,
    )

    if registry and no_push:
        raise click.UsageError("--registry and --no-push contradict each other")
    if ca_bundle is None and host_ca and HOST_CA_BUNDLE.is_file():
        ca_bundle = HOST_CA_BUNDLE
    options = BuildOptions(
        offline=offline,
        base_image=base_image,
        ca_bundle=ca_bundle,
        wheelhouse=wheelhouse,
        only=_keys(only),
        env_file=env_file or ENV_FILE,
        rebuild_base=rebuild_base,
        mirror=mirror or DEFAULT_MIRROR,
        registry="none" if no_push else registry or "auto",
    )
    console = Console(stderr=True)
    try:
        results = ImageKit(options, console).run()
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(summary(results, options.env_file))


@images.command(name="list")
@click.option("--registry", "url", metavar="URL", help="The registry (default: http://127.0.0.1:5000).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: full digests, sizes in bytes.")
def list_images(url: str | None, as_json: bool) -> None:
    """Repositories, tags, digests and sizes in the image registry (its v2 HTTP API)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from infra.images.registry import DEFAULT_REGISTRY, Registry, RegistryError, short_digest

    try:
        registry = Registry(url or DEFAULT_REGISTRY)
        entries = registry.images()
    except RegistryError as exc:
        raise click.ClickException(f"{exc}; the local one starts with `docker compose up -d registry`") from None
    if as_json:
        click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    table = Table(title=f"images in {registry.url}", title_justify="left", caption="size: what a pull transfers")
    for column, justify in (("repository", "left"), ("tag", "left"), ("digest", "left"), ("size", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for entry in entries:
        size = "index" if entry.size is None else f"{entry.size / 1e6:.0f} MB"
        table.add_row(entry.repository, entry.tag, short_digest(entry.digest), size)
    console = Console()
    console.print(table if entries else f"{registry.url} holds no image yet (pixfleet images build pushes there)")


@images.command()
@click.option("--only", metavar="NAMES", help=f"Comma-separated subset of: {', '.join(lock.name for lock in LOCKS)}.")
def lock(only: str | None) -> None:
    """Regenerate infra/images/*.lock with uv (pins follow this environment's versions)."""
    from infra.images.locks import compile_lock

    wanted = _keys(only)
    for entry in LOCKS:
        if not wanted or entry.name in wanted:
            click.echo(f"resolving {entry.name}…", err=True)
            compile_lock(entry)
