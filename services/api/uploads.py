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
import io
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
        self._spares: list[bytearray] = []

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

    async def take_buffer(self, size: int) -> bytearray:
        """A buffer for up to ``size`` bytes once the budget allows it: a spare one when there is one.

        A new buffer starts empty and grows as it is filled, so a small upload costs only its
        size. Full-size buffers are kept for reuse (:meth:`give_back`): that keeps the
        allocator from churning multi-megabyte blocks, which fragments the heap and keeps
        freed memory resident; spares never exceed the unused budget.
        """
        await self.acquire(size)
        for i, spare in enumerate(self._spares):
            if len(spare) == size:
                return self._spares.pop(i)
        return bytearray()

    async def give_back(self, buffer: bytearray, size: int) -> None:
        """Return a buffer from :meth:`take_buffer` and its ``size`` bytes to the budget."""
        if len(buffer) == size:
            self._spares.append(buffer)
        held = sum(len(b) for b in self._spares)
        while self._spares and held > self.available + size:
            held -= len(self._spares.pop(0))
        await self.release(size)


@dataclass(frozen=True)
class StoredUpload:
    bucket: str
    key: str
    size: int
    probe: Probe

    @property
    def content_type(self) -> str:
        return FORMAT_CONTENT_TYPES.get(self.probe.format, "application/octet-stream")


class PartBody(io.RawIOBase):
    """A read-only, seekable file over the first ``size`` bytes of a part buffer, without copying it.

    Handed to botocore as ``Body``: it hashes it in chunks and aiohttp streams it in
    64 KiB chunks, so neither ``bytes(buffer)`` nor the socket transport's write
    buffer ever holds a second copy of a part.
    """

    def __init__(self, buffer: bytearray, size: int):
        super().__init__()
        self._view = memoryview(buffer)[:size]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), len(self._view) - self._pos))
        b[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)

    def close(self) -> None:
        if not self.closed:
            self._view.release()
        super().close()


class _ExactReader:
    """``read(n)`` that never returns more than ``n`` bytes (multipart readers may), keeping the rest."""

    def __init__(self, read: ReadChunk):
        self._read, self._pending = read, b""

    async def __call__(self, n: int) -> bytes:
        data, self._pending = (self._pending, b"") if self._pending else (await self._read(n), b"")
        if len(data) > n:
            data, self._pending = data[:n], data[n:]
        return data


async def _fill(read: ReadChunk, buffer: bytearray, size: int, limit: int, already: int) -> int:
    """Put up to ``size`` bytes from ``read`` at the start of ``buffer`` (in place, growing it
    only when it is shorter); the byte count, short only at end of stream."""
    filled = 0
    while filled < size:
        chunk = await read(min(CHUNK, size - filled))
        if not chunk:
            break
        if already + filled + len(chunk) > limit:
            raise PayloadTooLarge(f"the image is larger than the limit of {limit} bytes")
        end = filled + len(chunk)
        if end <= len(buffer):
            buffer[filled:end] = chunk  # same length: written in place
        else:
            del buffer[filled:]
            buffer += chunk
        filled = end
    return filled


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
    timeout: float = 5.0,
) -> StoredUpload:
    """Stream ``read`` into ``s3://bucket/key``; raise a PermanentError for bad input.

    Raises :class:`PayloadTooLarge` as soon as the body passes ``limits.max_bytes``
    (the rest is not read), and the probe's errors (415/422) before anything is stored.

    Memory: one buffer of at most ``part_size`` per upload, from ``budget`` (full-size ones
    are reused across uploads), filled in place part after part and sent through a
    :class:`PartBody` view, never copied.

    Each S3 call has a deadline (``timeout`` plus time for the bytes at a slow 4 MiB/s): the
    client's socket timeouts do not cover a request body that a hung server stops reading.
    """
    read = _ExactReader(read)
    buffer = await budget.take_buffer(part_size)
    try:
        filled = await _fill(read, buffer, part_size, limits.max_bytes, 0)
        whole = filled < part_size and filled <= HEADER_BYTES  # the probe sees the whole file: unparseable is corrupt
        probe = probe_header(bytes(buffer[: min(filled, HEADER_BYTES)]), limits, complete=whole)
        content_type = FORMAT_CONTENT_TYPES.get(probe.format, "application/octet-stream")
        extra = {"ContentType": content_type, "Metadata": metadata or {}}
        if filled < part_size:
            with PartBody(buffer, filled) as body:
                await asyncio.wait_for(s3.put_object(Bucket=bucket, Key=key, Body=body, **extra), _deadline(timeout, filled))
            return StoredUpload(bucket, key, filled, probe)
        upload_id = (await asyncio.wait_for(s3.create_multipart_upload(Bucket=bucket, Key=key, **extra), timeout))["UploadId"]
        try:
            size, parts = 0, []
            while filled:
                size += filled
                with PartBody(buffer, filled) as body:
                    part = await asyncio.wait_for(
                        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=body),
                        _deadline(timeout, filled),
                    )
                parts.append({"ETag": part["ETag"], "PartNumber": len(parts) + 1})
                if filled < part_size:
                    break
                filled = await _fill(read, buffer, part_size, limits.max_bytes, size)  # S3 has it: refill
            await asyncio.wait_for(
                s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}),
                timeout,
            )
            return StoredUpload(bucket, key, size, probe)
        except BaseException:
            await _abort(s3, bucket, key, upload_id)
            raise
    finally:
        await budget.give_back(buffer, part_size)


def _deadline(timeout: float, size: int) -> float:
    return timeout + size / (4 * 1024 * 1024)


async def _abort(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        await asyncio.shield(s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id))
    except Exception:  # noqa: BLE001 - best effort; a lifecycle rule catches what this misses
        log.warning("could not abort multipart upload %s of %s", upload_id, key, exc_info=True)
