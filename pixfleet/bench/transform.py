"""``pixfleet bench transform DIR``: our engine against naive Pillow, pyvips and the floor.

Every (contender, preset) pair runs in a fresh process (:mod:`pixfleet.bench.contenders`)
so that its peak RSS is its own. CPU is process CPU time (all threads), the fastest
of ``--repeat`` runs per image, summed over the corpus.

Quality: every variant of ours against naive Pillow's, by SSIM, measured on
lossless (PNG) renders of the same variants (an untimed extra pass), so it says what
the engine's shortcuts (draft decode, derived variants, filters) cost; the SSIM
of the shipped JPEG/WebP outputs is reported beside it, lower because both sides
carry their own codec noise.

Goals, per preset: ours ≤ 0.75× pyvips, ≤ 0.5× naive Pillow, ≤ 1.25× the floor,
SSIM ≥ 0.98 for every variant.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from pixfleet.bench.contenders import CONTENDERS
from pixfleet.bench.measure import machine

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp", ".avif")
GOALS = {"pyvips": 0.75, "pillow_naive": 0.5, "floor": 1.25}
SSIM_GOAL = 0.98


def corpus_files(directory: Path) -> list[Path]:
    """The images of a corpus directory, in name order."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return files


WORKER_TASK_DEFINITION = Path(__file__).resolve().parents[2] / "infra" / "taskdefs" / "worker.json"
RENDER_ENVIRONMENT = ("GLIBC_TUNABLES",)


def render_environment() -> dict[str, str]:
    """The process settings the worker task renders with (its task definition), for every contender.

    ``GLIBC_TUNABLES`` makes glibc keep freed image-sized blocks for reuse instead of
    returning them to the kernel: a 15 MP decode then costs no page faults (PNG thumbs
    117 → 93 ms). Every contender gets the same, so the ratios compare the renderers only.
    """
    try:
        definition = json.loads(WORKER_TASK_DEFINITION.read_text())
        environment = definition["containerDefinitions"][0].get("environment", [])
    except (OSError, ValueError, KeyError, IndexError):
        return {}
    return {e["name"]: e["value"] for e in environment if e.get("name") in RENDER_ENVIRONMENT}


def run_contender(
    contender: str, preset: str, files: Sequence[Path], *, repeat: int, save: Path | None, on_image: Any = None
) -> dict[str, Any]:
    """Run one contender on one preset in a child process; ``on_image()`` is called per finished image."""
    cmd = [
        sys.executable,
        "-m",
        "pixfleet.bench.contenders",
        contender,
        preset,
        *map(str, files),
        "--repeat",
        str(repeat),
    ]
    if save is not None:
        cmd += ["--save", str(save)]
    env = {**os.environ, **render_environment()}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        tail: list[str] = []
        assert proc.stderr and proc.stdout
        for line in proc.stderr:
            tail = [*tail, line][-20:]
            if line.startswith(f"{contender} {preset} ") and on_image:
                on_image()
        out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{contender}/{preset} failed ({proc.returncode}):\n{''.join(tail)}")
    return json.loads(out)


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """``cpu_ms_per_image``, ``mpx_per_s`` and ``peak_rss_mb`` of one contender run."""
    if not run.get("available", True):
        return {"available": False, "reason": run.get("reason", "")}
    images = run["images"]
    cpu_ms = sum(i["cpu_ms"] for i in images)
    mpx = sum(i["megapixels"] for i in images)
    return {
        "available": True,
        "cpu_ms_per_image": round(cpu_ms / max(1, len(images)), 2),
        "mpx_per_s": round(mpx / (cpu_ms / 1000), 2) if cpu_ms else 0.0,
        "peak_rss_mb": run["peak_rss_mb"],
        "cpu_ms_total": round(cpu_ms, 2),
        "megapixels_total": round(mpx, 3),
    }


def ssim(a: Image.Image, b: Image.Image, radius: int = 3, strip: int = 256) -> float:
    """Mean SSIM over R, G and B with a (2r+1)² uniform window (the test suite's definition).

    Computed in strips of ``strip`` rows, so a 50 MP comparison needs tens of MB, not gigabytes.
    """
    import numpy as np

    k, c1, c2 = 2 * radius + 1, (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def box_mean(x: Any) -> Any:
        c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), 0), 1)
        return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)

    scores = []
    for ba, bb in zip(a.convert("RGB").split(), b.convert("RGB").split(), strict=True):
        width, height = ba.size
        if min(width, height) < k:
            diff = np.abs(np.asarray(ba, np.float64) - np.asarray(bb, np.float64))
            scores.append(1.0 - float(diff.mean()) / 255)
            continue
        total, count = 0.0, 0
        for top in range(0, height - k + 1, strip):
            rows = (0, top, width, min(height, top + strip + k - 1))
            x, y = np.asarray(ba.crop(rows), np.float64), np.asarray(bb.crop(rows), np.float64)
            mx, my = box_mean(x), box_mean(y)
            vx, vy, cxy = box_mean(x * x) - mx * mx, box_mean(y * y) - my * my, box_mean(x * y) - mx * my
            m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
            total, count = total + float(m.sum()), count + m.size
        scores.append(total / count)
    return float(np.mean(scores))


