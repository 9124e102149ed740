"""The upload page, in a real browser (Debian's headless Chromium driven by Playwright), and ``GET /v1/fleet``.

The browser uploads three images (one straight to S3 with a presigned POST, one picked,
one dropped), sees them succeed with thumbnails and the poison file fail with its reason,
and reads the fleet panel. A screenshot is saved to ``$PIXFLEET_TEST_ARTIFACTS`` (default
``test-artifacts/``).
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pixfleet import samples
from infra import REPO_ROOT
from stack_fixtures import StackClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

CHROMIUM = os.environ.get("PIXFLEET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Root needs --no-sandbox; the rest keep Chromium from calling home (there is no network to call).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(os.environ.get("PIXFLEET_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
WAIT_MS = 180_000  # generous: CI has two cores and other work

DROP = """([name, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type: "image/jpeg" }));
  document.querySelector("#drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
}"""

ALL_DONE = """(expected) => {
  const done = [...document.querySelectorAll("#jobs li.job")].filter((li) => ["succeeded", "failed", "rejected"].includes(li.dataset.status));
  const thumbsLoaded = done.filter((li) => li.dataset.status === "succeeded")
    .every((li) => [...li.querySelectorAll("img.thumb")].every((img) => img.dataset.loaded === "true" && img.naturalWidth > 0));
  return done.length === expected && thumbsLoaded;
}"""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM:
        if os.environ.get("PIXFLEET_REQUIRE_DOCKER") == "1":  # set by .ci/run, which installs Chromium too
            pytest.fail("no Chromium at /usr/bin/chromium although .ci/run should have installed it")
        pytest.skip("no Chromium: `apt-get install chromium` (CI's .ci/run installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "response",
        lambda response: errors.append(f"{response.status} {response.url}") if response.status >= 400 else None,
    )
    await page.goto(url)
    await page.wait_for_selector("#preset option[value=thumbs]", state="attached")
    return page, errors


async def jobs_on(page: Any) -> dict[str, dict[str, Any]]:
    return {
        job["name"]: job
        for job in await page.eval_on_selector_all(
            "#jobs li.job",
            """(items) => items.map((li) => ({
                name: li.dataset.name, status: li.dataset.status, route: li.dataset.route,
                reason: li.querySelector(".reason").hidden ? null : li.querySelector(".reason").textContent,
                captions: [...li.querySelectorAll("figcaption")].map((c) => c.textContent),
                thumbs: [...li.querySelectorAll("img.thumb")].map((img) => [img.naturalWidth, img.naturalHeight]),
            }))""",
        )
    }


async def test_upload_page_in_a_real_browser(client: StackClient, browser: Any, tmp_path: Path) -> None:
    images = {
        "photo.jpg": samples.photo(1200, 800, "JPEG", seed=21),
        "cutout.png": samples.transparent_png(900, 700, seed=22),  # ~0.9 MiB: over the threshold set below
        "rotated.jpg": samples.photo(600, 900, "JPEG", seed=23, orientation=6),
    }
    paths = []
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    assert len(images["cutout.png"]) > 512 * 1024 > max(len(images["photo.jpg"]), len(images["rotated.jpg"]))

    page, errors = await open_page(browser, f"{client.api}/")
    await page.select_option("#preset", "thumbs")
    await page.fill("#threshold", "0.5")  # MiB: the PNG goes straight to S3 with a presigned POST
    await page.set_input_files("#files", paths)
    assert "3 files chosen" in await page.inner_text("#picked")
    await page.click("#upload")
    # The poison file arrives by drag and drop.
    await page.evaluate(DROP, ["poison.jpg", base64.b64encode(samples.poison_jpeg()).decode()])
    assert "poison.jpg" in await page.inner_text("#picked")
    await page.click("#upload")

    await page.wait_for_function(ALL_DONE, arg=4, timeout=WAIT_MS)
    jobs = await jobs_on(page)
    assert {name: job["status"] for name, job in jobs.items()} == {
        "photo.jpg": "succeeded",
        "cutout.png": "succeeded",
        "rotated.jpg": "succeeded",
        "poison.jpg": "failed",
    }
    assert jobs["cutout.png"]["route"] == "direct" and jobs["photo.jpg"]["route"] == "api"
    for name in images:
        assert jobs[name]["thumbs"] == [[256, 256]], name  # thumbs preset: one 256×256 WebP
        assert jobs[name]["captions"][0].startswith("thumb · webp 256×256 · ")
    assert jobs["poison.jpg"]["reason"].startswith("corrupt_image: ")

    # The live panel: queue depth and the two running workers, read through GET /v1/fleet.
    await page.wait_for_function(
        "() => /workers: 2 running/.test(document.querySelector('#fleet-now').textContent)"
        " && document.querySelector('#fleet-chart path.depth') !== null",
        timeout=WAIT_MS,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "web-upload.png"), full_page=True)
    assert (ARTIFACTS / "web-upload.png").stat().st_size > 0
    assert errors == []
    await page.close()


async def test_the_page_sends_the_api_key_when_the_api_wants_one(
    client: StackClient, browser: Any, tmp_path: Path
) -> None:
    """An API with PIXFLEET_API_KEYS, run in-process on the shared stack's queue and buckets."""
    from aiohttp.test_utils import TestServer

    from services.api.settings import ApiSettings
    from services.api.app import create_app

    server = TestServer(
        create_app(ApiSettings(aws=client.stack.aws, api_keys=("s3cret",)), credentials=client.stack.bootstrap),
        host="127.0.0.1",
    )
    await server.start_server()
    try:
        page = await browser.new_page()
        await page.goto(str(server.make_url("/")))
        await page.wait_for_function(
            "() => /unauthorized/.test(document.querySelector('#form-status').textContent)", timeout=WAIT_MS
        )
        await page.fill("#api-key", "s3cret")
        await page.dispatch_event("#api-key", "change")
        await page.wait_for_selector("#preset option[value=thumbs]", state="attached", timeout=WAIT_MS)
        await page.select_option("#preset", "thumbs")
        (tmp_path / "keyed.jpg").write_bytes(samples.photo(640, 480, "JPEG", seed=24))
        await page.set_input_files("#files", [str(tmp_path / "keyed.jpg")])
        await page.click("#upload")
        await page.wait_for_function(ALL_DONE, arg=1, timeout=WAIT_MS)
        jobs = await jobs_on(page)
        assert jobs["keyed.jpg"]["status"] == "succeeded" and jobs["keyed.jpg"]["thumbs"] == [[256, 256]]
        await page.close()
    finally:
        await server.close()


