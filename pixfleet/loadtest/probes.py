"""Where ``pixfleet load`` reads queue depth and running workers, once a second.

* :class:`OrchestratorProbe` — ``GET {orchestrator}/metrics``: visible, in flight, delayed,
  dead letters, and the worker service's running and desired counts (no credentials needed);
* :class:`ApiProbe` — ``GET {api}/v1/fleet``, when only the API is known (no DLQ count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from pipeline.fleet_metrics import queue_depth, service_counts
from pixfleet.orchestrator_client import OrchestratorError


@dataclass(frozen=True)
class FleetReading:
    visible: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    dead_letters: int | None = None
    running_workers: int | None = None
    desired_workers: int | None = None


class FleetProbe(Protocol):
    name: str

    async def read(self, http: aiohttp.ClientSession) -> FleetReading:
        """One reading; raises one of :data:`READ_ERRORS` on a failed read (the sample then records nothing)."""


# What a failed read raises: no answer, a refusal, or an answer of the wrong shape.
READ_ERRORS = (aiohttp.ClientError, TimeoutError, ValueError, KeyError, OrchestratorError)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


class OrchestratorProbe:
    name = "orchestrator"

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    async def read(self, http: aiohttp.ClientSession) -> FleetReading:
        async with http.get(f"{self.url}/metrics", timeout=aiohttp.ClientTimeout(total=3)) as response:
            response.raise_for_status()
            text = await response.text()
        queue = queue_depth(text) or {}
        counts = service_counts(text, "worker")
        return FleetReading(
            visible=_int(queue.get("visible")),
            in_flight=_int(queue.get("in_flight")),
            delayed=_int(queue.get("delayed")),
            dead_letters=_int(queue.get("dead_letters")),
            running_workers=None if counts is None else counts[0],
            desired_workers=None if counts is None else counts[1],
        )


class ApiProbe:
    name = "api"

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    async def read(self, http: aiohttp.ClientSession) -> FleetReading:
        async with http.get(f"{self.url}/v1/fleet", timeout=aiohttp.ClientTimeout(total=3)) as response:
            response.raise_for_status()
            fleet = await response.json()
        queue = fleet.get("queue") or {}
        return FleetReading(
            visible=_int(queue.get("visible")),
            in_flight=_int(queue.get("in_flight")),
            delayed=_int(queue.get("delayed")),
            running_workers=_int(fleet.get("workers")),
            desired_workers=_int(fleet.get("desired_workers")),
        )
