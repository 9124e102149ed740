"""Container images and the compose stack's entry points.

* :mod:`infra.images.build` — the image kit behind ``pixfleet images build [--offline]``.
* :mod:`infra.images.locks` — the committed dependency locks and how they are made.
* :mod:`infra.images.compose` — what the compose stack's provision and orchestrator
  containers run.
"""
