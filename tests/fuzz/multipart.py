"""Fuzz the multipart upload path: ``POST /v1/images`` with hostile bodies, over HTTP, on the real emulator.

``python -m tests.fuzz.multipart [libFuzzer flags] [corpus_dir ...]``

The harness starts a provisioned moto server and the API app
(``create_app``, aiohttp's real server on a loopback port) in this process, then
sends every input as one raw HTTP request: the input's first line is the
``Content-Type`` header value, the rest is the body (so boundaries, part headers,
``_charset_`` parts, nested multiparts and the file bytes are all mutated). Why
not hypothesis against a live stack: coverage feedback from aiohttp's multipart
reader and our handler finds the odd header far faster than random bodies, and
in-process there are ~100 requests a second instead of ~10; nothing is mocked.

Oracle, for every request: an answer from our app (it carries ``X-Request-Id``)
is a 202 with job ids, or a 4xx with the JSON error shape and the same request
id; a refused request leaves no object behind; aiohttp's
own HTTP parser may refuse a request line or header with a bare 400. A 5xx, a
hang (10 s) or anything else is a crash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from aiohttp import web

from infra.emulator import MotoServer, emulator_spec
from infra.provision import provision
from pipeline.aws import credential_kwargs
from pipeline.settings import AwsSettings
from services.api.settings import ApiSettings
from pipeline.transform.spec import Limits
from services.api.app import create_app
from tests import images
from tests.fuzz._harness import Crash, main

BOUNDARY = "pixfleetfuzz"
DEFAULT_CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
MiB = 1024 * 1024
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class Api:
    """The API under test, its emulator and admin clients; one per process, on one event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.accepted = 0

    def start(self) -> None:
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        # Provisioned like the stack, without IAM enforcement: policy checks would triple each S3 call's cost,
        # and the API here signs with the bootstrap keys anyway (IAM is not what this harness tests).
        state = Path(tempfile.mkdtemp(prefix="pixfleet-fuzz-moto-"))
        self.server = await asyncio.to_thread(MotoServer(region="us-east-1", log_path=state / "moto.log").start)
        creds = await asyncio.to_thread(self.server.bootstrap)
        outputs = await provision(self.server.url, "us-east-1", emulator_spec(), credentials=creds)
        self.aws = AwsSettings(
            endpoint_url=self.server.url,
            region=outputs.region,
            input_bucket=outputs.input_bucket,
            output_bucket=outputs.output_bucket,
            queue_url=outputs.queue_url,
            dlq_url=outputs.dlq_url,
        )
        limits = Limits(max_bytes=2 * MiB)
        settings = ApiSettings(aws=self.aws, limits=limits, part_size=5 * MiB, buffer_budget=16 * MiB)
        self.runner = web.AppRunner(create_app(settings, credentials=creds), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        session = get_session()
        kwargs = {"region_name": self.aws.region, "endpoint_url": self.server.url, **credential_kwargs(creds)}
        self.s3 = await session.create_client("s3", **kwargs).__aenter__()
        self.sqs = await session.create_client("sqs", **kwargs).__aenter__()

    def post(self, content_type: bytes, body: bytes) -> tuple[int, dict[str, str], bytes]:
        return self.loop.run_until_complete(asyncio.wait_for(self._post(content_type, body), 10))

    async def _post(self, content_type: bytes, body: bytes) -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            b"POST /v1/images?preset=thumbs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            + content_type
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        writer.write(head + body)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        head_bytes, _, payload = answer.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return status, headers, payload

    def leftovers(self) -> list[str]:
        """The objects under ``uploads/``. (No multipart uploads to look for: a body is at most
        ``max_bytes`` = 2 MiB, below the 5 MiB part size, so every upload is one PutObject.)"""
        return self.loop.run_until_complete(self._leftovers())

    async def _leftovers(self) -> list[str]:
        listed = await self.s3.list_objects_v2(Bucket=self.aws.input_bucket, Prefix="uploads/")
        return [o["Key"] for o in listed.get("Contents", [])]

    def clean(self, keys: list[str]) -> None:
        self.loop.run_until_complete(self._clean(keys))

    async def _clean(self, keys: list[str]) -> None:
        if keys:
            await self.s3.delete_objects(Bucket=self.aws.input_bucket, Delete={"Objects": [{"Key": k} for k in keys]})
        self.accepted += 1
        if self.accepted % 200 == 0:  # the queued jobs are not ours to run; keep moto's memory flat
            with contextlib.suppress(Exception):  # PurgeQueueInProgress: next time
                await self.sqs.purge_queue(QueueUrl=self.aws.queue_url)


API = Api()


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError as exc:
        raise Crash(f"not JSON: {payload[:200]!r}", "answer is not JSON") from exc


def check(data: bytes) -> str:
    content_type, newline, body = data.partition(b"\n")
    if not newline:
        content_type, body = DEFAULT_CONTENT_TYPE.encode(), data
    try:
        status, headers, payload = API.post(content_type, body)
    except TimeoutError as exc:
        raise Crash("no answer within 10 s", "hang") from exc
    request_id = headers.get("x-request-id")
    if request_id is None:  # aiohttp's own parser refused the request line or a header
        if status != 400:
            raise Crash(f"{status} without a request id: {payload[:200]!r}", f"bare {status}")
        return "http-400"
    if status >= 500:
        raise Crash(f"{status}: {payload[:300]!r}", f"status {status}: {payload[:60]!r}")
    doc = _json(payload)
    if status == 202:
        jobs = doc if isinstance(doc, list) else [doc]
        if not jobs or not all(isinstance(j, dict) and _JOB_ID.match(str(j.get("job_id"))) for j in jobs):
            raise Crash(f"202 without job ids: {doc!r}", "202 without job ids")
        API.clean(API.leftovers())
        return f"202-{len(jobs)}"
    error = doc.get("error") if isinstance(doc, dict) else None
    if not (isinstance(error, dict) and error.get("code") and error.get("message")):
        raise Crash(f"{status} without the error shape: {doc!r}", "no error shape")
    if error.get("request_id") != request_id:
        raise Crash(f"request id {error.get('request_id')!r} in the body, {request_id!r} in the header", "request id")
    keys = API.leftovers()
    if keys:
        API.clean(keys)
        raise Crash(f"{status} {error['code']} left {keys} behind", "left objects behind")
    reason = re.search(r"is malformed \((\w+)", str(error["message"])) if error["code"] == "malformed_request" else None
    return f"{status}-{error['code']}" + (f"<-{reason.group(1)}" if reason else "")


# --- seeds ----------------------------------------------------------------------------------------


def form(*parts: tuple[list[str], bytes], boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """A raw multipart body from (header lines, content) pairs."""
    out = b""
    for headers, content in parts:
        out += f"--{boundary}\r\n".encode() + "".join(h + "\r\n" for h in headers).encode("latin-1") + b"\r\n"
        out += content + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def file_part(data: bytes, filename: str = "a.jpg", content_type: str = "image/jpeg") -> tuple[list[str], bytes]:
    disposition = f'Content-Disposition: form-data; name="file"; filename="{filename}"'
    return ([disposition, f"Content-Type: {content_type}"], data)


def field(name: str, value: bytes, *extra: str) -> tuple[list[str], bytes]:
    return ([f'Content-Disposition: form-data; name="{name}"', *extra], value)


def seeds() -> Iterable[bytes]:
    jpeg, png, gif = images.photo_jpeg(16, 12, quality=60), images.png_rgba(8, 8), images.animated_gif(4, 4, 2)
    ops = json.dumps([{"name": "a", "width": 8, "format": "png"}]).encode()
    bodies = [
        form(file_part(jpeg)),
        form(field("operations", ops, "Content-Type: application/json"), file_part(png, "b.png", "image/png")),
        form(file_part(jpeg), file_part(gif, "c.gif", "image/gif")),
        form((["Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''%E2%82%AC.gif"], gif)),
        form(field("_charset_", b"iso-8859-1"), field("operations", ops), file_part(jpeg)),
        form(field("\x01", b"x"), file_part(jpeg)),  # a control character in a part header (issue 9)
        form(file_part(b"\xff\xd8\xff" + bytes(range(256)) * 2)),  # random bytes after a JPEG magic (issue 9)
        form(
            (
                ['Content-Disposition: form-data; name="file"', "Content-Type: multipart/mixed; boundary=inner"],
                form(file_part(jpeg), boundary="inner"),
            )
        ),
        form(
            (
                ['Content-Disposition: form-data; name="file"; filename="x.jpg"', "Content-Transfer-Encoding: base64"],
                base64.b64encode(jpeg),
            )
        ),
        form(file_part(jpeg), close=False),
        form(field("operations", b"[{not json")),
        b"preamble\r\n" + form(file_part(png, "p.png", "image/png")) + b"epilogue",
        form((["Content-Disposition: form-data;", ' name="file"; filename="folded.jpg"'], jpeg)),
        b"",
    ]
    yield from bodies
    content_types = [
        f'multipart/form-data; boundary="{BOUNDARY}"',
        f"multipart/form-data; charset=utf-8; boundary={BOUNDARY}",
        f"multipart/mixed; boundary={BOUNDARY}",
        "multipart/form-data",
        "multipart/form-data; boundary=" + "x" * 71,
    ]
    for ct in content_types:
        yield ct.encode() + b"\n" + form(file_part(jpeg))


TOKENS = [
    t.encode("latin-1")
    for t in (
        f"--{BOUNDARY}\r\n",
        f"--{BOUNDARY}--",
        "\r\n\r\n",
        "Content-Disposition: ",
        "form-data; ",
        'name="file"',
        'name="operations"',
        'name="_charset_"',
        'filename="',
        "filename*=UTF-8''",
        "Content-Type: ",
        "Content-Transfer-Encoding: ",
        "base64",
        "quoted-printable",
        "Content-Length: ",
        "multipart/mixed; boundary=",
        "charset=",
        "image/jpeg",
        "\x00",
        "\x01",
        "\x7f",
        "\xff",
        '\\"',
        ";",
        "=",
        "%",
    )
]


def _setup() -> None:
    logging.disable(logging.CRITICAL)  # the API logs every refusal; the oracle reads the answers
    API.start()


if __name__ == "__main__":
    main(
        "multipart",
        check,
        seeds,
        tokens=TOKENS,
        setup=_setup,
        defaults=["-max_len=32768"],
        instrument_prefixes=("aiohttp.multipart", "aiohttp.http_parser", "aiohttp.web_request", "aiohttp.helpers"),
    )
