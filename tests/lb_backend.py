"""A target for the load balancer tests: a small aiohttp server in a process of its own.

``python tests/lb_backend.py NAME`` binds a free port on 127.0.0.1, prints it on one
line (the caller reads it: no polling for readiness), and answers

* ``GET /health`` — 200, or the status last set with ``POST /control/health?status=N``;
* any other ``GET`` — its own NAME as text, after ``?ms=N`` milliseconds if asked.

Killing the process (SIGKILL) is how a test makes a task die.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


def make_app(name: str) -> web.Application:
    state = {"health": 200}

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=state["health"], text=f"{name} {state['health']}")

    async def control(request: web.Request) -> web.Response:
        state["health"] = int(request.query["status"])
        return web.Response(text="ok")

    async def answer(request: web.Request) -> web.Response:
        delay = int(request.query.get("ms", "0"))
        if delay:
            await asyncio.sleep(delay / 1000)
        return web.Response(text=name)

    app = web.Application()
    app.add_routes([web.get("/health", health), web.post("/control/health", control), web.get("/{tail:.*}", answer)])
    return app


async def main(name: str) -> None:
    runner = web.AppRunner(make_app(name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
