"""Per-process settings, read once from environment variables at the entry point.

Each service declares its settings as a pydantic-settings model (a subclass of
:class:`ServiceSettings`): one field per environment variable, its bounds beside it,
``aws`` and ``limits`` as sections read from the same variables. ``from_env()`` builds
the frozen object once and the entry point passes it down into constructors; nothing
reads the environment at import time, and an object built by hand (``ApiSettings(aws=...)``)
reads no environment at all.

Every invalid variable is reported together in one :class:`SettingsError`, by its name and
value (``PIXFLEET_API_PORT='http': not a valid int``). A rule that spans two variables is
written as a validator of the later one, so it is checked along with everything else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import AliasChoices, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass, is_pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

MiB = 1024 * 1024


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid settings:\n  - " + "\n  - ".join(problems))


def env(name: str | AliasChoices, default: Any = PydanticUndefined, **constraints: Any) -> Any:
    """A field read from the environment variable ``name`` (or the first set of several); no default: required."""
    return Field(default, validation_alias=name, **constraints)


def _comma_list(value: Any) -> Any:
    return tuple(item.strip() for item in value.split(",") if item.strip()) if isinstance(value, str) else value


CommaList = Annotated[tuple[str, ...], BeforeValidator(_comma_list)]  # "a, b" → ("a", "b")


# A section: a group of fields several services share, read from the same variables as the rest
# (and built by hand by their field names).
SECTION = ConfigDict(validate_by_name=True, extra="ignore")


@dataclass(frozen=True, config=SECTION)
class AwsSettings:
    """Where the stack lives. ``endpoint_url`` is None on real AWS."""

    region: str = env(AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"), "us-east-1")
    input_bucket: str = env("PIXFLEET_INPUT_BUCKET", "pixfleet-input")
    output_bucket: str = env("PIXFLEET_OUTPUT_BUCKET", "pixfleet-output")
    queue_url: str = env("PIXFLEET_QUEUE_URL")
    dlq_url: str = env("PIXFLEET_DLQ_URL", "")
    endpoint_url: str | None = env("AWS_ENDPOINT_URL", None)

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


class ServiceSettings(BaseSettings):
    """Base of every process's settings: frozen, fields named by their variables, sections included."""

    model_config = SettingsConfigDict(frozen=True, validate_by_name=True, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # only what it is given: from_env() gives it the environment's values

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Read the settings from ``env`` (default: ``os.environ``); :class:`SettingsError` lists every problem."""
        values = Environment(cls, os.environ if env is None else env)()  # keyed by variable, sections included
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError([_problem(error) for error in exc.errors()]) from None


class Environment(PydanticBaseSettingsSource):
    """A settings source over one mapping: the variables a settings class declares; blank ones count as unset.

    A section (a field whose type is a pydantic dataclass, like :class:`AwsSettings`) gets the
    same variables, for its own fields to pick by their names. Variables nobody declares are
    never read, so an unrelated ``port`` or ``host`` in the environment cannot leak in.
    """

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
        super().__init__(settings_cls)
        declared = _variables(settings_cls)
        self.values = {name: value.strip() for name, value in env.items() if name in declared and value.strip()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ answers for every field at once

    def __call__(self) -> dict[str, Any]:
        sections = {name: self.values for name, field in _fields(self.settings_cls).items() if _is_section(field)}
        return {**self.values, **sections}


def _fields(cls: type) -> dict[str, FieldInfo]:
    return getattr(cls, "__pydantic_fields__", {})


def _is_section(field: FieldInfo) -> bool:
    return is_pydantic_dataclass(field.annotation)  # type: ignore[arg-type]


def _variables(cls: type) -> set[str]:
    """Every variable name the fields of ``cls`` (and of its sections) are read from."""
    names: set[str] = set()
    for field in _fields(cls).values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        if _is_section(field):
            names |= _variables(field.annotation)  # type: ignore[arg-type]
    return names


_WORDING = {
    "int_parsing": "not a valid int",
    "int_from_float": "not a valid int",
    "float_parsing": "not a valid float",
    "bool_parsing": "not a valid boolean",
    "greater_than_equal": "must be >= {ge}",
    "less_than_equal": "must be <= {le}",
    "greater_than": "must be > {gt}",
    "less_than": "must be < {lt}",
    "literal_error": "must be {expected}",
}


def _problem(error: ErrorDetails) -> str:
    """One line of a :class:`SettingsError`: the variable, its value, and what it must be."""
    loc = error["loc"]
    if error["type"] == "value_error":  # a rule of our own: its message names the variables
        return str(error.get("ctx", {}).get("error", error["msg"]))
    name = str(loc[-1]) if loc else "settings"
    if error["type"] == "missing":
        return f"{name} is required"
    wording = _WORDING.get(error["type"])
    bounds = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in error.get("ctx", {}).items()}
    text = wording.format(**bounds) if wording else error["msg"][:1].lower() + error["msg"][1:]
    return f"{name}={error['input']!r}: {text}"
