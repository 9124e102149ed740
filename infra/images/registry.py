"""The image registry's HTTP API (Docker Registry v2, as docker/distribution serves it).

What ``pixfleet images`` needs: does a registry answer, which repositories and tags it
holds, and each tag's manifest digest and size. Sizes are what a pull transfers: the
config blob plus every (compressed) layer, as the manifest declares them. Sync (urllib),
like the rest of the kit; no credentials (pixfleet's registry is on loopback, without
authentication).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_REGISTRY = "http://127.0.0.1:5000"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join((DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX))
_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


class RegistryError(RuntimeError):
    """The registry does not answer, or answers something else than the v2 API."""


@dataclass(frozen=True)
class TaggedImage:
    """One tag of one repository, as ``pixfleet images list`` shows it."""

    repository: str
    tag: str
    digest: str
    size: int | None  # None for a multi-platform index (its platforms have their own sizes)
    media_type: str
    reference: str  # host/repository@digest: what a task definition names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    """A registry at ``url`` (``http://127.0.0.1:5000``)."""

    def __init__(self, url: str = DEFAULT_REGISTRY, timeout: float = 5.0, page_size: int = 100):
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise RegistryError(f"{url!r} is not a registry URL (http://host:port)")
        self.url = f"{parsed.scheme}://{parsed.netloc}"
        self.host = parsed.netloc  # what image references start with: 127.0.0.1:5000/pixfleet/api
        self.timeout = timeout
        self.page_size = page_size

    def _get(self, path: str, accept: str = "application/json") -> tuple[Any, dict[str, str]]:
        request = urllib.request.Request(self.url + path, headers={"Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
                headers = {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            raise RegistryError(f"{self.url}{path}: HTTP {exc.code} {exc.reason}") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"no registry answers at {self.url} ({exc})") from None
        try:
            return json.loads(body or b"{}"), headers
        except ValueError:
            raise RegistryError(f"{self.url}{path}: not JSON; is this a Docker registry?") from None

    def answers(self) -> bool:
        """True when a v2 registry answers at the URL."""
        try:
            _, headers = self._get("/v2/")
        except RegistryError:
            return False
        return headers.get("docker-distribution-api-version", "").startswith("registry/2")

    def _pages(self, path: str, key: str) -> list[str]:
        items: list[str] = []
        next_path: str | None = path
        while next_path:
            body, headers = self._get(next_path)
            items += body.get(key) or []
            match = _NEXT.search(headers.get("link", ""))
            next_path = match.group(1) if match else None
        return items

    def repositories(self) -> list[str]:
        return sorted(self._pages(f"/v2/_catalog?n={self.page_size}", "repositories"))

    def tags(self, repository: str) -> list[str]:
        return sorted(self._pages(f"/v2/{repository}/tags/list?n={self.page_size}", "tags"))

    def image(self, repository: str, tag: str) -> TaggedImage:
        """A tag's manifest: its digest (``Docker-Content-Digest``) and the bytes a pull transfers."""
        manifest, headers = self._get(f"/v2/{repository}/manifests/{tag}", ACCEPT)
        digest = headers.get("docker-content-digest", "")
        media_type = manifest.get("mediaType") or headers.get("content-type", "")
        size = None
        if "layers" in manifest:
            blobs = [manifest.get("config", {}), *manifest["layers"]]
            size = sum(int(blob.get("size", 0)) for blob in blobs)
        return TaggedImage(repository, tag, digest, size, media_type, f"{self.host}/{repository}@{digest}")

    def images(self, prefix: str = "") -> list[TaggedImage]:
        """Every tag of every repository (whose name starts with ``prefix``)."""
        return [
            self.image(repository, tag)
            for repository in self.repositories()
            if repository.startswith(prefix)
            for tag in self.tags(repository)
        ]


def short_digest(digest: str) -> str:
    """``sha256:0123…`` → ``sha256:0123456789ab`` (as ``docker images --digests`` abbreviates IDs)."""
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}" if value else digest
