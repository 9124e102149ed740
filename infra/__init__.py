"""What pixfleet needs to exist in AWS, declared once, and how it is applied.

The declarative files live here too, found through these paths (the one place that names them):
the task definitions and services the control plane runs, and the load balancer in front of them.
"""

from __future__ import annotations

from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parent
REPO_ROOT = INFRA_DIR.parent
TASKDEFS_DIR = INFRA_DIR / "taskdefs"
ECS_DIR = INFRA_DIR / "ecs"  # cluster, services, scaling: ECS / App Auto Scaling request shapes
# Target groups, listeners and rules: ELBv2 request bodies (services name them in ``loadBalancers``).
LOADBALANCING_FILE = ECS_DIR / "loadbalancing.json"

# Task definition family → the variable that names its image in a deployment (compose, the orchestrator).
TASK_IMAGE_VARIABLES = {
    "pixfleet-api": "PIXFLEET_API_IMAGE",
    "pixfleet-worker": "PIXFLEET_WORKER_IMAGE",
    "pixfleet-deadletter": "PIXFLEET_WORKER_IMAGE",  # the worker image runs the dead-letter recorder
}
