"""Where the scaler reads demand from. One source today: SQS queue attributes.

A source answers :class:`QueueMetrics` or raises; the orchestrator turns a raise
into "metrics unavailable", which holds the current count (never scales).
"""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.aws import queue_depth
from services.orchestrator.scaling import QueueMetrics


class MetricSource(Protocol):
    async def read(self) -> QueueMetrics: ...

    async def dead_letters(self) -> int | None: ...


class SqsQueueDepth:
    """``ApproximateNumberOfMessages``, ``…NotVisible`` and ``…Delayed`` of the job queue (and the DLQ's depth)."""

    def __init__(self, sqs: Any, queue_url: str, dlq_url: str | None = None):
        self.sqs = sqs
        self.queue_url = queue_url
        self.dlq_url = dlq_url

    async def read(self) -> QueueMetrics:
        return QueueMetrics(*await queue_depth(self.sqs, self.queue_url))  # visible, in flight, delayed

    async def dead_letters(self) -> int | None:
        if not self.dlq_url:
            return None
        attrs = (
            await self.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0))