def _as_seen(im: Image.Image) -> Image.Image:
    """RGB as a viewer shows it: transparent images composited onto white (hidden colours don't count)."""
    im.load()
    if im.mode not in ("RGBA", "LA", "PA") and "transparency" not in im.info:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    seen = Image.new("RGB", rgba.size, (255, 255, 255))
    seen.paste(rgba, (0, 0), rgba)
    return seen


def compare_outputs(ours: Path, theirs: Path) -> list[dict[str, Any]]:
    """SSIM of every output file in ``ours`` against the same-named one in ``theirs``."""
    results: list[dict[str, Any]] = []
    if not ours.is_dir():
        return results
    for mine in sorted(ours.iterdir()):
        other = theirs / mine.name
        if not other.exists():
            continue
        a, b = (_as_seen(Image.open(io.BytesIO(p.read_bytes()))) for p in (mine, other))
        file, preset, variant = mine.name.rsplit(".", 1)[0].rsplit(".", 2)
        entry: dict[str, Any] = {"file": file, "preset": preset, "variant": variant, "size": list(a.size)}
        entry["ssim"] = round(ssim(a, b), 4) if a.size == b.size else None
        if a.size != b.size:
            entry["size_mismatch"] = [list(a.size), list(b.size)]
        results.append(entry)
    return results


def benchmark(
    directory: Path,
    presets: Sequence[str],
    *,
    repeat: int = 3,
    contenders: Sequence[str] = CONTENDERS,
    progress: Any = None,
) -> dict[str, Any]:
    """Measure every contender on every preset; the report ``--json`` writes."""
    files = corpus_files(directory)
    per_preset: dict[str, Any] = {}
    all_runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    similarity: list[dict[str, Any]] = []  # lossless renders: what the engine's shortcuts cost
    similarity_encoded: list[dict[str, Any]] = []  # the shipped outputs: plus JPEG/WebP noise on both sides
    with tempfile.TemporaryDirectory(prefix="pixfleet-bench-") as tmp:
        for preset in presets:
            saved = {c: Path(tmp) / preset / c for c in ("pixfleet", "pillow_naive")}
            for d in saved.values():
                d.mkdir(parents=True)
            runs = {}
            for contender in contenders:
                task = progress.add_task(f"{contender} · {preset}", total=len(files)) if progress else None
                runs[contender] = run_contender(
                    contender,
                    preset,
                    files,
                    repeat=repeat,
                    save=saved.get(contender),
                    on_image=(lambda t=task: progress.advance(t)) if progress else None,
                )
                all_runs[contender].append(runs[contender])
            both = "pixfleet" in runs and "pillow_naive" in runs
            scores = compare_outputs(saved["pixfleet"] / "lossless", saved["pillow_naive"] / "lossless") if both else []
            encoded = compare_outputs(saved["pixfleet"] / "encoded", saved["pillow_naive"] / "encoded") if both else []
            similarity += scores
            similarity_encoded += encoded
            summary = {c: summarize(r) for c, r in runs.items()}
            per_preset[preset] = {
                "contenders": summary,
                "ratios": ratios(summary),
                "ssim_min": min((s["ssim"] for s in scores if s["ssim"] is not None), default=None),
                "ssim_worst": worst(scores),
                "ssim_encoded_min": min((s["ssim"] for s in encoded if s["ssim"] is not None), default=None),
                "by_format": by_format(runs, scores),
            }
    overall = {c: summarize(merge(rs)) for c, rs in all_runs.items()}
    ssim_values = [s["ssim"] for s in similarity if s["ssim"] is not None]
    return {
        "benchmark": "transform",
        "corpus": str(directory),
        "images": len(files),
        "megapixels": round(sum(_megapixels(f) for f in files), 2),
        "presets": presets,
        "repeat": repeat,
        "machine": machine(),
        "environment": render_environment(),
        "contenders": overall,
        "ratios": ratios(overall),
        "ssim_min": min(ssim_values, default=None),
        "ssim_encoded_min": min((s["ssim"] for s in similarity_encoded if s["ssim"] is not None), default=None),
        "goals": {"vs": GOALS, "ssim_min": SSIM_GOAL},
        "by_preset": per_preset,
        "ssim": similarity,
        "ssim_encoded": similarity_encoded,
        "size_mismatches": [s for s in similarity if s["ssim"] is None],
    }


