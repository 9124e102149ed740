"""Settings of the dead-letter recorder, read once from the environment at its entry point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.settings import AwsSettings, EnvReader


@dataclass(frozen=True)
class DeadLetterSettings:
    """Settings of the dead-letter recorder (services/deadletter)."""

    aws: AwsSettings
    max_receive_count: int = 3
    poll_interval: float = 2.0
    full_pass_interval: float = 60.0
    health_host: str = "127.0.0.1"
    health_port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeadLetterSettings:
        r = EnvReader(env)
        health_port = r.int("PIXFLEET_DEADLETTER_HEALTH_PORT", -1, min=-1, max=65535)
        settings = cls(
            aws=AwsSettings.read(r),
            max_receive_count=r.int("PIXFLEET_MAX_RECEIVE_COUNT", 3, min=1, max=1000),
            poll_interval=r.float("PIXFLEET_DEADLETTER_POLL_INTERVAL", 2.0, min=0.1, max=300),
            full_pass_interval=r.float("PIXFLEET_DEADLETTER_FULL_PASS", 60.0, min=1, max=86400),
            health_host=r.str("PIXFLEET_DEADLETTER_HEALTH_HOST", "127.0.0.1"),
            health_port=None if health_port < 0 else health_port,
        )
        r.check(bool(settings.aws.dlq_url), "PIXFLEET_DLQ_URL is required")
        r.raise_if_problems()
        return settings
