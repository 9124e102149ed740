"""The four ways ``pixfleet bench transform`` renders a preset, each run in a process of its own.

``python -m pixfleet.bench.contenders CONTENDER PRESET FILE...`` renders every file
``--repeat`` times, keeps the fastest CPU time per image, prints one JSON report on
stdout (one progress line per image on stderr) and ends with its peak RSS, so
each contender's memory is measured alone.

* ``pixfleet`` — :func:`pipeline.transform.engine.transform`.
* ``pillow_naive`` — open, load at full size, resize every variant from the full
  image with LANCZOS, save (EXIF rotation applied and transparent images flattened
  onto the background for JPEG, so the outputs are the same).
* ``pyvips`` — ``thumbnail_buffer`` once per variant (shrink-on-load), one
  thread (``VIPS_CONCURRENCY=1``), operation cache off: the libvips author's
  recommended way to make thumbnails.
* ``floor`` — one decode the way our engine decodes (JPEG at its draft scale, plain
  PNGs with libspng), plus the encodes of the outputs: only those two are timed (the
  output-sized pixels they encode are prepared untimed).

All write the same outputs: sizes from the engine's geometry, the preset's format,
quality and progressive flag, JPEG 4:2:0, metadata stripped.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CONTENDERS = ("pixfleet", "pillow_naive", "pyvips", "floor")

Renderer = Callable[[bytes, Sequence[Any]], tuple[float, list[tuple[str, str, int, int, bytes]]]]
"""(data, variants) → (CPU seconds, [(variant, extension, width, height, encoded bytes)])."""


def _limits():
    from pipeline.transform.spec import Limits

    return Limits(max_bytes=1 << 31, max_pixels=250_000_000, max_frames=100_000)


def render_pixfleet(data: bytes, variants: Sequence[Any]) -> tuple[float, list]:
    from pipeline.transform.engine import transform

    started = time.process_time()
    result = transform(data, variants, _limits())
    cpu = time.process_time() - started
    return cpu, [(r.variant, r.extension, r.width, r.height, r.data) for r in result.renditions]


def render_pillow_naive(data: bytes, variants: Sequence[Any]) -> tuple[float, list]:
    from PIL import Image, ImageOps

    from pipeline.transform.engine import plan_geometry
    from pipeline.transform.steps import encode, flatten

    started = time.process_time()
    im: Image.Image = Image.open(io.BytesIO(data))
    im.load()
    if im.getexif().get(0x0112, 1) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode not in ("RGB", "L", "RGBA"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    outputs = []
    for spec in variants:
        g = plan_geometry(im.width, im.height, spec)
        pixels = flatten(im.resize(g.out, Image.Resampling.LANCZOS, box=g.region), spec)  # RGBA: onto the background
        outputs.append((spec.name, spec.extension, pixels.width, pixels.height, encode(pixels, spec)))
    return time.process_time() - started, outputs


def render_floor(data: bytes, variants: Sequence[Any]) -> tuple[float, list]:
    from PIL import Image

    from pipeline.transform import png
    from pipeline.transform.engine import draft_request, plan_geometry
    from pipeline.transform.steps import SWAPS_AXES, encode, flatten

    started = time.process_time()
    im = Image.open(io.BytesIO(data))
    if im.format in ("JPEG", "MPO"):
        im.draft("RGB", draft_request(im, variants))
    decoded = png.decode(im, data) if im.format == "PNG" else None  # the engine's PNG decoder where it applies
    if decoded is None:
        im.load()
    cpu = time.process_time() - started
    # Untimed: output-sized pixels to encode, and the upright size the geometry is planned on.
    orientation = im.getexif().get(0x0112, 1)
    source = decoded if decoded is not None else im
    if source.mode not in ("RGB", "L", "RGBA"):
        source = source.convert("RGBA" if source.has_transparency_data else "RGB")
    width, height = Image.open(io.BytesIO(data)).size
    if orientation in SWAPS_AXES:
        width, height = height, width
    outputs = []
    for spec in variants:
        g = plan_geometry(width, height, spec)
        pixels = flatten(source.resize(g.out, Image.Resampling.BICUBIC), spec)
        started = time.process_time()
        payload = encode(pixels, spec)
        cpu += time.process_time() - started
        outputs.append((spec.name, spec.extension, pixels.width, pixels.height, payload))
    return cpu, outputs


def render_pyvips(data: bytes, variants: Sequence[Any]) -> tuple[float, list]:
    import pyvips

    from pipeline.transform.steps import WEBP_METHOD

    started = time.process_time()
    outputs = []
    for spec in variants:
        size = "force" if spec.mode == "exact" else ("both" if spec.upscale else "down")
        options: dict[str, Any] = {"height": spec.height or 10_000_000, "size": size}
        if spec.mode == "fill":
            options["crop"] = "centre"
        im = pyvips.Image.thumbnail_buffer(data, spec.width or 10_000_000, **options)
        if spec.format == "jpeg":
            payload = im.jpegsave_buffer(
                Q=spec.quality, interlace=spec.progressive, subsample_mode="on", optimize_coding=False, keep="none"
            )
        elif spec.format == "webp":
            payload = im.webpsave_buffer(Q=spec.quality, effort=WEBP_METHOD, keep="none")
        elif spec.format == "png":
            payload = im.pngsave_buffer(compression=6, keep="none")
        else:
            payload = im.heifsave_buffer(Q=spec.quality, compression="av1", effort=1, keep="none")
        outputs.append((spec.name, spec.extension, im.width, im.height, payload))
    return time.process_time() - started, outputs


RENDERERS: dict[str, Renderer] = {
    "pixfleet": render_pixfleet,
    "pillow_naive": render_pillow_naive,
    "pyvips": render_pyvips,
    "floor": render_floor,
}


def pyvips_unavailable() -> str | None:
    """Why pyvips cannot run here (None when it can). Configures it the benchmark's way."""
    os.environ["VIPS_CONCURRENCY"] = "1"
    try:
        import pyvips
    except Exception as exc:
        return f"pyvips is not installed ({type(exc).__name__}: {exc}); pip install 'pixfleet[bench]'"
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    pyvips.concurrency_set(1)
    return None


