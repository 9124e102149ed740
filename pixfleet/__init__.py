"""pixfleet's tools: the command line and everything it drives from outside the services.

The layers (import-linter checks them, see pyproject.toml): this package may use the services,
``infra`` and ``pipeline``; the services use ``infra`` and ``pipeline``; ``pipeline`` uses nothing of
ours. ``pixfleet.stack`` is the embedded dev stack (``pixfleet up``), ``pixfleet.fleet`` the control
plane's commands, ``pixfleet.bench`` and ``pixfleet.loadtest`` the measurements.
"""
