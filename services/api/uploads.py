"""Streaming an upload into S3 without holding the whole file in memory.

An upload is read in parts of ``part_size`` bytes. The first part is inspected
(magic bytes, and the declared pixel count when the header is in it) before a
single byte is written to S3. A body that fits in one part becomes one
``PutObject``; a larger one becomes a multipart upload, aborted on any failure,
so a rejected upload (too large, disconnected client, S3 error) leaves nothing
behind. All part buffers of all requests together stay within a
:class:`ByteBudget`. An upload reserves what it needs — its Content-Length when
known (a 256 KB photo holds 256 KB, not a whole part), otherwise a first step that
grows in steps up to the part size as the bytes arrive. A request that cannot get
its bytes waits, which pushes back on the client through TCP instead of growing the
process — but only for ``wait`` seconds: then it gets a 503 with ``Retry-After``
(:class:`BufferBudgetExhausted`), never an unbounded hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PayloadTooLarge, RetryableError
from pipeline.transform.media import media_type
from pipeline.transform.probe import Probe, probe_header
from pipeline.transform.spec import Limits

log = logging.getLogger(__name__)

ReadChunk = Callable[[int], Awaitable[bytes]]
CHUNK = 256 * 1024
HEADER_BYTES = 256 * 1024


FIRST_STEP = 1024 * 1024  # what an upload of unknown size reserves first


class BufferBudgetExhausted(RetryableError):
    """Every upload buffer is in use and none came free in time."""

    code = "busy"

    def __init__(self, waited: float):
        super().__init__(f"the API is busy: no upload buffer came free for {waited:.0f}s", retry_after=2.0)


class ByteBudget:
    """A counting semaphore in bytes: the memory all upload buffers may hold at once.

    A waiting upload gives up with :class:`BufferBudgetExhausted` (503) when no buffer came free
    for ``stall`` seconds — the uploads holding them are stuck, e.g. S3 does not answer — or after
    ``max_wait`` seconds in all. While buffers keep coming free (a busy but healthy API) it waits,
    which pushes back on its client through TCP.
    """

    def __init__(self, total: int, wait: float = 5.0, max_wait: float = 60.0):
        self.total = total
        self.stall = wait
        self.max_wait = max(wait, max_wait)
        self.available = total
        self._cond = asyncio.Condition()
        self._spares: list[bytearray] = []
        self._last_release = time.monotonic()

    async def acquire(self, n: int) -> None:
        n = min(n, self.total)
        started = time.monotonic()
        async with self._cond:
            while self.available < n:
                now = time.monotonic()
                stalled_for = now - max(self._last_release, started)
                if stalled_for >= self.stall or now - started >= self.max_wait:
                    raise BufferBudgetExhausted(now - started)
                timeout = min(self.stall - stalled_for, self.max_wait - (now - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), timeout)
            self.available -= n

    async def release(self, n: int) -> None:
        n = min(n, self.total)
        async with self._cond:
            self.available += n
            self._last_release = time.monotonic()
            self._cond.notify_all()

    @property
    def in_use(self) -> int:
        return self.total - self.available

    def spare(self, size: int) -> bytearray:
        """A kept full-size buffer when there is one (see :meth:`keep`), else a new empty one."""
        for i, spare in enumerate(self._spares):
            if len(spare) == size:
                return self._spares.pop(i)
        return bytearray()

    def keep(self, buffer: bytearray, size: int, releasing: int) -> None:
        """Keep a full-size buffer for reuse: the allocator then does not churn multi-megabyte blocks
        (which fragments the heap and keeps freed memory resident); spares never exceed the unused budget."""
        if len(buffer) == size:
            self._spares.append(buffer)
        held = sum(len(b) for b in self._spares)
        while self._spares and held > self.available + releasing:
            held -= len(self._spares.pop(0))


class Reservation:
    """The bytes of the budget one upload holds: what it is known to need, grown in steps up to ``cap``."""

    def __init__(self, budget: ByteBudget, cap: int):
        self.budget = budget
        self.cap = cap
        self.held = 0

    async def ensure(self, n: int) -> None:
        """Hold at least ``min(n, cap)`` bytes; a growing upload asks for 4× what it held (bounded waits)."""
        n = min(n, self.cap)
        if n <= self.held:
            return
        target = min(self.cap, max(n, self.held * 4, FIRST_STEP if self.held else n))
        await self.budget.acquire(target - self.held)
        self.held = target

    async def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            await self.budget.release(held)


@dataclass(frozen=True)
class StoredUpload:
    bucket: str
    key: str
    size: int
    probe: Probe

    @property
    def content_type(self) -> str:
        return media_type(self.probe.format)


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


async def _fill(
    read: ReadChunk, buffer: bytearray, size: int, limit: int, already: int, reservation: Reservation
) -> int:
    """Put up to ``size`` bytes from ``read`` at the start of ``buffer`` (in place, growing it
    only when it is shorter, and the reservation with it); the byte count, short only at end of stream."""
    filled = 0
    while filled < size:
        chunk = await read(min(CHUNK, size - filled))
        if not chunk:
            break
        if already + filled + len(chunk) > limit:
            raise PayloadTooLarge(f"the image is larger than the limit of {limit} bytes")
        end = filled + len(chunk)
        await reservation.ensure(end)
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
    expected_size: int | None = None,
    metadata: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> StoredUpload:
    """Stream ``read`` into ``s3://bucket/key``; raise a PermanentError for bad input.

    Raises :class:`PayloadTooLarge` as soon as the body passes ``limits.max_bytes``
    (the rest is not read), and the probe's errors (415/422) before anything is stored.

    Memory: one buffer of at most ``part_size`` per upload, reserved from ``budget`` as it
    is needed (``expected_size``, the request's Content-Length when known, is reserved at once;
    full-size buffers are reused across uploads), filled in place part after part and sent
    through a :class:`PartBody` view, never copied.

    Each S3 call has a deadline (``timeout`` plus time for the bytes at a slow 4 MiB/s): the
    client's socket timeouts do not cover a request body that a hung server stops reading.
    """
    read = _ExactReader(read)
    reservation = Reservation(budget, part_size)
    await reservation.ensure(expected_size if expected_size is not None else FIRST_STEP)
    buffer = budget.spare(part_size) if reservation.held == part_size else bytearray()
    try:
        filled = await _fill(read, buffer, part_size, limits.max_bytes, 0, reservation)
        whole = filled < part_size and filled <= HEADER_BYTES  # the probe sees the whole file: unparseable is corrupt
        probe = probe_header(bytes(buffer[: min(filled, HEADER_BYTES)]), limits, complete=whole)
        extra = {"ContentType": media_type(probe.format), "Metadata": metadata or {}}
        if filled < part_size:
            with PartBody(buffer, filled) as body:
                await asyncio.wait_for(
                    s3.put_object(Bucket=bucket, Key=key, Body=body, **extra), _deadline(timeout, filled)
                )
            return StoredUpload(bucket, key, filled, probe)
        upload_id = (await asyncio.wait_for(s3.create_multipart_upload(Bucket=bucket, Key=key, **extra), timeout))[
            "UploadId"
        ]
        try:
            size, parts = 0, list[dict[str, Any]]()
            while filled:
                size += filled
                with PartBody(buffer, filled) as body:
                    part = await asyncio.wait_for(
                        s3.upload_part(
                            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=body
                        ),
                        _deadline(timeout, filled),
                    )
                parts.append({"ETag": part["ETag"], "PartNumber": len(parts) + 1})
                if filled < part_size:
                    break
                filled = await _fill(read, buffer, part_size, limits.max_bytes, size, reservation)  # S3 has it: refill
            await asyncio.wait_for(
                s3.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
                timeout,
            )
            return StoredUpload(bucket, key, size, probe)
        except BaseException:
            await _abort(s3, bucket, key, upload_id)
            raise
    finally:
        budget.keep(buffer, part_size, reservation.held)
        await reservation.release()


def _deadline(timeout: float, size: int) -> float:
    return timeout + size / (4 * 1024 * 1024)


async def _abort(s3: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        await asyncio.shield(s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id))
    except Exception:
        log.warning("could not abort multipart upload %s of %s", upload_id, key, exc_info=True)