def input_kind(im: Any) -> str:
    """How the benchmark groups an input: ``JPEG baseline``, ``JPEG progressive``, ``PNG``, or Pillow's format name."""
    if im.format in ("JPEG", "MPO"):
        return "JPEG progressive" if im.info.get("progressive") or im.info.get("progression") else "JPEG baseline"
    return str(im.format)


def save_outputs(directory: Path, source: str, preset: str, outputs: list) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for variant, ext, _, _, payload in outputs:
        (directory / f"{source}.{preset}.{variant}.{ext}").write_bytes(payload)


def run(contender: str, preset: str, files: Sequence[Path], repeat: int, save: Path | None) -> dict[str, Any]:
    """Render every file with one contender; the report printed by the command line."""
    from PIL import Image

    from pipeline.transform.presets import get_preset

    report: dict[str, Any] = {"contender": contender, "preset": preset, "available": True, "images": []}
    if contender == "pyvips" and (reason := pyvips_unavailable()):
        return {**report, "available": False, "reason": reason}
    render, variants = RENDERERS[contender], get_preset(preset)
    if files:
        render(files[0].read_bytes(), variants)  # warm-up: plugins, codecs, caches
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            megapixels = im.width * im.height / 1e6
            kind = input_kind(im)
        best, outputs = min((render(data, variants) for _ in range(repeat)), key=lambda r: r[0])
        if save is not None:
            save_outputs(save / "encoded", path.name, preset, outputs)
            lossless = [dataclasses.replace(v, format="png") for v in variants]  # untimed: pixels without codec noise
            save_outputs(save / "lossless", path.name, preset, render(data, lossless)[1])
        report["images"].append(
            {
                "file": path.name,
                "format": kind,
                "megapixels": round(megapixels, 3),
                "cpu_ms": round(best * 1000, 2),
                "outputs": [{"variant": v, "width": w, "height": h, "bytes": len(p)} for v, _, w, h, p in outputs],
            }
        )
        del data, outputs
        print(f"{contender} {preset} {path.name} {best * 1000:.0f} ms", file=sys.stderr, flush=True)
    from pixfleet.bench.measure import peak_rss_mb

    report["peak_rss_mb"] = peak_rss_mb()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pixfleet.bench.contenders")
    parser.add_argument("contender", choices=CONTENDERS)
    parser.add_argument("preset")
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--save", type=Path, help="write the outputs (encoded/ and lossless/) here, for SSIM")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.contender, args.preset, args.files, max(1, args.repeat), args.save)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
