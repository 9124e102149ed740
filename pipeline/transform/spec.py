"""What a job asks for: variant specifications and input limits.

A job is rendered into one or more *variants*; each :class:`VariantSpec` says
how big, which resize mode, which format and which finishing steps. Presets
(:mod:`pipeline.transform.presets`) are named tuples of variants; a job may also
carry an explicit list (``operations`` in an upload or a job message).

One description, two renderings: :class:`VariantSpec` and :class:`Operations` are
pydantic models. They validate every operation list, from an upload (the API) or a
job message (the worker), and the API renders the same models into its OpenAPI
document (``components/schemas``), so the document cannot disagree with the validator.

What is guaranteed: :func:`parse_operations` and :meth:`VariantSpec.from_dict` accept
exactly what the schema allows (plus names unique within a job, which JSON Schema
cannot say) and raise :class:`~pipeline.errors.InvalidSpec` otherwise, with one public
message that names every bad field at once, in our words (never pydantic's, never a
Python type name). Integers are JSON's: ``24`` or ``24.0``, never ``"24"`` or ``true``.
What is not: the one rule spanning fields (``fill``/``exact`` need both sides) is
checked only once every field is valid.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from pipeline.errors import InvalidSpec, problem_list
from pipeline.transform.media import EXTENSIONS, MEDIA_TYPES

Format = Literal["jpeg", "png", "webp", "avif"]
Mode = Literal["fit", "fill", "exact"]
Gravity = Literal["center", "north", "south", "east", "west", "northeast", "northwest", "southeast", "southwest"]
FORMATS: tuple[str, ...] = get_args(Format)
MODES: tuple[str, ...] = get_args(Mode)
GRAVITIES: tuple[str, ...] = get_args(Gravity)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"  # pydantic's regex engine: `$` is the end, even before a "\n"
COLOR_PATTERN = r"^#[0-9a-fA-F]{6}$"
MAX_DIMENSION = 10_000
MAX_VARIANTS = 16


def _integral(value: Any) -> Any:
    """``24.0`` as ``24``: JSON has one number type, and JSON Schema calls ``24.0`` an integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Strict: no "24" for 24, no 1 for true. (Bounds before the validator, or pydantic cannot render them.)
Dimension = Annotated[int, Field(ge=1, le=MAX_DIMENSION), BeforeValidator(_integral), Strict()]
Quality = Annotated[int, Field(ge=1, le=100), BeforeValidator(_integral), Strict()]
Flag = Annotated[bool, Strict()]

# What each field must be, as an error message says it: pydantic's own wording names a failed
# check ("Input should be less than or equal to 100"), ours the rule.
_RULES = {
    "name": f"name must match {NAME_PATTERN[1:-1]}",
    "width": f"width must be an integer in 1..{MAX_DIMENSION}",
    "height": f"height must be an integer in 1..{MAX_DIMENSION}",
    "mode": f"mode must be one of {', '.join(MODES)}",
    "format": f"format must be one of {', '.join(FORMATS)}",
    "quality": "quality must be an integer in 1..100",
    "progressive": "progressive must be a boolean",
    "gravity": f"gravity must be one of {', '.join(GRAVITIES)}",
    "upscale": "upscale must be a boolean",
    "strip_metadata": "strip_metadata must be a boolean",
    "grayscale": "grayscale must be a boolean",
    "blur": "blur must be a number in 0..100",
    "sharpen": "sharpen must be a number in 0..10",
    "watermark": "watermark must be a string of 1..200 characters",
    "background": "background must be a colour like '#ffffff'",
}


