"""Moto as a real HTTP emulator in a subprocess, with IAM enforced like AWS.

Life of an emulator (what :func:`start_provisioned_emulator` does in one call):

1. :meth:`MotoServer.start` runs ``python -m moto.server`` on a free local port.
2. :meth:`MotoServer.bootstrap` creates the admin user ``pixfleet-bootstrap`` and
   its access key while moto still accepts any keys.
3. :func:`infra.provision.provision` creates the stack with those keys.
4. :meth:`MotoServer.enforce_iam` switches IAM checks on: from then on only real
   IAM keys (the bootstrap user's, or assumed-role sessions) are accepted, and
   every request is authorized against the caller's policies.

Moto compares role trust principals with the caller's exact ARN and never expands
``arn:aws:iam::ACCOUNT:root``; :func:`emulator_spec` therefore adds the two callers
that assume roles here: the bootstrap user, and the orchestrator's session, which
must be named :data:`ORCHESTRATOR_SESSION_NAME`.

The server process is ``python -m infra.moto_server``: moto's own server with the
patches in :mod:`infra.moto_server` (presigned requests under IAM enforcement, SQS
dead-letter redrive, multipart-upload lifecycle rules). This module is only the
parent's side: start, wait, bootstrap, enforce, stop.
"""

from __future__ import annotations

import contextlib

import asyncio
import dataclasses
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

import botocore.session

from infra import REPO_ROOT
from infra.credentials import EMULATOR_DUMMY_CREDENTIALS
from infra.provision import StackOutputs, provision
from infra.stack import StackSpec
from pipeline.net import free_port
from pipeline.errors import RetryableError

BOOTSTRAP_USER = "pixfleet-bootstrap"
ORCHESTRATOR_SESSION_NAME = "pixfleet-orchestrator"
STACK_OUTPUTS_FILE = "stack-outputs.json"
_PARENT_PID_ENV = "PIXFLEET_MOTO_PARENT_PID"  # read by infra.moto_server

_ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


class EmulatorUnavailable(RetryableError):
    """The moto server did not start, died, or does not answer."""

    code = "emulator_unavailable"


def emulator_spec(spec: StackSpec = StackSpec()) -> StackSpec:
    """``spec`` plus the trust principals moto needs (see the module docstring)."""
    extra = (
        f"arn:{{partition}}:iam::{{account_id}}:user/{BOOTSTRAP_USER}",
        f"arn:{{partition}}:sts::{{account_id}}:assumed-role/{spec.orchestrator_role}/{ORCHESTRATOR_SESSION_NAME}",
    )
    missing = tuple(p for p in extra if p not in spec.trusted_principals)
    return dataclasses.replace(spec, trusted_principals=spec.trusted_principals + missing)


