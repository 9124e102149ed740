"""Streaming an upload into S3 without holding the whole file in memory.

An upload is read in parts of ``part_size`` bytes. The first part is inspected
(magic bytes, and the declared pixel count when the header is in it) before a
single byte is written to S3. A body that fits in one part becomes one
``PutObject``; a larger one becomes a multipart upload, aborted on any failure,
so a rejected upload (too large, disconnected client, S3 error) leaves nothing
behind. All part buffers of all requests together stay within a
:class:`ByteBudget`; a request that cannot get a buffer waits, which pushes back
on the client through TCP instead of growing the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PayloadTooLarge
from pipeline.transform.probe import Probe, probe_header
from pipeline.transform.spec import Limits

log = logging.getLogger(__name__)

ReadChunk = Callable[[int], Awaitable[bytes]]
CHUNK = 256 * 1024
HEADER_BYTES = 256 * 1024
FORMAT_CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
}


class ByteBudget:
    """A counting semaphore in bytes: the memory all upload buffers may hold at once."""

    def __init__(self, total: int):
        self.total = total
        self.available = total
        self._cond = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        n = min(n, self.total)
        async with self._cond:
            await self._cond.wait_for(lambda: self.available >= n)
            self.available -= n

    async def release(self, n: int) -> None:
        n = min(n, self.total)
        async with self._cond:
            self.available += n
            self._cond.notify_all()

    @property
    def in_use(self) -> int:
        return self.total - self.available


@dataclass(frozen=True)
class StoredUpload:
    bucket: str
    key: str
    size: int
    probe: Probe

    @property
    def content_type(self) -> str:
        return FORMAT_CONTENT_TYPES.get(self.probe.format, "application/octet-stream")


async def _fill(read: ReadChunk, buffer: bytearray, want: int, limit: int, already: int) -> bool:
    """Read into ``buffer`` until it holds ``want`` bytes; return False at end of stream."""
    while len(buffer) < want:
        chunk = await read(min(CHUNK, want - len(buffer)))
        if not chunk:
            return False
        buffer += chunk
        if already + len(buffer) > limit:
            raise PayloadTooLarge(f"the image is larger than the limit of {limit} bytes")
    return True


async def store_upload(
    read: ReadChunk,
    *,
    s3: Any,
    bucket: str,
    key: str,
    limits: Limits,
    part_size: int,
    budget: ByteBudget,
    metadata: dict[str, str] | None = None,
) -> StoredUpload:
    """Stream ``read`` into ``s3://bucket/key``; raise a PermanentError for bad input.

    Raises :class:`PayloadTooLarge` as soon as the body passes ``limits.max_bytes``
    (the rest is not read), and the probe's errors (415/422) before anything is stored.
    """
    await budget.acquire(part_size)
    try:
        buffer = bytearray()
        more = await _fill(read, buffer, part_size, limits.max_bytes, 0)
        probe = probe_header(bytes(buffer[:HEADER_BYTES]), limits)
        content_type = FORMAT_CONTENT_TYPES.get(probe.format, "application/octet-stream")
        extra = {"ContentType": content_type, "Metadata": metadata or {}}
        if not more:
            await s3.put_object(Bucket=bucket, Key=key, Body=bytes(buffer), **extra)
            return StoredUpload(bucket, key, len(buffer), probe)
        upload_id = (await s3.create_multipart_upload(Bucket=bucket, Key=key, **extra))["UploadId"]
        try:
            size, parts = 0, []
            while True:
                body, buffer = bytes(buffer), bytearray()
                size += len(body)
                part = await s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=body
                )
                del body
                parts.append({"ETag": part["ETag"], "PartNumber": len(parts) + 1})
                if not more:
                    break
                more = await _fill(read, buffer, part_size, limits.max_bytes, size)
                if not buffer:
                    break
            await s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            return StoredUpload(bucket, key, size, probe)
        except BaseException:
            await _abort(s3, bucket, key, upload_id)
            raise
    finally:
        await budget.release(part_size)


async def _abort(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        await asyncio.shield(s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id))
    except Exception:  # noqa: BLE001 - best effort; a lifecycle rule catches what this misses
        log.warning("could not abort multipart upload %s of %s", upload_id, key, exc_info=True)
