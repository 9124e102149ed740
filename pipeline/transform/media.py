"""Image formats by name: their media types, output extensions and file-name suffixes.

The one map of them. A format's name is the probe's (:data:`pipeline.transform.probe.SUPPORTED_FORMATS`
for inputs, :data:`pipeline.transform.spec.FORMATS` for outputs); the API stores an upload with
its format's media type, the worker an output, and the tools pick a file's type by its suffix.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

UNKNOWN_MEDIA_TYPE = "application/octet-stream"

MEDIA_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "jpeg": "image/jpeg",
        "png": "image/png",
        "gif": "image/gif",
        "webp": "image/webp",
        "avif": "image/avif",
        "tiff": "image/tiff",
        "bmp": "image/bmp",
    }
)
# The extension an output of each format is stored with (results/{job}/{variant}.{ext}).
EXTENSIONS: Mapping[str, str] = MappingProxyType({"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif"})
# File-name suffix → format, for files on disk (``pixfleet submit``, the load tools).
SUFFIXES: Mapping[str, str] = MappingProxyType(
    {
        ".jpg": "jpeg",
        ".jpeg": "jpeg",
        ".png": "png",
        ".gif": "gif",
        ".webp": "webp",
        ".avif": "avif",
        ".tif": "tiff",
        ".tiff": "tiff",
        ".bmp": "bmp",
    }
)
SUFFIX_MEDIA_TYPES: Mapping[str, str] = MappingProxyType({s: MEDIA_TYPES[f] for s, f in SUFFIXES.items()})


def media_type(fmt: str) -> str:
    """The media type of format ``fmt`` (``application/octet-stream`` for a format we do not know)."""
    return MEDIA_TYPES.get(fmt, UNKNOWN_MEDIA_TYPE)
