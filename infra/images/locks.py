"""The committed dependency locks of the images, and how to regenerate them.

Every image installs exactly the pins of one lock, with hashes (``pip install
--require-hashes --no-deps``), so a rebuild months later gets the same files.
The pixfleet locks are layered: ``orchestrator.lock`` and ``moto.lock`` repeat
``requirements.lock``'s pins and add their own, so their images install on top
of the shared layer. LocalStack's lock is resolved as of a fixed date because
newer cbor2 and pyOpenSSL releases break ``localstack-core`` 4.14.0.

``pixfleet images lock`` regenerates them with ``uv pip compile``, constrained to
the versions installed in the running environment (the ones the tests ran with).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCALSTACK_VERSION = "4.14.0"
LOCALSTACK_EXCLUDE_NEWER = "2026-02-27"
PYTHON_VERSION = "3.13"  # Debian trixie's python3, and what localstack-core 4.14.0 needs

# The direct runtime dependencies of the api and worker (what they import), plus the CLI's.
_SERVICE_DEPS = (
    "aiobotocore",
    "aiohttp",
    "pillow",
    "pyspng",
    "prometheus-client",
    "pydantic",
    "pydantic-settings",
    "click",
    "rich",
)


@dataclass(frozen=True)
class Lock:
    """One lock file: what it asks for and how it is resolved."""

    name: str
    requirements: tuple[str, ...]
    pin_to_environment: bool = True  # constrain to the running environment's versions
    exclude_newer: str | None = None
    universal: bool = True  # one lock for every platform (else resolved for x86_64 Linux)

    @property
    def path(self) -> Path:
        return HERE / self.name


LOCKS: tuple[Lock, ...] = (
    Lock("requirements.lock", _SERVICE_DEPS),
    Lock("orchestrator.lock", (*_SERVICE_DEPS, "docker")),
    Lock("moto.lock", (*_SERVICE_DEPS, "moto[server]")),
    Lock(
        "localstack.lock",
        (f"localstack-core[runtime]=={LOCALSTACK_VERSION}",),
        pin_to_environment=False,
        exclude_newer=LOCALSTACK_EXCLUDE_NEWER,
        universal=False,  # its dependency tree has no single solution for Python >= 3.14
    ),
)


def _uv() -> list[str]:
    if shutil.which("uv"):
        return ["uv"]
    try:
        import uv  # noqa: F401

        return [sys.executable, "-m", "uv"]
    except ImportError:
        raise RuntimeError("regenerating the locks needs uv: pip install uv") from None


def _environment_pins() -> str:
    """``pip freeze`` of the running environment, without editable installs (pixfleet itself)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    return "".join(line + "\n" for line in out.splitlines() if "==" in line)


def compile_lock(lock: Lock) -> None:
    """Resolve ``lock`` with uv and write it next to this module."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / (lock.path.stem + ".in")
        source.write_text("".join(r + "\n" for r in lock.requirements))
        command = [
            *_uv(),
            "pip",
            "compile",
            "--quiet",
            "--generate-hashes",
            "--python-version",
            PYTHON_VERSION,
            "--custom-compile-command",
            "pixfleet images lock",
            "--no-annotate",
            str(source),
            "-o",
            str(lock.path),
        ]
        command += ["--universal"] if lock.universal else ["--python-platform", "x86_64-manylinux_2_36"]
        if lock.exclude_newer:
            command += ["--exclude-newer", lock.exclude_newer]
        if lock.pin_to_environment:
            constraints = Path(tmp) / "environment.txt"
            constraints.write_text(_environment_pins())
            command += ["--constraint", str(constraints)]
        subprocess.run(command, check=True)


def pinned(lock: Lock) -> dict[str, str]:
    """Package name → version of a committed lock."""
    pins: dict[str, str] = {}
    for line in lock.path.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and "==" in line:
            name, _, rest = line.partition("==")
            pins[name.strip().lower()] = rest.split()[0].split(";")[0].strip()
    return pins
