"""Image transformation: probing uploads, presets, and the one-decode render engine."""

from pipeline.transform.engine import Geometry, Rendition, TransformResult, plan_decode_size, plan_geometry, transform
from pipeline.transform.presets import PRESET_DESCRIPTIONS, PRESETS, Preset, get_preset, preset_names, presets_as_json
from pipeline.transform.probe import PROBE_BYTES, SUPPORTED_FORMATS, Probe, detect_format, probe_header
from pipeline.transform.spec import Limits, VariantSpec, parse_operations

__all__ = [
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "PROBE_BYTES",
    "SUPPORTED_FORMATS",
    "Geometry",
    "Limits",
    "Preset",
    "Probe",
    "Rendition",
    "TransformResult",
    "VariantSpec",
    "detect_format",
    "get_preset",
    "parse_operations",
    "plan_decode_size",
    "plan_geometry",
    "preset_names",
    "presets_as_json",
    "probe_header",
    "transform",
]
