"""The image registry (ECR's part): Debian's docker-registry with pixfleet's config, its v2 API as
``pixfleet images list`` reads it, the kit's push and pin by digest, and the Docker runtime pulling
by digest on an engine that lacks the image.

The first tests need only the ``docker-registry`` binary (a process per test, on a free port, with
``infra/registry/config.yml``) and upload images through the registry's HTTP API themselves. The
Docker tests build a small image of their own (never touching the images other tests use), push
it, remove it from the engine, and start a task from its digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from infra import REPO_ROOT
from infra.images.build import OFFLINE_BASE_IMAGE, BuildOptions, Built, Image, ImageBuildError, ImageKit
from infra.images.registry import DOCKER_MANIFEST, Registry, RegistryError
from pipeline.net import free_port
from pixfleet.cli import main as cli

CONFIG = REPO_ROOT / "infra" / "registry" / "config.yml"
BINARY = shutil.which("docker-registry")

if BINARY is None:  # .ci/run installs it; without it this is a broken environment, not a skip
    pytest.fail("docker-registry is not installed (apt-get install docker-registry)", pytrace=False)


@dataclass
class RunningRegistry:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    storage: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Callable[[], RunningRegistry]]:
    """A factory of docker-registry processes (the repository's config, a port and a folder each)."""
    started: list[RunningRegistry] = []

    def start() -> RunningRegistry:
        port, storage = free_port(), tmp_path / f"registry{len(started)}"
        env = {
            **os.environ,
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(storage),
        }
        log = open(tmp_path / f"registry{len(started)}.log", "wb")  # noqa: SIM115 - the process's log
        process = subprocess.Popen([str(BINARY), "serve", str(CONFIG)], env=env, stdout=log, stderr=log)
        log.close()
        running = RunningRegistry(f"http://127.0.0.1:{port}", port, process, storage)
        started.append(running)
        deadline = time.monotonic() + 30
        while not Registry(running.url).answers():
            assert process.poll() is None, (tmp_path / f"registry{len(started) - 1}.log").read_text()
            assert time.monotonic() < deadline, "docker-registry did not answer within 30 s"
            time.sleep(0.05)
        return running

    yield start
    for running in started:
        running.stop()


def _blob(url: str, repository: str, data: bytes) -> dict[str, Any]:
    """Upload one blob (monolithic: POST then PUT with its digest) and describe it for a manifest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = urllib.request.Request(f"{url}/v2/{repository}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start) as response:
        location = response.headers["Location"]
    location = location if location.startswith("http") else url + location
    put = urllib.request.Request(
        f"{location}{'&' if '?' in location else '?'}digest={digest}",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    urllib.request.urlopen(put).close()
    return {"digest": digest, "size": len(data)}


def upload_image(url: str, repository: str, tag: str, payload: bytes) -> tuple[str, int]:
    """An image (one layer holding ``payload``) pushed over the v2 API; its digest and pull size."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("payload")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layer_gz = gzip.compress(layer.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()]},
        }
    ).encode()
    config_blob = _blob(url, repository, config)
    layer_blob = _blob(url, repository, layer_gz)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config_blob},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", **layer_blob}],
        }
    ).encode()
    put = urllib.request.Request(
        f"{url}/v2/{repository}/manifests/{tag}", data=manifest, method="PUT", headers={"Content-Type": DOCKER_MANIFEST}
    )
    urllib.request.urlopen(put).close()
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), config_blob["size"] + layer_blob["size"]


# --- the registry's API, pixfleet images list --------------------------------------------------------


