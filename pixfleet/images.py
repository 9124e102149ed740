"""``pixfleet images`` — build the container images (``build``) and regenerate their locks (``lock``)."""

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
@click.option("--only", metavar="KEYS", help="Comma-separated subset: base,api,worker,orchestrator,moto,localstack.")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to pin the images (default: .env beside docker-compose.yml).",
)
@click.option("--rebuild-base", is_flag=True, help="Debootstrap the base again even if one of the same recipe exists.")
@click.option("--mirror", default=None, metavar="URL", help="Debian mirror for debootstrap.")
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
) -> None:
    """Build the images and pin them in .env, so `docker compose up` runs them.

    With --offline nothing is pulled from any registry: the base image comes from
    debootstrap + docker import, LocalStack 4.14.0 from its PyPI packages.
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
    )
    console = Console(stderr=True)
    try:
        results = ImageKit(options, console).run()
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from None
    console.print(summary(results, options.env_file))


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
