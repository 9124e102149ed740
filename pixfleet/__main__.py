"""``python -m pixfleet`` — the same as the ``pixfleet`` command."""

from pixfleet.cli import main

main()
