"""Per-process settings, read once from environment variables at the entry point.

Each service builds its own frozen settings object with ``from_env()`` and passes
it down into constructors; nothing reads the environment at import time. Every
invalid value is collected, then reported together in one :class:`SettingsError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.transform.spec import Limits

T = TypeVar("T")
MiB = 1024 * 1024


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))


class EnvReader:
    """Reads typed values from an environment mapping and remembers every problem."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env
        self.problems: list[str] = []

    def _get(self, name: str, default: T, parse: Callable[[str], T], check: Callable[[T], str | None] | None) -> T:
        raw = self.env.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = parse(raw.strip())
        except (TypeError, ValueError):
            self.problems.append(f"{name}={raw!r}: not a valid {getattr(parse, '__name__', 'value')}")
            return default
        problem = check(value) if check else None
        if problem:
            self.problems.append(f"{name}={raw!r}: {problem}")
            return default
        return value

    def str(self, name: str, default: Any = None) -> Any:
        return self._get(name, default, str, None)

    def required(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            self.problems.append(f"{name} is required")
        return value

    def int(self, name: str, default: Any, *, min: float | None = None, max: float | None = None) -> Any:
        return self._get(name, default, int, _range(min, max))

    def float(self, name: str, default: Any, *, min: float | None = None, max: float | None = None) -> Any:
        return self._get(name, default, float, _range(min, max))

    def bool(self, name: str, default: bool) -> bool:
        return self._get(name, default, _parse_bool, None)

    def list(self, name: str) -> tuple[str, ...]:
        raw = self.env.get(name, "")
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def raise_if_problems(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


_parse_bool.__name__ = "boolean"


def _range(lo: float | None, hi: float | None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if lo is not None and value < lo:
            return f"must be >= {lo}"
        if hi is not None and value > hi:
            return f"must be <= {hi}"
        return None

    return check


@dataclass(frozen=True)
class AwsSettings:
    """Where the stack lives. ``endpoint_url`` is None on real AWS."""

    region: str
    input_bucket: str
    output_bucket: str
    queue_url: str
    dlq_url: str
    endpoint_url: str | None = None

    @classmethod
    def read(cls, r: EnvReader) -> AwsSettings:
        return cls(
            endpoint_url=r.str("AWS_ENDPOINT_URL"),
            region=r.str("AWS_REGION") or r.str("AWS_DEFAULT_REGION", "us-east-1"),
            input_bucket=r.str("PIXFLEET_INPUT_BUCKET", "pixfleet-input"),
            output_bucket=r.str("PIXFLEET_OUTPUT_BUCKET", "pixfleet-output"),
            queue_url=r.required("PIXFLEET_QUEUE_URL"),
            dlq_url=r.str("PIXFLEET_DLQ_URL", ""),
        )

    def env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        env = {
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "PIXFLEET_INPUT_BUCKET": self.input_bucket,
            "PIXFLEET_OUTPUT_BUCKET": self.output_bucket,
            "PIXFLEET_QUEUE_URL": self.queue_url,
            "PIXFLEET_DLQ_URL": self.dlq_url,
        }
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        return env


def read_limits(r: EnvReader) -> Limits:
    return Limits(
        max_bytes=r.int("PIXFLEET_MAX_BYTES", Limits.max_bytes, min=1),
        max_pixels=r.int("PIXFLEET_MAX_PIXELS", Limits.max_pixels, min=1),
        max_frames=r.int("PIXFLEET_MAX_FRAMES", Limits.max_frames, min=1),
    )
