"""``python -m infra.images`` — the same as ``pixfleet images``."""

from infra.images.cli import images

images(prog_name="python -m infra.images")