def worst(scores: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The comparison with the lowest SSIM (file, variant, score)."""
    rated = [s for s in scores if s["ssim"] is not None]
    return min(rated, key=lambda s: s["ssim"]) if rated else None


def by_format(runs: dict[str, dict[str, Any]], scores: list[dict[str, Any]]) -> dict[str, Any]:
    """One preset's figures per input format (``JPEG baseline``, ``JPEG progressive``, ``PNG``...)."""
    kinds: dict[str, set[str]] = {}
    for run in runs.values():
        for image in run.get("images", []):
            kinds.setdefault(image["format"], set()).add(image["file"])
    out = {}
    for kind, names in sorted(kinds.items()):
        summary = {c: summarize(_only(r, names)) for c, r in runs.items()}
        mine = [s for s in scores if s["file"] in names]
        out[kind] = {
            "images": len(names),
            "contenders": summary,
            "ratios": ratios(summary),
            "ssim_min": min((s["ssim"] for s in mine if s["ssim"] is not None), default=None),
            "ssim_worst": worst(mine),
        }
    return out


def _only(run: dict[str, Any], names: set[str]) -> dict[str, Any]:
    if not run.get("available", True):
        return run
    return {**run, "images": [i for i in run["images"] if i["file"] in names]}


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run made of several presets' runs (images counted once per preset, peak = the max)."""
    if not runs or not all(r.get("available", True) for r in runs):
        return runs[0] if runs else {"available": False, "reason": "not run"}
    return {
        "available": True,
        "images": [i for r in runs for i in r["images"]],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def ratios(summary: dict[str, Any]) -> dict[str, float | None]:
    """Our CPU per image divided by each other contender's."""
    ours = summary.get("pixfleet", {}).get("cpu_ms_per_image")
    out: dict[str, float | None] = {}
    for name in GOALS:
        theirs = summary.get(name, {}).get("cpu_ms_per_image")
        out[name] = round(ours / theirs, 3) if ours and theirs else None
    return out


def _megapixels(path: Path) -> float:
    with Image.open(path) as im:
        return im.width * im.height / 1e6


def render_tables(report: dict[str, Any]) -> list[Any]:
    """Rich tables: one per preset and the overall one."""
    from rich.table import Table

    tables = []
    sections = [(f"preset {name}", p) for name, p in report["by_preset"].items()]
    sections.append((f"all presets ({report['images']} images × {len(report['presets'])} presets)", report))
    for title, section in sections:
        table = Table(title=f"bench transform — {title}")
        for col in ("contender", "CPU ms/image", "MP/s", "peak RSS MB", "ours ÷ theirs", "goal"):
            table.add_column(col, justify="left" if col == "contender" else "right")
        for name, s in section["contenders"].items():
            if not s.get("available", True):
                table.add_row(name, "unavailable", "", "", "", s.get("reason", "")[:60])
                continue
            ratio = section["ratios"].get(name)
            goal = GOALS.get(name)
            verdict = "" if ratio is None or goal is None else (f"≤ {goal} ✓" if ratio <= goal else f"≤ {goal} ✗")
            table.add_row(
                name,
                f"{s['cpu_ms_per_image']:.1f}",
                f"{s['mpx_per_s']:.1f}",
                f"{s['peak_rss_mb']:.0f}",
                "" if ratio is None else f"{ratio:.2f}×",
                verdict,
            )
        if section.get("ssim_min") is not None:
            ok = "✓" if section["ssim_min"] >= SSIM_GOAL else "✗"
            w = section.get("ssim_worst") or {}
            table.caption = (
                f"min SSIM ours vs naive Pillow, lossless renders: {section['ssim_min']:.4f} (goal ≥ {SSIM_GOAL} {ok}"
                f"{', ' + w['file'] + ' ' + w['variant'] if w else ''}); as encoded: {section['ssim_encoded_min']:.4f}"
            )
        tables.append(table)
        if section.get("by_format"):
            tables.append(format_table(title, section["by_format"]))
    return tables


def format_table(title: str, formats: dict[str, Any]) -> Any:
    """Ours per input format: CPU per image, the ratios against the goals, min SSIM (fits 80 columns)."""
    from rich.table import Table

    table = Table(title=f"{title} — by input format")
    for col in ("input", "n", "ours ms", "÷ pyvips", "÷ naive", "÷ floor", "min SSIM"):
        table.add_column(col, justify="left" if col == "input" else "right")
    for kind, f in formats.items():
        ours = f["contenders"].get("pixfleet", {})

        def cell(name: str, r: dict[str, Any] = f["ratios"]) -> str:
            ratio, goal = r.get(name), GOALS[name]
            return "" if ratio is None else f"{ratio:.2f} {'✓' if ratio <= goal else '✗'}"

        ssim_min = f["ssim_min"]
        table.add_row(
            kind,
            str(f["images"]),
            f"{ours['cpu_ms_per_image']:.1f}" if ours.get("available", True) and ours else "",
            cell("pyvips"),
            cell("pillow_naive"),
            cell("floor"),
            "" if ssim_min is None else f"{ssim_min:.4f} {'✓' if ssim_min >= SSIM_GOAL else '✗'}",
        )
    return table
