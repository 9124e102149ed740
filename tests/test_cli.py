"""The command line as a user runs it: `pixfleet up`, `pixfleet submit`, `pixfleet provision`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

import images
from infra.emulator import MotoServer

PIXFLEET = [sys.executable, "-m", "pixfleet"]


def _wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"pixfleet up exited with {process.returncode}: {process.stderr.read().decode() if process.stderr else ''}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout}s")
        time.sleep(0.2)


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child that this machine's init has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _describe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return str(pid)


def test_up_submit_and_stop(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(state)}
    up = subprocess.Popen(
        [*PIXFLEET, "up", "--port", "0", "--workers", "1", "--state-dir", str(state)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_for_file(state / "stack.json", up)
        stack = json.loads((state / "stack.json").read_text())
        expected = {
            "api_url",
            "aws_endpoint_url",
            "region",
            "input_bucket",
            "output_bucket",
            "queue_url",
            "dlq_url",
            "role_arns",
            "bootstrap_credentials",
        }
        assert expected <= set(stack)
        assert set(stack["role_arns"]) == {"api", "worker", "deadletter", "orchestrator"}
        children = _descendants(up.pid)
        assert len(children) >= 3  # moto, api, worker (and the worker's pool)

        photo = tmp_path / "photo.jpg"
        photo.write_bytes(images.photo_jpeg(1000, 750))
        out = tmp_path / "out"
        done = subprocess.run(
            [*PIXFLEET, "submit", str(photo), "--preset", "thumbs", "--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        (result,) = json.loads(done.stdout)
        assert result["status"] == "succeeded"
        (thumb,) = result["files"]
        assert Image.open(thumb).size == (256, 256)

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(60) == 0
        assert not (state / "stack.json").exists()
        alive = {p for p in children if _running(p)}
        assert not alive, f"left behind: {[_describe(p) for p in alive]}"
    finally:
        if up.poll() is None:
            up.kill()


def test_submit_without_a_stack_is_a_clear_error(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(images.photo_jpeg(50, 50))
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(tmp_path / "none")}
    done = subprocess.run([*PIXFLEET, "submit", str(photo)], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "pixfleet up" in done.stderr


def test_provision_is_idempotent_from_the_command_line(tmp_path: Path) -> None:
    with MotoServer(log_path=tmp_path / "moto.log") as moto:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        first = subprocess.run(
            [*PIXFLEET, "provision", "--endpoint-url", moto.url], env=env, capture_output=True, text=True, timeout=60
        )
        assert first.returncode == 0, first.stderr
        second = subprocess.run(
            [*PIXFLEET, "provision", "--endpoint-url", moto.url], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 0, second.stderr
        assert json.loads(first.stdout) == json.loads(second.stdout)
        assert json.loads(first.stdout)["queue_url"].endswith("/pixfleet-jobs")