def test_images_list_shows_repositories_tags_digests_and_sizes(registry: Callable[[], RunningRegistry]) -> None:
    reg = registry()
    uploaded = {
        ("pixfleet/api", "0123456789ab"): upload_image(reg.url, "pixfleet/api", "0123456789ab", os.urandom(3_000_000)),
        ("pixfleet/api", "latest"): upload_image(reg.url, "pixfleet/api", "latest", b"b" * 10),
        ("pixfleet/worker", "v1"): upload_image(reg.url, "pixfleet/worker", "v1", b"w" * 10),
        ("pixfleet/localstack", "4.14.0-offline"): upload_image(reg.url, "pixfleet/localstack", "4.14.0-offline", b"l"),
    }
    client = Registry(reg.url, page_size=1)  # every page of the catalog and of the tags is followed
    found = {(image.repository, image.tag): image for image in client.images()}
    assert {key: (image.digest, image.size) for key, image in found.items()} == uploaded
    api = found[("pixfleet/api", "0123456789ab")]
    assert api.reference == f"127.0.0.1:{reg.port}/pixfleet/api@{uploaded[('pixfleet/api', '0123456789ab')][0]}"
    assert api.media_type == DOCKER_MANIFEST

    result = CliRunner().invoke(cli, ["images", "list", "--registry", reg.url], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    row = next(line for line in lines if "0123456789ab" in line and "pixfleet/api" in line)
    assert uploaded[("pixfleet/api", "0123456789ab")][0][:19] in row and "3 MB" in row

    as_json = CliRunner().invoke(cli, ["images", "list", "--registry", reg.url, "--json"])
    assert as_json.exit_code == 0, as_json.output
    entries = json.loads(as_json.output)
    assert {(e["repository"], e["tag"]): (e["digest"], e["size"]) for e in entries} == uploaded


def test_images_list_when_no_registry_answers_says_how_to_start_one() -> None:
    result = CliRunner().invoke(cli, ["images", "list", "--registry", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # the message wraps at 80 columns
    assert "no registry answers at http://127.0.0.1:" in output
    assert "docker compose up -d registry" in output
    with pytest.raises(RegistryError, match="not a registry URL"):
        Registry("ftp://example")


def test_the_kit_pushes_only_to_a_registry_that_answers(registry: Callable[[], RunningRegistry]) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    assert BuildOptions(registry="ftp://x").problems() == [
        "--registry: 'ftp://x' is not a registry URL (http://host:port)"
    ]
    with pytest.raises(ImageBuildError, match="no registry answers there"):
        ImageKit(BuildOptions(registry=down), client=object()).registry()
    assert ImageKit(BuildOptions(registry="none"), client=object()).registry() is None
    reg = registry()
    found = ImageKit(BuildOptions(registry=reg.url), client=object()).registry()
    assert found is not None and found.host == f"127.0.0.1:{reg.port}"
    image = Image("api", "pixfleet/api", "Dockerfile", "api", "PIXFLEET_API_IMAGE", ())
    built = Built(image, "pixfleet/api:0123456789ab", 1.0)
    assert built.pin == "pixfleet/api:0123456789ab"
    built.pushed = f"127.0.0.1:{reg.port}/pixfleet/api@sha256:{'0' * 64}"
    assert built.pin == built.pushed


# --- with a Docker engine: push, remove, pull by digest, run --------------------------------------------


@pytest.fixture
def tiny_image(docker_client: Any) -> Iterator[tuple[str, str]]:
    """A small image of this test's own (a unique layer on the offline base): (tag, what it prints)."""
    if not _has_image(docker_client, OFFLINE_BASE_IMAGE):
        ImageKit(BuildOptions(only=("base",), registry="none"), client=docker_client).ensure_base()
    marker = uuid.uuid4().hex
    dockerfile = f'FROM {OFFLINE_BASE_IMAGE}\nRUN echo {marker} > /marker\nCMD ["cat", "/marker"]\n'
    tag = f"pixfleet-test/tiny:{marker[:12]}"
    image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, pull=False, rm=True)
    yield tag, marker
    if _has_image(docker_client, image.id):
        docker_client.images.remove(image.id, force=True)


def _has_image(client: Any, reference: str) -> bool:
    import docker.errors

    try:
        client.images.get(reference)
        return True
    except docker.errors.ImageNotFound:
        return False


async def test_a_task_starts_from_a_digest_pulled_from_the_registry(
    registry: Callable[[], RunningRegistry], docker_client: Any, tiny_image: tuple[str, str], tmp_path: Path
) -> None:
    from services.orchestrator.docker_runtime import DockerRuntime, ImagePullError, ensure_image
    from services.orchestrator.runtime import LaunchSpec

    tag, marker = tiny_image
    reg = registry()
    kit = ImageKit(BuildOptions(registry=reg.url), client=docker_client)
    image = Image("tiny", "pixfleet-test/tiny", "-", None, "PIXFLEET_TINY_IMAGE", ())
    pinned = kit.push(Built(image, tag, 0.0), Registry(reg.url))
    repository, _, digest = pinned.partition("@")
    assert repository == f"127.0.0.1:{reg.port}/pixfleet-test/tiny" and digest.startswith("sha256:")
    listed = {(i.repository, i.tag): i.digest for i in Registry(reg.url).images()}
    assert listed == {("pixfleet-test/tiny", tag.split(":")[1]): digest}

    # A fresh engine, as far as this image goes: every tag removed, its own layer gone.
    local = docker_client.images.get(tag)
    for ref in local.tags:
        docker_client.images.remove(ref)
    assert not _has_image(docker_client, pinned) and not _has_image(docker_client, local.id)

    network = docker_client.networks.create(f"pixfleet-test-registry-{uuid.uuid4().hex[:8]}", driver="bridge")
    runtime = DockerRuntime(cluster="pixfleet-test-registry", task_network=network.name, log_dir=tmp_path / "logs")
    spec = LaunchSpec(
        task_id=uuid.uuid4().hex,
        cluster="pixfleet-test-registry",
        service=None,
        family="tiny",
        revision=1,
        command=(),
        image=pinned,
        environment={},
        port_mappings=(),
        cpu_units=0,
        memory_mib=0,
    )
    try:
        handle = await runtime.start(spec, lambda ports: {})
        assert await runtime.wait(handle) == 0
        assert (tmp_path / "logs" / f"{handle.name}.log").read_text().strip() == marker
        assert _has_image(docker_client, pinned)  # pulled by digest
        assert ensure_image(docker_client, pinned) is False  # present now: no second pull

        # The registry down and the image gone again: a clear error before any container exists.
        reg.stop()
        docker_client.images.remove(pinned)
        with pytest.raises(ImagePullError, match=f"registry 127.0.0.1:{reg.port} does not answer") as caught:
            await runtime.start(spec, lambda ports: {})
        assert str(caught.value).startswith("CannotPullContainerError: ")
        assert "docker compose up -d registry" in str(caught.value)
        mine = {"label": "pixfleet.cluster=pixfleet-test-registry"}
        assert docker_client.containers.list(all=True, filters=mine) == []

        other = registry()
        missing = f"127.0.0.1:{other.port}/pixfleet-test/none@sha256:{'0' * 64}"
        with pytest.raises(ImagePullError, match="has no"):
            ensure_image(docker_client, missing)
    finally:
        for container in docker_client.containers.list(
            all=True, filters={"label": "pixfleet.cluster=pixfleet-test-registry"}
        ):
            container.remove(force=True)
        network.remove()
