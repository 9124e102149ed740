"""A small asyncio client of HAProxy's runtime API (the stats socket, admin level).

One connection per command, as ``socat`` does: HAProxy answers and closes. Commands
that change state answer with an empty line or a fixed sentence; anything else is
an error and raises :class:`RuntimeAPIError` with HAProxy's own words.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.orchestrator.lb.health import ServerStat


class RuntimeAPIError(RuntimeError):
    """HAProxy refused a command, or its socket does not answer."""

    code = "InternalFailure"


class RuntimeAPI:
    """Commands on one HAProxy's stats socket."""

    def __init__(self, socket_path: Path | tuple[str, int], timeout: float = 10.0):
        self.socket_path = socket_path  # a Unix socket, or (host, port) of a TCP one (another container's)
        self.timeout = timeout

    def _connect(self) -> Any:
        if isinstance(self.socket_path, tuple):
            return asyncio.open_connection(*self.socket_path)
        return asyncio.open_unix_connection(str(self.socket_path))

    async def execute(self, command: str, payload: list[str] | None = None) -> str:
        """Send one command (with an optional ``<<`` payload of lines) and return the answer."""
        if "\n" in command or ";" in command:
            raise ValueError(f"one command at a time, without newlines or ';': {command!r}")
        text = command + "\n"
        if payload is not None:  # "<<": the lines that follow, up to an empty one, are the payload
            text = command + " <<\n" + "".join(f"{line}\n" for line in payload) + "\n"
        try:
            reader, writer = await asyncio.wait_for(self._connect(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise RuntimeAPIError(f"HAProxy's runtime API at {self.socket_path} does not answer: {exc}") from exc
        try:
            writer.write(text.encode())
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise RuntimeAPIError(f"{command}: no answer from HAProxy ({exc!r})") from exc
        finally:
            writer.close()
        return answer.decode(errors="replace").strip()

    async def expect(self, command: str, *answers: str, payload: list[str] | None = None) -> str:
        """Run a command that must answer one of ``answers`` ("" = nothing)."""
        answer = await self.execute(command, payload)
        if answer not in (answers or ("",)):
            raise RuntimeAPIError(f"{command}: {answer or 'no answer'}")
        return answer

    async def servers(self, backend: str) -> dict[str, ServerStat]:
        """``show stat`` of one backend's servers, by server name."""
        answer = await self.execute(f"show stat {backend} 4 -1")
        if not answer.startswith("# "):
            raise RuntimeAPIError(f"show stat {backend}: {answer or 'no answer'}")
        return {row["svname"]: ServerStat.from_row(row) for row in parse_csv(answer)}

    async def backends(self) -> dict[str, dict[str, ServerStat]]:
        """``show stat`` of every backend's servers: backend → server name → row."""
        answer = await self.execute("show stat -1 4 -1")
        if not answer.startswith("# "):
            raise RuntimeAPIError(f"show stat: {answer or 'no answer'}")
        found: dict[str, dict[str, ServerStat]] = {}
        for row in parse_csv(answer):
            found.setdefault(row["pxname"], {})[row["svname"]] = ServerStat.from_row(row)
        return found

    async def prepare_map(self, map_file: Path) -> int:
        answer = await self.execute(f"prepare map {map_file}")
        prefix = "New version created:"
        if not answer.startswith(prefix):
            raise RuntimeAPIError(f"prepare map {map_file}: {answer or 'no answer'}")
        return int(answer[len(prefix) :].strip())

    async def replace_map(self, map_file: Path, lines: list[str]) -> None:
        """Replace every line of a map at once: prepare a version, fill it, commit it."""
        version = await self.prepare_map(map_file)
        if lines:
            await self.expect(f"add map @{version} {map_file}", payload=lines)
        await self.expect(f"commit map @{version} {map_file}")

    async def show_map(self, map_file: Path) -> list[tuple[str, str]]:
        """The current lines of a map as (key, value), in match order."""
        answer = await self.execute(f"show map {map_file}")
        entries = []
        for line in answer.splitlines():
            _ref, key, value = [*line.split(" ", 2), "", ""][:3]
            entries.append((key, value))
        return entries


def parse_csv(text: str) -> list[dict[str, str]]:
    """HAProxy's CSV (``show stat``): a ``# name,name,…`` header, then one row per line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].rstrip(",").split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
