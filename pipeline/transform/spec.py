"""What a job asks for: variant specifications and input limits.

A job is rendered into one or more *variants*; each :class:`VariantSpec` says
how big, which resize mode, which format and which finishing steps. Presets
(:mod:`pipeline.transform.presets`) are named tuples of variants; a job may also
carry an explicit list (``operations`` in the job message).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from pipeline.errors import InvalidSpec

FORMATS = ("jpeg", "png", "webp", "avif")
MODES = ("fit", "fill", "exact")
GRAVITIES = (
    "center",
    "north",
    "south",
    "east",
    "west",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
)
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif"}
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif"}

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
COLOR_PATTERN = r"^#[0-9a-fA-F]{6}$"
# fullmatch, not match: Python's ``$`` also matches before a trailing newline ("w320\n").
_NAME_RE = re.compile(NAME_PATTERN)
_COLOR_RE = re.compile(COLOR_PATTERN)
MAX_DIMENSION = 10_000


@dataclass(frozen=True)
class VariantSpec:
    """One output of a job.

    ``width``/``height`` bound the output; ``None`` means "unconstrained" on
    that axis (``fit`` only). Modes: ``fit`` keeps the aspect ratio inside the
    box, ``fill`` covers the box and crops with ``gravity``, ``exact`` stretches.
    Images are never enlarged unless ``upscale`` is true.
    """

    name: str
    width: int | None = None
    height: int | None = None
    mode: str = "fit"
    format: str = "jpeg"
    quality: int = 82
    progressive: bool = False
    gravity: str = "center"
    upscale: bool = False
    strip_metadata: bool = True
    grayscale: bool = False
    blur: float = 0.0
    sharpen: float = 0.0
    watermark: str | None = None
    background: str = "#ffffff"

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> VariantSpec:
        """Validate untrusted input; every problem is reported at once in one :class:`InvalidSpec`."""
        if not isinstance(raw, dict):
            raise InvalidSpec("each operation must be a JSON object")
        known = {f.name for f in fields(cls)}
        problems = [f"unknown field {k!r}" for k in raw if k not in known]
        values = {k: _integral(v) if k in _INTEGER_FIELDS else v for k, v in raw.items() if k in known}
        if "name" not in values:
            problems.append("field 'name' is required")
            raise InvalidSpec("; ".join(problems))
        try:
            spec = cls(**values)
        except TypeError as exc:  # pragma: no cover - guarded above
            raise InvalidSpec(str(exc)) from exc
        problems += spec.problems()
        if problems:
            raise InvalidSpec("; ".join(problems))
        return spec

    def problems(self) -> list[str]:
        """Every validation problem of this spec (empty when valid)."""
        p: list[str] = []
        if not isinstance(self.name, str) or not _NAME_RE.fullmatch(self.name):
            p.append("name must match [a-z0-9][a-z0-9_-]{0,39}")
        for axis in ("width", "height"):
            v = getattr(self, axis)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_DIMENSION):
                p.append(f"{axis} must be an integer in 1..{MAX_DIMENSION}")
        if self.mode not in MODES:
            p.append(f"mode must be one of {', '.join(MODES)}")
        elif self.mode in ("fill", "exact") and (self.width is None or self.height is None):
            p.append(f"mode {self.mode!r} needs both width and height")
        if self.format not in FORMATS:
            p.append(f"format must be one of {', '.join(FORMATS)}")
        if not isinstance(self.quality, int) or isinstance(self.quality, bool) or not 1 <= self.quality <= 100:
            p.append("quality must be an integer in 1..100")
        if self.gravity not in GRAVITIES:
            p.append(f"gravity must be one of {', '.join(GRAVITIES)}")
        for flag in ("progressive", "upscale", "strip_metadata", "grayscale"):
            if not isinstance(getattr(self, flag), bool):
                p.append(f"{flag} must be a boolean")
        for amount, top in (("blur", 100.0), ("sharpen", 10.0)):
            v = getattr(self, amount)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= top:
                p.append(f"{amount} must be a number in 0..{top:g}")
        if self.watermark is not None and (not isinstance(self.watermark, str) or not 1 <= len(self.watermark) <= 200):
            p.append("watermark must be a string of 1..200 characters")
        if not isinstance(self.background, str) or not _COLOR_RE.fullmatch(self.background):
            p.append("background must be a colour like '#ffffff'")
        return p


_INTEGER_FIELDS = ("width", "height", "quality")


def _integral(value: Any) -> Any:
    """``24.0`` as ``24``: JSON has one number type, and JSON Schema calls ``24.0`` an integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class Limits:
    """Input limits, checked before full decode where the header allows; ``max_pixels`` bounds outputs too."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_frames: int = 1000


def parse_operations(raw: Any) -> tuple[VariantSpec, ...]:
    """Validate an explicit operation list from a request or message."""
    if not isinstance(raw, list) or not raw:
        raise InvalidSpec("operations must be a non-empty list of variant objects")
    if len(raw) > 16:
        raise InvalidSpec("at most 16 variants per job")
    specs = tuple(VariantSpec.from_dict(item) for item in raw)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidSpec("variant names must be unique")
    return specs
