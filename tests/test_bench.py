"""The benchmark commands run end to end on a tiny generated corpus (no timed assertions).

pyvips is an optional extra (``pixfleet[bench]``): without it the transform benchmark
must report it unavailable and measure the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from pixfleet.bench import contenders
from pixfleet.bench.corpus import DEFAULT_CORPUS, write_corpus
from pixfleet.bench.measure import tree_cpu_seconds
from pixfleet.cli import main

TINY = 0.06  # 12 MP → 240×180: every format and mode of the real corpus, in a few seconds


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("corpus")
    result = CliRunner().invoke(main, ["bench", "corpus", str(directory), "--scale", str(TINY)])
    assert result.exit_code == 0, result.output
    return directory


def _positive(section: dict, *keys: str) -> None:
    for key in keys:
        assert section[key] > 0, (key, section)


def test_corpus_is_reproducible_and_mixed(tiny_corpus: Path, tmp_path: Path) -> None:
    again = write_corpus(tmp_path, seed=1, scale=TINY)
    assert [p.read_bytes() for p in again] == [(tiny_corpus / p.name).read_bytes() for p in again]
    formats, progressive = set(), set()
    for spec in DEFAULT_CORPUS:
        with Image.open(tiny_corpus / spec.name) as im:
            formats.add(im.format)
            if im.format == "JPEG":
                progressive.add(bool(im.info.get("progressive")))
    assert formats == {"JPEG", "PNG", "WEBP"} and progressive == {True, False}
    assert min(s.megapixels for s in DEFAULT_CORPUS) >= 5 and max(s.megapixels for s in DEFAULT_CORPUS) <= 50


def test_bench_transform_writes_the_report(tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report_path = tmp_path / "transform.json"
    args = [
        "bench",
        "transform",
        str(tiny_corpus),
        "--preset",
        "web",
        "--preset",
        "thumbs",
        "--repeat",
        "1",
        "--json",
        str(report_path),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["images"] == len(DEFAULT_CORPUS)
    assert set(report["contenders"]) == {"pixfleet", "pillow_naive", "pyvips", "floor"}
    for name, summary in report["contenders"].items():
        if name == "pyvips" and not summary["available"]:
            assert summary["reason"]  # optional extra not installed: reported, not a crash
            continue
        _positive(summary, "cpu_ms_per_image", "mpx_per_s", "peak_rss_mb")
    assert 0 < report["ssim_min"] <= 1
    assert set(report["by_preset"]) == {"web", "thumbs"}
    assert not report["size_mismatches"]
    assert "bench transform" in result.output


def test_bench_transform_without_pyvips(tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pyvips cannot be imported, its contender says so instead of failing."""
    monkeypatch.setitem(__import__("sys").modules, "pyvips", None)  # import pyvips → ImportError
    report = contenders.run("pyvips", "thumbs", sorted(tiny_corpus.iterdir())[:1], repeat=1, save=None)
    assert report["available"] is False and "pyvips" in report["reason"]


@pytest.mark.slow
def test_bench_pipeline_runs_jobs_through_the_stack(tiny_corpus: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "pipeline.json"
    args = ["bench", "pipeline", "--dir", str(tiny_corpus), "--jobs", "4", "--workers", "1", "--json", str(report_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    _positive(report, "engine_cpu_ms_per_job", "overhead")
    (run,) = report["runs"]
    assert run["workers"] == 1 and run["jobs"] == 4 and run["failed"] == 0
    _positive(run, "images_per_s", "worker_cpu_ms_per_job", "engine_cpu_in_worker_ms_per_job")


@pytest.mark.slow
def test_bench_api_measures_throughput_and_memory(tmp_path: Path) -> None:
    report_path = tmp_path / "api.json"
    args = [
        "bench",
        "api",
        "--requests",
        "12",
        "--concurrency",
        "4",
        "--big-clients",
        "3",
        "--big-mb",
        "6",
        "--json",
        str(report_path),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    fast, big = report["throughput"], report["memory"]
    assert fast["accepted"] == 12 and big["accepted"] == 3
    _positive(fast, "accepted_per_s", "mb_per_s")
    _positive(fast["latency_ms"], "p50", "p90", "p99")
    _positive(big, "peak_rss_mb", "rss_before_mb", "seconds")


def test_measure_helpers() -> None:
    assert tree_cpu_seconds(__import__("os").getpid()) > 0
