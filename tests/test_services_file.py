"""infra/services.json parsing (services/orchestrator/services_file.py), table-driven: every problem at once."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from infra import SERVICES_FILE
from services.orchestrator.model import DeploymentConfig
from services.orchestrator.scaling import ScalingPolicy
from services.orchestrator.services_file import ServiceConfigError, load_services, parse_services, scaling_problems

WORKER: dict[str, Any] = {
    "serviceName": "worker",
    "taskDefinition": "pixfleet-worker",
    "desiredCount": 2,
    "autoScaling": {"min": 1, "max": 4, "targetBacklogPerTask": 10},
    "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200},
}


def services(*entries: Any, **top: Any) -> dict[str, Any]:
    return {"services": list(entries), **top}


def worker(**changes: Any) -> dict[str, Any]:
    entry = copy.deepcopy(WORKER)
    for key, value in changes.items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    return entry


# (case, document, is_error, the problems reported after "f.json: ")
CASES: list[tuple[str, Any, bool, list[str]]] = [
    ("valid", services(worker(), cluster="pixfleet"), False, []),
    ("defaults", services({"serviceName": "api", "taskDefinition": "pixfleet-api"}), False, []),
    ("not an object", ["worker"], True, ["must be an object"]),
    ("services missing", {}, True, ["services: required"]),
    ("services not a list", services(cluster="x") | {"services": {}}, True, ["services: must be a list"]),
    ("an entry not an object", services(worker(), 3), True, ["services[1]: must be an object"]),
    (
        "required fields",
        services({"desiredCount": 1}),
        True,
        ["services[0].serviceName: required", "services[0].taskDefinition: required"],
    ),
    ("empty name", services(worker(serviceName="")), True, ["services[0].serviceName: must not be empty"]),
    ("unknown top-level field", services(worker(), region="x"), True, ["region: unknown field"]),
    ("unknown service field", services(worker(replicas=2)), True, ["services[0].replicas: unknown field"]),
    ("a count as a string", services(worker(desiredCount="2")), True, ["services[0].desiredCount: must be an integer"]),
    (
        "a count as a boolean",
        services(worker(desiredCount=True)),
        True,
        ["services[0].desiredCount: must be an integer"],
    ),
    ("negative count", services(worker(desiredCount=-1)), True, ["services[0].desiredCount: must be >= 0"]),
    (
        "every bad scaling field at once",
        services(worker(autoScaling={"min": -1, "targetBacklogPerTask": 0, "taskSlots": 0, "bogus": 1})),
        True,
        [
            "services[0].autoScaling.min: must be >= 0",
            "services[0].autoScaling.targetBacklogPerTask: must be > 0",
            "services[0].autoScaling.taskSlots: must be >= 1",
            "services[0].autoScaling.bogus: unknown field",
        ],
    ),
    (
        "max below min",
        services(worker(autoScaling={"min": 3, "max": 2})),
        True,
        ["services[0].autoScaling: max must be >= min and >= 1"],
    ),
    (
        "deployment percentages out of range",
        services(worker(deploymentConfiguration={"minimumHealthyPercent": 101, "maximumPercent": 50})),
        True,
        [
            "services[0].deploymentConfiguration.minimumHealthyPercent: must be <= 100",
            "services[0].deploymentConfiguration.maximumPercent: must be >= 100",
        ],
    ),
    (
        "no room to replace a task",
        services(worker(deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 100})),
        True,
        [
            "services[0].deploymentConfiguration: minimumHealthyPercent 100 with maximumPercent 100 "
            "leaves no room to replace a task"
        ],
    ),
    (
        "rollback must be a boolean, the threshold at least 1",
        services(worker(deploymentConfiguration={"rollback": "yes", "failureThreshold": 0})),
        True,
        [
            "services[0].deploymentConfiguration.rollback: must be true or false",
            "services[0].deploymentConfiguration.failureThreshold: must be >= 1",
        ],
    ),
    (
        "problems in two services, reported together",
        services(worker(desiredCount=-2), worker(serviceName="api", autoScaling={"max": 0})),
        True,
        ["services[0].desiredCount: must be >= 0", "services[1].autoScaling: max must be >= min and >= 1"],
    ),
    ("duplicate names", services(worker(), worker()), True, ["services: serviceName values must be unique"]),
]


@pytest.mark.parametrize(("name", "doc", "is_error", "problems"), CASES, ids=[c[0] for c in CASES])
def test_parse_services(name: str, doc: Any, is_error: bool, problems: list[str]) -> None:
    if is_error:
        with pytest.raises(ServiceConfigError) as caught:
            parse_services(doc, "f.json")
        assert str(caught.value) == "f.json: " + "; ".join(problems)
    else:
        assert parse_services(doc, "f.json")


def test_a_valid_entry_becomes_the_control_loops_config() -> None:
    (config,) = parse_services(services(worker()), "f.json")
    assert (config.name, config.task_definition, config.desired_count) == ("worker", "pixfleet-worker", 2)
    assert config.scaling == ScalingPolicy(min=1, max=4, target_backlog_per_task=10)
    assert config.deployment == DeploymentConfig(minimum_healthy_percent=50, maximum_percent=200)
    (api,) = parse_services(services({"serviceName": "api", "taskDefinition": "pixfleet-api"}), "f.json")
    assert api.scaling is None and api.deployment == DeploymentConfig() and api.desired_count == 1


def test_the_shipped_file_parses(tmp_path: Path) -> None:
    assert {s.name for s in load_services(SERVICES_FILE)} == {"api", "worker", "deadletter"}
    broken = tmp_path / "services.json"
    broken.write_text("{")
    with pytest.raises(ServiceConfigError, match=r"services\.json: not valid JSON"):
        load_services(broken)


@pytest.mark.parametrize(
    ("policy", "problems"),
    [
        (ScalingPolicy(min=1, max=3), []),
        (ScalingPolicy(min=5, max=2), ["max must be >= min and >= 1"]),
        (ScalingPolicy(min=-1, max=2), ["min: must be >= 0"]),
    ],
)
def test_limits_changed_at_run_time_follow_the_same_rules(policy: ScalingPolicy, problems: list[str]) -> None:
    assert scaling_problems(policy) == problems
    assert json.dumps(problems)  # plain strings, ready for an error body
