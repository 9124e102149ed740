"""Render HAProxy's configuration from a :class:`~services.orchestrator.lb.spec.LoadBalancerSpec` (pure).

What the configuration fixes at start, and what the runtime API changes later:

* one ``frontend`` per listener, bound to its port; one ``backend`` per target group
  with ``option httpchk`` on the health check path, the matcher as ``http-check
  expect``, ``timeout check`` from ``HealthCheckTimeoutSeconds`` and the balance
  algorithm from ``load_balancing.algorithm.type``. Backends start with no server:
  targets are dynamic servers (``add server``), each carrying its own ``check inter
  rise fall`` (dynamic servers inherit no ``default-server`` line), so they come and
  go without a reload.
* listener rules are a **map file per listener**: one line per path pattern, in
  ascending rule priority, ``<anchored regex> <backend>``. The frontend looks the
  path up once (``map_reg``, which returns the first line that matches, so file order
  is priority order) and uses that backend, else the listener's default. A map is
  data, not configuration: ``prepare map`` / ``add map @<version>`` / ``commit map``
  replace its lines atomically at runtime. What cannot change without a new process
  is the set of listeners and target groups (HAProxy adds neither frontends nor
  backends at runtime); rules may point at any target group of the description.
* the runtime API is a stats socket at admin level, only for the owner (mode 600).

Retries: a request whose connection to a target fails (refused, reset before the
request was sent) is sent again to another target (``retry-on conn-failure``,
``option redispatch``), so a target that died is invisible to clients until its
health checks mark it down. Requests already sent are never replayed (uploads are
not idempotent), so those in flight on a dying target fail, as on ALB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.orchestrator.lb.spec import ALGORITHMS, Listener, LoadBalancerSpec, Rule, TargetGroup

IDLE_TIMEOUT = 60  # ALB's default idle timeout (seconds), for clients and targets


@dataclass(frozen=True)
class Paths:
    """Where one load balancer keeps its files."""

    run_dir: Path
    socket: Path

    @property
    def config(self) -> Path:
        return self.run_dir / "haproxy.cfg"

    def rules_map(self, listener: Listener) -> Path:
        return self.run_dir / f"rules-{listener.port}.map"


def map_lines(rules: tuple[Rule, ...]) -> list[str]:
    """The map file of a listener's rules: ``<regex> <backend>``, highest priority first."""
    return [f"{regex} {rule.target_group}" for rule in rules for regex in rule.regexes]


def server_arguments(group: TargetGroup, host: str, port: int) -> str:
    """What ``add server`` needs after the name: the address and this target group's health check."""
    args = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    health = group.health
    if health.enabled:
        args += ["check", f"inter {health.interval}s", f"rise {health.healthy_threshold}"]
        args += [f"fall {health.unhealthy_threshold}"]
        if health.port is not None:
            args.append(f"port {health.port}")
    if group.slow_start:
        args.append(f"slowstart {group.slow_start}s")
    return " ".join(args)


def render(spec: LoadBalancerSpec, paths: Paths, bind_host: str = "127.0.0.1") -> str:
    """The whole ``haproxy.cfg``."""
    lines = [
        "# Rendered by services/orchestrator/lb from the load balancer's description; never edited by hand.",
        "global",
        f"    stats socket {paths.socket} mode 600 level admin",
        "    stats timeout 30s",
        "    log stderr format raw local0 notice",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    option forwardfor",
        "    option redispatch 1",
        "    retries 3",
        "    retry-on conn-failure",
        "    timeout connect 3s",
        f"    timeout client {IDLE_TIMEOUT}s",
        f"    timeout server {IDLE_TIMEOUT}s",
        f"    timeout http-keep-alive {IDLE_TIMEOUT}s",
        "    timeout http-request 30s",
        "    timeout queue 30s",
    ]
    for listener in spec.listeners:
        rules_map = paths.rules_map(listener)
        lines += [
            "",
            f"frontend listener-{listener.port}",
            f"    bind {bind_host}:{listener.port}",
            "    http-request set-header X-Forwarded-Proto http",
            "    http-request set-header X-Forwarded-Port %[dst_port]",
            f"    http-request set-var(txn.target_group) path,map_reg({rules_map})",
            "    use_backend %[var(txn.target_group)] if { var(txn.target_group) -m found }",
            f"    default_backend {listener.default_target_group}",
        ]
    for group in spec.target_groups:
        lines += ["", f"backend {group.name}", f"    balance {ALGORITHMS[group.algorithm]}"]
        health = group.health
        if health.enabled:
            lines += [
                "    option httpchk",
                f'    http-check send meth GET uri "{health.path}" ver HTTP/1.1 hdr Host {bind_host}',
                f"    http-check expect {_expect(health.codes)}",
                f"    timeout check {health.timeout}s",
            ]
        lines.append("    # targets: dynamic servers, added and removed through the runtime API")
    return "\n".join(lines) + "\n"


def _expect(codes: tuple[int, ...]) -> str:
    if len(codes) == 1:
        return f"status {codes[0]}"
    return "rstatus ^(" + "|".join(str(c) for c in codes) + ")$"
