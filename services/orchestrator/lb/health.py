"""Target health in ELBv2's vocabulary, from what HAProxy's runtime API reports.

A pure function over one server's ``show stat`` row plus what the load balancer
itself knows (is the target being deregistered, has it ever been up since it was
registered, how long ago that was). Table-tested in ``tests/test_lb_spec.py``.

ELBv2's states and how they are read here:

* ``initial`` (``Elb.InitialHealthChecking``) — registered, not yet up, and not yet
  failing for ``interval × UnhealthyThresholdCount``. Targets start *down* (the load
  balancer forces it at registration), so none gets traffic before it has passed
  ``HealthyThresholdCount`` checks, as on ALB.
* ``healthy`` — HAProxy says UP (also "UP 1/2": one failed check is not a verdict yet).
* ``unhealthy`` — down after having been up, or failing for the threshold time while
  initial. The reason comes from HAProxy's last check: ``L7STS`` (a status outside the
  matcher) → ``Target.ResponseCodeMismatch``, ``L4TOUT``/``L7TOUT`` → ``Target.Timeout``,
  anything else → ``Target.FailedHealthChecks``.
* ``draining`` (``Target.DeregistrationInProgress``) — being deregistered.
* ``unavailable`` (``Target.HealthCheckDisabled``) — the target group checks nothing.

Not reproduced: ALB's fail-open (with every target unhealthy ALB routes to all of
them; HAProxy answers 503).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

INITIAL, HEALTHY, UNHEALTHY, DRAINING, UNAVAILABLE = "initial", "healthy", "unhealthy", "draining", "unavailable"
_PASSED = {"", "INI", "L7OK", "L7OKC", "L6OK", "L4OK"}
_TIMEOUTS = {"L4TOUT", "L6TOUT", "L7TOUT"}


@dataclass(frozen=True)
class ServerStat:
    """The fields of one ``show stat`` server row that target health needs."""

    name: str
    address: str
    status: str  # UP, UP 1/2, DOWN, DOWN 1/3, DRAIN, MAINT, NOLB, no check
    check_status: str  # L7OK, L7STS, L4CON, L4TOUT, INI… ("* " while a check runs)
    check_code: str
    sessions: int
    queued: int
    total: int  # cumulated sessions (one per request over HTTP)
    down_transitions: int  # chkdown: UP → DOWN transitions

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> ServerStat:
        def number(key: str) -> int:
            text = row.get(key, "")
            return int(text) if text.isdigit() else 0

        return cls(
            name=row.get("svname", ""),
            address=row.get("addr", ""),
            status=row.get("status", ""),
            check_status=row.get("check_status", "").removeprefix("* ").strip(),
            check_code=row.get("check_code", ""),
            sessions=number("scur"),
            queued=number("qcur"),
            total=number("stot"),
            down_transitions=number("chkdown"),
        )


@dataclass(frozen=True)
class Health:
    state: str
    reason: str | None
    description: str | None


def failure(stat: ServerStat) -> Health | None:
    """The last check's failure as ELBv2's unhealthy reason, or None if it passed."""
    if stat.check_status in _PASSED:
        return None
    if stat.check_status == "L7STS":
        return Health(
            UNHEALTHY, "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{stat.check_code}]"
        )
    if stat.check_status in _TIMEOUTS:
        return Health(UNHEALTHY, "Target.Timeout", "Request timed out")
    return Health(UNHEALTHY, "Target.FailedHealthChecks", f"Health checks failed ({stat.check_status})")


def elb_health(
    stat: ServerStat,
    *,
    draining: bool,
    ever_up: bool,
    since_registered: float,
    unhealthy_after: float,
    checks_enabled: bool = True,
) -> Health:
    """One target's ELBv2 state, reason and description."""
    if draining or stat.status.startswith(("DRAIN", "MAINT")):
        return Health(DRAINING, "Target.DeregistrationInProgress", "Target deregistration is in progress")
    if not checks_enabled or stat.status == "no check":
        return Health(UNAVAILABLE, "Target.HealthCheckDisabled", "Health checks are disabled for the target group")
    if stat.status.startswith(("UP", "NOLB")):
        return Health(HEALTHY, None, None)
    failed = failure(stat)
    if not ever_up and (failed is None or since_registered < unhealthy_after):
        return Health(INITIAL, "Elb.InitialHealthChecking", "Initial health checks in progress")
    return failed or Health(UNHEALTHY, "Target.FailedHealthChecks", "Health checks failed")
