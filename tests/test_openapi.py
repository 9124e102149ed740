"""The OpenAPI document: exact, valid 3.1, matching the routes, and held to the live API by schemathesis.

The schemathesis runs start the CLI as a subprocess against the API of the shared
embedded stack (and against an in-process API with keys), with every check, stateful
links, a fixed seed and a bounded number of examples; the hooks in
``tests/schemathesis_hooks.py`` give uploads real images and valid operations. On a
failure the test prints schemathesis' report. By hand, against ``pixfleet up``::

    PYTHONPATH=.:tests SCHEMATHESIS_HOOKS=schemathesis_hooks \\
        schemathesis run http://127.0.0.1:8080/openapi.json --checks all --seed 1 \\
        --max-examples 100 --workers 1 --generation-database none
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate
from pydantic import ValidationError

import images
from pipeline.errors import InvalidSpec
from services.api.settings import ApiSettings
from pipeline.transform.spec import Operations, parse_operations
from services.api.app import create_app
from services.api.openapi import openapi_document
from stack_fixtures import StackClient, queue_drained

on_the_stack = pytest.mark.asyncio(loop_scope="session")  # the session's event loop runs the shared stack

TESTS = Path(__file__).parent
REPO = TESTS.parent
SEED = 1
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def settings(**kwargs: Any) -> ApiSettings:
    return ApiSettings.from_env({"PIXFLEET_QUEUE_URL": "http://127.0.0.1:1/000000000000/q", **kwargs})


# --- the document on its own -------------------------------------------------------------


@pytest.mark.parametrize("keys", ["", "k1,k2"])
def test_every_route_is_documented_and_every_documented_operation_is_routed(keys: str) -> None:
    s = settings(PIXFLEET_API_KEYS=keys)
    routed = {
        (route.resource.canonical, route.method.lower())
        for route in create_app(s).router.routes()
        if route.resource is not None
    }
    doc = openapi_document(s)
    documented = {(path, method) for path, item in doc["paths"].items() for method in item if method in HTTP_METHODS}
    # HEAD is implied by GET (RFC 9110; aiohttp adds it to every GET route), not written down.
    implied = {(path, "head") for path, method in documented if method == "get"}
    assert routed - documented - implied == set(), "routes missing from the document"
    assert documented - routed == set(), "documented operations nobody serves"


@pytest.mark.parametrize("keys", ["", "k1"])
def test_the_document_is_valid_openapi_3_1_for_any_settings(keys: str) -> None:
    doc = openapi_document(settings(PIXFLEET_API_KEYS=keys))
    validate(doc)  # raises on the first violation of the OpenAPI 3.1 schema
    assert doc["openapi"] == "3.1.0"


def test_api_keys_are_documented_exactly_where_they_are_checked() -> None:
    plain = openapi_document(settings())
    keyed = openapi_document(settings(PIXFLEET_API_KEYS="k1"))
    assert "securitySchemes" not in plain["components"]
    assert keyed["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, item in keyed["paths"].items():
        for op in item.values():
            protected = path.startswith("/v1/")
            assert op["security"] == ([{"apiKey": []}] if protected else []), path
            assert ("401" in op["responses"]) is protected, path
            assert "401" not in plain["paths"][path][next(iter(item))]["responses"], path


def test_every_operation_documents_its_errors_with_the_error_schema() -> None:
    doc = openapi_document(settings())
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "500" in op["responses"], f"{method} {path}"
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")) and path != "/healthz":
                    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                if status == "503":
                    assert "Retry-After" in answer["headers"], f"{method} {path}"


def test_the_generated_schemas_speak_json_schema_not_pydantic() -> None:
    text = json.dumps(openapi_document(settings()))
    for keyword in ("ge", "le", "gt", "lt", "min_length", "max_length"):  # constraints pydantic could not render
        assert f'"{keyword}":' not in text, keyword


def test_limits_and_enums_come_from_the_code_that_owns_them() -> None:
    doc = openapi_document(settings(PIXFLEET_MAX_BYTES="1234"))
    post = doc["paths"]["/v1/images"]["post"]
    assert post["parameters"][0]["schema"]["enum"] == ["web", "thumbs", "avatar", "original-webp"]
    multipart = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert (multipart["properties"]["file"]["minItems"], multipart["properties"]["file"]["maxItems"]) == (1, 20)
    assert multipart["properties"]["file"]["items"]["minLength"] == 1
    assert post["requestBody"]["content"]["application/octet-stream"]["schema"]["minLength"] == 1
    assert "1234 bytes" in post["responses"]["413"]["description"]
    schemas = doc["components"]["schemas"]
    assert schemas["Job"]["properties"]["status"]["enum"] == [
        "awaiting_upload",
        "queued",
        "processing",
        "succeeded",
        "failed",
    ]
    assert schemas["Output"]["properties"]["format"]["enum"] == ["jpeg", "png", "webp", "avif"]
    assert schemas["VariantSpec"]["properties"]["mode"]["enum"] == ["fit", "fill", "exact"]
    quality = schemas["VariantSpec"]["properties"]["quality"]
    assert (quality["type"], quality["minimum"], quality["maximum"], quality["default"]) == ("integer", 1, 100, 82)


# One model: the document renders it, parse_operations (the API and the worker) runs it on the
# decoded JSON. Its JSON-mode verdict (what a client holding the document expects) and its verdict
# on the decoded value must agree, or the document lies.
OPERATION_CASES = [
    ("minimal", [{"name": "a"}], True),
    (
        "full",
        [
            {
                "name": "w-1_x",
                "width": 10,
                "height": 20,
                "mode": "fill",
                "format": "avif",
                "quality": 1,
                "progressive": True,
                "gravity": "northeast",
                "upscale": True,
                "strip_metadata": False,
                "grayscale": True,
                "blur": 100,
                "sharpen": 0.5,
                "watermark": "x",
                "background": "#A0b0C0",
            }
        ],
        True,
    ),
    ("nulls where allowed", [{"name": "a", "width": None, "height": None, "watermark": None}], True),
    ("sixteen", [{"name": f"v{i}"} for i in range(16)], True),
    ("integral floats", [{"name": "a", "width": 24.0, "height": 1.0, "quality": 80.0}], True),
    ("empty list", [], False),
    ("seventeen", [{"name": f"v{i}"} for i in range(17)], False),
    ("not a list", {"name": "a"}, False),
    ("not an object", ["a"], False),
    ("no name", [{"width": 10}], False),
    ("bad name", [{"name": "A"}], False),
    ("name with a newline", [{"name": "a\n"}], False),
    ("unknown field", [{"name": "a", "colour": "red"}], False),
    ("zero width", [{"name": "a", "width": 0}], False),
    ("too wide", [{"name": "a", "width": 10_001}], False),
    ("width as a string", [{"name": "a", "width": "10"}], False),
    ("width as a bool", [{"name": "a", "width": True}], False),
    ("fill without a height", [{"name": "a", "mode": "fill", "width": 10}], False),
    ("exact with a null width", [{"name": "a", "mode": "exact", "width": None, "height": 5}], False),
    ("unknown mode", [{"name": "a", "mode": "crop"}], False),
    ("unknown format", [{"name": "a", "format": "gif"}], False),
    ("quality 0", [{"name": "a", "quality": 0}], False),
    ("quality as a float", [{"name": "a", "quality": 50.5}], False),
    ("blur over 100", [{"name": "a", "blur": 100.5}], False),
    ("sharpen under 0", [{"name": "a", "sharpen": -1}], False),
    ("flag as an int", [{"name": "a", "grayscale": 1}], False),
    ("empty watermark", [{"name": "a", "watermark": ""}], False),
    ("short colour", [{"name": "a", "background": "#fff"}], False),
    ("colour with a newline", [{"name": "a", "background": "#ffffff\n"}], False),
]


@pytest.mark.parametrize(("raw", "valid"), [c[1:] for c in OPERATION_CASES], ids=[c[0] for c in OPERATION_CASES])
def test_the_operations_model_and_the_validator_agree(raw: Any, valid: bool) -> None:
    try:
        parse_operations(raw)
        accepted = True
    except InvalidSpec:
        accepted = False
    try:
        Operations.model_validate_json(json.dumps(raw))
        described = True
    except ValidationError:
        described = False
    assert (accepted, described) == (valid, valid)


# --- regressions schemathesis found, through the live API ----------------------------------


@on_the_stack
async def test_a_405_keeps_its_json_body_and_says_what_is_allowed(client: StackClient) -> None:
    async with client.http.get(f"{client.api}/v1/images") as r:
        assert r.status == 405
        assert set(r.headers["Allow"].split(",")) == {"POST"}
        assert (await r.json())["error"]["code"] == "method_not_allowed"
    async with client.http.request("TRACE", f"{client.api}/v1/jobs/{'0' * 32}") as r:
        assert (r.status, set(r.headers["Allow"].split(","))) == (405, {"GET", "HEAD"})


@on_the_stack
@pytest.mark.parametrize(
    ("query", "fields", "headers", "code"),
    [
        ({"preset": ""}, None, {}, "unknown_preset"),
        ({}, [("operations", "null")], {}, "invalid_spec"),
        ({}, [("preset", "thumbs")], {}, "invalid_request"),  # an unknown field is refused, not ignored
        ({}, None, {"Content-Type": "multipart/form-data"}, "malformed_request"),  # no boundary: malformed HTTP
    ],
    ids=["empty preset", "null operations", "unknown field", "multipart without a boundary"],
)
async def test_uploads_the_document_calls_invalid_are_refused(
    client: StackClient, query: dict[str, str], fields: list[tuple[str, str]] | None, headers: dict[str, str], code: str
) -> None:
    if headers:
        data: Any = b"--x\r\n"
    else:
        data = aiohttp.FormData()
        for name, value in fields or []:
            data.add_field(name, value)
        data.add_field("file", images.photo_jpeg(64, 48), filename="a.jpg", content_type="image/jpeg")
    async with client.http.post(f"{client.api}/v1/images", params=query, data=data, headers=headers) as r:
        assert (r.status, (await r.json())["error"]["code"]) == (400, code)


@on_the_stack
async def test_static_files_are_served_with_their_documented_type_and_others_are_json_404s(client: StackClient) -> None:
    async with client.http.get(f"{client.api}/static/app.js") as r:
        assert (r.status, r.content_type) == (200, "text/javascript")
    for name in ("nope.js", ".", "../app.py"):
        async with client.http.get(f"{client.api}/static/{name}") as r:
            assert (r.status, (await r.json())["error"]["code"]) == (404, "not_found"), name


# --- schemathesis against the live API ------------------------------------------------------


async def run_schemathesis(url: str, report_dir: Path, *extra: str, examples: int) -> dict[str, Any]:
    """``schemathesis run`` with every check and stateful links; the JSON report, or a failure with its text."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",  # the venv's schemathesis
        "--checks", "all",
        "--seed", str(SEED),
        "--max-examples", str(examples),
        "--workers", "1",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--continue-on-failure",
        "--no-color",
        "--report", "json",
        "--report-dir", str(report_dir),
        *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}",
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "COLUMNS": "80",  # its report, printed on a failure, at 80 columns
    }
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=report_dir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=540)
    text = output.decode(errors="replace")
    reports = sorted(report_dir.glob("json-*.json"))
    assert process.returncode == 0 and reports, f"schemathesis exited {process.returncode}:\n{text}"
    report: dict[str, Any] = json.loads(reports[-1].read_text())
    cases = report["test_cases"]
    print(
        f"\nschemathesis: {report['operations']['tested']} operations, {cases['generated']} cases, "
        f"{report['filtered']} filtered, {len(report['failures'])} failures, {time.monotonic() - started:.0f}s"
    )
    return report


