"""The upload API over HTTP, against the embedded stack (moto server + API and worker processes)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import images
from pipeline.messages import job_id_for_object, new_job_id
from stack_fixtures import MiB, StackClient, queue_drained

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            "web",
            {
                "w1600": ("JPEG", (1600, 1200)),
                "w800": ("JPEG", (800, 600)),
                "w320": ("JPEG", (320, 240)),
                "w320-webp": ("WEBP", (320, 240)),
            },
        ),
        ("thumbs", {"thumb": ("WEBP", (256, 256))}),
    ],
)
async def test_upload_renders_every_variant_of_the_preset(client: StackClient, preset: str, expected: dict) -> None:
    status, body = await client.upload(images.photo_jpeg(2400, 1800), preset=preset, filename="photo.jpg")
    assert status == 202, body
    assert body["status_url"].endswith(f"/v1/jobs/{body['job_id']}")
    job = await client.wait(body["job_id"])
    assert job["status"] == "succeeded", job
    assert job["error"] is None
    assert {o["variant"] for o in job["outputs"]} == set(expected)
    for output in job["outputs"]:
        fmt, size = expected[output["variant"]]
        im = await client.fetch_image(output["url"])
        assert (im.format, im.size) == (fmt, size)
        assert (output["width"], output["height"]) == size
        assert output["bytes"] > 0
        assert "exif" not in im.info


async def test_raw_body_upload(client: StackClient) -> None:
    async with client.http.post(
        f"{client.api}/v1/images?preset=thumbs", data=images.webp(600, 400), headers={"Content-Type": "image/webp"}
    ) as r:
        assert r.status == 202
        body = await r.json()
    job = await client.wait(body["job_id"])
    assert job["status"] == "succeeded"
    assert job["source"]["format"] == "webp"


async def test_several_files_give_a_list_of_jobs(client: StackClient) -> None:
    form = aiohttp.FormData()
    for i in range(3):
        form.add_field("file", images.photo_jpeg(500, 400, seed=i), filename=f"p{i}.jpg", content_type="image/jpeg")
    async with client.http.post(f"{client.api}/v1/images?preset=thumbs", data=form) as r:
        assert r.status == 202
        jobs = await r.json()
    assert isinstance(jobs, list) and len({j["job_id"] for j in jobs}) == 3
    for j in jobs:
        assert (await client.wait(j["job_id"]))["status"] == "succeeded"


async def test_explicit_operations_instead_of_a_preset(client: StackClient) -> None:
    ops = [{"name": "square", "width": 100, "height": 100, "mode": "fill", "format": "png", "grayscale": True}]
    form = aiohttp.FormData()
    form.add_field("operations", json.dumps(ops))
    form.add_field("file", images.photo_jpeg(640, 480), filename="a.jpg", content_type="image/jpeg")
    async with client.http.post(f"{client.api}/v1/images", data=form) as r:
        body = await r.json()
        assert r.status == 202, body
    job = await client.wait(body["job_id"])
    im = await client.fetch_image(job["outputs"][0]["url"])
    assert (im.format, im.size, im.mode) == ("PNG", (100, 100), "L")


async def test_presigned_post_goes_through_the_s3_event_path(client: StackClient) -> None:
    async with client.http.post(f"{client.api}/v1/uploads?preset=thumbs&content_type=image/png") as r:
        assert r.status == 201
        grant = await r.json()
    upload = grant["upload"]
    assert upload["fields"]["key"] == f"incoming/{grant['job_id']}/original"
    assert upload["fields"]["Content-Type"] == "image/png"
    # Reserved, not yet uploaded: a status of its own until the POST expires.
    pending = await client.job(grant["job_id"])
    assert pending["status"] == "awaiting_upload" and pending["expires_at"] == grant["expires_at"]
    form = aiohttp.FormData()
    for name, value in upload["fields"].items():  # the fields exactly as given: nothing to add
        form.add_field(name, value)
    form.add_field("file", images.png_rgba(300, 200), filename="x.png", content_type="image/png")
    async with client.http.post(upload["url"], data=form) as r:
        assert r.status in (200, 201, 204), await r.text()
    job = await client.wait(grant["job_id"])
    assert job["status"] == "succeeded", job
    assert job["preset"] == "thumbs"
    assert [o["variant"] for o in job["outputs"]] == ["thumb"]


async def test_presigned_post_refuses_a_body_over_the_limit(client: StackClient) -> None:
    async with client.http.post(f"{client.api}/v1/uploads") as r:
        grant = await r.json()
    form = aiohttp.FormData()
    for name, value in grant["upload"]["fields"].items():
        form.add_field(name, value)
    form.add_field("file", b"\xff\xd8\xff" + bytes(grant["max_bytes"]), filename="big.jpg", content_type="image/jpeg")
    async with client.http.post(grant["upload"]["url"], data=form) as r:
        assert r.status == 400, await r.text()  # as S3: 400 EntityTooLarge
        assert "EntityTooLarge" in await r.text()
    assert await client.keys(client.stack.aws.input_bucket, f"incoming/{grant['job_id']}/") == []


async def test_presigned_post_refusal_says_which_condition_failed(client: StackClient) -> None:
    async with client.http.post(f"{client.api}/v1/uploads") as r:
        grant = await r.json()
    form = aiohttp.FormData()
    for name, value in {**grant["upload"]["fields"], "Content-Type": "text/html"}.items():
        form.add_field(name, value)
    form.add_field("file", images.photo_jpeg(64, 64), filename="x.jpg", content_type="image/jpeg")
    async with client.http.post(grant["upload"]["url"], data=form) as r:
        text = await r.text()
    assert r.status == 403 and 'Policy Condition failed: ["starts-with", "$Content-Type", "image/"]' in text, text


async def test_presigned_upload_never_made_reads_404_once_expired(client: StackClient) -> None:
    async with client.http.post(f"{client.api}/v1/uploads?content_type=text/plain") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_request"
    async with client.http.get(f"{client.api}/v1/jobs/{'0' * 32}") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"


async def test_an_overwritten_incoming_object_renders_its_latest_content(client: StackClient) -> None:
    """`aws s3 cp` to the same key twice: the newer photo wins; duplicates and late old events change nothing."""
    stack, key = client.stack, f"incoming/cp-{new_job_id()[:8]}.jpg"
    old, new = images.photo_jpeg(640, 480, seed=1), images.photo_jpeg(480, 640, seed=2)

    async def put(data: bytes) -> str:
        async with client.admin("s3") as s3:
            return (
                await s3.put_object(Bucket=stack.aws.input_bucket, Key=key, Body=data, Metadata={"preset": "thumbs"})
            )["ETag"].strip('"')

    async def by_key() -> dict[str, Any]:
        async with client.http.get(f"{client.api}/v1/jobs", params={"key": key}) as r:
            assert r.status in (200, 404), await r.text()
            return await r.json() if r.status == 200 else {"status": "unknown"}

    first = await put(old)
    job = await _wait_by_key(
        by_key, lambda j: j["status"] == "succeeded" and j["source"].get("object_version") == first
    )
    job_id = job["job_id"]
    assert job_id == job_id_for_object(stack.aws.input_bucket, key)
    second = await put(new)
    assert second != first
    job = await _wait_by_key(
        by_key, lambda j: j["status"] == "succeeded" and j["source"].get("object_version") == second
    )
    assert job["job_id"] == job_id and (job["source"]["width"], job["source"]["height"]) == (480, 640)
    finished = job["finished_at"]

    def event(etag: str) -> dict[str, Any]:
        obj = {"key": key, "size": 1, "eTag": etag}
        return {
            "Records": [
                {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": stack.aws.input_bucket}, "object": obj}}
            ]
        }

    await client.send_raw(event(second))  # a duplicate delivery of the newest event
    await client.send_raw(event(first))  # a late event for the older content
    await queue_drained(client)
    again = await by_key()
    assert again["finished_at"] == finished and again["source"]["object_version"] == second
    thumb = await client.fetch_image(again["outputs"][0]["url"])
    assert thumb.size == (256, 256)


async def _wait_by_key(read: Any, done: Any, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await read()
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job by key not as expected after {timeout}s: {job}")
        await asyncio.sleep(0.2)


# --- bad input: status, JSON error, nothing left behind ------------------------------------


async def _input_keys(client: StackClient) -> set[str]:
    return set(await client.keys(client.stack.aws.input_bucket, "uploads/"))


@pytest.mark.parametrize(
    ("name", "data", "params", "status", "code"),
    [
        ("unknown preset", images.photo_jpeg(64, 64), {"preset": "nope"}, 400, "unknown_preset"),
        ("not an image", images.not_an_image(), {}, 415, "not_an_image"),
        ("HEIC", images.heic_like(), {}, 415, "unsupported_format"),
        ("pixel bomb", images.pixel_bomb_png(), {}, 422, "too_many_pixels"),
    ],
)
async def test_bad_input_is_refused_with_a_json_error(
    client: StackClient, name: str, data: bytes, params: dict, status: int, code: str
) -> None:
    before = await _input_keys(client)
    form = aiohttp.FormData()
    form.add_field("file", data, filename="f", content_type="application/octet-stream")
    async with client.http.post(f"{client.api}/v1/images", params=params, data=form) as r:
        body = await r.json()
        assert r.status == status, body
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert await _input_keys(client) == before


async def test_body_over_the_limit_is_413_and_leaves_no_partial_object(client: StackClient) -> None:
    before = await _input_keys(client)
    # A real JPEG header, then padding: larger than the 12 MiB limit and than two 5 MiB parts,
    # so the API has started a multipart upload before it sees the excess.
    data = images.photo_jpeg(200, 200) + os.urandom(13 * MiB)
    form = aiohttp.FormData()
    form.add_field("file", data, filename="big.jpg", content_type="image/jpeg")
    try:
        async with client.http.post(f"{client.api}/v1/images", data=form) as r:
            assert r.status == 413
            body = await r.json()
            assert body["error"]["code"] == "payload_too_large"
    except aiohttp.ClientOSError:
        pytest.fail("the API reset the connection instead of answering 413")
    assert await _input_keys(client) == before
    assert await client.multipart_uploads(client.stack.aws.input_bucket) == []


async def test_raw_body_with_declared_length_over_limit_is_413_without_reading(client: StackClient) -> None:
    async with client.http.post(
        f"{client.api}/v1/images", data=b"x" * (12 * MiB + 1), headers={"Content-Type": "image/jpeg"}
    ) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "payload_too_large"


async def test_a_large_upload_is_streamed_as_multipart_and_succeeds(client: StackClient) -> None:
    data = images.photo_jpeg(3000, 2400, quality=100)
    data += b"\0" * max(0, 6 * MiB - len(data))  # trailing bytes after EOI are ignored by decoders
    status, body = await client.upload(data, preset="thumbs")
    assert status == 202, body
    job = await client.wait(body["job_id"])
    assert job["status"] == "succeeded", job
    assert job["source"]["bytes"] == len(data)


async def test_unknown_job_is_404_json(client: StackClient) -> None:
    for job_id in ("0" * 32, "../../etc/passwd", "NOTHEX"):
        async with client.http.get(f"{client.api}/v1/jobs/{job_id}") as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] in ("not_found",)


async def test_presets_health_metrics_openapi(client: StackClient) -> None:
    async with client.http.get(f"{client.api}/v1/presets") as r:
        presets = await r.json()
    assert {"web", "thumbs"} <= {p["name"] for p in presets["presets"]}
    async with client.http.get(f"{client.api}/healthz") as r:
        assert r.status == 200
        assert (await r.json())["checks"] == {"s3": "ok", "sqs": "ok"}
    async with client.http.get(f"{client.api}/metrics") as r:
        assert "pixfleet_api_uploads_total" in await r.text()
    async with client.http.get(f"{client.api}/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/images", "/v1/uploads", "/v1/jobs/{job_id}", "/v1/presets", "/healthz", "/metrics"} <= set(
        doc["paths"]
    )


async def test_api_task_has_no_static_aws_keys(client: StackClient) -> None:
    tasks = await client.stack.tasks()
    assert {t["service"] for t in tasks} == {"api", "worker", "deadletter"}
    for task in tasks:
        environ = Path(f"/proc/{task['pid']}/environ").read_bytes().split(b"\0")
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        assert "AWS_SECRET_ACCESS_KEY" not in names and "AWS_ACCESS_KEY_ID" not in names
        assert {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"} <= names
        assert client.stack.bootstrap["secret_access_key"].encode() not in b"\0".join(environ)


# --- one-off APIs built in-process, for settings the shared stack does not have ------------


async def test_emulator_unreachable_gives_503_with_retry_after(tmp_path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from pipeline.net import free_port
    from services.api.settings import ApiSettings
    from services.api.app import create_app

    dead = f"http://127.0.0.1:{free_port()}"
    settings = ApiSettings.from_env(
        {"AWS_ENDPOINT_URL": dead, "PIXFLEET_QUEUE_URL": f"{dead}/000000000000/q", "PIXFLEET_AWS_TIMEOUT": "0.5"}
    )
    app = create_app(settings, credentials={"access_key_id": "x", "secret_access_key": "y"})
    async with TestClient(TestServer(app)) as http:
        r = await http.post("/v1/images", data=images.photo_jpeg(64, 64), headers={"Content-Type": "image/jpeg"})
        assert r.status == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "aws_unavailable"
        r = await http.get("/healthz")
        assert r.status == 503


async def test_api_key_auth_when_configured(client: StackClient) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from services.api.settings import ApiSettings
    from services.api.app import create_app

    aws = client.stack.aws
    settings = ApiSettings(aws=aws, api_keys=("s3cret",))
    async with TestClient(TestServer(create_app(settings, credentials=client.stack.bootstrap))) as http:
        r = await http.get("/v1/presets")
        assert r.status == 401
        assert (await r.json())["error"]["code"] == "unauthorized"
        r = await http.get("/v1/presets", headers={"X-API-Key": "s3cret"})
        assert r.status == 200
        r = await http.get("/healthz")  # health and metrics stay open for probes
        assert r.status != 401


# --- the upload buffer budget: reserve what an upload needs, never wait without a deadline ---------


@pytest.fixture
async def paused_api(fresh_moto) -> Any:
    """An in-process API on a private, provisioned moto; ``pause()``/``resume()`` SIGSTOP/SIGCONT the emulator."""
    import signal

    from aiohttp.test_utils import TestClient, TestServer

    from infra.credentials import EMULATOR_DUMMY_CREDENTIALS
    from infra.provision import provision
    from services.api.settings import ApiSettings
    from services.api.app import BUDGET, create_app

    server = fresh_moto()
    outputs = await provision(server.url, "us-east-1", credentials=EMULATOR_DUMMY_CREDENTIALS)
    env = {
        "AWS_ENDPOINT_URL": server.url,
        "PIXFLEET_QUEUE_URL": outputs.queue_url,
        "PIXFLEET_AWS_TIMEOUT": "2",
        "PIXFLEET_API_PART_SIZE": str(5 * MiB),
        "PIXFLEET_API_BUFFER_BUDGET": str(5 * MiB),
        "PIXFLEET_API_BUFFER_WAIT": "1",
    }
    app = create_app(ApiSettings.from_env(env), credentials=EMULATOR_DUMMY_CREDENTIALS)
    pid = server._process.pid

    class Paused:
        budget = None

        def pause(self) -> None:
            os.kill(pid, signal.SIGSTOP)

        def resume(self) -> None:
            os.kill(pid, signal.SIGCONT)

    paused = Paused()
    async with TestClient(TestServer(app)) as http:
        paused.http, paused.budget = http, app[BUDGET]
        try:
            yield paused
        finally:
            paused.resume()


async def test_small_uploads_reserve_only_their_size(paused_api: Any) -> None:
    """Ten 200 KB uploads fit a 5 MiB budget at once (a whole part each would admit one)."""
    body = images.photo_jpeg(64, 64) + b"\0" * (200 * 1024)
    paused_api.pause()
    sends = [
        asyncio.ensure_future(paused_api.http.post("/v1/images", data=body, headers={"Content-Type": "image/jpeg"}))
        for _ in range(10)
    ]
    deadline = time.monotonic() + 60
    while paused_api.budget.in_use < 10 * len(body) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    admitted = paused_api.budget.in_use
    paused_api.resume()
    answers = await asyncio.gather(*sends)
    assert admitted == 10 * len(body)  # all ten stored at once, none waiting for a buffer
    assert all(r.status in (202, 503) for r in answers)
    assert paused_api.budget.in_use == 0


async def test_waiting_for_buffers_is_bounded_and_answers_503(paused_api: Any) -> None:
    """Uploads of unknown size that find the budget full get 503 busy + Retry-After, not an endless wait."""

    async def chunked() -> Any:
        yield images.photo_jpeg(64, 64)
        for _ in range(24):
            yield b"\0" * (256 * 1024)  # 6 MiB in all: each needs a whole 5 MiB part

    paused_api.pause()  # the first upload holds the whole budget, stuck in S3
    first = asyncio.ensure_future(
        paused_api.http.post("/v1/images", data=chunked(), headers={"Content-Type": "image/jpeg"})
    )
    deadline = time.monotonic() + 60
    while paused_api.budget.in_use < 5 * MiB and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    others = await asyncio.gather(
        *(paused_api.http.post("/v1/images", data=chunked(), headers={"Content-Type": "image/jpeg"}) for _ in range(3))
    )
    for r in others:  # answered while the emulator is still paused
        assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "busy"
    paused_api.resume()
    assert (await first).status in (202, 503)