@dataclass(
    frozen=True,
    config=ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": "One output of a job. `fill` and `exact` need both width and height; "
            "`fit` bounds whichever are given. Images are never enlarged unless `upscale` is true.",
            # The model validator below, as JSON Schema: mode fit (or left out), or both sides given.
            # (anyOf rather than if/then: schemathesis' coverage phase cannot judge binary
            # multipart parts against a schema holding if/then.)
            "anyOf": [
                {"properties": {"mode": {"const": "fit"}}},
                {
                    "required": ["width", "height"],
                    "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
                },
            ],
        },
    ),
)
class VariantSpec:
    """One output of a job.

    ``width``/``height`` bound the output; ``None`` means "unconstrained" on
    that axis (``fit`` only). Modes: ``fit`` keeps the aspect ratio inside the
    box, ``fill`` covers the box and crops with ``gravity``, ``exact`` stretches.
    Images are never enlarged unless ``upscale`` is true.
    """

    name: Annotated[str, Strict(), Field(pattern=NAME_PATTERN, description="Unique within the job; names the output.")]
    width: Dimension | None = None
    height: Dimension | None = None
    mode: Mode = "fit"
    format: Format = "jpeg"
    quality: Quality = 82
    progressive: Flag = False
    gravity: Gravity = "center"
    upscale: Flag = False
    strip_metadata: Flag = True
    grayscale: Flag = False
    blur: Annotated[float, Strict(), Field(ge=0, le=100)] = 0.0
    sharpen: Annotated[float, Strict(), Field(ge=0, le=10)] = 0.0
    watermark: Annotated[str, Strict(), Field(min_length=1, max_length=200)] | None = None
    background: Annotated[str, Strict(), Field(pattern=COLOR_PATTERN)] = "#ffffff"

    @model_validator(mode="after")
    def _box_for_fill_and_exact(self) -> VariantSpec:
        if self.mode in ("fill", "exact") and (self.width is None or self.height is None):
            raise ValueError(f"mode {self.mode!r} needs both width and height")
        return self

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def content_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> VariantSpec:
        """Validate untrusted input; every problem is reported at once in one :class:`InvalidSpec`."""
        try:
            return _VARIANT.validate_python(raw)
        except ValidationError as exc:
            raise InvalidSpec(problem_list(_problems(exc.errors(), indexed=False))) from None


class Operations(RootModel[Annotated[list[VariantSpec], Field(min_length=1, max_length=MAX_VARIANTS)]]):
    """An explicit list of variant specs, instead of a preset (an upload's ``operations`` field).

    Names must be unique within the list (JSON Schema cannot say that of one field).
    """

    @model_validator(mode="after")
    def _unique_names(self) -> Operations:
        names = [spec.name for spec in self.root]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        return self


_VARIANT = TypeAdapter(VariantSpec)


def parse_operations(raw: Any) -> tuple[VariantSpec, ...]:
    """Validate an explicit operation list from a request or message (see the module docstring)."""
    try:
        return tuple(Operations.model_validate(raw).root)
    except ValidationError as exc:
        errors = exc.errors()
        indexed = isinstance(raw, list) and len({e["loc"][0] for e in errors if e["loc"]}) > 1
        raise InvalidSpec(problem_list(_problems(errors, indexed=indexed))) from None


def _problems(errors: list[ErrorDetails], *, indexed: bool) -> list[str]:
    """Our message for each pydantic error: unknown fields first, then the fields in order, each once.

    ``indexed`` prefixes each problem with its variant (``operations[2]: ...``) when more than
    one variant of a list is wrong.
    """
    unknown = ("extra_forbidden", "unexpected_keyword_argument")
    problems: list[str] = []

    def order(error: ErrorDetails) -> tuple[int, bool]:
        variant = error["loc"][0] if error["loc"] and isinstance(error["loc"][0], int) else -1
        return variant, error["type"] not in unknown

    for error in sorted(errors, key=order):
        loc = error["loc"]
        if loc and isinstance(loc[0], int):  # a variant of an operation list
            where, loc = f"operations[{loc[0]}]: " if indexed else "", loc[1:]
        else:
            where = ""
        field = str(loc[0]) if loc else None
        if error["type"] in unknown:
            text = f"unknown field {field!r}"
        elif error["type"] == "missing":
            text = f"field {field!r} is required"
        elif field in _RULES:
            text = _RULES[field]
        elif error["type"] == "value_error":  # our own model validators: their message is the text
            text = str(error["ctx"]["error"])
        elif error["type"] in ("dataclass_type", "dataclass_args_type", "model_type"):
            text = "each operation must be a JSON object"
        elif error["type"] == "too_long":
            text = f"at most {MAX_VARIANTS} variants per job"
        else:  # not a list, or an empty one
            text = "operations must be a non-empty list of variant objects"
        if where + text not in problems:
            problems.append(where + text)
    return problems


@dataclass(frozen=True, config=ConfigDict(validate_by_name=True))
class Limits:
    """Input limits, checked before full decode where the header allows; ``max_pixels`` bounds outputs too.

    The services read them from the environment variables named here (their settings' ``limits``).
    """

    max_bytes: Annotated[int, Field(ge=1, validation_alias="PIXFLEET_MAX_BYTES")] = 50 * 1024 * 1024
    max_pixels: Annotated[int, Field(ge=1, validation_alias="PIXFLEET_MAX_PIXELS")] = 50_000_000
    max_frames: Annotated[int, Field(ge=1, validation_alias="PIXFLEET_MAX_FRAMES")] = 1000
