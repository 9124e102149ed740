"""Presigned S3 requests under IAM enforcement (runs inside the moto server process).

moto (5.2) cannot authorize S3 requests that carry no ``Authorization`` header once
IAM is enforced: presigned GET/PUT URLs and browser POST uploads fail with a 500
(``KeyError: 'HTTP_AUTHORIZATION'``). :func:`install_presigned_auth` verifies such
requests as S3 does — the signature (SigV2 and SigV4, URLs and POST policies), the
expiry, every POST policy condition — and then authorizes them against the signer's
IAM policies. A refused POST says which condition failed, in S3's words
(``Invalid according to Policy: Policy Condition failed: [...]``).

It depends on moto internals (``S3Response._authenticate_and_authorize_s3_action``,
``moto.iam.access_control``); pyproject pins moto to the minor version these
patches are tested with (tests/test_iam.py, tests/test_infra.py).
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
from collections.abc import Callable
from datetime import datetime, timedelta, UTC
from typing import Any
from urllib.parse import parse_qsl, quote, urlparse

_POST_FIELDS_NOT_IN_POLICY = frozenset({"policy", "signature", "x-amz-signature", "awsaccesskeyid", "file"})


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
    from moto.s3.exceptions import S3AccessDeniedError, S3ClientError, S3SignatureDoesNotMatchError

    now = datetime.now(UTC)
    form = dict(response.form_data.items())
    query = parse_qsl(urlparse(response.uri).query, keep_blank_values=True)
    is_post_upload = response.method == "POST" and "policy" in form
    if is_post_upload:
        key = response.querystring["key"][0]  # moto has substituted ${filename} already
        signed = _signed_post(form)
    elif any(name == "X-Amz-Signature" for name, _ in query):
        signed = _signed_sigv4_query(
            response.method, _signed_url(response, query, "X-Amz-Signature"), query, response.headers
        )
    elif any(name == "Signature" for name, _ in query):
        signed = _signed_sigv2_query(response.method, _signed_url(response, query, "Signature"), query)
    else:
        signed = None  # anonymous: pixfleet's buckets are private
    if signed is None or now > signed.expires_at:
        raise S3AccessDeniedError()

    request = _iam_request(response, signed)
    if not signed.signature_matches(request._access_key.create_credentials().secret_key):
        raise S3SignatureDoesNotMatchError()
    if is_post_upload:
        policy = json.loads(base64.b64decode(form["policy"]))
        fields = {**form, "key": key or ""}
        violation = post_policy_problem(policy, fields, bucket or "", len(response.raw_body or b""), now)
        if violation is not None:
            raise S3ClientError(violation.code, violation.message)  # moto: AccessDenied → 403, others → 400
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
    """A browser POST: the signature covers the base64 policy document (botocore's signers recompute it)."""
    from botocore.auth import HmacV1Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    try:
        policy = json.loads(base64.b64decode(form["policy"]))
        expires_at = datetime.fromisoformat(str(policy["expiration"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError):
        return None
    if "x-amz-signature" in form:
        scope = form.get("x-amz-credential", "").split("/")
        if len(scope) != 5 or form.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
            return None
        access_key, date, region, service, _ = scope

        def sigv4(secret: str) -> bool:
            signer = SigV4Auth(Credentials(access_key, secret), service, region)
            request = AWSRequest(method="POST", url="https://s3.amazonaws.com/")
            request.context["timestamp"] = f"{date}T000000Z"  # only the date enters the signing key
            return _equal(signer.signature(form["policy"], request), form["x-amz-signature"])

        return _Signed(access_key, form.get("x-amz-security-token"), expires_at, sigv4)
    access_key = form.get("AWSAccessKeyId", "")
    return _Signed(
        access_key,
        form.get("x-amz-security-token"),
        expires_at,
        lambda secret: _equal(
            HmacV1Auth(Credentials(access_key, secret)).sign_string(form["policy"]), form.get("signature", "")
        ),
    )


def _signed_sigv4_query(method: str, url: str, query: list[tuple[str, str]], headers: Any) -> _Signed | None:
    """A SigV4 presigned URL (``X-Amz-Signature``; payload unsigned), recomputed by botocore's S3 query signer."""
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    params = dict(query)
    scope = params.get("X-Amz-Credential", "").split("/")
    if len(scope) != 5 or params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        return None
    try:
        signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires_at = signed_at + timedelta(seconds=int(params["X-Amz-Expires"]))
    except (KeyError, ValueError):
        return None
    access_key, _, region, service, _ = scope
    signed_headers = params.get("X-Amz-SignedHeaders", "host").split(";")
    base, _, raw_query = url.partition("?")
    unsigned = "&".join(pair for pair in raw_query.split("&") if not pair.startswith("X-Amz-Signature="))

    def sigv4(secret: str) -> bool:
        signer = S3SigV4QueryAuth(Credentials(access_key, secret), service, region)
        request = AWSRequest(
            method=method, url=f"{base}?{unsigned}", headers={h: headers.get(h) or "" for h in signed_headers}
        )
        request.context["timestamp"] = params["X-Amz-Date"]
        string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
        return _equal(signer.signature(string_to_sign, request), params.get("X-Amz-Signature", ""))

    return _Signed(access_key, params.get("X-Amz-Security-Token"), expires_at, sigv4)


def _signed_sigv2_query(method: str, url: str, query: list[tuple[str, str]]) -> _Signed | None:
    """A SigV2 presigned URL (``Signature``/``Expires``, what botocore makes for custom endpoints), recomputed
    by botocore's HMAC-v1 query signer (its canonical resource knows S3's sub-resources)."""
    from urllib.parse import urlsplit

    from botocore.auth import HmacV1QueryAuth
    from botocore.credentials import Credentials

    params = dict(query)
    try:
        expires_at = datetime.fromtimestamp(int(params["Expires"]), UTC)
    except (KeyError, ValueError):
        return None
    access_key, token = params.get("AWSAccessKeyId", ""), params.get("x-amz-security-token")

    class AtTheirExpiry(HmacV1QueryAuth):  # the signer puts "now + expires" where the URL's Expires goes
        def _get_date(self) -> str:
            return params["Expires"]

    def sigv2(secret: str) -> bool:
        headers = _HeaderView({k.lower(): v for k, v in query if k.lower().startswith("x-amz-")})
        split = urlsplit(url)
        signature = AtTheirExpiry(Credentials(access_key, secret, token)).get_signature(
            method, split, headers, auth_path=split.path
        )
        return _equal(signature, params.get("Signature", ""))

    return _Signed(access_key, token, expires_at, sigv2)


def _uri(text: str) -> str:
    return quote(text, safe="-_.~")


def _signed_url(response: Any, query: list[tuple[str, str]], signature_param: str) -> str:
    """The URL as the client signed it: its host, its raw path, the query re-encoded as AWS canonicalises it."""
    encoded = "&".join(f"{_uri(k)}={_uri(v)}" for k, v in query if k != signature_param)
    host = response.headers.get("Host") or "localhost"
    return f"http://{host}{response.raw_path}?{encoded}"


class _HeaderView(dict[str, str]):
    """The case-insensitive header lookups botocore's HMAC-v1 canonical string makes (``get_all`` too)."""

    def get_all(self, name: str, default: Any = None) -> list[str] | Any:
        value = self.get(name.lower())
        return [value] if value else default


def _equal(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclasses.dataclass(frozen=True)
class PolicyViolation:
    """How S3 refuses a browser POST that breaks its policy: error code, HTTP status, message."""

    code: str
    message: str
    status: int = 403


def _condition_text(condition: Any) -> str:
    return json.dumps(condition, separators=(", ", ": "))


def post_policy_problem(
    policy: dict[str, Any], fields: dict[str, str], bucket: str, content_length: int, now: datetime
) -> PolicyViolation | None:
    """Why a browser POST breaks its signed policy (S3's rules and messages), or ``None`` when it complies.

    Checks the expiration, every condition (exact match, ``eq``, ``starts-with``,
    ``content-length-range``), and that every form field is covered by a condition.
    """
    expiration = policy.get("expiration")
    if not isinstance(expiration, str):
        return PolicyViolation("AccessDenied", "Invalid Policy: Policy missing expiration.", 400)
    if datetime.fromisoformat(expiration.replace("Z", "+00:00")) <= now:
        return PolicyViolation("AccessDenied", "Invalid according to Policy: Policy expired.")
    values = {name.lower(): value for name, value in fields.items()}
    values["bucket"] = bucket
    covered = {"bucket"}
    for condition in policy.get("conditions", []):
        failed = PolicyViolation(
            "AccessDenied", f"Invalid according to Policy: Policy Condition failed: {_condition_text(condition)}"
        )
        if isinstance(condition, dict):
            checks = [("eq", name, expected) for name, expected in condition.items()]
        elif condition and str(condition[0]).lower() == "content-length-range":
            low, high = int(condition[1]), int(condition[2])
            if content_length > high:
                return PolicyViolation("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400)
            if content_length < low:
                return PolicyViolation(
                    "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size", 400
                )
            continue
        elif len(condition) == 3:
            checks = [(str(condition[0]).lower(), str(condition[1]).lstrip("$"), condition[2])]
        else:
            return PolicyViolation(
                "AccessDenied", f"Invalid Policy: Invalid Simple-Condition: {_condition_text(condition)}", 400
            )
        for operator, name, expected in checks:
            name = name.lower()
            covered.add(name)
            actual = values.get(name)
            if operator == "eq" and actual != expected:
                return failed
            if operator == "starts-with" and not (actual or "").startswith(str(expected)):
                return failed
            if operator not in {"eq", "starts-with"}:
                return PolicyViolation(
                    "AccessDenied", f"Invalid Policy: Invalid Simple-Condition: {_condition_text(condition)}", 400
                )
    extra = sorted(
        name
        for name in values
        if name not in covered and name not in _POST_FIELDS_NOT_IN_POLICY and not name.startswith("x-ignore-")
    )
    if extra:
        return PolicyViolation("AccessDenied", f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")
    return None
