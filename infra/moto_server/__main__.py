"""``python -m infra.moto_server -H HOST -p PORT``: moto's server with pixfleet's patches installed."""

from __future__ import annotations

import os
import sys
import threading
import time

PARENT_PID_ENV = "PIXFLEET_MOTO_PARENT_PID"


def _exit_when_orphaned(parent_pid: int) -> None:
    """Exit when the process that started the server is gone (a killed test run leaves no emulator)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str]) -> None:
    from infra.moto_server import install_all

    install_all()
    if os.environ.get(PARENT_PID_ENV):
        _exit_when_orphaned(int(os.environ[PARENT_PID_ENV]))
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
