"""Reading the orchestrator's ``/metrics`` (Prometheus text): queue depth, tasks per service.

The orchestrator publishes what CloudWatch would chart on AWS — ``pixfleet_queue_messages{kind}``,
``pixfleet_service_running_tasks{service}``, ``pixfleet_service_desired_tasks{service}`` — and readers
that hold no control-plane credentials (the API's live panel, load tests) read them here.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def queue_depth(text: str) -> dict[str, int | None] | None:
    """Visible, in flight, delayed and dead letters (``None`` until the orchestrator has read the queue)."""
    kinds: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "pixfleet_queue_messages":
            for sample in family.samples:
                kinds[sample.labels["kind"]] = int(sample.value)
    if not {"visible", "in_flight", "delayed"} <= set(kinds):
        return None
    return {
        "visible": kinds["visible"],
        "in_flight": kinds["in_flight"],
        "delayed": kinds["delayed"],
        "dead_letters": kinds.get("dlq"),
    }


def service_counts(text: str, service: str) -> tuple[int, int] | None:
    """``(running, desired)`` tasks of ``service``, if the text has both."""
    found: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("pixfleet_service_running_tasks", "pixfleet_service_desired_tasks"):
            for sample in family.samples:
                if sample.labels.get("service") == service:
                    found[family.name] = int(sample.value)
    if len(found) < 2:
        return None
    return found["pixfleet_service_running_tasks"], found["pixfleet_service_desired_tasks"]
