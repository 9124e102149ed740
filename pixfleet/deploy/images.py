"""Build the images with the image kit and push them to the stack's ECR repositories.

Only ``pixfleet deploy aws`` with building on (the default) comes here; it needs
a Docker engine. The kit's images are named ``pixfleet/api``; the task
definitions' repositories ``pixfleet-api`` (ECR repository names of one stack).
"""

from __future__ import annotations

import base64
from typing import Any

from rich.console import Console

from infra.images.build import IMAGES, BuildOptions, ImageBuildError, ImageKit


def kit_keys(repositories: list[str]) -> dict[str, str]:
    """Image kit key → the ECR repository it fills (``"api"`` → ``"pixfleet-api"``)."""
    names = {img.key: img.repository.replace("/", "-") for img in IMAGES}
    return {key: name for key, name in names.items() if name in repositories}


def build_and_push(repository_uris: dict[str, str], ecr: Any, console: Console) -> dict[str, str]:
    """Build, tag and push each image; return repository → the tag pushed (the image's content id)."""
    import docker

    keys = kit_keys(list(repository_uris))
    try:
        built = ImageKit(BuildOptions(only=tuple(keys)), console).run()
    except ImageBuildError as exc:
        raise RuntimeError(str(exc)) from exc
    token = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    client = docker.from_env(timeout=1800)
    pushed: dict[str, str] = {}
    for result in built:
        if result.image is None or result.image.key not in keys:
            continue
        repo = keys[result.image.key]
        tag = result.reference.rsplit(":", 1)[1]
        uri = repository_uris[repo]
        client.images.get(result.reference).tag(uri, tag)
        console.print(f"pushing {uri}:{tag}")
        for line in client.images.push(
            uri, tag=tag, auth_config={"username": user, "password": password}, stream=True, decode=True
        ):
            if "error" in line:
                raise RuntimeError(f"pushing {uri}:{tag} failed: {line['error']}")
        pushed[repo] = tag
    return pushed
