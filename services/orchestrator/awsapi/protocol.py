"""The AWS JSON 1.1 protocol on one ``POST /``, driven by botocore's service models.

``X-Amz-Target: AmazonEC2ContainerServiceV20141113.ListServices`` names the service (by the model's
``targetPrefix``) and the operation. The body is checked against the operation's input shape with botocore's
``ParamValidator`` — unknown fields, wrong types, missing required members and out-of-range values are
refused with botocore's report, which names every bad field by its path, as AWS would refuse them. An
action's answer is checked against the output shape when ``validate_responses`` is on (the tests turn it on),
so what pixfleet answers is what the model says AWS answers. Timestamps go out as epoch seconds, as the JSON
protocol wants.

An :class:`Action` is a plain async function ``(call, params) -> dict``; a table maps operation names to
them (:class:`AwsService`). Everything the action should know about the call (who signed it, the request
id, the region) is in the :class:`Call`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.orchestrator.awsapi.audit import AuditLog
from services.orchestrator.awsapi.errors import AwsApiError
from services.orchestrator.awsapi.signing import Principal, Signer, verify

log = logging.getLogger("pixfleet.orchestrator.awsapi")

CONTENT_TYPE = "application/x-amz-json-1.1"


@dataclass(frozen=True)
class Call:
    """One API call, as its action sees it."""

    service: str
    action: str
    principal: Principal
    request_id: str
    region: str


Action = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class AwsService:
    """One AWS API: its botocore model, its actions and how it names its errors."""

    name: str  # botocore's service name: "ecs", "application-autoscaling"
    actions: dict[str, Action]
    invalid_input: str  # the error shape for a request the model refuses
    event_source: str = ""
    model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.model is None:
            import botocore.session

            self.model = botocore.session.get_session().get_service_model(self.name)
        self.target_prefix = self.model.metadata["targetPrefix"]
        self.event_source = self.event_source or f"{self.model.metadata['endpointPrefix']}.amazonaws.com"
        unknown = set(self.actions) - set(self.model.operation_names)
        if unknown:
            raise ValueError(f"{self.name} has no operations {sorted(unknown)}")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


class AwsJsonEndpoint:
    """``POST /`` for several AWS JSON services; :meth:`handle` is the aiohttp handler."""

    def __init__(
        self,
        services: list[AwsService],
        signers: Callable[[], Mapping[str, Signer]],
        *,
        region: str,
        audit: AuditLog | None = None,
        task_key: Callable[[str], str | None] = lambda key: None,
        validate_responses: bool = False,
    ):
        from botocore.validate import ParamValidator

        self.services = {s.target_prefix: s for s in services}
        self.signers = signers
        self.region = region
        self.audit = audit
        self.task_key = task_key
        self.validate_responses = validate_responses
        self._validator = ParamValidator()

    async def handle(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        target = request.headers.get("X-Amz-Target", "")
        prefix, _, action = target.partition(".")
        service = self.services.get(prefix)
        params: Any = None
        principal: Principal | None = None
        try:
            body = await request.read()
            if service is None:
                raise AwsApiError(
                    "UnknownOperationException", f"X-Amz-Target {target!r} names no service this endpoint serves"
                )
            principal = verify(
                request.method, _url(request), request.headers, body, self.signers(), task_key=self.task_key
            )
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise AwsApiError("SerializationException", "the request body is not JSON") from None
            if not isinstance(params, dict):
                raise AwsApiError("SerializationException", "the request body must be a JSON object")
            result = await self._dispatch(
                service, action, params, Call(service.name, action, principal, request_id, self.region)
            )
            response = web.Response(
                body=json.dumps(result, default=_json_default),
                content_type=CONTENT_TYPE,
                headers={"x-amzn-RequestId": request_id},
            )
            self._record(request, service, action, principal, params, request_id)
            return response
        except AwsApiError as exc:
            self._record(request, service, action, principal, params, request_id, exc)
            return web.Response(
                status=exc.status,
                body=json.dumps(exc.body()),
                content_type=CONTENT_TYPE,
                headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": exc.type},
            )
        except Exception as exc:
            log.exception("%s %s failed (request %s)", prefix, action, request_id)
            error = AwsApiError(
                "ServerException", f"internal error ({type(exc).__name__}); request id {request_id}", 500
            )
            self._record(request, service, action, principal, params, request_id, error)
            return web.Response(
                status=500,
                body=json.dumps(error.body()),
                content_type=CONTENT_TYPE,
                headers={"x-amzn-RequestId": request_id},
            )

    async def _dispatch(self, service: AwsService, action: str, params: dict[str, Any], call: Call) -> dict[str, Any]:
        if action not in service.model.operation_names:
            raise AwsApiError("UnknownOperationException", f"{service.name} has no operation {action!r}")
        handler = service.actions.get(action)
        if handler is None:
            implemented = ", ".join(sorted(service.actions))
            raise AwsApiError(
                "UnsupportedFeatureException" if service.name == "ecs" else service.invalid_input,
                f"pixfleet's control plane does not implement {action}; it implements: {implemented}",
            )
        operation = service.model.operation_model(action)
        report = self._validator.validate(params, operation.input_shape) if operation.input_shape else None
        if report is not None and report.has_errors():
            raise AwsApiError(service.invalid_input, report.generate_report())
        result = await handler(call, params)
        if self.validate_responses and operation.output_shape is not None:
            checked = self._validator.validate(
                json.loads(json.dumps(result, default=_json_default)), operation.output_shape
            )
            if checked.has_errors():
                raise RuntimeError(
                    f"{action}'s answer does not fit the {service.name} model:\n{checked.generate_report()}"
                )
        return result

    def _record(
        self,
        request: web.Request,
        service: AwsService | None,
        action: str,
        principal: Principal | None,
        params: Any,
        request_id: str,
        error: AwsApiError | None = None,
    ) -> None:
        if self.audit is None:
            return
        identity: dict[str, Any]
        if principal is not None:
            identity = {"type": principal.kind, "arn": principal.arn, "accessKeyId": principal.access_key_id}
        else:
            claimed = request.headers.get("Authorization", "").partition("Credential=")[2].split("/")[0]
            identity = {"type": "Unknown", "accessKeyId": claimed or None}
        self.audit.record(
            source=service.event_source if service else "unknown",
            action=action or "(none)",
            region=self.region,
            identity=identity,
            parameters=params,
            request_id=request_id,
            source_ip=request.remote,
            user_agent=request.headers.get("User-Agent"),
            error_code=error.type if error else None,
            error_message=error.message if error else None,
        )


def _url(request: web.Request) -> str:
    """The URL as the client signed it: its Host header and the raw path and query."""
    return f"{request.scheme}://{request.headers.get('Host', request.host)}{request.raw_path}"


# --- paging, as ECS does it -----------------------------------------------------------------------


def page(
    items: list[Any], params: Mapping[str, Any], *, default: int = 100, limit: int = 100
) -> tuple[list[Any], str | None]:
    """``maxResults`` items from ``nextToken`` on, and the token of the rest (an opaque offset)."""
    import base64

    size = int(params.get("maxResults") or params.get("MaxResults") or default)
    if not 1 <= size <= limit:
        raise AwsApiError("InvalidParameterException", f"maxResults must be between 1 and {limit}")
    token = params.get("nextToken") or params.get("NextToken")
    start = 0
    if token:
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:"))
        except (ValueError, UnicodeDecodeError):
            raise AwsApiError("InvalidParameterException", "Invalid nextToken") from None
    chunk = items[start : start + size]
    more = start + size < len(items)
    return chunk, base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode() if more else None


def now() -> datetime:
    return datetime.now(UTC)
