"""The load balancer's data plane: one HAProxy process, changed only through its runtime API.

:class:`HAProxyLoadBalancer` renders ``haproxy.cfg`` and the rules' map files from a
validated :class:`~services.orchestrator.lb.spec.LoadBalancerSpec`, starts
``haproxy -W -db -f haproxy.cfg`` (master-worker, in the foreground, in its own process
group) and from then on never restarts or reloads it:

* :meth:`register` adds a dynamic server (``add server``) named after the target id,
  with the target group's health check; it starts *down* (forced through ``set server
  … health down`` while drained, so it sees no request meanwhile) and gets traffic once
  it has passed ``HealthyThresholdCount`` checks. Registering a known id on a new
  address moves it (``set server … addr … port …``) and checks it again from scratch.
* :meth:`deregister` drains (``set server … state drain``: no new requests, in-flight
  ones finish), waits until the target has no session or the deregistration delay has
  passed, then ``state maint``, ``shutdown sessions`` for what is left (as ALB closes
  them when the delay ends) and ``del server``.
* :meth:`target_health` reads ``show stat`` and answers in DescribeTargetHealth's
  vocabulary (:mod:`services.orchestrator.lb.health`).
* :meth:`set_rules` replaces a listener's rules: their map is swapped atomically
  (``prepare map`` / ``add map @version`` / ``commit map``); see
  :mod:`services.orchestrator.lb.config` for why rules are a map.

Guaranteed: every change is a runtime-API command, so connections through the load
balancer survive all of them. Not guaranteed: surviving HAProxy itself. If the process
dies, every call raises :class:`~services.orchestrator.lb.runtime_api.RuntimeAPIError`
and the caller decides (a new load balancer registers its targets again).

Targets are IP addresses (dynamic servers do not resolve names) identified by their id
alone (pixfleet registers each task under its task id, on the host port it was given).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

from services.orchestrator.lb.config import Paths, map_lines, render, server_arguments
from services.orchestrator.lb.health import ServerStat, elb_health
from services.orchestrator.lb.runtime_api import RuntimeAPI, RuntimeAPIError
from services.orchestrator.lb.spec import LoadBalancerConfigError, LoadBalancerSpec, parse_rules

_SERVER_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux
POLL = 0.1  # how often a wait re-reads the runtime API


class InvalidTargetError(ValueError):
    """A target id, address or port the load balancer cannot register (ELBv2's InvalidTarget)."""

    code = "InvalidTarget"


class LoadBalancerStartError(RuntimeError):
    """HAProxy did not start; the message carries the end of its log."""


class TargetHealth(TypedDict):
    """One entry of ``target_health()``, in DescribeTargetHealth's words."""

    id: str
    host: str
    port: int
    state: str  # initial | healthy | unhealthy | draining | unavailable
    reason: str | None
    description: str | None


@dataclass
class _Target:
    host: str
    port: int
    registered_at: float
    baseline_down: int = 0  # chkdown right after registration (the forced "down" counts one)
    ever_up: bool = False
    draining: bool = False
    generation: int = 0


class HAProxyLoadBalancer:
    """One HAProxy process serving the listeners and target groups of ``spec``."""

    name = "haproxy"

    def __init__(
        self,
        spec: LoadBalancerSpec,
        run_dir: Path | str,
        *,
        bind_host: str = "127.0.0.1",
        executable: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        runtime_api: Path | tuple[str, int] | None = None,
    ):
        self.spec = spec
        self.bind_host = bind_host
        self.executable = executable or available() or "haproxy"
        self.clock = clock
        run_dir = Path(run_dir).resolve()
        socket = run_dir / "haproxy.sock"
        self._socket_dir: Path | None = None
        if len(str(socket)) > _SOCKET_PATH_MAX:  # a deep test directory: keep the socket short
            self._socket_dir = Path(tempfile.mkdtemp(prefix="pixfleet-lb-"))
            socket = self._socket_dir / "haproxy.sock"
        if any(ch.isspace() for ch in str(run_dir) + str(socket)):
            raise ValueError(f"HAProxy's files need a path without spaces: {run_dir}")
        self.paths = Paths(run_dir, socket)
        self.api = RuntimeAPI(runtime_api or socket)
        self.process: asyncio.subprocess.Process | None = None
        self._targets: dict[str, dict[str, _Target]] = {g.name: {} for g in spec.target_groups}
        self._locks: dict[str, asyncio.Lock] = {g.name: asyncio.Lock() for g in spec.target_groups}
        self._log: Any = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, timeout: float = 15.0) -> None:
        """Write the configuration, start HAProxy, return once its runtime API answers."""
        self.paths.run_dir.mkdir(parents=True, exist_ok=True)
        for listener in self.spec.listeners:
            _write(self.paths.rules_map(listener), "".join(f"{line}\n" for line in map_lines(listener.rules)))
        _write(self.paths.config, render(self.spec, self.paths, self.bind_host))
        with contextlib.suppress(FileNotFoundError):
            self.paths.socket.unlink()
        log_path = self.paths.run_dir / "haproxy.log"
        self._log = open(log_path, "ab")  # noqa: SIM115 - open for the process's lifetime, closed in close()
        try:
            self.process = await asyncio.create_subprocess_exec(
                self.executable,
                "-W",
                "-db",
                "-f",
                str(self.paths.config),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: close() stops master and worker together
            )
        except OSError as exc:
            await self.close()
            raise LoadBalancerStartError(f"cannot run {self.executable} ({exc}); apt-get install haproxy") from None
        deadline = self.clock() + timeout
        while True:
            if self.process.returncode is not None:
                break
            with contextlib.suppress(RuntimeAPIError):
                if (await self.api.execute("show info")).startswith("Name: HAProxy"):
                    return
            if self.clock() > deadline:
                break
            await asyncio.sleep(POLL)
        await self.close()
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise LoadBalancerStartError("HAProxy did not start:\n" + "\n".join(tail))

    async def attach(self, timeout: float = 15.0) -> None:
        """Drive an HAProxy someone else started (same description): learn its targets from ``show stat``.

        The orchestrator does this: the process belongs to the stack (embedded) or is a container
        (compose), so an orchestrator restart keeps the load balancer and its registered targets.
        """
        deadline = self.clock() + timeout
        while True:
            try:
                if (await self.api.execute("show info")).startswith("Name: HAProxy"):
                    break
            except RuntimeAPIError:
                if self.clock() > deadline:
                    raise
            await asyncio.sleep(POLL)
        backends = await self.api.backends()
        for group in self.spec.target_groups:
            for name, stat in (backends.get(group.name) or {}).items():
                if name in ("BACKEND", "FRONTEND"):
                    continue
                host, _, port = stat.address.rpartition(":")
                if not host or not port.isdigit():
                    continue
                self._targets[group.name][name] = _Target(
                    host.strip("[]"),
                    int(port),
                    registered_at=self.clock(),
                    baseline_down=stat.down_transitions,
                    ever_up=stat.status.startswith("UP"),
                    draining=stat.status.startswith(("DRAIN", "MAINT")),
                )

    def registered(self, target_group: str) -> dict[str, tuple[str, int]]:
        """The group's registered targets (draining ones too): id → (host, port)."""
        group = self.spec.target_group(target_group)
        return {i: (t.host, t.port) for i, t in self._targets[group.name].items()}

    async def close(self) -> None:
        """Stop HAProxy (SIGTERM to its process group, SIGKILL after 5 s)."""
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def __aenter__(self) -> HAProxyLoadBalancer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def address(self, listener: str | None = None) -> tuple[str, int]:
        """Where a listener accepts connections."""
        return self.bind_host, self.spec.listener(listener).port

    # --- targets ---------------------------------------------------------------------------------

    async def register(self, target_group: str, target_id: str, host: str, port: int) -> None:
        """Register (or move) a target; it gets traffic once its health checks pass."""
        group = self.spec.target_group(target_group)
        _check_target(target_id, host, port)
        server = f"{group.name}/{target_id}"
        async with self._locks[group.name]:
            known = self._targets[group.name].get(target_id)
            if known is not None and (known.host, known.port) == (host, port):
                if known.draining:  # registered again while draining: back in service
                    await self.api.expect(f"set server {server} state ready")
                    known.draining, known.generation = False, known.generation + 1
                return
            if known is None:
                await self.api.expect(
                    f"add server {server} {server_arguments(group, host, port)}", "New server registered."
                )
                if group.health.enabled:
                    await self.api.expect(f"enable health {server}")
            else:
                await self.api.expect(f"set server {server} state drain")
                answer = await self.api.execute(f"set server {server} addr {host} port {port}")
                if "changed" not in answer and "no need" not in answer:
                    raise RuntimeAPIError(f"set server {server} addr {host} port {port}: {answer}")
            if group.health.enabled:
                # Out of maintenance drained (no traffic), forced down, then ready: it must pass
                # HealthyThresholdCount checks before its first request.
                await self.api.expect(f"set server {server} state drain")
                await self.api.expect(f"set server {server} health down")
            await self.api.expect(f"set server {server} state ready")
            stat = (await self.api.servers(group.name)).get(target_id)
            self._targets[group.name][target_id] = _Target(
                host,
                port,
                registered_at=self.clock(),
                baseline_down=stat.down_transitions if stat else 0,
                generation=known.generation + 1 if known else 0,
            )

    async def deregister(self, target_group: str, target_id: str, drain_seconds: float | None = None) -> None:
        """Drain a target, then remove it: returns when its sessions are done or the delay is over.

        ``drain_seconds`` defaults to the target group's ``deregistration_delay.timeout_seconds``.
        """
        group = self.spec.target_group(target_group)
        server = f"{group.name}/{target_id}"
        async with self._locks[group.name]:
            target = self._targets[group.name].get(target_id)
            if target is None:
                raise InvalidTargetError(f"InvalidTarget: {target_id} is not registered in {group.name}")
            await self.api.expect(f"set server {server} state drain")
            target.draining, target.generation = True, target.generation + 1
            generation = target.generation
        delay = group.deregistration_delay if drain_seconds is None else drain_seconds
        deadline = self.clock() + delay
        while self.clock() < deadline:
            stat = (await self.api.servers(group.name)).get(target_id)
            if stat is None or stat.sessions + stat.queued == 0:
                break
            await asyncio.sleep(POLL)
        async with self._locks[group.name]:
            if self._targets[group.name].get(target_id) is not target or target.generation != generation:
                return  # registered again meanwhile: it stays
            await self.api.expect(f"set server {server} state maint")
            await self.api.expect(f"shutdown sessions server {server}")
            await self._delete(server)
            del self._targets[group.name][target_id]

    async def _delete(self, server: str, timeout: float = 10.0) -> None:
        """``del server``, retried while HAProxy still closes the server's idle connections."""
        deadline = self.clock() + timeout
        while True:
            answer = await self.api.execute(f"del server {server}")
            if answer == "Server deleted.":
                return
            if self.clock() > deadline:
                raise RuntimeAPIError(f"del server {server}: {answer}")
            await asyncio.sleep(POLL)

    async def target_health(self, target_group: str) -> list[TargetHealth]:
        """Every registered target of a group with its ELBv2 state, reason and description."""
        group = self.spec.target_group(target_group)
        stats = await self.api.servers(group.name)
        now = self.clock()
        health: list[TargetHealth] = []
        for target_id, target in list(self._targets[group.name].items()):
            stat = stats.get(target_id) or ServerStat(target_id, "", "MAINT", "", "", 0, 0, 0, 0)
            target.ever_up = (
                target.ever_up or stat.status.startswith("UP") or stat.down_transitions > target.baseline_down
            )
            verdict = elb_health(
                stat,
                draining=target.draining,
                ever_up=target.ever_up,
                since_registered=now - target.registered_at,
                unhealthy_after=group.health.interval * group.health.unhealthy_threshold,
                checks_enabled=group.health.enabled,
            )
            health.append(
                TargetHealth(
                    id=target_id,
                    host=target.host,
                    port=target.port,
                    state=verdict.state,
                    reason=verdict.reason,
                    description=verdict.description,
                )
            )
        return health

    async def server_stats(self, target_group: str) -> dict[str, ServerStat]:
        """HAProxy's own counters of a group's targets (sessions now, sessions in total)."""
        return await self.api.servers(self.spec.target_group(target_group).name)

    # --- rules -------------------------------------------------------------------------------------

    async def set_rules(self, listener: str | None, rules: Iterable[Mapping[str, Any]]) -> None:
        """Replace a listener's rules (``CreateRule`` bodies) at runtime, atomically."""
        current = self.spec.listener(listener)
        problems: list[str] = []
        names = {g.name for g in self.spec.target_groups}
        bodies = list(rules)
        for i, body in enumerate(bodies):
            if body.get("ListenerArn") != current.ref:
                problems.append(f"CreateRule[{i}].ListenerArn: {body.get('ListenerArn')!r} is not {current.ref!r}")
        parsed = parse_rules(bodies, names, f"CreateRule[{current.ref}]", problems)
        if problems:
            raise LoadBalancerConfigError(problems)
        lines = map_lines(parsed)
        map_file = self.paths.rules_map(current)
        await self.api.replace_map(map_file, lines)
        _write(map_file, "".join(f"{line}\n" for line in lines))  # the file says what runs
        listeners = tuple(replace(lst, rules=parsed) if lst is current else lst for lst in self.spec.listeners)
        self.spec = replace(self.spec, listeners=listeners)

    async def rules_in_effect(self, listener: str | None = None) -> list[tuple[str, str]]:
        """The (regex, target group) lines HAProxy matches now, in order."""
        return await self.api.show_map(self.paths.rules_map(self.spec.listener(listener)))


def available() -> str | None:
    """The haproxy executable on PATH (Debian: ``apt-get install haproxy``), or None."""
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)


def _check_target(target_id: str, host: str, port: int) -> None:
    if not _SERVER_NAME.match(target_id):
        raise InvalidTargetError(f"InvalidTarget: id {target_id!r}: 1-64 of A-Z a-z 0-9 _ . : -")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InvalidTargetError(f"InvalidTarget: {host!r} is not an IP address") from None
    if not 1 <= port <= 65535:
        raise InvalidTargetError(f"InvalidTarget: port {port} is outside 1-65535")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
