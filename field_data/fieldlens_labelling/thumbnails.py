"""Small copies of field images for the grid, made once and kept in a cache directory.

The cache key is the image id and the image file's size and modification time, so a
replaced image gets a new thumbnail; files are written atomically, so concurrent requests for
the same thumbnail at worst make it twice.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from fieldlens_core.atomic import atomic_write
from fieldlens_fielddata.directory import Pair

SIZE = 224


class Thumbnails:
    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def get(self, pair: Pair) -> bytes:
        """The pair's thumbnail as JPEG bytes; OSError when its image cannot be read or decoded."""
        stat = pair.image_path.stat()
        cached = self.cache_dir / f"{pair.image_id}-{stat.st_size}-{stat.st_mtime_ns}.jpg"
        try:
            return cached.read_bytes()
        except FileNotFoundError:
            pass
        with Image.open(pair.image_path) as image:
            image.draft("RGB", (SIZE, SIZE))  # JPEG: decode at a fraction of full size
            small = image.convert("RGB")
            small.thumbnail((SIZE, SIZE))
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=85)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, buffer.getvalue(), durable=False)
        return buffer.getvalue()
