"""``pixfleet bench``: performance measured side by side in one run, reported as ratios.

* ``bench corpus DIR`` — write the generated stand-in corpus (:mod:`pixfleet.bench.corpus`).
* ``bench transform DIR`` — engine vs naive Pillow, pyvips and the decode+encode floor
  (:mod:`pixfleet.bench.transform`).
* ``bench pipeline`` — worker CPU per job vs engine CPU per job, images/s with 1 and
  2 workers, through the embedded stack (:mod:`pixfleet.bench.end_to_end`).
* ``bench lb`` — the API behind HAProxy under steady load: requests per task, failed
  requests in a rolling deploy and a task kill (:mod:`pixfleet.bench.lb`).
* ``bench api`` — upload throughput and latency, and the API's peak RSS under 50
  concurrent 50 MB uploads (:mod:`pixfleet.bench.api`).

Each prints tables; ``--json PATH`` also writes the full report.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.transform.presets import DEFAULT_PRESET

console = Console(stderr=True)
_JSON = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report as JSON here."
)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _print(tables: list) -> None:
    out = Console()
    for table in tables:
        out.print(table)


@click.group()
def bench() -> None:
    """Benchmarks: transform engine, pipeline overhead, API throughput and memory."""


@bench.command("corpus")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=1, show_default=True, help="Same seed, same files.")
@click.option(
    "--scale", default=1.0, show_default=True, help="Multiply every side (0.1 makes a tiny corpus for tests)."
)
def corpus_command(directory: Path, seed: int, scale: float) -> None:
    """Write the generated stand-in corpus (5-50 MP baseline/progressive JPEG, a PNG, a WebP) to DIRECTORY."""
    from pixfleet.bench.corpus import DEFAULT_CORPUS, write_corpus

    with _progress() as progress:
        task = progress.add_task("generating", total=len(DEFAULT_CORPUS))
        paths = write_corpus(directory, seed=seed, scale=scale, on_file=lambda _: progress.advance(task))
    total = sum(p.stat().st_size for p in paths)
    click.echo(f"wrote {len(paths)} images ({total / 1e6:.1f} MB) to {directory}")


@bench.command("transform")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--preset", "presets", multiple=True, help="Preset(s) to measure (default: all).")
@click.option("--repeat", default=3, show_default=True, help="Runs per image; the fastest counts.")
@click.option(
    "--contender",
    "contenders",
    multiple=True,
    type=click.Choice(["pixfleet", "pillow_naive", "pyvips", "floor"]),
    help="Default: all four.",
)
@_JSON
def transform_command(
    directory: Path, presets: tuple[str, ...], repeat: int, contenders: tuple[str, ...], json_path: Path | None
) -> None:
    """CPU ms/image, MP/s and peak RSS of the engine, naive Pillow, pyvips and the floor on the images in DIRECTORY."""
    from pixfleet.bench.contenders import CONTENDERS
    from pixfleet.bench.measure import write_json
    from pixfleet.bench.transform import benchmark, render_tables
    from pipeline.transform.presets import get_preset, preset_names

    for name in presets:
        get_preset(name)
    with _progress() as progress:
        report = benchmark(
            directory,
            list(presets or preset_names()),
            repeat=max(1, repeat),
            contenders=contenders or CONTENDERS,
            progress=progress,
        )
    _print(render_tables(report))
    for miss in report["size_mismatches"]:
        console.print(f"[yellow]size mismatch[/] {miss['file']} {miss['variant']}: {miss['size_mismatch']}")
    write_json(json_path, report)


@bench.command("pipeline")
@click.option(
    "--dir",
    "directory",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Images to submit (default: generated 12 MP JPEGs).",
)
@click.option("--jobs", default=24, show_default=True, help="Jobs per run.")
@click.option("--preset", default=DEFAULT_PRESET, show_default=True, help="Preset of variants to render.")
@click.option(
    "--workers", "worker_counts", multiple=True, type=int, help="Worker counts to measure (default: 1 and 2)."
)
@_JSON
def pipeline_command(
    directory: Path | None, jobs: int, preset: str, worker_counts: tuple[int, ...], json_path: Path | None
) -> None:
    """Worker CPU per job vs engine CPU per job, and images/s end to end, through the embedded stack."""
    from pixfleet.bench.measure import write_json
    from pixfleet.bench.end_to_end import benchmark, render_tables

    with _progress() as progress:
        report = asyncio.run(
            benchmark(directory, jobs=jobs, preset=preset, worker_counts=worker_counts or (1, 2), progress=progress)
        )
    _print(render_tables(report))
    write_json(json_path, report)


@bench.command("api")
@click.option("--requests", default=400, show_default=True, help="Uploads in the throughput run.")
@click.option("--concurrency", default=16, show_default=True, help="Concurrent clients in the throughput run.")
@click.option("--image-kb", default=256, show_default=True, help="KB of each upload in the throughput run.")
@click.option("--big-clients", default=50, show_default=True, help="Clients uploading at once in the memory run.")
@click.option("--big-mb", default=50.0, show_default=True, help="MB (10^6 bytes) each of them uploads.")
@click.option(
    "--api-env",
    multiple=True,
    metavar="NAME=VALUE",
    help="Setting for the API process, e.g. PIXFLEET_API_BUFFER_BUDGET=16777216.",
)
@_JSON
def api_command(
    requests: int,
    concurrency: int,
    image_kb: int,
    big_clients: int,
    big_mb: float,
    api_env: tuple[str, ...],
    json_path: Path | None,
) -> None:
    """Accepted uploads/s and latency percentiles, and the API's peak RSS under big concurrent uploads."""
    from pixfleet.bench.api import benchmark, render_tables
    from pixfleet.bench.measure import write_json

    with _progress() as progress:
        report = asyncio.run(
            benchmark(
                requests=requests,
                concurrency=concurrency,
                image_bytes=image_kb * 1024,
                big_clients=big_clients,
                big_bytes=int(big_mb * 1_000_000),
                api_env=dict(item.split("=", 1) for item in api_env),
                progress=progress,
            )
        )
    _print(render_tables(report))
    write_json(json_path, report)


@bench.command("lb")
@click.option("--rate", default=20.0, show_default=True, help="Uploads per second, steady, through the whole run.")
@click.option("--steady", default=20.0, show_default=True, help="Seconds of the spread measurement.")
@_JSON
def lb_command(rate: float, steady: float, json_path: Path | None) -> None:
    """The API behind HAProxy under load: requests per task, failures in a rolling deploy and a task kill."""
    from pixfleet.bench.lb import benchmark, render_tables, verdicts
    from pixfleet.bench.measure import write_json

    with _progress() as progress:
        report = asyncio.run(benchmark(rate=rate, steady=steady, progress=progress))
    _print(render_tables(report))
    write_json(json_path, report)
    if not all(verdicts(report).values()):
        raise SystemExit(1)


from pixfleet.bench.scaling import scaling  # noqa: E402 - the orchestrator's benchmark, beside the others

bench.add_command(scaling)
