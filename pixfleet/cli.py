"""The ``pixfleet`` command line: the root group; each command lives in the module of its subject."""

from __future__ import annotations

import logging
import shutil
import sys
import textwrap
from typing import Any, TextIO

import click

from pixfleet import fleet, lifecycle
from pixfleet.bench import bench
from pixfleet.chaos import chaos
from pixfleet.demo import demo
from pixfleet.deploy import deploy
from pixfleet.dlq import dlq
from pixfleet.images import images
from pixfleet.loadtest import load
from pixfleet.submit import submit


def fit_message(message: str, width: int | None = None, prefix: str = "Error: ") -> str:
    """``message`` wrapped so that, after click's ``Error: `` prefix, no line is wider than the terminal."""
    width = width or shutil.get_terminal_size((80, 24)).columns
    paragraphs = []
    for i, paragraph in enumerate(message.split("\n")):
        lead = prefix if i == 0 else ""
        wrapped = textwrap.fill(
            lead + paragraph, width=width, subsequent_indent="  ", break_on_hyphens=False, break_long_words=True
        )
        paragraphs.append(wrapped[len(lead) :])
    return "\n".join(paragraphs)


class CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Logs to ``sys.stderr`` as it is when a record comes, not as it was at start-up.

    Under a rich status spinner (``pixfleet up``'s start-up) that is rich's proxy, which prints
    the line above the spinner, wrapped to the terminal; the original stream would write it into
    the spinner's line.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class PixfleetGroup(click.Group):
    """Click's group, with error messages wrapped to the terminal (click prints them on one line)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            vars(exc)["message"] = fit_message(exc.message)  # typed Final by click, but a plain attribute
            raise


@click.group(cls=PixfleetGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def main(verbose: bool) -> None:
    """pixfleet — an ECS-style batch image pipeline on one laptop.

    \b
      pixfleet up --detach              # start the stack in the background
      pixfleet submit photos/ --out out/
      pixfleet status                   # services, tasks, queue depth
      pixfleet down                     # drain and stop it
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        handlers=[CurrentStderrHandler()],
    )


for _command in [*lifecycle.COMMANDS, submit, *fleet.COMMANDS, demo, load, dlq, chaos, bench, images, deploy]:
    main.add_command(_command)


if __name__ == "__main__":
    main()
