"""Where ``pixfleet load`` gets its images: generated on the spot, or files from a directory.

Both choose the image for job ``i`` from ``(seed, i)`` alone, so a run is reproducible
whatever order the uploads happen to start in.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Protocol

from pixfleet.client import CONTENT_TYPES
from pixfleet.samples import Sample, load_pool, poison_sample


class ImageSource(Protocol):
    async def take(self, index: int) -> Sample:
        """The image to upload as job ``index``."""

    def describe(self) -> str: ...


class GeneratedImages:
    """A pool of photo-like images of mixed sizes and formats (made once), plus optional poison files."""

    def __init__(self, seed: int = 0, count: int = 12, poison: float = 0.0):
        self.seed, self.poison = seed, poison
        self.pool = load_pool(seed, count)
        self._poison = poison_sample(seed) if poison > 0 else None

    async def take(self, index: int) -> Sample:
        rng = random.Random(self.seed * 1_000_003 + index)
        if self._poison is not None and rng.random() < self.poison:
            return self._poison
        return self.pool[rng.randrange(len(self.pool))]

    def describe(self) -> str:
        sizes = sum(len(s.data) for s in self.pool) / len(self.pool) / 1024
        extra = f", {self.poison:.0%} poison" if self.poison else ""
        return f"generated: {len(self.pool)} distinct images (seed {self.seed}, mean {sizes:.0f} KiB){extra}"


class DirectoryImages:
    """The image files of a directory (by extension), in a seeded shuffled order, repeated as needed."""

    def __init__(self, folder: Path, seed: int = 0):
        self.folder = folder
        self.files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CONTENT_TYPES)
        random.Random(seed).shuffle(self.files)

    async def take(self, index: int) -> Sample:
        path = self.files[index % len(self.files)]
        data = await asyncio.to_thread(path.read_bytes)
        return Sample(path.name, data, CONTENT_TYPES[path.suffix.lower()], str(path), 0, 0)

    def describe(self) -> str:
        return f"{len(self.files)} files from {self.folder}"
