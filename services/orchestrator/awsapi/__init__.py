"""The control plane's AWS-shaped APIs: ECS and Application Auto Scaling over the AWS JSON 1.1 protocol.

* :mod:`.protocol` — one ``POST /`` endpoint: the ``X-Amz-Target`` header names the service and action;
  requests are checked against botocore's own service models (what AWS refuses, this refuses, with the
  same field paths), answers are shaped by them, errors are AWS's ``{"__type", "message"}``;
* :mod:`.signing` — SigV4 verification with botocore's signer, against the control plane's admin keys;
* :mod:`.audit` — a CloudTrail-like record of every call;
* :mod:`.autoscaling` — Application Auto Scaling's actions (scalable targets, policies, activities), as a
  table for the endpoint; what they change is the orchestrator's (its services' scaling policies);
  :mod:`.scaling_activities` keeps what the scaler did.
"""
