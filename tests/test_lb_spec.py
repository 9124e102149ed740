"""The load balancer's pure parts, table-driven: ELBv2 request validation, path patterns, the
rendered configuration, runtime-API parsing and target health in ELBv2's vocabulary."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from services.orchestrator.lb.config import Paths, map_lines, render, server_arguments
from services.orchestrator.lb.health import ServerStat, elb_health
from services.orchestrator.lb.runtime_api import parse_csv
from services.orchestrator.lb.spec import (
    LoadBalancerConfigError,
    LoadBalancerSpec,
    TargetGroupNotFoundError,
    path_pattern_regex,
    target_group_name,
)

TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/{}/0123456789abcdef"


def bodies() -> dict[str, Any]:
    return {
        "target_groups": [
            {"Name": "api", "Protocol": "HTTP", "Port": 8080, "HealthCheckPath": "/healthz"},
            {"Name": "v2", "Protocol": "HTTP", "Port": 8080},
        ],
        "listeners": {
            "L1": {
                "LoadBalancerArn": "lb",
                "Protocol": "HTTP",
                "Port": 80,
                "DefaultActions": [{"Type": "forward", "TargetGroupArn": TG_ARN.format("api")}],
            }
        },
        "rules": [
            {
                "ListenerArn": "L1",
                "Priority": 20,
                "Conditions": [{"Field": "path-pattern", "Values": ["/v2/*"]}],
                "Actions": [{"Type": "forward", "TargetGroupArn": "v2"}],
            },
            {
                "ListenerArn": "L1",
                "Priority": 3,
                "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/v2/admin*", "/x.png"]}}],
                "Actions": [{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": "api"}]}}],
            },
        ],
    }


def test_the_description_validates_with_elbv2_defaults_and_rules_in_priority_order() -> None:
    spec = LoadBalancerSpec.from_requests(**bodies())
    api = spec.target_group(TG_ARN.format("api"))
    assert (api.health.path, api.health.interval, api.health.timeout) == ("/healthz", 30, 5)
    assert (api.health.healthy_threshold, api.health.unhealthy_threshold, api.health.codes) == (5, 2, (200,))
    assert (api.deregistration_delay, api.algorithm, api.slow_start) == (300, "round_robin", 0)
    listener = spec.listener()
    assert (listener.port, listener.default_target_group) == (80, "api")
    assert [(r.priority, r.target_group) for r in listener.rules] == [(3, "api"), (20, "v2")]
    assert map_lines(listener.rules) == ["^/v2/admin.*$ api", "^/x[.]png$ api", "^/v2/.*$ v2"]
    assert spec.listener("80") is listener and spec.listener("L1") is listener
    with pytest.raises(TargetGroupNotFoundError):
        spec.target_group("nope")


def _set(path: str, value: Any) -> Any:
    """A change to ``bodies()``: ``path`` is keys and indexes separated by dots; None deletes."""

    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        index: int | str = int(last) if last.isdigit() else last
        if value is None:
            del node[index]
        else:
            node[index] = value

    return change


def _attribute(key: str, value: str) -> Any:
    return _set("target_groups.0.TargetGroupAttributes", [{"Key": key, "Value": value}])


def _forward(*groups: str) -> list[dict[str, Any]]:
    return [{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": g} for g in groups]}}]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_set("target_groups.0.HealthCheckIntervalSeconds", 1), "valid min value: 5"),
        (_set("target_groups.0.HealthCheckIntervalSeconds", 400), "above the maximum 300"),
        (_set("target_groups.0.HealthCheckTimeoutSeconds", 30), "must be smaller than HealthCheckIntervalSeconds"),
        (_set("target_groups.0.Protocol", "HTTPS"), "Protocol: 'HTTPS' is not supported"),
        (_set("target_groups.0.Protocol", "FTP"), "'FTP' is not one of"),
        (_set("target_groups.0.Prot", "HTTP"), 'Unknown parameter in input: "Prot"'),
        (_set("target_groups.0.Port", None), "Port: required"),
        (_set("target_groups.0.Name", "-api"), "Name: up to 32 letters"),
        (_set("target_groups.1.Name", "api"), "DuplicateTargetGroupName"),
        (_set("target_groups.0.HealthCheckPath", "/a b"), "HealthCheckPath: a path starting with /"),
        (_set("target_groups.0.HealthCheckPort", "http"), "HealthCheckPort: 'traffic-port' or a port"),
        (_set("target_groups.0.Matcher", {"HttpCode": "200-2x9"}), "Matcher.HttpCode"),
        (_set("target_groups.0.TargetType", "lambda"), "TargetType: 'lambda' is not supported"),
        (_attribute("stickiness.enabled", "true"), "'stickiness.enabled' is not supported"),
        (_attribute("deregistration_delay.timeout_seconds", "x"), "deregistration_delay.timeout_seconds must be"),
        (_attribute("slow_start.duration_seconds", "10"), "0 (off) or 30-900"),
        (_set("target_groups.0.TargetGroupAttributes", [{"Value": "1"}]), "TargetGroupAttributes[0].Key: required"),
        (_attribute("load_balancing.algorithm.type", "random"), "'random' is not supported"),
        (_set("listeners.L1.Protocol", "HTTPS"), "CreateListener[L1].Protocol: 'HTTPS' is not supported"),
        (_set("listeners.L1.Port", 70000), "Port: 70000 is above the maximum 65535"),
        (_set("listeners.L1.DefaultActions", _forward("nope")), "TargetGroupNotFound: no target group 'nope'"),
        (_set("listeners.L1.DefaultActions", [{"Type": "fixed-response"}]), "exactly one action of Type 'forward'"),
        (_set("listeners.L1.LoadBalancerArn", None), 'Missing required parameter in input: "LoadBalancerArn"'),
        (_set("rules.0.ListenerArn", "L9"), "ListenerNotFound: no listener 'L9'"),
        (_set("rules.0.Priority", 3), "PriorityInUse: two rules have priority 3"),
        (_set("rules.0.Priority", 0), "valid min value: 1"),
        (_set("rules.0.Priority", 50001), "above the maximum 50000"),
        (_set("rules.0.Conditions", [{"Field": "host-header", "Values": ["a"]}]), "'host-header' is not supported"),
        (_set("rules.0.Conditions", [{"Field": "path-pattern", "Values": ["/a b"]}]), "path pattern '/a b'"),
        (_set("rules.0.Conditions", [{"Field": "path-pattern"}]), "a path-pattern condition needs Values"),
        (_set("rules.0.Actions", _forward("api", "v2")), "weighted forwarding is not supported"),
        (_set("rules.0.Actions", [{"Type": "redirect"}]), "exactly one action"),
        (_set("target_groups.0.Matcher", {"HttpCode": "200-299"}), None),
        (_attribute("load_balancing.algorithm.type", "least_outstanding_requests"), None),
        (_set("target_groups.0.HealthCheckPort", "8081"), None),
    ],
)
def test_refusals_carry_the_field_path(change: Any, problem: str | None) -> None:
    doc = copy.deepcopy(bodies())
    change(doc)
    if problem is None:
        LoadBalancerSpec.from_requests(**doc)
        return
    with pytest.raises(LoadBalancerConfigError) as caught:
        LoadBalancerSpec.from_requests(**doc)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    doc = bodies()
    doc["target_groups"][0]["HealthCheckIntervalSeconds"] = 1
    doc["listeners"]["L1"]["Protocol"] = "HTTPS"
    doc["rules"][0]["Priority"] = 3
    with pytest.raises(LoadBalancerConfigError) as caught:
        LoadBalancerSpec.from_requests(**doc)
    assert len(caught.value.problems) == 3, caught.value.problems


@pytest.mark.parametrize(
    ("pattern", "regex", "matches", "misses"),
    [
        ("/v2/*", "^/v2/.*$", ["/v2/", "/v2/a/b"], ["/v2", "/V2/a", "/x/v2/a"]),
        ("/img?.png", "^/img.[.]png$", ["/img1.png", "/imgX.png"], ["/img.png", "/img12.png", "/img1xpng"]),
        ("/a+b$c", "^/a[+]b[$]c$", ["/a+b$c"], ["/aab$c", "/a+bc"]),
        ("*", "^.*$", ["/", "/anything"], []),
        ("/~user/@x:y&'\"", "^/~user/@x:y&'\"$", ["/~user/@x:y&'\""], []),
        ("/a b", None, [], []),
        ("/a\\b", None, [], []),
        ("/a;b", None, [], []),
        ("", None, [], []),
        ("/" + "a" * 128, None, [], []),
    ],
)
def test_path_patterns_become_anchored_regexes_without_backslashes(
    pattern: str, regex: str | None, matches: list[str], misses: list[str]
) -> None:
    if regex is None:
        with pytest.raises(ValueError, match="path pattern"):
            path_pattern_regex(pattern)
        return
    assert path_pattern_regex(pattern) == regex and "\\" not in regex
    assert all(re.match(regex, path) for path in matches)
    assert not any(re.match(regex, path) for path in misses)


@pytest.mark.parametrize(
    ("ref", "name"),
    [("api", "api"), (TG_ARN.format("api-v2"), "api-v2"), ("arn:aws:s3:::bucket", "arn:aws:s3:::bucket")],
)
def test_target_groups_are_named_by_name_or_arn(ref: str, name: str) -> None:
    assert target_group_name(ref) == name


def test_the_rendered_configuration(tmp_path: Path) -> None:
    doc = bodies()
    doc["target_groups"][1].update(
        HealthCheckIntervalSeconds=5,
        HealthCheckTimeoutSeconds=2,
        HealthyThresholdCount=3,
        UnhealthyThresholdCount=4,
        HealthCheckPort="8081",
        Matcher={"HttpCode": "200,202"},
        TargetGroupAttributes=[
            {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"},
            {"Key": "slow_start.duration_seconds", "Value": "30"},
        ],
    )
    spec = LoadBalancerSpec.from_requests(**doc)
    paths = Paths(tmp_path, tmp_path / "s.sock")
    text = render(spec, paths, "127.0.0.1")
    for line in (
        f"stats socket {tmp_path / 's.sock'} mode 600 level admin",
        "retry-on conn-failure",
        "option redispatch 1",
        "frontend listener-80",
        "bind 127.0.0.1:80",
        f"http-request set-var(txn.target_group) path,map_reg({tmp_path / 'rules-80.map'})",
        "use_backend %[var(txn.target_group)] if { var(txn.target_group) -m found }",
        "default_backend api",
        "backend api\n    balance roundrobin\n    option httpchk",
        'http-check send meth GET uri "/healthz" ver HTTP/1.1',
        "http-check expect status 200\n    timeout check 5s",
        "backend v2\n    balance leastconn",
        "http-check expect rstatus ^(200|202)$\n    timeout check 2s",
    ):
        assert line in text, line
    v2 = spec.target_group("v2")
    assert (
        server_arguments(v2, "10.0.0.7", 32768) == "10.0.0.7:32768 check inter 5s rise 3 fall 4 port 8081 slowstart 30s"
    )
    assert server_arguments(spec.target_group("api"), "::1", 80) == "[::1]:80 check inter 30s rise 5 fall 2"


def test_show_stat_csv_parses_into_server_rows() -> None:
    text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,check_status,check_code,chkdown,addr,\n"
        "api,task-a,0,0,3,5,,120,UP,L7OK,200,0,127.0.0.1:4001,\n"
        "api,task-b,1,1,0,0,,7,DOWN 1/2,* L4CON,,2,127.0.0.1:4002,\n"
    )
    rows = [ServerStat.from_row(row) for row in parse_csv(text)]
    assert rows[0] == ServerStat("task-a", "127.0.0.1:4001", "UP", "L7OK", "200", 3, 0, 120, 0)
    assert (rows[1].status, rows[1].check_status, rows[1].queued, rows[1].down_transitions) == (
        "DOWN 1/2",
        "L4CON",
        1,
        2,
    )
    assert parse_csv("Unknown backend.") == []


def _stat(status: str, check: str = "L7OK", code: str = "200") -> ServerStat:
    return ServerStat("t", "127.0.0.1:1", status, check, code, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("stat", "draining", "ever_up", "since", "expected"),
    [
        (_stat("DOWN", "INI", ""), False, False, 0.0, ("initial", "Elb.InitialHealthChecking")),
        (_stat("DOWN 1/2"), False, False, 6.0, ("initial", "Elb.InitialHealthChecking")),
        (_stat("DOWN", "L4CON", ""), False, False, 3.0, ("initial", "Elb.InitialHealthChecking")),
        (_stat("DOWN", "L4CON", ""), False, False, 10.0, ("unhealthy", "Target.FailedHealthChecks")),
        (_stat("UP"), False, False, 10.0, ("healthy", None)),
        (_stat("UP 1/2", "L7STS", "500"), False, True, 60.0, ("healthy", None)),
        (_stat("DOWN", "L7STS", "503"), False, True, 60.0, ("unhealthy", "Target.ResponseCodeMismatch")),
        (_stat("DOWN", "L7TOUT", ""), False, True, 60.0, ("unhealthy", "Target.Timeout")),
        (_stat("DOWN", "L4TOUT", ""), False, True, 60.0, ("unhealthy", "Target.Timeout")),
        (_stat("DOWN", "SOCKERR", ""), False, True, 60.0, ("unhealthy", "Target.FailedHealthChecks")),
        (_stat("DOWN 1/2"), False, True, 60.0, ("unhealthy", "Target.FailedHealthChecks")),
        (_stat("UP"), True, True, 60.0, ("draining", "Target.DeregistrationInProgress")),
        (_stat("DRAIN"), False, True, 60.0, ("draining", "Target.DeregistrationInProgress")),
        (_stat("MAINT"), False, True, 60.0, ("draining", "Target.DeregistrationInProgress")),
        (_stat("no check", "", ""), False, False, 0.0, ("unavailable", "Target.HealthCheckDisabled")),
    ],
)
def test_target_health_speaks_elbv2(
    stat: ServerStat, draining: bool, ever_up: bool, since: float, expected: tuple[str, str | None]
) -> None:
    health = elb_health(stat, draining=draining, ever_up=ever_up, since_registered=since, unhealthy_after=10.0)
    assert (health.state, health.reason) == expected
    if health.reason == "Target.ResponseCodeMismatch":
        assert health.description == "Health checks failed with these codes: [503]"