async def answers(client: StackClient, route: str, status: int) -> float:
    """How many times the API answered ``route`` with ``status`` (its request histogram's count)."""
    async with client.http.get(f"{client.api}/metrics") as r:
        text = await r.text()
    sample = f'pixfleet_api_request_seconds_count{{route="{route}",status="{status}"}} '
    return sum(float(line[len(sample) :]) for line in text.splitlines() if line.startswith(sample))


@on_the_stack
@pytest.mark.slow
async def test_schemathesis_finds_nothing_against_the_live_api(client: StackClient, tmp_path: Path) -> None:
    jobs_before = await answers(client, "/v1/jobs/{job_id}", 200)
    report = await run_schemathesis(client.api, tmp_path, examples=100)
    assert report["failures"] == [] and report["errors"] == []
    assert report["operations"]["tested"] == report["operations"]["total"] == 11
    assert report["test_cases"]["generated"] > 500
    # The links took the run into real jobs: GET /v1/jobs/{job_id} answered 200, not only 404.
    assert await answers(client, "/v1/jobs/{job_id}", 200) > jobs_before
    await queue_drained(client, timeout=300)  # leave the shared stack as idle as it was


@on_the_stack
@pytest.mark.slow
async def test_schemathesis_finds_nothing_against_an_api_with_keys(client: StackClient, tmp_path: Path) -> None:
    from aiohttp.test_utils import TestServer

    keyed = ApiSettings(aws=client.stack.aws, api_keys=("s3cret",))
    async with TestServer(create_app(keyed, credentials=client.stack.bootstrap), host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        report = await run_schemathesis(url, tmp_path, "--header", "X-API-Key: s3cret", examples=25)
    assert report["failures"] == [] and report["errors"] == []
    await queue_drained(client, timeout=300)
