"""Settings of the dead-letter recorder, read once from the environment at its entry point."""

from __future__ import annotations

from pydantic import field_validator

from pipeline.settings import AwsSettings, ServiceSettings, env


class DeadLetterSettings(ServiceSettings):
    """Settings of the dead-letter recorder (services/deadletter).

    ``max_receive_count`` is the job queue's (its redrive policy's ``maxReceiveCount``, read
    at startup) unless the environment overrides it.
    """

    aws: AwsSettings
    max_receive_count: int | None = env("PIXFLEET_MAX_RECEIVE_COUNT", None, ge=1, le=1000)
    poll_interval: float = env("PIXFLEET_DEADLETTER_POLL_INTERVAL", 2.0, ge=0.1, le=300)
    full_pass_interval: float = env("PIXFLEET_DEADLETTER_FULL_PASS", 60.0, ge=1, le=86400)
    health_host: str = env("PIXFLEET_DEADLETTER_HEALTH_HOST", "127.0.0.1")
    health_port: int | None = env("PIXFLEET_DEADLETTER_HEALTH_PORT", None, ge=0, le=65535)

    @field_validator("aws")
    @classmethod
    def _has_a_dlq(cls, aws: AwsSettings) -> AwsSettings:
        if not aws.dlq_url:
            raise ValueError("PIXFLEET_DLQ_URL is required")
        return aws
