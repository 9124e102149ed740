"""Settings of the upload API process, read once from the environment at its entry point."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from pipeline.settings import MiB, AwsSettings, CommaList, ServiceSettings, env
from pipeline.transform.presets import DEFAULT_PRESET
from pipeline.transform.spec import Limits


class ApiSettings(ServiceSettings):
    """Settings of the upload API process."""

    aws: AwsSettings
    host: str = env("PIXFLEET_API_HOST", "127.0.0.1")
    port: int = env("PIXFLEET_API_PORT", 8080, ge=0, le=65535)
    limits: Limits = Field(default_factory=Limits)
    part_size: int = env("PIXFLEET_API_PART_SIZE", 8 * MiB, ge=5 * MiB, le=512 * MiB)
    buffer_budget: int = env("PIXFLEET_API_BUFFER_BUDGET", 16 * MiB, ge=5 * MiB)
    buffer_wait: float = env("PIXFLEET_API_BUFFER_WAIT", 5.0, ge=0.1, le=300)
    api_keys: CommaList = env("PIXFLEET_API_KEYS", ())
    presign_expires: int = env("PIXFLEET_PRESIGN_EXPIRES", 900, ge=60, le=7 * 24 * 3600)
    default_preset: str = env("PIXFLEET_DEFAULT_PRESET", DEFAULT_PRESET)
    aws_timeout: float = env("PIXFLEET_AWS_TIMEOUT", 5.0, ge=0.1)
    public_s3_url: str = env("PIXFLEET_PUBLIC_S3_URL", "")
    # Read-only fleet views (GET /v1/fleet); set for tasks by the orchestrator.
    orchestrator_url: str = env("PIXFLEET_ORCHESTRATOR_URL", "")

    @field_validator("buffer_budget")
    @classmethod
    def _budget_holds_a_part(cls, budget: int, info: ValidationInfo) -> Any:
        if budget < info.data.get("part_size", 0):
            raise ValueError("PIXFLEET_API_BUFFER_BUDGET must be >= PIXFLEET_API_PART_SIZE")
        return budget
