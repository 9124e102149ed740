"""``pixfleet demo`` end to end: it starts its own embedded stack, runs the samples through, reports, stops."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from rich.cells import cell_len

from pipeline.net import free_port
from pixfleet.samples import demo_samples

PIXFLEET = [sys.executable, "-m", "pixfleet"]


class ReportParser(HTMLParser):
    """The report's rows (``tr[data-input]``) and image links."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self.sections: dict[str, str] = {}
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "data-input" in a:
            self.rows[a["data-input"] or ""] = a.get("data-status") or ""
        if tag == "section" and "data-input" in a:
            self.sections[a["data-input"] or ""] = a.get("data-status") or ""
        if tag == "img":
            self.images.append(a.get("src") or "")


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reports_every_input(tmp_path: Path) -> None:
    out, state = tmp_path / "demo", tmp_path / "state"
    env = {**os.environ, "COLUMNS": "80"}
    run = subprocess.run(
        [*PIXFLEET, "demo", "--out", str(out), "--state-dir", str(state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = out / "report.html"
    assert f"report: {report.resolve().as_uri()}" in run.stderr.replace("\n", "")
    too_wide = [line for line in run.stderr.splitlines() if cell_len(line.rstrip()) > 80]
    assert not too_wide, too_wide
    assert "…" not in run.stderr  # no name or error cut short in the table
    # The stack is gone: no URL of a page that no longer answers, but how to get one.
    assert "upload page:" not in run.stderr and "pixfleet demo --keep" in " ".join(run.stderr.split())

    samples = {s.name: s for s in demo_samples()}
    doc = json.loads((out / "demo.json").read_text())
    assert doc["all_as_expected"] and doc["stack"] == "embedded"
    by_name = {item["input"]: item for item in doc["inputs"]}
    assert set(by_name) == set(samples)
    for name, sample in samples.items():
        item = by_name[name]
        assert item["status"] == sample.expect, item
        assert (out / "inputs" / name).read_bytes() == sample.data
        if sample.expect == "succeeded":
            assert item["outputs"] and item["error"] is None
            for output in item["outputs"]:  # in a folder named after the input
                assert output["file"].startswith(f"outputs/{Path(name).stem}/"), output
                with Image.open(out / output["file"]) as im:
                    assert im.size == (output["width"], output["height"])
            assert item["timings"]["total_s"] is not None
        else:
            assert item["error"]["code"] == sample.expect_error == "corrupt_image"
    # The EXIF-rotated portrait came out upright.
    portrait = by_name["02-portrait-exif-rotated.jpg"]["outputs"][0]
    assert portrait["height"] > portrait["width"]

    html = report.read_text()
    parsed = ReportParser()
    parsed.feed(html)
    assert parsed.rows == parsed.sections == {name: s.expect for name, s in samples.items()}
    assert re.search(r"corrupt_image: [^<]*truncated", html)  # the poison file's reason is shown
    for src in parsed.images:  # relative links to the downloaded files, every one of them there
        assert not src.startswith(("/", "http")) and (out / src).is_file(), src
    assert sum(1 for src in parsed.images if src.startswith("outputs/")) == sum(
        len(i["outputs"]) for i in doc["inputs"]
    )

    # The stack was stopped: its API no longer answers and its stack.json is gone.
    assert not (state / "stack.json").exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(doc["api"] + "/healthz", timeout=2)


@pytest.mark.slow
def test_demo_keep_prints_the_upload_page_while_it_answers_and_down_stops_it(tmp_path: Path) -> None:
    out, state, log = tmp_path / "demo", tmp_path / "state", tmp_path / "demo.log"
    env = {**os.environ, "COLUMNS": "80"}
    with log.open("w") as stderr:
        demo = subprocess.Popen(
            [*PIXFLEET, "demo", "--keep", "--out", str(out), "--state-dir", str(state)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 400
        while not (page := re.search(r"upload page: (\S+)", log.read_text())):
            assert demo.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        with urllib.request.urlopen(page.group(1), timeout=10) as response:  # the URL works while it is printed
            assert response.status == 200 and b"<form" in response.read()
        down = subprocess.run(
            [*PIXFLEET, "down", "--state-dir", str(state)], env=env, capture_output=True, text=True, timeout=120
        )
        assert down.returncode == 0, down.stderr
        assert demo.wait(30) == 0, log.read_text()[-4000:]
        assert not (state / "stack.json").exists()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(page.group(1), timeout=2)
    finally:
        if demo.poll() is None:
            demo.kill()


def test_demo_against_an_api_that_does_not_answer_exits_2(tmp_path: Path) -> None:
    run = subprocess.run(
        [*PIXFLEET, "demo", "--api", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "no healthy pixfleet API" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("environment", "env_file", "expected"),
    [
        (
            {"PIXFLEET_API_URL": "http://api.example:9000/"},
            "PIXFLEET_API_URL=http://other:1\n",
            "http://api.example:9000",
        ),
        (
            {},
            "# compose\nexport PIXFLEET_API_URL='http://127.0.0.1:18080'\nCOMPOSE_PROJECT_NAME=pixfleet\n",
            "http://127.0.0.1:18080",
        ),
        ({}, "COMPOSE_PROJECT_NAME=pixfleet\n", "http://127.0.0.1:8080"),
        ({}, None, "http://127.0.0.1:8080"),
    ],
)
def test_the_compose_stack_is_found_through_the_environment_or_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], env_file: str | None, expected: str
) -> None:
    from pixfleet.endpoints import compose_api_url

    monkeypatch.delenv("PIXFLEET_API_URL", raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    if env_file is not None:
        (tmp_path / ".env").write_text(env_file)
    assert compose_api_url(tmp_path / ".env") == expected
