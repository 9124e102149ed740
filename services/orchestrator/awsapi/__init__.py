"""The control plane's AWS-shaped APIs: ECS and Application Auto Scaling over the AWS JSON 1.1 protocol.

* :mod:`.protocol` — one ``POST /`` endpoint: the ``X-Amz-Target`` header names the service and action;
  requests are checked against botocore's own service models (what AWS refuses, this refuses, with the
  same field paths), answers are shaped by them, errors are AWS's ``{"__type", "message"}``;
* :mod:`.signing` — SigV4 verification with botocore's signer, against the control plane's admin keys;
* :mod:`.audit` — a CloudTrail-like record of every call;
* :mod:`.autoscaling` — Application Auto Scaling's actions (scalable targets, policies, activities), as a
  table for the endpoint; what they change is the orchestrator's (its services' scaling policies);
  :mod:`.scaling_activities` keeps what the scaler did.
* :mod:`.ecs` — the ECS actions over the orchestrator (:mod:`.ecs_views` shapes its answers, :mod:`.arns`
  names its resources);
* :mod:`.endpoint` — the one table of the APIs served on ``POST /`` and the admin key pair.

The work itself (tasks, rollouts, scaling) stays in the orchestrator; the actions here translate.
"""
