"""The command line as a user runs it: `python -m pixfleet …` subprocesses in an 80-column terminal.

`up` in the foreground (Ctrl-C) and in the background (`down`), `submit` of files and folders, `status`,
`events`, `service scale`, `env` with the AWS CLI, `provision`, and the help of every command: no line
of any of them is wider than 80 columns.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import click
import pytest
from PIL import Image
from rich.cells import cell_len

import images
from infra.emulator import MotoServer
from pixfleet.orchestrator_client import OrchestratorClient

PIXFLEET = [sys.executable, "-m", "pixfleet"]
WIDTH = 80


def submit_thumbs(photo: Path, out: Path, env: dict[str, str]) -> dict:
    """``pixfleet submit PHOTO --preset thumbs --out OUT --json``: the one job's result, which succeeded."""
    done = subprocess.run(
        [*PIXFLEET, "submit", str(photo), "--preset", "thumbs", "--out", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    return result


def _run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None, fits: bool = True
) -> subprocess.CompletedProcess[str]:
    """``python -m pixfleet ARGS`` at 80 columns; its output checked against the width (not for JSON or --wide)."""
    done = subprocess.run(
        [*PIXFLEET, *args],
        env={**(env or os.environ), "COLUMNS": str(WIDTH)},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    if fits:
        assert_fits(done, " ".join(args))
    return done


def assert_fits(done: subprocess.CompletedProcess[str], what: str) -> None:
    for stream in (done.stdout, done.stderr):
        wide = [line for line in stream.splitlines() if cell_len(line.rstrip()) > WIDTH]
        assert not wide, f"`pixfleet {what}` printed lines over {WIDTH} columns:\n" + "\n".join(wide)


def _wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            output = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"pixfleet up exited with {process.returncode}: {output}")
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
        result = submit_thumbs(photo, out, env)
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


def _without_haproxy(command: list[str]) -> list[str]:
    """``command`` where no haproxy can be found: each one installed here (on PATH, or Debian's
    /usr/sbin/haproxy) is covered by /dev/null, which is not executable, in a private mount namespace."""
    installed = sorted({p for p in (shutil.which("haproxy"), "/usr/sbin/haproxy") if p and os.access(p, os.X_OK)})
    if not installed:
        return command
    hide = " && ".join(f"mount --bind /dev/null {shlex.quote(p)}" for p in installed)
    user = [] if os.geteuid() == 0 else ["--map-root-user"]  # unprivileged: a user namespace may mount
    return ["unshare", "--mount", "--propagation", "private", *user, "sh", "-c", f'{hide} && exec "$@"', "sh", *command]


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: every writer closed the terminal
            return
        if not data:
            return
        into.append(data)


def test_up_without_haproxy_says_so_once_and_serves_uploads_from_one_task(tmp_path: Path) -> None:
    """`pixfleet up` in an 80-column terminal on a machine without haproxy: one warning, on its own
    line (not into the start-up spinner), and the stack still serves uploads, the API as one task."""
    state = tmp_path / "state"
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(state), "COLUMNS": str(WIDTH), "TERM": "xterm-256color"}
    command = _without_haproxy([*PIXFLEET, "up", "--port", "0", "--workers", "1", "--state-dir", str(state)])
    terminal, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 24, WIDTH, 0, 0))
    up = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=tty, stderr=tty)
    os.close(tty)
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(terminal, chunks), daemon=True)
    reader.start()

    def screen() -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))

    try:
        deadline = time.monotonic() + 90
        while not (state / "stack.json").exists():
            assert up.poll() is None, f"pixfleet up exited with {up.returncode}:\n{screen()}"
            assert time.monotonic() < deadline, f"pixfleet up not up after 90 s:\n{screen()}"
            time.sleep(0.2)
        stack = json.loads((state / "stack.json").read_text())
        assert stack["load_balancer"] is None
        api = asyncio.run(OrchestratorClient.from_stack(stack).service("api"))  # DescribeServices
        assert (api["desiredCount"], api["runningCount"]) == (1, 1)

        photo = tmp_path / "photo.jpg"
        photo.write_bytes(images.photo_jpeg(800, 600))
        submit_thumbs(photo, tmp_path / "out", env)

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        reader.join(10)
        os.close(terminal)
    lines = [line.rstrip() for line in re.split(r"[\r\n]+", screen())]
    said = " ".join(" ".join(lines).split())
    warning = (
        "WARNING pixfleet.embedded: no load balancer: haproxy is not installed (apt-get install haproxy),"
        " so the API is one task on a free port"
    )
    assert said.count(warning) == 1 and said.count("no load balancer") == 1, said
    (first,) = [line for line in lines if "WARNING" in line]
    assert first.startswith("WARNING pixfleet.embedded:"), f"the warning ran into another line: {first!r}"
    wide = [line for line in lines if cell_len(line) > WIDTH]
    assert not wide, "lines over 80 columns:\n" + "\n".join(wide)
    assert "stopped." in lines


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


