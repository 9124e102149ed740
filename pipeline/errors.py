"""The error taxonomy shared by every service.

Two kinds of failure exist, and every code path must know which one it has:

* :class:`PermanentError` — the input is bad (not an image, over a limit, an
  unknown preset). Retrying cannot help. It carries a stable ``code``, a public
  ``message`` that is safe to show to the client, and the HTTP status the API
  answers with. A worker records it as a failed job and never retries it.
* :class:`RetryableError` — the world is temporarily unwell (network, throttling,
  the emulator is down, the process is out of memory). It is retried with bounded
  exponential backoff; the API answers 503 with ``Retry-After``.
* :class:`InternalError` — anything else that escapes is a bug in pixfleet. The
  API answers 500 (no ``Retry-After``: the same request would fail the same way)
  with a request id that also marks the log line with the traceback. A worker
  still retries it a bounded number of times (the queue's redrive policy bounds
  it): a bug that depends on timing should not cost a job.

Untrusted bytes never reach :class:`InternalError`: decoders and parsers convert
whatever they raise into a :class:`PermanentError` at their boundary (see
:func:`pipeline.transform.probe.decoding`).
"""

from __future__ import annotations

import asyncio
from typing import Any

# botocore and aiohttp are imported inside the functions that need them: the transform
# engine (and so every pool process) imports this module and should stay light.


class PixfleetError(Exception):
    """Base class of every error pixfleet raises on purpose."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = {}  # context for the API's error body, e.g. which file of an upload
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

    def to_dict(self) -> dict[str, str]:
        """The public JSON shape: ``{"code", "message"}``."""
        return {"code": self.code, "message": self.message}


def problem_list(problems: list[str], limit: int = 20) -> str:
    """Problems as one public message: the first ``limit`` of them, then how many more (hostile input has many)."""
    shown = "; ".join(problems[:limit])
    return shown + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


class PermanentError(PixfleetError):
    """Bad input: never retried, has a code and a public message."""

    code = "invalid_input"
    http_status = 422


class RetryableError(PixfleetError):
    """A transient failure: retried with backoff; the API answers 503."""

    code = "service_unavailable"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float = 5.0, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class InternalError(PixfleetError):
    """A bug: the API answers 500 with a request id; a worker retries it a bounded number of times.

    Deliberately neither permanent nor retryable for the API (no ``Retry-After``), and not
    permanent for the worker, which retries every non-permanent error.
    """

    code, http_status = "internal_error", 500


# --- permanent errors, one class per public code -------------------------------------------


class UnknownPreset(PermanentError):
    code, http_status = "unknown_preset", 400


class InvalidRequest(PermanentError):
    code, http_status = "invalid_request", 400


class MalformedRequest(InvalidRequest):
    """The client's HTTP message (e.g. a multipart body or its part headers) cannot be parsed."""

    code = "malformed_request"


class InvalidSpec(PermanentError):
    """An explicit operation list (or preset definition) is malformed."""

    code, http_status = "invalid_spec", 400


class InvalidMessage(PermanentError):
    """A queue message that is neither a v1 job nor an S3 event."""

    code, http_status = "invalid_message", 400


class PayloadTooLarge(PermanentError):
    code, http_status = "payload_too_large", 413


class NotAnImage(PermanentError):
    code, http_status = "not_an_image", 415


class UnsupportedFormat(PermanentError):
    code, http_status = "unsupported_format", 415


class TooManyPixels(PermanentError):
    code, http_status = "too_many_pixels", 422


class TooManyFrames(PermanentError):
    code, http_status = "too_many_frames", 422


class DecompressionBomb(PermanentError):
    code, http_status = "decompression_bomb", 422


class OutputTooLarge(PermanentError):
    """A variant comes out wider or taller than its output format can hold (WebP: 16,383 pixels)."""

    code, http_status = "output_too_large", 422


class CorruptImage(PermanentError):
    """Truncated or otherwise undecodable image data."""

    code, http_status = "corrupt_image", 422


class SourceMissing(PermanentError):
    """The job's source object does not exist (deleted, or a forged message)."""

    code, http_status = "source_missing", 404


class Unauthorized(PermanentError):
    code, http_status = "unauthorized", 401


class NotFound(PermanentError):
    code, http_status = "not_found", 404


# --- classification of foreign exceptions ------------------------------------------------

_RETRYABLE_AWS_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",  # credentials rotated underneath us
        "AWS.SimpleQueueService.ServiceUnavailable",
    }
)


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError``, else ``None``."""
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def is_not_found(exc: BaseException) -> bool:
    """True for the many spellings of "no such object" that S3 uses."""
    import botocore.exceptions

    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    code = aws_error_code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in {"NoSuchKey", "404", "NotFound", "NoSuchBucket"} or status == 404


def is_missing_readable_object(exc: BaseException) -> bool:
    """A missing key under a prefix the caller may read.

    Roles here have ``s3:GetObject`` but (least privilege) no ``s3:ListBucket``, and
    then real S3 answers 403 rather than 404 for a key that does not exist.
    """
    return is_not_found(exc) or aws_error_code(exc) in ("403", "AccessDenied")


def classify(exc: BaseException) -> PixfleetError:
    """Map any exception to pixfleet's taxonomy.

    Our own errors pass through. Connection problems, throttling and 5xx answers
    from AWS (or the emulator) are retryable, and so is running out of memory (an
    overloaded process, not a bad request). Everything else unknown is a bug:
    :class:`InternalError`, which the API answers with 500 and the worker retries a
    bounded number of times, so a bug cannot loop forever and a transient oddity
    is not turned into a lost job.
    """
    import aiohttp
    import botocore.exceptions

    if isinstance(exc, PixfleetError):
        return exc
    if isinstance(exc, MemoryError):
        return RetryableError("the server is out of memory", code="out_of_memory")
    if isinstance(
        exc,
        (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.HTTPClientError,
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.CredentialRetrievalError,
            aiohttp.ClientError,
            asyncio.TimeoutError,
            ConnectionError,
        ),
    ):
        return RetryableError(f"AWS endpoint unavailable: {type(exc).__name__}", code="aws_unavailable")
    if isinstance(exc, botocore.exceptions.ClientError):
        code = aws_error_code(exc) or "Unknown"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in _RETRYABLE_AWS_CODES or status >= 500 or status == 429:
            return RetryableError(f"AWS is unavailable or throttling ({code})", code="aws_unavailable")
        if code in {"AccessDenied", "AccessDeniedException", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return RetryableError(f"AWS denied the request ({code})", code="aws_access_denied")
        return RetryableError(f"AWS request failed ({code})", code="aws_error")
    return InternalError(f"unexpected error: {type(exc).__name__}")
