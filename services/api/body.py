"""Reading a request body whose bytes the client controls: every parse failure is a 400.

aiohttp's readers raise whatever their parsers hit on malformed input:
``InvalidHeader``/``BadHttpMessage`` for a part header holding a control
character, ``ValueError`` for a broken boundary or part ``Content-Length``,
``LookupError``/``UnicodeDecodeError`` for an unknown or wrong charset,
``RuntimeError`` for a bad ``_charset_`` part, ``ContentEncodingError`` for a
broken gzip body, and a nested ``multipart/mixed`` part is not a part at all.
This module is the boundary: a failure while *reading or parsing the client's
bytes* becomes :class:`~pipeline.errors.MalformedRequest` (400). What the caller
does with the bytes (storing them in S3) happens outside the reads wrapped here,
so its errors keep their own classification (503 when S3 is down, 500 for a bug).

Passed through unchanged: our own errors, aiohttp's HTTP answers (413 for a part
over ``client_max_size``), ``MemoryError`` and a connection the client dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from pipeline.errors import MalformedRequest, PixfleetError
from services.api.uploads import ReadChunk

_PASS_THROUGH = (PixfleetError, web.HTTPException, MemoryError, ConnectionError, asyncio.TimeoutError)


@contextmanager
def client_bytes(what: str) -> Iterator[None]:
    """Classify any failure to parse ``what`` (the client's bytes) as :class:`MalformedRequest`."""
    try:
        yield
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160]
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise MalformedRequest(f"{what} is malformed ({reason})") from exc


@dataclass(frozen=True)
class FormPart:
    """One part of a ``multipart/form-data`` body: its field name, file name and guarded reads."""

    name: str | None
    filename: str | None
    _part: BodyPartReader

    async def read_chunk(self, size: int) -> bytes:
        with client_bytes("the multipart body"):
            return await self._part.read_chunk(size)

    async def text(self) -> str:
        with client_bytes(f"the multipart field {self.name!r}"):
            return await self._part.text()


async def form_parts(request: web.Request) -> AsyncIterator[FormPart]:
    """The parts of a multipart request body, in order; raises :class:`MalformedRequest` for a broken body.

    A part must be read (or skipped) before the next one is asked for, as with
    aiohttp's own reader.
    """
    with client_bytes("the multipart body"):
        reader = await request.multipart()
    while True:
        with client_bytes("the multipart body"):
            part = await reader.next()
            if part is None:
                return
            if not isinstance(part, BodyPartReader):
                raise MalformedRequest("nested multipart parts are not supported")
            name, filename = part.name, part.filename
        yield FormPart(name, filename, part)


def raw_reader(request: web.Request) -> ReadChunk:
    """``read(n)`` of a raw (non-multipart) request body, with broken transfer or content encodings → 400."""

    async def read(n: int) -> bytes:
        with client_bytes("the request body"):
            return await request.content.read(n)

    return read