# --- a stack in the background, shared by the tests below ------------------------------------


@dataclass(frozen=True)
class Background:
    state: Path
    env: dict[str, str]
    stack: dict


@pytest.fixture(scope="module")
def background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """`pixfleet up --detach`: returns once the stack is up; `pixfleet down` at the end."""
    state = tmp_path_factory.mktemp("background") / "state"
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(state)}
    started = _run("up", "--detach", "--port", "0", "--max-workers", "3", env=env, timeout=240)
    assert started.returncode == 0, started.stderr
    assert "pixfleet is up" in started.stderr and "pixfleet down" in started.stderr
    stack = json.loads((state / "stack.json").read_text())
    try:
        yield Background(state, env, stack)
    finally:
        stopped = _run("down", env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def test_detached_up_records_its_process_and_refuses_a_second_stack(background: Background) -> None:
    owner = background.stack["process"]
    assert _running(owner["pid"]) and owner["pid"] != os.getpid()
    assert background.stack["taskdefs"].endswith("config/taskdefs")
    again = _run("up", "--port", "0", env=background.env)
    assert again.returncode == 1
    assert "already running" in again.stderr and "pixfleet down" in again.stderr


def test_status_is_readable_at_80_columns(background: Background) -> None:
    done = _run("status", env=background.env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "…" not in out, out  # no cell cut short
    for text in ("queue", "service", "task definition", "tasks", "scaling", "deployment", "health", "jobs"):
        assert text in out, (text, out)
    for name in ("api", "worker", "deadletter", "pixfleet-api:1", "pixfleet-worker:1", "pixfleet-deadletter:1"):
        assert name in out, (name, out)
    assert "1..3" in out and "completed" in out
    data = json.loads(_run("status", "--json", env=background.env, fits=False).stdout)
    wide = _run("status", "--wide", env=background.env, fits=False)  # as wide as it takes, on request
    assert wide.returncode == 0 and "stopping" in wide.stdout and "pid / container" in wide.stdout
    assert all(f"{t['taskId']} " in wide.stdout for t in data["tasks"]), wide.stdout  # full ids, one line each
    assert {s["serviceName"] for s in data["services"]} == {"api", "worker", "deadletter"}
    task_ids = {t["taskId"][:8] for t in data["tasks"]}
    assert all(t in out for t in task_ids), out  # every task, by its short id
    events = _run("events", "--limit", "50", env=background.env)
    assert events.returncode == 0 and "has reached a steady state" in " ".join(events.stdout.split())


def test_submit_a_folder_shows_input_job_outcome_and_names_outputs_after_inputs(
    background: Background, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    (photos / "2024" / ".thumbnails").mkdir(parents=True)
    (photos / "beach.jpg").write_bytes(images.photo_jpeg(640, 480, seed=1))
    (photos / "2024" / "beach.jpg").write_bytes(images.photo_jpeg(480, 640, seed=2))  # same name, other folder
    (photos / "2024" / "logo.png").write_bytes(images.png_rgba(400, 300))
    (photos / "2024" / "scan").write_bytes(images.webp(320, 300))  # no extension: found by its magic bytes
    (photos / "2024" / "torn.jpg").write_bytes(images.truncated_jpeg(800, 600))  # fails in the worker
    (photos / "notes.txt").write_text("not an image")
    (photos / "2024" / ".thumbnails" / "t.jpg").write_bytes(images.photo_jpeg(32, 32))
    done = _run("submit", "photos", "--preset", "thumbs", "--out", "out", env=background.env, cwd=tmp_path, timeout=240)
    assert done.returncode == 1, done.stderr  # one input failed
    assert done.stdout.split()[:4] == ["input", "job", "outcome", "output"]
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[1:] if line.strip()}
    expected_folders = {  # a folder's files before its subfolders'
        "photos/beach.jpg": "beach",
        "photos/2024/beach.jpg": "beach-2",
        "photos/2024/logo.png": "logo",
        "photos/2024/scan": "scan",
    }
    for rel, folder in expected_folders.items():
        row = rows[rel]
        assert len(row[0]) == 8 and row[1:3] == ["succeeded:", "1"], row  # thumbs: one variant
        assert row[-1] == f"out/{folder}/", row
        (thumb,) = (tmp_path / "out" / folder).iterdir()
        assert Image.open(thumb).size == (256, 256)
    torn = rows["photos/2024/torn.jpg"]
    assert torn[1:3] == ["failed:", "corrupt_image"], torn
    assert not any(".thumbnails" in line or "notes.txt" in line for line in done.stdout.splitlines())
    assert "skipped 1 file that is not an image" in " ".join(done.stderr.split())
    assert "4 succeeded, 1 failed" in done.stderr
    assert "jobs" in done.stderr  # the progress bar counts jobs, not bytes
    assert "bytes" not in done.stderr

    as_json = _run(
        "submit", str(photos / "2024" / "logo.png"), str(photos / "notes.txt"), "--json", env=background.env, fits=False
    )
    assert as_json.returncode == 1  # notes.txt, named explicitly, is sent and refused
    accepted, refused = json.loads(as_json.stdout)
    assert accepted["file"].endswith("logo.png") and len(accepted["job_id"]) == 32 and accepted["status_url"]
    assert refused["http_status"] == 415 and refused["error"]["code"] == "not_an_image"


def test_submit_of_a_folder_without_images_exits_2(background: Background, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("# nothing to see")
    done = _run("submit", str(tmp_path / "docs"), env=background.env)
    assert done.returncode == 2 and "no images to upload" in done.stderr


def test_env_points_the_aws_cli_at_the_stack(background: Background, tmp_path: Path) -> None:
    env = {k: v for k, v in background.env.items() if not k.startswith("AWS_")}
    done = _run("env", env=env)
    assert done.returncode == 0, done.stderr
    assert f"export AWS_ENDPOINT_URL={background.stack['aws_endpoint_url']}" in done.stdout
    # as the README says: eval "$(pixfleet env)", then the AWS CLI (awscli from PyPI)
    pixfleet = " ".join(PIXFLEET)
    script = f'eval "$({pixfleet} env)" && {sys.executable} -m awscli s3 ls'
    aws = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert aws.returncode == 0, aws.stderr
    assert background.stack["input_bucket"] in aws.stdout and background.stack["output_bucket"] in aws.stdout
    # the same exports and keys drive the control plane: `aws ecs` against the orchestrator, no flags
    script = (
        f'eval "$({pixfleet} env)" && {sys.executable} -m awscli ecs describe-services --services worker api'
        " --query 'services[].[serviceName,status,desiredCount]' --output json"
    )
    ecs = subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ecs.returncode == 0, ecs.stderr
    described = {name: (status, desired) for name, status, desired in json.loads(ecs.stdout)}
    api_tasks = 2 if background.stack.get("load_balancer") else 1  # two API tasks behind HAProxy
    assert described == {"api": ("ACTIVE", api_tasks), "worker": ("ACTIVE", 1)}, described
    # a shell that evaluated the exports finds the stack from any directory (PIXFLEET_STATE_DIR is among them)
    script = f'eval "$({pixfleet} env --state-dir {background.state})" && {pixfleet} status --json'
    status = subprocess.run(
        ["bash", "-c", script],
        env={k: v for k, v in env.items() if k != "PIXFLEET_STATE_DIR"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    # a control plane known only by its URL and admin token (the compose stack's): the ECS exports
    url = background.stack["ecs_endpoint_url"]
    script = (
        f'eval "$({pixfleet} env --orchestrator {url})" && {sys.executable} -m awscli ecs list-services'
        " --query 'length(serviceArns)' --output text"
    )
    token_env = {**env, "PIXFLEET_ORCHESTRATOR_TOKEN": background.stack["orchestrator_token"]}
    listed = subprocess.run(
        ["bash", "-c", script], env=token_env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and listed.stdout.strip() == "3", listed.stderr


def _worker(background: Background) -> dict:
    data = json.loads(_run("status", "--json", env=background.env, fits=False).stdout)
    return next(s for s in data["services"] if s["serviceName"] == "worker")


def test_scale_desired_on_an_autoscaled_service_is_refused_unless_pinned(background: Background) -> None:
    refused = _run("service", "scale", "worker", "--desired", "2", env=background.env)
    assert refused.returncode == 2
    message = " ".join(refused.stderr.split())
    assert "autoscaled (1..3)" in message and "--pin" in message and "--min/--max" in message
    assert _worker(background)["desiredCount"] == 1  # nothing changed

    pinned = _run("service", "scale", "worker", "--desired", "2", "--pin", env=background.env)
    assert pinned.returncode == 0, pinned.stderr
    assert "pinned at 2 tasks" in pinned.stdout and "--min 1 --max 3" in pinned.stdout
    deadline = time.monotonic() + 90
    while (worker := _worker(background))["runningCount"] != 2:  # the scaler keeps it there: min = max = 2
        assert time.monotonic() < deadline, worker
        time.sleep(0.5)
    assert (worker["autoScaling"]["min"], worker["autoScaling"]["max"], worker["desiredCount"]) == (2, 2, 2)

    released = _run("service", "scale", "worker", "--min", "1", "--max", "3", env=background.env)
    assert released.returncode == 0 and "autoscaling 1..3 (was 2..2)" in " ".join(released.stdout.split())
    fixed = _run("service", "scale", "api", "--desired", "1", env=background.env)
    assert fixed.returncode == 0 and "api: desired count 1" in fixed.stdout


def test_every_command_and_its_help_fit_80_columns(background: Background) -> None:
    from pixfleet.cli import main

    def paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
        for name, command in group.commands.items():
            yield (*prefix, name)
            if isinstance(command, click.Group):
                yield from paths(command, (*prefix, name))

    runs = [(), *paths(main)]
    with ThreadPoolExecutor(4) as pool:
        helps = list(pool.map(lambda p: _run(*p, "--help", env=background.env), runs))
    for path, done in zip(runs, helps, strict=True):
        assert done.returncode == 0, (path, done.stderr)
    commands = [("taskdef", "list"), ("events",), ("dlq", "list"), ("task", "kill", "nosuchtask")]
    for args in commands:
        _run(*args, env=background.env)


# --- `down` ------------------------------------------------------------------------------------


def test_down_stops_a_stack_started_in_the_background(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(state), "COLUMNS": str(WIDTH)}
    up = subprocess.Popen(  # `pixfleet up &`
        [*PIXFLEET, "up", "--port", "0"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for_file(state / "stack.json", up)
        stack = json.loads((state / "stack.json").read_text())
        assert stack["process"]["pid"] == up.pid
        children = _descendants(up.pid)
        done = _run("down", env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert lines[0].startswith(f"stopping the stack (pid {up.pid}")
        assert any("draining" in line for line in lines) and lines[-1].startswith("stopped in")
        assert up.wait(10) == 0  # `down` returned after the process had exited
        assert not (state / "stack.json").exists()
        alive = {p for p in children if _running(p)}
        assert not alive, f"left behind: {[_describe(p) for p in alive]}"
        again = _run("down", env=env)
        assert again.returncode == 0 and "nothing to stop" in again.stderr
    finally:
        if up.poll() is None:
            up.kill()


def test_down_cleans_up_a_stale_stack_json(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state = tmp_path / "state"
    state.mkdir()
    stale = {"api_url": "http://127.0.0.1:1", "orchestrator_url": "http://127.0.0.1:1"}
    stale["process"] = {"pid": gone.pid, "started_at": time.time() - 60}  # type: ignore[assignment]
    (state / "stack.json").write_text(json.dumps(stale))
    env = {**os.environ, "PIXFLEET_STATE_DIR": str(state)}
    status = _run("status", env=env)
    assert status.returncode == 1 and "stale" in status.stderr and "pixfleet down" in status.stderr
    done = _run("down", env=env)
    assert done.returncode == 0 and "was stale" in " ".join(done.stderr.split())
    assert not (state / "stack.json").exists()


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("up", "--port", str(port), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 1
    assert f"port {port}" in done.stderr and "--port 0" in done.stderr
    assert not (tmp_path / "state" / "stack.json").exists()