async def test_fleet_reports_queue_depth_and_workers(client: StackClient) -> None:
    async with client.http.get(f"{client.api}/v1/fleet") as r:
        assert r.status == 200
        fleet = await r.json()
    assert set(fleet["queue"]) == {"visible", "in_flight", "delayed"}
    assert all(isinstance(v, int) and v >= 0 for v in fleet["queue"].values())
    assert fleet["workers"] == fleet["desired_workers"] == 2  # the shared stack pins two workers
    async with client.http.get(f"{client.api}/openapi.json") as r:
        assert "/v1/fleet" in (await r.json())["paths"]
    async with client.http.get(f"{client.api}/") as r:
        assert r.status == 200 and r.content_type == "text/html"
        assert '<script src="/static/app.js"' in await r.text()
    async with client.http.get(f"{client.api}/static/app.js") as r:
        assert r.status == 200 and "javascript" in r.content_type


async def test_fleet_without_an_orchestrator_reports_unknown_workers(client: StackClient) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from services.api.settings import ApiSettings
    from services.api.app import create_app

    settings = ApiSettings(aws=client.stack.aws, orchestrator_url="")
    async with TestClient(TestServer(create_app(settings, credentials=client.stack.bootstrap))) as http:
        r = await http.get("/v1/fleet")
        assert r.status == 200
        fleet = await r.json()
    assert fleet["workers"] is None and set(fleet["queue"]) == {"visible", "in_flight", "delayed"}