class MotoServer:
    """One ``moto.server`` subprocess; a sync and async context manager.

    ``log_path`` receives the server's output (request log and errors); without it
    a temporary file is used and removed by :meth:`stop`. ``presigned_auth=False``
    runs plain ``python -m moto.server`` (presigned requests then fail once IAM is
    enforced; see the module docstring). With ``exit_with_parent`` (the default,
    presigned_auth only) the server exits when the process that started it dies,
    so a killed test run leaves no emulator behind.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        region: str = "us-east-1",
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
        presigned_auth: bool = True,
        exit_with_parent: bool = True,
    ):
        self.host = host
        self.region = region
        self.startup_timeout = startup_timeout
        self.presigned_auth = presigned_auth
        self.exit_with_parent = exit_with_parent
        self._iam_enforced = False
        self._requested_port = port
        self._port: int | None = None
        self._log_path = Path(log_path) if log_path is not None else None
        self._temp_log = log_path is None
        self._process: subprocess.Popen[bytes] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise EmulatorUnavailable("the moto server has not been started")
        return f"http://{self.host}:{self._port}"

    @property
    def pid(self) -> int:
        """The server process's id (a fault drill SIGSTOPs it; the benchmarks measure its CPU)."""
        if self._process is None:
            raise EmulatorUnavailable("the moto server has not been started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def start(self) -> MotoServer:
        """Start the server and wait until it answers HTTP; raise EmulatorUnavailable otherwise.

        A freely picked port can be taken by someone else between picking and
        binding, so a lost race is retried on a fresh port.
        """
        if self.running:
            return self
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            self._spawn(self._requested_port or free_port(self.host))
            try:
                self._wait_until_ready()
                return self
            except EmulatorUnavailable:
                port_taken = "Address already in use" in self._log_tail()
                self._terminate()
                if not port_taken or attempt == attempts - 1:
                    self._remove_temp_log()
                    raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the server (kill it if it ignores SIGTERM for ``timeout`` seconds)."""
        self._terminate(timeout)
        self._remove_temp_log()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> MotoServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def _spawn(self, port: int) -> None:
        if self._temp_log:
            self._remove_temp_log()
            fd, name = tempfile.mkstemp(prefix="pixfleet-moto-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        assert self._log_path is not None
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._port = port
        env = dict(os.environ)
        module = "moto.server"
        if self.presigned_auth:
            module = "infra.moto_server"
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
            if self.exit_with_parent:
                env[_PARENT_PID_ENV] = str(os.getpid())
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", module, "-H", self.host, "-p", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C goes to our process; we stop the server
            )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EmulatorUnavailable(
                    f"moto server exited with status {self._process.returncode} during startup:\n{self._log_tail()}"
                )
            try:
                self._request("GET", "/moto-api/reset-auth", timeout=1.0)  # any HTTP answer means ready
                return
            except OSError:
                time.sleep(0.1)
        raise EmulatorUnavailable(
            f"moto server did not answer on {self.url} within {self.startup_timeout:.0f}s:\n{self._log_tail()}"
        )

    def _terminate(self, timeout: float = 5.0) -> None:
        self._iam_enforced = False  # a restarted server starts open again
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def _remove_temp_log(self) -> None:
        if self._temp_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def _log_tail(self, lines: int = 30) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        text = self._log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"

    def _request(self, method: str, path: str, body: bytes | None = None, timeout: float = 10.0) -> bytes:
        assert self._port is not None
        connection = http.client.HTTPConnection(self.host, self._port, timeout=timeout)
        try:
            connection.request(method, path, body=body)
            return connection.getresponse().read()
        finally:
            connection.close()

    # --- IAM -------------------------------------------------------------------------------

    def bootstrap(self) -> dict[str, str]:
        """Create the admin user ``pixfleet-bootstrap`` and return its access key.

        Must run before :meth:`enforce_iam`: until then moto accepts any keys, after
        it only keys that exist in moto's IAM. Calling it again (before
        enforcement) adds another key to the same user.
        """
        if self._iam_enforced:
            raise RuntimeError("bootstrap() must run before enforce_iam(): moto now refuses unknown keys")
        return bootstrap_admin(self.url, self.region)

    def enforce_iam(self) -> None:
        """Authenticate and authorize every following request, like AWS.

        moto's ``/moto-api/reset-auth`` sets how many requests may pass unchecked
        (default: infinitely many) and restarts the count; ``0`` means none.
        """
        enforce_iam(self.url)
        self._iam_enforced = True


def bootstrap_admin(endpoint_url: str, region: str) -> dict[str, str]:
    """Create (or reuse) the bootstrap admin user and a new access key, while moto checks nothing yet."""
    iam = botocore.session.get_session().create_client(
        "iam",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=EMULATOR_DUMMY_CREDENTIALS["access_key_id"],
        aws_secret_access_key=EMULATOR_DUMMY_CREDENTIALS["secret_access_key"],
    )
    try:
        with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
            iam.create_user(UserName=BOOTSTRAP_USER)
        iam.put_user_policy(
            UserName=BOOTSTRAP_USER, PolicyName="administrator", PolicyDocument=json.dumps(_ADMIN_POLICY)
        )
        key = iam.create_access_key(UserName=BOOTSTRAP_USER)["AccessKey"]
    finally:
        iam.close()
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def enforce_iam(endpoint_url: str) -> None:
    """moto's ``/moto-api/reset-auth`` with ``0``: every following request is authenticated and authorized.

    (It sets how many requests may pass unchecked — by default infinitely many — and restarts the count.)
    """
    request = urllib.request.Request(
        f"{endpoint_url.rstrip('/')}/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    if answer.get("status") != "ok":
        raise EmulatorUnavailable(f"moto refused to enforce IAM: {answer}")


async def start_provisioned_emulator(
    state_dir: str | os.PathLike[str],
    region: str = "us-east-1",
    spec: StackSpec = StackSpec(),
) -> tuple[MotoServer, StackOutputs, dict[str, str]]:
    """Start moto, bootstrap an admin, provision the stack, then enforce IAM.

    Returns the running server (the caller stops it), the stack outputs (also
    written to ``state_dir/stack-outputs.json``) and the bootstrap credentials
    (kept in memory only). The server log is ``state_dir/moto.log``.
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    server = MotoServer(region=region, log_path=state / "moto.log")
    await asyncio.to_thread(server.start)
    try:
        creds = await asyncio.to_thread(server.bootstrap)
        outputs = await provision(server.url, region, emulator_spec(spec), credentials=creds)
        await asyncio.to_thread(server.enforce_iam)
    except BaseException:
        await asyncio.to_thread(server.stop)
        raise
    (state / STACK_OUTPUTS_FILE).write_text(json.dumps(outputs.to_dict(), indent=2) + "\n")
    return server, outputs, creds
