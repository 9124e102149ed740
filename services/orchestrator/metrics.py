"""The orchestrator's Prometheus metrics (served at ``/metrics``), in a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class OrchestratorMetrics:
    registry: CollectorRegistry
    queue: Gauge
    desired: Gauge
    running: Gauge
    decisions: Counter
    refreshes: Counter
    task_starts: Counter
    task_stops: Counter

    @classmethod
    def create(cls) -> OrchestratorMetrics:
        r = CollectorRegistry()
        return cls(
            registry=r,
            queue=Gauge(
                "pixfleet_queue_messages",
                "Job queue depth by kind (visible, in_flight, delayed, dlq)",
                ["kind"],
                registry=r,
            ),
            desired=Gauge("pixfleet_service_desired_tasks", "Desired tasks per service", ["service"], registry=r),
            running=Gauge("pixfleet_service_running_tasks", "Running tasks per service", ["service"], registry=r),
            decisions=Counter(
                "pixfleet_scaling_decisions",
                "Scaling decisions that changed the desired count",
                ["service", "action"],
                registry=r,
            ),
            refreshes=Counter(
                "pixfleet_credential_refreshes", "Task role credentials assumed or refreshed", registry=r
            ),
            task_starts=Counter("pixfleet_task_starts", "Tasks started", ["group"], registry=r),
            task_stops=Counter("pixfleet_task_stops", "Tasks stopped", ["group", "reason"], registry=r),
        )
