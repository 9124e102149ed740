"""Settings of the upload API process, read once from the environment at its entry point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.settings import MiB, AwsSettings, EnvReader, read_limits
from pipeline.transform.spec import Limits


@dataclass(frozen=True)
class ApiSettings:
    """Settings of the upload API process."""

    aws: AwsSettings
    host: str = "127.0.0.1"
    port: int = 8080
    limits: Limits = field(default_factory=Limits)
    part_size: int = 8 * MiB
    buffer_budget: int = 16 * MiB
    buffer_wait: float = 5.0
    api_keys: tuple[str, ...] = ()
    presign_expires: int = 900
    default_preset: str = "web"
    aws_timeout: float = 5.0
    public_s3_url: str = ""
    orchestrator_url: str = ""  # read-only fleet views (GET /v1/fleet); set for tasks by the orchestrator

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiSettings:
        r = EnvReader(env)
        settings = cls(
            aws=AwsSettings.read(r),
            host=r.str("PIXFLEET_API_HOST", "127.0.0.1"),
            port=r.int("PIXFLEET_API_PORT", 8080, min=0, max=65535),
            limits=read_limits(r),
            part_size=r.int("PIXFLEET_API_PART_SIZE", 8 * MiB, min=5 * MiB, max=512 * MiB),
            buffer_budget=r.int("PIXFLEET_API_BUFFER_BUDGET", 16 * MiB, min=5 * MiB),
            buffer_wait=r.float("PIXFLEET_API_BUFFER_WAIT", 5.0, min=0.1, max=300),
            api_keys=r.list("PIXFLEET_API_KEYS"),
            presign_expires=r.int("PIXFLEET_PRESIGN_EXPIRES", 900, min=60, max=7 * 24 * 3600),
            default_preset=r.str("PIXFLEET_DEFAULT_PRESET", "web"),
            aws_timeout=r.float("PIXFLEET_AWS_TIMEOUT", 5.0, min=0.1),
            public_s3_url=r.str("PIXFLEET_PUBLIC_S3_URL", ""),
            orchestrator_url=r.str("PIXFLEET_ORCHESTRATOR_URL", ""),
        )
        r.check(
            settings.buffer_budget >= settings.part_size, "PIXFLEET_API_BUFFER_BUDGET must be >= PIXFLEET_API_PART_SIZE"
        )
        r.raise_if_problems()
        return settings
