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

Moto (5.2) also cannot authorize S3 requests that carry no ``Authorization``
header once IAM is enforced: presigned GET/PUT URLs and browser POST uploads fail
with a 500 (``KeyError: 'HTTP_AUTHORIZATION'``). By default the server therefore
runs through this module (``python -m infra.emulator``), which installs
:func:`install_presigned_auth` into moto and then runs moto's own server: it
verifies presigned signatures (SigV2 and SigV4, URLs and POST policies) and
authorizes them against the signer's IAM policies, as S3 does.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, urlparse

import botocore.session

from infra.credentials import EMULATOR_DUMMY_CREDENTIALS
from infra.provision import StackOutputs, provision
from infra.stack import StackSpec
from pipeline.errors import RetryableError

BOOTSTRAP_USER = "pixfleet-bootstrap"
ORCHESTRATOR_SESSION_NAME = "pixfleet-orchestrator"
STACK_OUTPUTS_FILE = "stack-outputs.json"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_PARENT_PID_ENV = "PIXFLEET_MOTO_PARENT_PID"

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


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the caller races others for it; see start())."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (the benchmarks measure its CPU)."""
        return self._process.pid if self.running and self._process is not None else None

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
            module = "infra.emulator"
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
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
        try:
            iam.create_user(UserName=BOOTSTRAP_USER)
        except iam.exceptions.EntityAlreadyExistsException:
            pass
        iam.put_user_policy(UserName=BOOTSTRAP_USER, PolicyName="administrator", PolicyDocument=json.dumps(_ADMIN_POLICY))
        key = iam.create_access_key(UserName=BOOTSTRAP_USER)["AccessKey"]
    finally:
        iam.close()
    return {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def enforce_iam(endpoint_url: str) -> None:
    """moto's ``/moto-api/reset-auth`` with ``0``: every following request is authenticated and authorized.

    (It sets how many requests may pass unchecked — by default infinitely many — and restarts the count.)
    """
    request = urllib.request.Request(
        f"{endpoint_url.rstrip('/')}/moto-api/reset-auth", data=b"0", method="POST",
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


# --- presigned requests under IAM enforcement (runs inside the moto subprocess) --------------

_POST_FIELDS_NOT_IN_POLICY = frozenset({"policy", "signature", "x-amz-signature", "awsaccesskeyid", "file"})
_SIGV2_SUBRESOURCES = frozenset(
    {"acl", "partNumber", "tagging", "uploadId", "uploads", "versionId"}
    | {f"response-{h}" for h in ("content-type", "content-language", "expires", "cache-control")}
    | {f"response-content-{h}" for h in ("disposition", "encoding")}
)


def install_presigned_auth() -> None:
    """Teach moto's S3 to authenticate and authorize requests signed in the URL or POST form.

    Requests with an ``Authorization`` header, and all requests before IAM is
    enforced, go to moto unchanged. The rest are checked like S3 does: signature
    (SigV2 or SigV4), expiry, POST policy conditions, then the signer's IAM
    policies for the action on ``arn:aws:s3:::bucket/key``. CORS preflights pass
    unauthenticated, as on S3; other unsigned requests are refused with
    AccessDenied instead of moto's 500.
    """
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.s3.responses import S3Response

    original = S3Response._authenticate_and_authorize_s3_action
    if getattr(original, "pixfleet_presigned", False):
        return

    def authorize(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        enforcing = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
        if not enforcing or "Authorization" in self.headers:
            return original(self, bucket_name=bucket_name, key_name=key_name)
        if self.method == "OPTIONS":
            return None  # CORS preflights carry no credentials; S3 answers them from the bucket's CORS rules
        _authorize_presigned(self, bucket_name, key_name)

    authorize.pixfleet_presigned = True  # type: ignore[attr-defined]
    S3Response._authenticate_and_authorize_s3_action = authorize  # type: ignore[method-assign]


@dataclasses.dataclass(frozen=True)
class _Signed:
    """What a presigned request claims: who signed, until when, and how to check the signature."""

    access_key_id: str
    session_token: str | None
    expires_at: datetime
    signature_matches: Callable[[str], bool]  # secret access key → does the signature match?


def _authorize_presigned(response: Any, bucket: str | None, key: str | None) -> None:
    """Authenticate a request signed in its URL or form, then authorize it like any other."""
    from moto.s3.exceptions import S3AccessDeniedError, S3SignatureDoesNotMatchError

    now = datetime.now(timezone.utc)
    form = dict(response.form_data.items())
    query = parse_qsl(urlparse(response.uri).query, keep_blank_values=True)
    is_post_upload = response.method == "POST" and "policy" in form
    if is_post_upload:
        key = response.querystring["key"][0]  # moto has substituted ${filename} already
        signed = _signed_post(form)
    elif any(name == "X-Amz-Signature" for name, _ in query):
        signed = _signed_sigv4_query(response.method, response.raw_path, query, response.headers)
    elif any(name == "Signature" for name, _ in query):
        signed = _signed_sigv2_query(response.method, response.raw_path, query)
    else:
        signed = None  # anonymous: pixfleet's buckets are private
    if signed is None or now > signed.expires_at:
        raise S3AccessDeniedError()

    request = _iam_request(response, signed)
    if not signed.signature_matches(request._access_key.create_credentials().secret_key):
        raise S3SignatureDoesNotMatchError()
    if is_post_upload:
        policy = json.loads(base64.b64decode(form["policy"]))
        if post_policy_problem(policy, {**form, "key": key}, bucket or "", len(response.raw_body or b""), now):
            raise S3AccessDeniedError()
    target = f"{bucket}/{key}" if bucket and key else (bucket or "*")
    request.check_action_permitted(f"arn:{response.partition}:s3:::{target}")


def _iam_request(response: Any, signed: _Signed) -> Any:
    """moto's S3 IAM request for the signer (raises InvalidAccessKeyId/InvalidToken like moto)."""
    from moto.iam.access_control import CreateAccessKeyFailure, S3IAMRequest, create_access_key

    request = S3IAMRequest.__new__(S3IAMRequest)  # its __init__ parses an Authorization header
    request.account_id = response.current_account
    request._region, request._service, request._data = response.region, "s3", {}
    request._action = f"s3:{response._get_action()}"
    try:
        request._access_key = create_access_key(
            account_id=response.current_account,
            partition=response.partition,
            access_key_id=signed.access_key_id,
            headers={"X-Amz-Security-Token": signed.session_token} if signed.session_token else {},
        )
    except CreateAccessKeyFailure as failure:
        request._raise_invalid_access_key(failure.reason)
    return request


def _signed_post(form: dict[str, str]) -> _Signed | None:
    """A browser POST: the signature covers the base64 policy document."""
    try:
        policy = json.loads(base64.b64decode(form["policy"]))
        expires_at = datetime.fromisoformat(str(policy["expiration"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError):
        return None
    to_sign = form["policy"].encode()
    if "x-amz-signature" in form:
        scope = form.get("x-amz-credential", "").split("/")
        if len(scope) != 5 or form.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
            return None
        return _Signed(
            scope[0],
            form.get("x-amz-security-token"),
            expires_at,
            lambda secret: _equal(_hmac256(_sigv4_key(secret, scope[1:]), to_sign).hex(), form["x-amz-signature"]),
        )
    return _Signed(
        form.get("AWSAccessKeyId", ""),
        form.get("x-amz-security-token"),
        expires_at,
        lambda secret: _equal(_sigv2(secret, to_sign), form.get("signature", "")),
    )


def _signed_sigv4_query(method: str, raw_path: str, query: list[tuple[str, str]], headers: Any) -> _Signed | None:
    """A SigV4 presigned URL (``X-Amz-Signature``; payload unsigned)."""
    params = dict(query)
    scope = params.get("X-Amz-Credential", "").split("/")
    if len(scope) != 5 or params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return None
    try:
        signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        expires_at = signed_at + timedelta(seconds=int(params["X-Amz-Expires"]))
    except (KeyError, ValueError):
        return None
    signed_headers = params.get("X-Amz-SignedHeaders", "host").split(";")
    canonical_request = "\n".join(
        [
            method,
            raw_path,
            "&".join(sorted(f"{_uri(k)}={_uri(v)}" for k, v in query if k != "X-Amz-Signature")),
            "".join(f"{name}:{(headers.get(name) or '').strip()}\n" for name in signed_headers),
            ";".join(signed_headers),
            "UNSIGNED-PAYLOAD",
        ]
    )
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", params["X-Amz-Date"], "/".join(scope[1:]), _sha256_hex(canonical_request)]
    ).encode()
    return _Signed(
        scope[0],
        params.get("X-Amz-Security-Token"),
        expires_at,
        lambda secret: _equal(_hmac256(_sigv4_key(secret, scope[1:]), to_sign).hex(), params.get("X-Amz-Signature", "")),
    )


def _signed_sigv2_query(method: str, raw_path: str, query: list[tuple[str, str]]) -> _Signed | None:
    """A SigV2 presigned URL (``Signature``/``Expires``), what botocore makes for custom endpoints."""
    params = dict(query)
    try:
        expires_at = datetime.fromtimestamp(int(params["Expires"]), timezone.utc)
    except (KeyError, ValueError):
        return None
    subresources = sorted((k, v) for k, v in query if k in _SIGV2_SUBRESOURCES)
    resource = raw_path
    if subresources:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subresources)
    amz_headers = sorted((k.lower(), v) for k, v in query if k.lower().startswith("x-amz-"))
    lines = [method, params.get("content-md5", ""), params.get("content-type", ""), params["Expires"]]
    to_sign = "\n".join(lines + [f"{k}:{v}" for k, v in amz_headers] + [resource]).encode()
    return _Signed(
        params.get("AWSAccessKeyId", ""),
        params.get("x-amz-security-token"),
        expires_at,
        lambda secret: _equal(_sigv2(secret, to_sign), params.get("Signature", "")),
    )


def _sigv4_key(secret: str, scope: list[str]) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in scope:  # date, region, service, "aws4_request"
        key = _hmac256(key, part.encode())
    return key


def _hmac256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sigv2(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha1).digest()).decode()


def _uri(text: str) -> str:
    return quote(text, safe="-_.~")


def _equal(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def post_policy_problem(
    policy: dict[str, Any], fields: dict[str, str], bucket: str, content_length: int, now: datetime
) -> str | None:
    """Why a browser POST breaks its signed policy (S3's rules), or ``None`` when it complies.

    Checks the expiration, every condition (exact match, ``eq``, ``starts-with``,
    ``content-length-range``), and that every form field is covered by a condition.
    """
    expiration = policy.get("expiration")
    if not isinstance(expiration, str):
        return "the policy has no expiration"
    if datetime.fromisoformat(expiration.replace("Z", "+00:00")) <= now:
        return "the policy has expired"
    values = {name.lower(): value for name, value in fields.items()}
    values["bucket"] = bucket
    covered = {"bucket"}
    for condition in policy.get("conditions", []):
        if isinstance(condition, dict):
            checks = [("eq", name, expected) for name, expected in condition.items()]
        elif condition and str(condition[0]).lower() == "content-length-range":
            low, high = int(condition[1]), int(condition[2])
            if not low <= content_length <= high:
                return f"content length {content_length} is outside {low}..{high}"
            continue
        elif len(condition) == 3:
            checks = [(str(condition[0]).lower(), str(condition[1]).lstrip("$"), condition[2])]
        else:
            return f"malformed condition {condition!r}"
        for operator, name, expected in checks:
            name = name.lower()
            covered.add(name)
            actual = values.get(name)
            if operator == "eq" and actual != expected:
                return f"{name} must equal {expected!r}"
            if operator == "starts-with" and not (actual or "").startswith(str(expected)):
                return f"{name} must start with {expected!r}"
            if operator not in {"eq", "starts-with"}:
                return f"unknown condition {operator!r}"
    extra = sorted(
        name
        for name in values
        if name not in covered and name not in _POST_FIELDS_NOT_IN_POLICY and not name.startswith("x-ignore-")
    )
    return f"form fields not covered by the policy: {', '.join(extra)}" if extra else None


def _serve(argv: list[str]) -> None:
    """``python -m infra.emulator -H HOST -p PORT``: moto's server with presigned auth."""
    install_presigned_auth()
    if os.environ.get(_PARENT_PID_ENV):
        _exit_when_orphaned(int(os.environ[_PARENT_PID_ENV]))
    from moto.server import main

    main(argv)


def _exit_when_orphaned(parent_pid: int) -> None:
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


if __name__ == "__main__":
    _serve(sys.argv[1:])
