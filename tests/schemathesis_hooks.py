"""schemathesis hooks for the upload API: uploads carry real images and valid operations.

Loaded by ``tests/test_openapi.py`` through ``SCHEMATHESIS_HOOKS``. ``POST /v1/images``
takes two kinds of content that JSON Schema describes but does not assert, so
schemathesis generates them wrong and then calls the API's refusal a failure:

* the bytes of an upload must decode as an image: the document says ``format: binary``
  (an annotation); schemathesis draws arbitrary bytes, or its PDF and ZIP samples, which
  the API rightly refuses with 415;
* ``operations`` is a string holding JSON that matches ``contentSchema`` (an annotation
  too); schemathesis draws any JSON for ``contentMediaType: application/json``.

Two hooks make that right without touching what schemathesis judges:

* ``flatmap_body`` swaps such content for valid content of the same validity under the
  document's schema: a non-empty binary value becomes a real image (Pillow), an
  ``operations`` string holding JSON becomes one drawn from the document's own
  ``Operations`` schema. Empty or mistyped values, the ones a negative case is made of,
  are left alone, so a negative case stays negative and a positive one stays positive.
* ``filter_failure`` drops one verdict only: "schema-valid request rejected" for an
  upload whose content was not valid after all (the coverage phase builds its cases
  without body hooks): a file Pillow cannot open, or operations that break
  ``contentSchema``. Every other failure stands.

The drawn operations narrow the document's schema in one place, to keep the test's jobs
cheap on two shared cores: sides of at most 64 px (the API allows 10,000, which the
workers would render for minutes).
"""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import jsonschema
import schemathesis
from hypothesis import strategies as st
from PIL import Image

OPERATION = "POST /v1/images"
MAX_TEST_SIDE = 64
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP")
_cache: dict[tuple[str, int], Any] = {}


def _encode(fmt: str, width: int, height: int, color: tuple[int, int, int], alpha: bool) -> bytes:
    mode = "RGBA" if alpha and fmt in ("PNG", "WEBP", "TIFF") else "RGB"
    im = Image.new(mode, (width, height), color + ((128,) if mode == "RGBA" else ()))
    im.putpixel((0, 0), (255 - color[0], 255 - color[1], 255 - color[2], *((255,) if mode == "RGBA" else ())))
    out = io.BytesIO()
    im.save(out, fmt)
    return out.getvalue()


IMAGES = st.builds(
    _encode,
    st.sampled_from(FORMATS),
    st.integers(1, MAX_TEST_SIDE),
    st.integers(1, MAX_TEST_SIDE),
    st.tuples(*(st.integers(0, 255),) * 3),
    st.booleans(),
)


def _names_unique(value: Any) -> bool:
    names = [spec.get("name") for spec in value if isinstance(spec, dict)]
    return len(set(names)) == len(names)  # JSON Schema cannot say "unique by one field"


def _document_operations(document: dict[str, Any], narrow: bool) -> dict[str, Any]:
    """The document's ``Operations`` schema with its components, optionally narrowed to 64 px sides."""
    schemas = copy.deepcopy(document["components"]["schemas"])
    if narrow:
        for axis in ("width", "height"):
            sides = schemas["VariantSpec"]["properties"][axis]["anyOf"]
            next(s for s in sides if s.get("type") == "integer")["maximum"] = MAX_TEST_SIDE
    return schemas


def _operations_strategy(document: dict[str, Any]) -> st.SearchStrategy[str]:
    """JSON strings drawn (by schemathesis itself) from the document's ``Operations`` schema."""
    key = ("strategy", id(document))
    if key not in _cache:
        probe = {
            "openapi": "3.1.0",
            "info": {"title": "operations", "version": "1"},
            "paths": {
                "/operations": {
                    "post": {
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Operations"}}},
                        },
                        "responses": {"200": {"description": "ok"}},
                    }
                }
            },
            "components": {"schemas": _document_operations(document, narrow=True)},
        }
        operation = schemathesis.openapi.from_dict(probe)["/operations"]["POST"]
        # Filtered by the schema itself: schemathesis draws an ``anyOf`` branch without the
        # ``properties`` beside it (a width of -410560098 under "mode: fit"), about 4 times in 10.
        texts = operation.as_strategy().map(lambda case: json.dumps(case.body))
        _cache[key] = texts.filter(lambda text: _operations_valid(document, text))
    return _cache[key]


def _operations_valid(document: dict[str, Any], text: str) -> bool:
    key = ("validator", id(document))
    if key not in _cache:
        schemas = _document_operations(document, narrow=False)
        root = {**schemas["Operations"], "$defs": schemas}
        local = json.loads(json.dumps(root).replace("#/components/schemas/", "#/$defs/"))
        _cache[key] = jsonschema.Draft202012Validator(local)
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return bool(_cache[key].is_valid(value)) and _names_unique(value)


def _data(value: Any) -> bytes | None:
    """The bytes of a binary value schemathesis generated (its ``Binary`` wrapper, or bytes)."""
    data = getattr(value, "data", value)
    return bytes(data) if isinstance(data, bytes | bytearray) else None


def _is_image(value: Any) -> bool:
    data = _data(value)
    try:
        with Image.open(io.BytesIO(data or b"")) as im:
            im.load()
        return True
    except Exception:  # any failure to decode means "not an image"
        return False


def _is_json(value: Any) -> bool:
    try:
        json.loads(value)
        return True
    except (TypeError, ValueError):
        return False


@schemathesis.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if context.operation is None or context.operation.label != OPERATION:
        return st.just(body)
    data = _data(body)
    if data:  # a raw image body
        return IMAGES
    if not isinstance(body, dict):
        return st.just(body)
    parts: dict[str, st.SearchStrategy[Any]] = {name: st.just(value) for name, value in body.items()}
    files = body.get("file")
    if isinstance(files, list):
        parts["file"] = st.tuples(*(IMAGES if _data(f) else st.just(f) for f in files)).map(list)
    if isinstance(body.get("operations"), str) and _is_json(body["operations"]):
        parts["operations"] = _operations_strategy(context.operation.schema.raw_schema)
    return st.fixed_dictionaries(parts)


@schemathesis.hook
def filter_failure(context: schemathesis.HookContext, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but "schema-valid request rejected" for content that was not valid."""
    if failure.code != "ST202" or case.operation.label != OPERATION:
        return True
    body = case.body
    if _data(body) is not None:
        return _is_image(body)
    if isinstance(body, dict):
        files = body["file"] if isinstance(body.get("file"), list) else []
        ops = body.get("operations")
        ops_ok = not isinstance(ops, str) or _operations_valid(case.operation.schema.raw_schema, ops)
        return all(_is_image(f) for f in files) and ops_ok
    return True
