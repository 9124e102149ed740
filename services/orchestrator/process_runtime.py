"""Run tasks as local processes (the runtime of the embedded default; Docker comes later).

A task process gets a clean environment built from an allow-list plus what the
task definition says; the launcher's own AWS keys, profiles and config files
never leak into it, so its only way to AWS credentials is the credentials
endpoint named in its environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class ProcessTask:
    """One running task process."""

    task_id: str
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    started_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None


class ProcessRuntime:
    """Starts and stops task processes with ECS's stop semantics (SIGTERM, then SIGKILL)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

    async def start(self, task_id: str, name: str, command: list[str], env: dict[str, str]) -> ProcessTask:
        log_path = self.log_dir / f"{name}-{task_id[:8]}.log"
        with open(log_path, "ab") as out:
            process = await asyncio.create_subprocess_exec(
                *_resolve(command),
                env=task_environment(env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal reaches the launcher only
            )
        log.info("started %s task %s (pid %d)", name, task_id[:8], process.pid)
        return ProcessTask(task_id, name, process, log_path)

    async def stop(self, task: ProcessTask, timeout: float) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; return the exit code."""
        if task.running:
            task.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(task.process.wait(), timeout)
            except TimeoutError:
                log.warning("%s task %s ignored SIGTERM for %.0fs: killing", task.name, task.task_id[:8], timeout)
                self.kill(task)
        code = await task.process.wait()
        _killpg(task.pid)  # leftovers of the task (its pool processes) go with it, as in a container
        return code

    def kill(self, task: ProcessTask) -> None:
        """SIGKILL the task and every process it started (like `docker kill` on its container)."""
        _killpg(task.pid)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _resolve(command: list[str]) -> list[str]:
    """Run ``python …`` commands with the launcher's interpreter (the venv's)."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return command
