"""Build pixfleet's images, with or without a registry (``pixfleet images build [--offline]``).

Offline, on a Docker engine that can pull nothing, the kit

1. makes a base image from Debian with ``debootstrap`` and ``docker import``
   (``pixfleet/base:trixie``: python3 3.13, venv, CA certificates), once: a base
   that exists with the same recipe is reused, so Docker's layer cache stays valid;
2. builds the service images on it (``BASE_IMAGE`` build argument): api, worker,
   orchestrator, moto, lb (Debian's haproxy) from ``infra/images/Dockerfile``, and LocalStack 4.14.0 from
   PyPI (``infra/images/localstack.Dockerfile``);
3. pushes them to the image registry when one answers (``--registry URL``; by default
   the local one at 127.0.0.1:5000, when it answers: ``docker compose up -d registry``),
   as ``127.0.0.1:5000/pixfleet/<name>:<tag>``;
4. pins what it built in the ``.env`` file beside ``docker-compose.yml``, which compose
   reads by itself, so a plain ``docker compose up`` runs these images: by digest when
   pushed (``PIXFLEET_API_IMAGE=127.0.0.1:5000/pixfleet/api@sha256:…``, what task
   definitions name and the Docker runtime pulls when the engine lacks it), else by the
   local tag. The registry's own image is never pushed to itself: it stays pinned by its
   local tag, so the registry can start on an engine that has nothing else.

Online, it builds the service images on ``python:3.13-slim`` (pulled) and leaves
LocalStack to Docker Hub. Python packages come from the committed locks. Only the
build stages see ``infra/images/extra/``: an extra CA bundle (behind a TLS-intercepting
proxy) or a wheelhouse that ``pip download`` filled on the host (then the builds use no
index at all).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra import REPO_ROOT
from infra.images.locks import LOCALSTACK_VERSION, LOCKS, PYTHON_VERSION, Lock
from infra.images.registry import DEFAULT_REGISTRY, Registry, RegistryError, short_digest

HERE = Path(__file__).resolve().parent
EXTRA_DIR = HERE / "extra"
ENV_FILE = REPO_ROOT / ".env"
LOG_DIR = REPO_ROOT / "build" / "images"

ONLINE_BASE_IMAGE = "python:3.13-slim"
OFFLINE_BASE_IMAGE = "pixfleet/base:trixie"
DEBIAN_SUITE = "trixie"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RECIPE_LABEL = "org.pixfleet.base.recipe"
COMPONENT_LABEL = "org.pixfleet.component"
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")


class ImageBuildError(RuntimeError):
    """A step of the kit failed; the message says which and where its log is."""


@dataclass(frozen=True)
class Image:
    """One image the kit builds, and the ``.env`` variable that pins it for compose."""

    key: str
    repository: str
    dockerfile: str
    target: str | None
    env_var: str
    locks: tuple[str, ...]
    fixed_tag: str | None = None  # else tagged with its image ID (content hash) and "latest"
    offline_only: bool = False  # online, compose pulls it from Docker Hub instead
    push: bool = True  # to the image registry, when one answers


IMAGES: tuple[Image, ...] = (
    Image("api", "pixfleet/api", "Dockerfile", "api", "PIXFLEET_API_IMAGE", ("requirements.lock",)),
    Image("worker", "pixfleet/worker", "Dockerfile", "worker", "PIXFLEET_WORKER_IMAGE", ("requirements.lock",)),
    Image(
        "orchestrator",
        "pixfleet/orchestrator",
        "Dockerfile",
        "orchestrator",
        "PIXFLEET_ORCHESTRATOR_IMAGE",
        ("requirements.lock", "orchestrator.lock"),
    ),
    Image("moto", "pixfleet/moto", "Dockerfile", "moto", "PIXFLEET_MOTO_IMAGE", ("requirements.lock", "moto.lock")),
    Image("lb", "pixfleet/lb", "Dockerfile", "lb", "PIXFLEET_LB_IMAGE", ("requirements.lock",)),
    # Not pushed: an engine that lacks it could not pull it from the registry it is.
    Image(
        "registry", "pixfleet/registry", "registry.Dockerfile", "registry", "PIXFLEET_REGISTRY_IMAGE", (), push=False
    ),
    Image(
        "localstack",
        "pixfleet/localstack",
        "localstack.Dockerfile",
        None,
        "LOCALSTACK_IMAGE",
        ("localstack.lock",),
        fixed_tag=f"{LOCALSTACK_VERSION}-offline",
        offline_only=True,
    ),
)
IMAGE_KEYS = ("base", *(image.key for image in IMAGES))


@dataclass(frozen=True)
class BuildOptions:
    """What ``pixfleet images build`` was asked to do."""

    offline: bool = False
    base_image: str | None = None  # None: debootstrap (offline) or python:3.13-slim (online)
    ca_bundle: Path | None = None
    wheelhouse: Path | None = None
    only: tuple[str, ...] = ()
    env_file: Path = ENV_FILE
    rebuild_base: bool = False
    mirror: str = DEFAULT_MIRROR
    registry: str = "auto"  # "auto": the local registry when it answers; "none": never push; or a URL

    def problems(self) -> list[str]:
        found = [
            f"--only: unknown image {key!r} (known: {', '.join(IMAGE_KEYS)})"
            for key in self.only
            if key not in IMAGE_KEYS
        ]
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            found.append(f"--ca-bundle: {self.ca_bundle} is not a file")
        if self.base_image and "base" in self.only:
            found.append("--only base makes the debootstrap base; it contradicts --base-image")
        if self.registry not in ("auto", "none"):
            try:
                Registry(self.registry)
            except RegistryError as exc:
                found.append(f"--registry: {exc}")
        return found

    def images(self) -> list[Image]:
        if self.only:
            return [image for image in IMAGES if image.key in self.only]
        return [image for image in IMAGES if self.offline or not image.offline_only]

    @property
    def needs_debootstrap(self) -> bool:
        return self.base_image is None and (self.offline or "base" in self.only)


@dataclass
class Built:
    image: Image | None
    reference: str
    seconds: float
    steps: int = 0
    rebuilt: int = 0  # steps that ran (not FROM/ARG, not from the cache)
    size: int = 0
    notes: list[str] = field(default_factory=list)
    pushed: str | None = None  # registry/repository@digest once pushed

    @property
    def pin(self) -> str:
        """What ``.env`` names: the digest in the registry when pushed, else the local tag."""
        return self.pushed or self.reference


# --- the .env file ---------------------------------------------------------------------------


def update_env_file(path: Path, values: dict[str, str], defaults: dict[str, str] | None = None) -> None:
    """Set ``values`` in a dotenv file, keep every other line; ``defaults`` only where a key is missing."""
    lines = (
        path.read_text().splitlines()
        if path.exists()
        else ["# Written by `pixfleet images build`; compose reads it by itself."]
    )
    seen: set[str] = set()
    out: list[str] = []
    for line in lines:
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key in values:
            out.append(f"{key}={values[key]}")
            seen.add(key)
            continue
        if key is not None:
            seen.add(key)
        out.append(line)
    for key, value in {**(defaults or {}), **values}.items():
        if key not in seen:
            out.append(f"{key}={value}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(out) + "\n")
    os.replace(tmp, path)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


# --- the kit ---------------------------------------------------------------------------------


class ImageKit:
    """Builds the images on one Docker engine; every step logs to ``build/images/*.log``."""

    def __init__(self, options: BuildOptions, console: Console | None = None, client: Any = None):
        problems = options.problems()
        if problems:
            raise ImageBuildError("; ".join(problems))
        self.options = options
        self.console = console or Console(stderr=True)
        self.log_dir = LOG_DIR
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if client is None:
            import docker

            try:
                client = docker.from_env(timeout=1800)
                client.ping()
            except docker.errors.DockerException as exc:
                raise ImageBuildError(f"no Docker engine answers ({exc}); start dockerd, or set DOCKER_HOST") from exc
        self.client = client

    # --- the whole run ------------------------------------------------------------------------

    def run(self) -> list[Built]:
        opts = self.options
        results: list[Built] = []
        registry = self.registry()  # before building: an explicit --registry that is down fails at once
        base = opts.base_image or (OFFLINE_BASE_IMAGE if opts.offline or "base" in opts.only else ONLINE_BASE_IMAGE)
        if opts.needs_debootstrap:
            results.append(self.ensure_base())
        images = opts.images()
        if images:
            self.stage_extras(images)
            for image in images:
                results.append(self.build(image, base))
        if registry is not None:
            for r in results:
                if r.image is not None and r.image.push:
                    r.pushed = self.push(r, registry)
        pins = {r.image.env_var: r.pin for r in results if r.image is not None}
        if pins:
            defaults = {"COMPOSE_PROJECT_NAME": "pixfleet"}
            gid = self.docker_socket_gid()
            if gid is not None:
                pins["PIXFLEET_DOCKER_GID"] = str(gid)
            update_env_file(opts.env_file, pins, defaults)
        return results

    # --- 0. the registry --------------------------------------------------------------------------

    def registry(self) -> Registry | None:
        """Where to push: the ``--registry`` URL (which must answer), else the local one if it answers."""
        if self.options.registry == "none":
            return None
        url = DEFAULT_REGISTRY if self.options.registry == "auto" else self.options.registry
        registry = Registry(url)
        if registry.answers():
            return registry
        if self.options.registry == "auto":
            self.console.print(f"no registry answers at {url}: the images stay on this engine, pinned by tag")
            return None
        raise ImageBuildError(
            f"--registry {url}: no registry answers there (the local one: docker compose up -d registry)"
        )

    # --- 1. the base image ----------------------------------------------------------------------

    def base_recipe(self) -> str:
        recipe = (
            f"debootstrap --variant=minbase --include={','.join(DEBIAN_PACKAGES)} {DEBIAN_SUITE} {self.options.mirror}"
        )
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]

    def ensure_base(self) -> Built:
        """``pixfleet/base:trixie`` from debootstrap, unless one of the same recipe exists."""
        import docker

        started = time.monotonic()
        recipe = self.base_recipe()
        if not self.options.rebuild_base:
            try:
                existing = self.client.images.get(OFFLINE_BASE_IMAGE)
                if (existing.labels or {}).get(RECIPE_LABEL) == recipe:
                    return Built(
                        None,
                        OFFLINE_BASE_IMAGE,
                        time.monotonic() - started,
                        notes=["reused"],
                        size=existing.attrs.get("Size", 0),
                    )
            except docker.errors.ImageNotFound:
                pass
        debootstrap = shutil.which("debootstrap") or next(
            (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.path.exists(p)), None
        )
        if debootstrap is None:
            raise ImageBuildError(
                "debootstrap is not installed (apt-get install debootstrap), or pass --base-image IMAGE"
            )
        if os.geteuid() != 0:
            raise ImageBuildError("debootstrap needs root: run the build as root, or pass --base-image IMAGE")
        log_path = self.log_dir / "base.log"
        rootfs = Path(tempfile.mkdtemp(prefix="pixfleet-rootfs-", dir="/var/tmp"))
        try:
            command = [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                self.options.mirror,
            ]
            with self._spinner(f"base: debootstrap {DEBIAN_SUITE}") as update, open(log_path, "w") as log:
                log.write("$ " + " ".join(command) + "\n")
                log.flush()
                process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                assert process.stdout is not None
                for line in process.stdout:
                    log.write(line)
                    if line.startswith("I: "):
                        update(f"base: {line[3:].strip()[:70]}")
                if process.wait() != 0:
                    raise ImageBuildError(f"debootstrap failed (exit {process.returncode}); see {log_path}")
                for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                    for path in (rootfs / junk).glob("*"):
                        if path.is_file():
                            path.unlink()
                update("base: docker import")
                self._import(rootfs, recipe)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        size = self.client.images.get(OFFLINE_BASE_IMAGE).attrs.get("Size", 0)
        return Built(None, OFFLINE_BASE_IMAGE, time.monotonic() - started, size=size, notes=["debootstrap"])

    def _import(self, rootfs: Path, recipe: str) -> None:
        repository, tag = OFFLINE_BASE_IMAGE.split(":")
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            self.client.api.import_image(
                src=tar.stdout,
                repository=repository,
                tag=tag,
                stream_src=True,
                changes=[
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                    f"LABEL {RECIPE_LABEL}={recipe}",
                    'CMD ["python3"]',
                ],
            )
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise ImageBuildError("tar of the debootstrapped root failed")

    # --- 2. build-time extras ---------------------------------------------------------------------

    def stage_extras(self, images: Iterable[Image]) -> None:
        """Put the CA bundle and the wheelhouse where the build stages find them (and nothing stale)."""
        ca_dir, wheel_dir = EXTRA_DIR / "ca", EXTRA_DIR / "wheels"
        for folder in (ca_dir, wheel_dir):
            shutil.rmtree(folder, ignore_errors=True)
        if self.options.ca_bundle is not None:
            ca_dir.mkdir(parents=True)
            shutil.copyfile(self.options.ca_bundle, ca_dir / "extra.pem")
        if self.options.wheelhouse is not None:
            wanted = sorted({name for image in images for name in image.locks})
            self.fill_wheelhouse([lock for lock in LOCKS if lock.name in wanted])
            wheel_dir.mkdir(parents=True)
            for path in sorted(self.options.wheelhouse.iterdir()):
                if path.is_file():
                    try:
                        os.link(path, wheel_dir / path.name)
                    except OSError:
                        shutil.copy2(path, wheel_dir / path.name)

    def fill_wheelhouse(self, locks: list[Lock]) -> None:
        """``pip download`` on the host every file the locks pin, for the engine's platform and Python.

        A lock whose files are all in the wheelhouse already is checked there alone (``--no-index``),
        without asking an index about each one again.
        """
        assert self.options.wheelhouse is not None
        self.options.wheelhouse.mkdir(parents=True, exist_ok=True)
        arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(
            self.client.info().get("Architecture", ""), ""
        ) or os.uname().machine
        platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(17, 42)] + [
            f"manylinux2014_{arch}",
            f"linux_{arch}",
        ]
        abi = "cp" + PYTHON_VERSION.replace(".", "")
        log_path = self.log_dir / "wheelhouse.log"
        with self._spinner("wheelhouse: pip download") as update, open(log_path, "w") as log:
            for lock in locks:
                update(f"wheelhouse: pip download -r {lock.name}")
                command = [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--require-hashes",
                    "--progress-bar",
                    "off",
                    "-r",
                    str(lock.path),
                    "-d",
                    str(self.options.wheelhouse),
                    "--python-version",
                    PYTHON_VERSION,
                    "--implementation",
                    "cp",
                    "--abi",
                    abi,
                    "--abi",
                    "abi3",
                    "--abi",
                    "none",
                    *(arg for platform in platforms for arg in ("--platform", platform)),
                ]
                local = [*command, "--no-index", "--find-links", str(self.options.wheelhouse)]
                for attempt in (local, command):
                    log.write("$ " + " ".join(attempt) + "\n")
                    log.flush()
                    if subprocess.run(attempt, stdout=log, stderr=subprocess.STDOUT).returncode == 0:
                        break
                else:
                    raise ImageBuildError(f"pip download for {lock.name} failed; see {log_path}")

    # --- 3. the images ------------------------------------------------------------------------------

    def build(self, image: Image, base: str) -> Built:
        """``docker build`` one image (the classic builder, through the SDK) and tag it."""
        started = time.monotonic()
        log_path = self.log_dir / f"{image.key}.log"
        build_tag = f"{image.repository}:{image.fixed_tag or 'latest'}"
        steps = rebuilt = 0
        step_text, step_cached = "", False
        image_id = None
        tail: list[str] = []

        def close_step() -> None:
            nonlocal rebuilt
            if step_text and not step_cached and not step_text.startswith(("FROM", "ARG")):
                rebuilt += 1

        with self._progress() as progress, open(log_path, "w") as log:
            task = progress.add_task(f"{image.key}: sending context", total=None)
            stream = self.client.api.build(
                path=str(REPO_ROOT),
                dockerfile=f"infra/images/{image.dockerfile}",
                target=image.target,
                tag=build_tag,
                buildargs={"BASE_IMAGE": base},
                labels={COMPONENT_LABEL: image.key},
                pull=False,
                rm=True,
                forcerm=True,
                decode=True,
            )
            for chunk in stream:
                if "error" in chunk:
                    log.write(chunk["error"] + "\n")
                    raise ImageBuildError(
                        f"building {image.key} failed: {chunk['error'].strip()}\n"
                        + "".join(tail[-15:])
                        + f"(log: {log_path})"
                    )
                text = chunk.get("stream") or chunk.get("status") or ""
                if text:
                    log.write(text if text.endswith("\n") else text + "\n")
                    tail = [*tail, text if text.endswith("\n") else text + "\n"][-40:]
                    step = _STEP.match(text)
                    if step:
                        close_step()
                        steps, step_text, step_cached = int(step.group(1)), step.group(3), False
                        progress.update(
                            task,
                            completed=steps - 1,
                            total=int(step.group(2)),
                            description=f"{image.key}: {step_text[:60]}",
                        )
                    elif "Using cache" in text:
                        step_cached = True
                image_id = (chunk.get("aux") or {}).get("ID", image_id)
            close_step()
            progress.update(task, completed=steps, total=steps or 1)
        if image_id is None:
            image_id = self.client.images.get(build_tag).id
        reference = build_tag
        if image.fixed_tag is None:
            reference = f"{image.repository}:{image_id.split(':')[-1][:12]}"
            self.client.api.tag(
                image_id, image.repository, reference.split(":")[1]
            )  # older tags stay: a .env may pin them
        size = self.client.images.get(image_id).attrs.get("Size", 0)
        return Built(image, reference, time.monotonic() - started, steps=steps, rebuilt=rebuilt, size=size)

    # --- 4. the registry ------------------------------------------------------------------------------

    def push(self, built: Built, registry: Registry) -> str:
        """Tag ``built`` as ``<registry>/<repository>:<tag>``, push it, return ``…@<digest>``."""
        assert built.image is not None
        key = built.image.key
        repository = f"{registry.host}/{built.image.repository}"
        tag = built.reference.rsplit(":", 1)[1]
        self.client.api.tag(built.reference, repository, tag)
        log_path = self.log_dir / f"{key}.push.log"
        digest = None
        layers: dict[str, str] = {}
        with self._spinner(f"{key}: push {repository}:{tag}") as update, open(log_path, "w") as log:
            for chunk in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                log.write(json.dumps(chunk) + "\n")
                if "error" in chunk:
                    raise ImageBuildError(f"pushing {key} to {registry.url} failed: {chunk['error']} (log: {log_path})")
                if chunk.get("id") and chunk.get("status"):
                    layers[chunk["id"]] = chunk["status"]
                    done = sum(status in ("Pushed", "Layer already exists") for status in layers.values())
                    update(f"{key}: push {repository}:{tag} ({done}/{len(layers)} layers)")
                digest = (chunk.get("aux") or {}).get("Digest", digest)
        if digest is None:
            raise ImageBuildError(f"pushing {key}: the engine reported no digest (log: {log_path})")
        return f"{repository}@{digest}"

    def docker_socket_gid(self) -> int | None:
        """The group that owns the local Docker socket (compose gives it to the orchestrator)."""
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if not host.startswith("unix://"):
            return None
        try:
            return os.stat(host[len("unix://") :]).st_gid
        except OSError:
            return None

    # --- progress -----------------------------------------------------------------------------

    def _progress(self) -> Progress:
        return Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )

    @contextmanager
    def _spinner(self, description: str) -> Iterator[Any]:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=self.console
        ) as progress:
            task = progress.add_task(description, total=None)
            yield lambda text: progress.update(task, description=text)
            progress.update(task, description=description + " ✓")


def summary(results: list[Built], env_file: Path) -> Table:
    """A table of what was built, for the console."""
    registries = sorted({r.pushed.split("/", 1)[0] for r in results if r.pushed})
    pushed = f", pushed to {', '.join(registries)} and pinned by digest" if registries else ""
    table = Table(title=f"images (pinned in {env_file}{pushed})", title_justify="left")
    for column in ("image", "reference", "rebuilt", "size", "time"):
        table.add_column(column, overflow="fold")  # at 80 columns a long reference wraps, never loses its end
    for r in results:
        reference = r.reference
        if r.pushed:  # host/repository@sha256:… is too wide for 80 columns: the repository and a short digest
            repository, _, digest = r.pushed.partition("@")
            reference = f"{repository.split('/', 1)[1]}@{short_digest(digest)}"
        table.add_row(
            r.image.key if r.image else "base",
            reference,
            (f"{r.rebuilt}" if r.rebuilt else "none (cache)") if r.steps else ", ".join(r.notes),
            f"{r.size / 1e6:.0f} MB",
            f"{r.seconds:.0f} s",
        )
    return table
