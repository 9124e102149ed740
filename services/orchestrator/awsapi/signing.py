"""SigV4 verification of incoming requests, with botocore's own signer recomputing the signature.

A request must carry ``Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request,
SignedHeaders=…, Signature=…`` and ``X-Amz-Date``. The signature is recomputed over the request as received
(method, raw path and query, the signed headers, a SHA-256 of the body) with the secret of the access key,
and compared in constant time. Refusals use AWS's error shapes:

* no ``Authorization`` → ``MissingAuthenticationTokenException`` (403);
* a malformed one, or no ``X-Amz-Date`` → ``IncompleteSignatureException`` (400);
* an access key the control plane does not know → ``UnrecognizedClientException`` (403);
* a task's temporary credentials → ``AccessDeniedException`` (a task role may not call the control plane);
* a signature that does not match → ``InvalidSignatureException`` (403);
* a date more than 15 minutes off → ``InvalidSignatureException`` ("Signature expired").
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.orchestrator.awsapi.errors import AwsApiError

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
MAX_SKEW = timedelta(minutes=15)


@dataclass(frozen=True)
class Principal:
    """Who signed a request (what CloudTrail calls ``userIdentity``)."""

    access_key_id: str
    arn: str
    kind: str = "IAMUser"


@dataclass(frozen=True)
class Signer:
    """A key pair the control plane accepts, and whose it is."""

    access_key_id: str
    secret_access_key: str
    principal_arn: str


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    signers: Mapping[str, Signer],
    *,
    task_key: Callable[[str], str | None] = lambda key: None,
    now: datetime | None = None,
) -> Principal:
    """Check a request's SigV4 signature; the signer, or an :class:`AwsApiError` in AWS's words.

    ``url`` is ``http(s)://host/raw/path?raw-query`` as received; ``task_key(access_key_id)`` names the role
    of a task the key was issued to (those are refused: the control plane is not theirs to call).
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = headers.get("Authorization")
    if not authorization:
        raise AwsApiError("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
    match = _AUTH.match(authorization.strip())
    amz_date = headers.get("X-Amz-Date", "")
    if match is None or not amz_date:
        raise AwsApiError(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters (AWS4-HMAC-SHA256),"
            " and the request needs an X-Amz-Date header.",
        )
    scope = match["credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AwsApiError(
            "IncompleteSignatureException", f"Credential should be scoped correctly: {match['credential']}"
        )
    access_key, date, region, service, _ = scope
    role = task_key(access_key)
    if role is not None:
        raise AwsApiError(
            "AccessDeniedException",
            f"User: {role} is not authorized to call the control plane: task credentials cannot manage tasks.",
        )
    signer = signers.get(access_key)
    if signer is None:
        raise AwsApiError("UnrecognizedClientException", "The security token included in the request is invalid.", 403)
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise AwsApiError(
            "IncompleteSignatureException", f"Date must be in ISO-8601 'basic format': {amz_date}"
        ) from None
    current = now or datetime.now(UTC)
    if abs(current - signed_at) > MAX_SKEW:
        raise AwsApiError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than {(current - MAX_SKEW).strftime('%Y%m%dT%H%M%SZ')}",
            403,
        )
    signed = match["signed"].split(";")
    request = AWSRequest(method=method, url=url, headers={name: headers.get(name, "") for name in signed}, data=body)
    request.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials(access_key, signer.secret_access_key), service, region)
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    if date != amz_date[:8] or not hmac.compare_digest(expected, match["signature"]):
        raise AwsApiError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
            403,
        )
    return Principal(access_key, signer.principal_arn)
