"""SQS dead-letter redrive (``StartMessageMoveTask``) for moto, which lacks it (runs inside the moto server).

Semantics follow the SQS API reference:

* ``StartMessageMoveTask(SourceArn, DestinationArn?, MaxNumberOfMessagesPerSecond?)`` moves the messages of a
  dead-letter queue (a queue that some queue's redrive policy targets) to ``DestinationArn``, or, without it,
  back to the queue they came from. Only one task may run per source queue. The answer is a ``TaskHandle``.
* Moved messages are new messages in the destination (new id, receive count 0), with the same body and
  message attributes; they leave the source only once they are in the destination, so nothing is lost if the
  task is cancelled or fails midway.
* ``ListMessageMoveTasks(SourceArn, MaxResults?)`` lists the source's most recent tasks, newest first, with
  ``Status`` (RUNNING, COMPLETED, CANCELLING, CANCELLED, FAILED), ``ApproximateNumberOfMessagesMoved``,
  ``ApproximateNumberOfMessagesToMove`` (the visible messages when it started), ``StartedTimestamp`` (ms), and
  the ``TaskHandle`` only while the task runs. ``CancelMessageMoveTask(TaskHandle)`` stops a running task.

Messages SQS itself moved to the DLQ remember their source queue here (moto keeps no such record), so a task
without a destination sends each one home; a message sent to the DLQ directly has no source, which fails the
task as on AWS unless a destination is given.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

_LOCK = threading.Lock()
_TASKS: dict[str, list[MoveTask]] = {}  # source queue ARN → its tasks, oldest first
_ORIGINS: dict[str, str] = {}  # message id (in a DLQ) → ARN of the queue SQS moved it from


@dataclass
class MoveTask:
    handle: str
    source_arn: str
    destination_arn: str | None
    rate: int | None
    to_move: int
    started_ms: int
    status: str = "RUNNING"
    moved: int = 0
    failure: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def public(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "Status": self.status,
            "SourceArn": self.source_arn,
            "ApproximateNumberOfMessagesMoved": self.moved,
            "ApproximateNumberOfMessagesToMove": self.to_move,
            "StartedTimestamp": self.started_ms,
        }
        if self.status == "RUNNING":
            result["TaskHandle"] = self.handle
        if self.destination_arn:
            result["DestinationArn"] = self.destination_arn
        if self.rate:
            result["MaxNumberOfMessagesPerSecond"] = self.rate
        if self.failure:
            result["FailureReason"] = self.failure
        return result


def install_sqs_message_move_tasks() -> None:
    """Add the three message-move-task actions to moto's SQS, and remember where dead letters came from."""
    from moto.core.responses import ActionResult
    from moto.sqs.exceptions import QueueDoesNotExist, SQSException
    from moto.sqs.models import Queue, SQSBackend
    from moto.sqs.responses import SQSResponse

    if getattr(SQSResponse, "pixfleet_move_tasks", False):
        return

    class InvalidParameterValue(SQSException):
        code = "InvalidParameterValue"

    class ResourceNotFound(SQSException):
        code = "ResourceNotFoundException"

    def queue_by_arn(backend: SQSBackend, arn: str) -> Queue:
        for queue in backend.queues.values():
            if queue.queue_arn == arn:
                return queue
        raise ResourceNotFound("The resource that you specified for the SourceArn parameter doesn't exist.")

    def start_message_move_task(self: SQSResponse) -> ActionResult:
        backend = self.sqs_backend
        source_arn = self._get_param("SourceArn")
        destination_arn = self._get_param("DestinationArn")
        rate = self._get_param("MaxNumberOfMessagesPerSecond")
        source = queue_by_arn(backend, source_arn)
        if not backend.list_dead_letter_source_queues(source.name):
            raise InvalidParameterValue("Source queue must be configured as a Dead Letter Queue.")
        if destination_arn:
            queue_by_arn(backend, destination_arn)
        if rate is not None and not 1 <= int(rate) <= 500:
            raise InvalidParameterValue("MaxNumberOfMessagesPerSecond must be between 1 and 500.")
        with _LOCK:
            if any(t.status in ("RUNNING", "CANCELLING") for t in _TASKS.get(source_arn, [])):
                raise InvalidParameterValue(
                    "There is already a task running. "
                    "Only one active task is allowed for a source queue arn at a given time."
                )
            to_move = len(source.messages)
            handle = base64.b64encode(
                json.dumps({"taskId": uuid.uuid4().hex, "sourceArn": source_arn}).encode()
            ).decode()
            task = MoveTask(
                handle, source_arn, destination_arn, int(rate) if rate else None, to_move, int(time.time() * 1000)
            )
            _TASKS.setdefault(source_arn, []).append(task)
        threading.Thread(target=_run, args=(backend, task), name="sqs-move-task", daemon=True).start()
        return ActionResult({"TaskHandle": handle})

    def list_message_move_tasks(self: SQSResponse) -> ActionResult:
        source_arn = self._get_param("SourceArn")
        queue_by_arn(self.sqs_backend, source_arn)
        limit = int(self._get_param("MaxResults") or 1)
        if not 1 <= limit <= 10:
            raise InvalidParameterValue("MaxResults must be between 1 and 10.")
        with _LOCK:
            tasks = list(reversed(_TASKS.get(source_arn, [])))[:limit]
            return ActionResult({"Results": [t.public() for t in tasks]})

    def cancel_message_move_task(self: SQSResponse) -> ActionResult:
        handle = self._get_param("TaskHandle")
        with _LOCK:
            task = next((t for tasks in _TASKS.values() for t in tasks if t.handle == handle), None)
            if task is None or task.status != "RUNNING":
                raise ResourceNotFound("The task handle is not valid or the task is not running.")
            task.status = "CANCELLING"
            task.cancel.set()
            return ActionResult({"ApproximateNumberOfMessagesMoved": task.moved})

    def _run(backend: SQSBackend, task: MoveTask) -> None:
        try:
            source = queue_by_arn(backend, task.source_arn)
            batch = source.messages[: task.to_move]
            for message in batch:
                if task.cancel.is_set():
                    break
                origin = task.destination_arn or _ORIGINS.get(message.id)
                if origin is None:
                    raise InvalidParameterValue(
                        "A message has no source queue to return to (it was not moved here by a redrive policy): "
                        "give DestinationArn."
                    )
                destination = queue_by_arn(backend, origin)
                backend.send_message(
                    destination.name,
                    message.body,
                    message_attributes=message.message_attributes or None,
                    validate_group_id=False,
                )
                with _LOCK:
                    with source._messages_lock:
                        if message in source._messages:
                            source._messages.remove(message)
                    source.pending_messages.discard(message)
                    _ORIGINS.pop(message.id, None)
                    task.moved += 1
                if task.rate:
                    time.sleep(1.0 / task.rate)
            with _LOCK:
                task.status = "CANCELLED" if task.cancel.is_set() else "COMPLETED"
        except (SQSException, QueueDoesNotExist) as exc:
            with _LOCK:
                task.status, task.failure = "FAILED", getattr(exc, "message", str(exc))
        except Exception as exc:
            with _LOCK:
                task.status, task.failure = "FAILED", f"{type(exc).__name__}: {exc}"

    # SQS moves a message to the DLQ inside ReceiveMessage (so it has been received before); remember which
    # queue it left. With several source queues the origin is ambiguous and is not recorded.
    original_add = Queue.add_message

    def add_message(self: Queue, message: Any) -> None:
        if message.approximate_receive_count:
            from moto.sqs.models import sqs_backends

            backend = sqs_backends[self.account_id][self.region]
            sources = [q for q in backend.queues.values() if q.dead_letter_queue is self]
            if len(sources) == 1:
                _ORIGINS[message.id] = sources[0].queue_arn
        original_add(self, message)

    Queue.add_message = add_message  # type: ignore[method-assign]
    SQSResponse.start_message_move_task = start_message_move_task  # type: ignore[attr-defined]
    SQSResponse.list_message_move_tasks = list_message_move_tasks  # type: ignore[attr-defined]
    SQSResponse.cancel_message_move_task = cancel_message_move_task  # type: ignore[attr-defined]
    SQSResponse.pixfleet_move_tasks = True  # type: ignore[attr-defined]
