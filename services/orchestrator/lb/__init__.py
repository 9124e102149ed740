"""The load balancer (an ALB analogue): ELBv2's shapes in, HAProxy's runtime API out.

* :mod:`.spec` — ``CreateTargetGroup`` / ``CreateListener`` / ``CreateRule`` bodies,
  validated with botocore's ``elbv2`` model, into frozen values (pure).
* :mod:`.config` — ``haproxy.cfg`` and the rules' map files rendered from them (pure).
* :mod:`.health` — DescribeTargetHealth's states and reasons from ``show stat`` (pure).
* :mod:`.runtime_api` — the stats-socket client.
* :mod:`.haproxy` — :class:`~.haproxy.HAProxyLoadBalancer`: start one HAProxy, then
  ``register`` / ``deregister`` targets, read ``target_health``, swap rules with
  ``set_rules``, ``close``; never a restart or a reload.

Usage (the orchestrator's side)::

    spec = LoadBalancerSpec.from_requests(target_groups, {listener_arn: listener}, rules)
    async with HAProxyLoadBalancer(spec, state_dir / "lb") as lb:
        await lb.register("pixfleet-api", task_id, "127.0.0.1", host_port)
        await lb.target_health("pixfleet-api")   # [{"id", "host", "port", "state", "reason", ...}]
        await lb.deregister("pixfleet-api", task_id)   # drains first, up to the delay
"""
