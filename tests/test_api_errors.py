"""The API's error taxonomy over HTTP (issue 9, defect 1): hostile bytes are 4xx, bugs 500, outages 503.

* Untrusted bytes never give a 5xx: random data after a real magic number is a
  classified 4xx, and so is a multipart part header holding a control character.
* A genuine bug (simulated by making one of *our* functions raise) is ``500
  internal_error`` with a request id in the body and in the log line with the
  traceback, and no ``Retry-After``: retrying cannot help.
* Only a dependency that is down (the emulator) gives ``503`` with ``Retry-After``.
* Every response names its request (``X-Request-Id``), every failure is logged
  with its reason: 4xx at INFO, 5xx at WARNING or ERROR.
* The worker still retries a bug (it is not a permanent error), a bounded number
  of times, then gives up.

The first tests run against the shared embedded stack (the API in its own process);
the ones that break something run an in-process app against the same real emulator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import images
from stack_fixtures import StackClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLASSIFIED_4XX = {"corrupt_image", "not_an_image", "unsupported_format", "too_many_pixels", "decompression_bomb"}
MAGIC = {
    "jpeg": b"\xff\xd8\xff",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    "tiff": b"II*\x00",
    "bmp": b"BM" + b"\0" * 12 + b"\x28\0\0\0",
}
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _random_tail(fmt: str, seed: int, size: int) -> bytes:
    return MAGIC[fmt] + random.Random(f"{fmt}-{seed}").randbytes(size)


@pytest.mark.parametrize("fmt", sorted(MAGIC))
async def test_random_bytes_after_a_magic_number_are_a_classified_4xx(client: StackClient, fmt: str) -> None:
    # Issue 9: JPEG magic + random bytes made the probe raise KeyError -> "503 internal_error".
    for seed, size in enumerate((12, 300, 5000)):
        data = _random_tail(fmt, seed, size)
        for upload in ("multipart", "raw"):
            if upload == "multipart":
                status, body = await client.upload(data, filename=f"x.{fmt}")
                request_id = None
            else:
                url = f"{client.api}/v1/images"
                async with client.http.post(url, data=data, headers={"Content-Type": "application/octet-stream"}) as r:
                    status, body, request_id = r.status, await r.json(), r.headers.get("X-Request-Id")
            assert 400 <= status < 500, (fmt, seed, upload, status, body)
            assert body["error"]["code"] in CLASSIFIED_4XX, body
            assert body["error"]["message"] and HEX32.match(body["error"]["request_id"])
            assert request_id in (None, body["error"]["request_id"])


def _multipart(*parts: tuple[str, bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(
        f"--{boundary}\r\n".encode() + head.encode("latin-1") + b"\r\n\r\n" + content + b"\r\n"
        for head, content in parts
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("control character in a part header (issue 9)", [('Content-Disposition: form-data; name="\x01"', b"x")]),
        (
            "control character before the file",
            [
                ('Content-Disposition: form-data; name="\x7f"', b"x"),
                ('Content-Disposition: form-data; name="file"; filename="a.jpg"', images.photo_jpeg(32, 32)),
            ],
        ),
        (
            "nested multipart part",
            [
                (
                    'Content-Disposition: form-data; name="file"\r\nContent-Type: multipart/mixed; boundary=in',
                    b"--in--",
                ),
            ],
        ),
        (
            "unknown charset of the operations field",
            [
                ('Content-Disposition: form-data; name="operations"\r\nContent-Type: text/plain; charset=nope', b"[]"),
            ],
        ),
    ],
)
async def test_malformed_multipart_is_400(client: StackClient, name: str, parts: list[tuple[str, bytes]]) -> None:
    before = set(await client.keys(client.stack.aws.input_bucket, "uploads/"))
    body, content_type = _multipart(*parts)
    async with client.http.post(f"{client.api}/v1/images", data=body, headers={"Content-Type": content_type}) as r:
        status, doc = r.status, await r.json()
    assert status == 400, doc
    assert doc["error"]["code"] == "malformed_request", doc
    assert set(await client.keys(client.stack.aws.input_bucket, "uploads/")) == before  # a stored file is removed


async def test_a_broken_multipart_boundary_is_400(client: StackClient) -> None:
    headers = {"Content-Type": "multipart/form-data; boundary=" + "x" * 71}  # RFC 2046: at most 70
    async with client.http.post(f"{client.api}/v1/images", data=b"--" + b"x" * 71, headers=headers) as r:
        assert r.status == 400, await r.text()
        assert (await r.json())["error"]["code"] == "malformed_request"


# --- an in-process app on the same emulator, for what the shared API must not be made to do --------


@asynccontextmanager
async def _api(client: StackClient, **settings: Any) -> AsyncIterator[TestClient]:
    from services.api.settings import ApiSettings
    from services.api.app import create_app

    app = create_app(ApiSettings(aws=client.stack.aws, **settings), credentials=client.stack.bootstrap)
    async with TestClient(TestServer(app)) as http:
        yield http


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pixfleet.api" and r.levelno == level]


async def test_a_bug_is_500_with_a_request_id_and_no_retry_after(
    client: StackClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import services.api.app

    ids: dict[str, str] = {}

    def broken() -> str:
        return ids["next"]  # a bug in our own code: KeyError

    monkeypatch.setattr(services.api.app, "new_job_id", broken)
    caplog.set_level(logging.INFO, logger="pixfleet.api")
    async with _api(client) as http:
        r = await http.post("/v1/images", data=images.photo_jpeg(32, 32), headers={"Content-Type": "image/jpeg"})
        body = await r.json()
    assert r.status == 500, body
    assert "Retry-After" not in r.headers
    error = body["error"]
    assert error["code"] == "internal_error" and "KeyError" in error["message"]
    assert HEX32.match(error["request_id"]) and r.headers["X-Request-Id"] == error["request_id"]
    (line,) = _lines(caplog, logging.ERROR)
    assert error["request_id"] in line.getMessage() and "internal_error" in line.getMessage()
    assert line.exc_info and line.exc_info[0] is KeyError  # the traceback is in the log, not in the answer


async def test_an_unreachable_emulator_is_503_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.net import free_port
    from services.api.settings import ApiSettings
    from services.api.app import create_app

    dead = f"http://127.0.0.1:{free_port()}"
    env = {"AWS_ENDPOINT_URL": dead, "PIXFLEET_QUEUE_URL": f"{dead}/000000000000/q", "PIXFLEET_AWS_TIMEOUT": "0.5"}
    app = create_app(ApiSettings.from_env(env), credentials={"access_key_id": "x", "secret_access_key": "y"})
    caplog.set_level(logging.INFO, logger="pixfleet.api")
    async with TestClient(TestServer(app)) as http:
        r = await http.post("/v1/images", data=images.photo_jpeg(64, 64), headers={"Content-Type": "image/jpeg"})
        body = await r.json()
    assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
    assert body["error"]["code"] == "aws_unavailable" and body["error"]["request_id"] == r.headers["X-Request-Id"]
    (line,) = _lines(caplog, logging.WARNING)
    assert "503 aws_unavailable" in line.getMessage() and body["error"]["request_id"] in line.getMessage()
    assert not _lines(caplog, logging.ERROR)


async def test_every_failure_is_logged_with_its_reason(client: StackClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pixfleet.api")
    async with _api(client) as http:
        r = await http.post("/v1/images", data=images.not_an_image(), headers={"Content-Type": "image/png"})
        assert r.status == 415
        rid = r.headers["X-Request-Id"]
        r = await http.get("/v1/nowhere")
        assert r.status == 404
    messages = [line.getMessage() for line in _lines(caplog, logging.INFO)]
    refused = next(m for m in messages if rid in m)
    assert "POST /v1/images failed: 415 not_an_image: the data is not an image (NotAnImage)" in refused
    assert any("GET /v1/nowhere failed: 404" in m for m in messages)
    assert not _lines(caplog, logging.WARNING) and not _lines(caplog, logging.ERROR)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("req-123.abc:7", True), ("", False), ("bad id with spaces", False), ("x" * 129, False), ("ü", False)],
)
async def test_every_response_names_its_request(client: StackClient, given: str, kept: bool) -> None:
    headers = {"X-Request-Id": given} if given else {}
    async with _api(client) as http:
        paths = (("GET", "/v1/presets"), ("GET", "/v1/jobs/" + "0" * 32), ("GET", "/"), ("PUT", "/v1/presets"))
        for method, path in paths:
            r = await http.request(method, path, headers=headers)
            request_id = r.headers["X-Request-Id"]
            assert request_id == given if kept else HEX32.match(request_id), (method, path, r.status, request_id)
            if r.status >= 400:
                assert (await r.json())["error"]["request_id"] == request_id


async def test_a_corrupt_file_that_fits_the_probe_is_refused_before_it_is_stored(client: StackClient) -> None:
    # The whole upload is inside the probed head, so a header Pillow cannot parse is corrupt, not "cut".
    before = set(await client.keys(client.stack.aws.input_bucket, "uploads/"))
    status, body = await client.upload(images.png_rgba(64, 64)[:40])
    assert (status, body["error"]["code"]) == (422, "corrupt_image"), body
    assert set(await client.keys(client.stack.aws.input_bucket, "uploads/")) == before


async def test_an_encoder_limit_fails_the_job_at_once_not_after_retries(client: StackClient) -> None:
    # Found by fuzzing: a 20000 x 8 strip is a valid upload, but the original-webp preset keeps its
    # size and WebP holds at most 16,383 pixels a side. The encoder's ValueError was retried as a bug,
    # then "retries_exhausted"; now the job fails at once, with the reason, before anything is rendered.
    status, body = await client.upload(_saved_gif(20_000, 8), preset="original-webp", filename="strip.gif")
    assert status == 202, body
    job = await client.wait(body["job_id"])
    assert job["status"] == "failed" and job["error"]["code"] == "output_too_large", job
    assert "'original' would be 20000x8" in job["error"]["message"] and job["attempts"] == 1


def _saved_gif(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("P", (w, h), 1).save(buf, "GIF")
    return buf.getvalue()


async def test_a_bug_in_the_worker_is_retried_a_bounded_number_of_times(
    client: StackClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.worker.worker as worker_module
    from pipeline.messages import new_job_id
    from services.worker.settings import WorkerSettings

    calls: list[str] = []

    def broken(body: str) -> list[Any]:
        calls.append(body)
        raise KeyError("a bug in our own code")

    monkeypatch.setattr(worker_module, "parse_message", broken)
    async with client.admin("sqs") as sqs:
        name = f"bug-{new_job_id()[:12]}"
        queue = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        dlq = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
        aws = dataclasses.replace(client.stack.aws, queue_url=queue, dlq_url=dlq)
        settings = WorkerSettings(
            aws=aws, concurrency=1, processes=1, wait_time=1, visibility_timeout=10, max_receive_count=3, retry_base=0.1
        )
        worker = worker_module.Worker(settings, credentials=client.stack.bootstrap)
        await sqs.send_message(QueueUrl=queue, MessageBody='{"type": "pixfleet.job"}')
        running = asyncio.create_task(worker.main())
        try:
            dead = await _one_message(sqs, dlq, timeout=90)
        finally:
            worker.stop()
            await asyncio.wait_for(running, 60)
            for url in (queue, dlq):
                await sqs.delete_queue(QueueUrl=url)
    assert len(calls) == settings.max_receive_count  # retried, not failed at the first attempt
    assert dead["MessageAttributes"]["error_code"]["StringValue"] == "internal_error"


async def _one_message(sqs: Any, queue_url: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1, MessageAttributeNames=["All"])
        if got.get("Messages"):
            return got["Messages"][0]
    raise AssertionError(f"nothing reached {queue_url} within {timeout}s")
