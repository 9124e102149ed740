"""Run tasks as local processes (the runtime of the embedded default).

A task process gets a clean environment built from an allow-list plus what the
task definition and the orchestrator say; the launcher's own AWS keys, profiles
and config files never leak into it, so its only way to AWS credentials is the
credentials endpoint named in its environment. Each task runs in its own
process group, so stopping or killing it takes its child processes (the
worker's pool) along, as a container would. Ports are host ports: a mapping
without ``hostPort`` gets a free one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.net import free_port
from services.orchestrator.runtime import HealthResult, LaunchSpec, TaskHandle

log = logging.getLogger("pixfleet.runtime.process")

# Inherited from the launcher; everything else (notably AWS_*) is dropped.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SYSTEMROOT")
# Keep botocore away from the launcher's ~/.aws files and from instance metadata.
_ISOLATION = {
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "PYTHONUNBUFFERED": "1",
}


def task_environment(extra: dict[str, str]) -> dict[str, str]:
    """The complete environment of a task process."""
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(_ISOLATION)
    env.update(extra)
    return env


def resolve_command(command: tuple[str, ...] | list[str]) -> list[str]:
    """Run ``python …`` commands with the launcher's interpreter (the venv's)."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)


def pid_alive(pid: int, task_id: str | None = None) -> bool:
    """Running (not a zombie) and, when ``task_id`` is given, really that task (no pid reuse)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        if task_id is not None:
            return f"PIXFLEET_TASK_ID={task_id}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return True
    except (OSError, IndexError):
        return False


def _killpg(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pid(handle: TaskHandle) -> int:
    if handle.pid is None:
        raise ValueError(f"task {handle.task_id[:8]} has no process (a container handle given to the process runtime)")
    return handle.pid


class ProcessRuntime:
    """Tasks as local process groups."""

    name = "process"

    def __init__(self, log_dir: Path | str, **_: Any):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._exit_codes: dict[int, int] = {}

    async def start(self, spec: LaunchSpec, resolve_env: Callable[[dict[int, int]], dict[str, str]]) -> TaskHandle:
        ports = {container: host if host else free_port() for container, host in spec.port_mappings}
        env = task_environment({**resolve_env(ports), "PIXFLEET_TASK_ID": spec.task_id})
        log_path = self.log_dir / f"{spec.family}-{spec.task_id[:8]}.log"
        with open(log_path, "ab") as out:
            process = await asyncio.create_subprocess_exec(
                *resolve_command(spec.command),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group; Ctrl-C reaches the launcher only
            )
        self._children[process.pid] = process
        log.info("started %s task %s (pid %d)", spec.family, spec.task_id[:8], process.pid)
        return TaskHandle(task_id=spec.task_id, pid=process.pid, ports=ports, log=str(log_path))

    async def wait(self, handle: TaskHandle) -> int | None:
        pid = _pid(handle)
        if pid in self._exit_codes:
            return self._exit_codes[pid]
        child = self._children.get(pid)
        if child is not None:
            code = await child.wait()
            self._exit_codes[pid] = code
            self._children.pop(pid, None)
            _killpg(pid)  # leftovers of the task (e.g. its pool) go with it, as in a container
            return code
        # An adopted task is not our child: watch it, its exit code is not ours to read.
        while pid_alive(pid, handle.task_id or None):
            await asyncio.sleep(0.5)
        _killpg(pid)
        return None

    async def stop(self, handle: TaskHandle, timeout: float) -> int | None:
        pid = _pid(handle)
        ours = pid in self._children
        if ours or pid_alive(pid, handle.task_id or None):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                return await asyncio.wait_for(self.wait(handle), timeout)
            except TimeoutError:
                log.warning("task %s ignored SIGTERM for %.0fs: killing", handle.task_id[:8], timeout)
                self.kill(handle)
        try:
            return await asyncio.wait_for(self.wait(handle), 30)
        except TimeoutError:  # never seen; but a stop must end
            log.error("task %s (pid %d) did not exit 30 s after SIGKILL", handle.task_id[:8], pid)
            return None

    def kill(self, handle: TaskHandle) -> None:
        """SIGKILL the task and every process it started (like `docker kill` on its container)."""
        pid = _pid(handle)
        if pid_alive(pid, handle.task_id or None) or pid in self._children:
            _killpg(pid)

    async def alive(self, handle: TaskHandle) -> bool:
        child = self._children.get(_pid(handle))
        if child is not None:  # our own child: its return code says, even before it has exec'd its command
            return child.returncode is None
        return pid_alive(_pid(handle), handle.task_id or None)

    async def health_check(
        self, handle: TaskHandle, command: tuple[str, ...], env: dict[str, str], timeout: float
    ) -> HealthResult:
        kind, *rest = command
        argv = ["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else resolve_command(rest)
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=task_environment(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            return HealthResult(False, f"cannot run health check: {exc}")
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it may have ended as the timeout struck
                proc.kill()
            await proc.wait()
            return HealthResult(False, f"health check timed out after {time.monotonic() - started:.1f}s")
        return HealthResult(proc.returncode == 0, out.decode(errors="replace")[-4096:])

    async def strays(self, known: set[str]) -> list[TaskHandle]:
        """Processes carry no labels to find them by; adoption relies on the saved state alone."""
        return []
