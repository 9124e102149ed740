"""Named presets: the one place that says what ``preset=web`` renders.

A preset is a tuple of :class:`VariantSpec`; a job names a preset or carries an
explicit operation list (:func:`pipeline.transform.spec.parse_operations`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pipeline.errors import UnknownPreset
from pipeline.transform.spec import VariantSpec


@dataclass(frozen=True)
class Preset:
    """A named, described group of variants."""

    name: str
    description: str
    variants: tuple[VariantSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "variants": [v.to_dict() for v in self.variants]}


_PRESETS = (
    Preset(
        "web",
        "Responsive web images: 1600, 800 and 320 px JPEG (fit, never enlarged) plus a 320 px WebP.",
        (
            VariantSpec("w1600", width=1600, height=1600, format="jpeg", quality=82, progressive=True),
            VariantSpec("w800", width=800, height=800, format="jpeg", quality=82, progressive=True),
            VariantSpec("w320", width=320, height=320, format="jpeg", quality=80),
            VariantSpec("w320-webp", width=320, height=320, format="webp", quality=80),
        ),
    ),
    Preset(
        "thumbs",
        "One 256x256 square WebP thumbnail, cropped around the centre.",
        (VariantSpec("thumb", width=256, height=256, mode="fill", format="webp", quality=80),),
    ),
    Preset(
        "avatar",
        "128x128 square avatar cropped around the centre, as WebP and as JPEG for old clients.",
        (
            VariantSpec("avatar-webp", width=128, height=128, mode="fill", format="webp", quality=82),
            VariantSpec("avatar-jpeg", width=128, height=128, mode="fill", format="jpeg", quality=85),
        ),
    ),
    Preset(
        "original-webp",
        "The full-size image re-encoded as WebP (upright, sRGB, metadata stripped).",
        (VariantSpec("original", format="webp", quality=85),),
    ),
)

DEFAULT_PRESET = "web"  # what a job renders when it names neither a preset nor operations
PRESETS: Mapping[str, tuple[VariantSpec, ...]] = MappingProxyType({p.name: p.variants for p in _PRESETS})
PRESET_DESCRIPTIONS: Mapping[str, str] = MappingProxyType({p.name: p.description for p in _PRESETS})


def preset_names() -> list[str]:
    """Known preset names, in definition order."""
    return list(PRESETS)


def get_preset(name: str) -> tuple[VariantSpec, ...]:
    """The variants of preset ``name``; :class:`UnknownPreset` (400) lists the known ones."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise UnknownPreset(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def presets_as_json() -> dict[str, Any]:
    """``{"presets": [{"name", "description", "variants": [...]}, ...]}`` for ``GET /v1/presets``."""
    return {"presets": [p.to_dict() for p in _PRESETS]}
