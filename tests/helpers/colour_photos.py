"""Small labelled photo sets with real visual differences (colour), for fast retraining tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (200, 30, 30), "green": (30, 170, 40), "blue": (30, 40, 200)}


def photo(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 96) -> Image.Image:
    base = np.array(colour, dtype=np.float32) * rng.uniform(0.7, 1.2)
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def write_class_folders(root: Path, per_class: int, seed: int = 0) -> None:
    """root/<colour>/<n>.jpg: the layout of a base dataset."""
    rng = np.random.default_rng(seed)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            photo(colour, rng).save(root / label / f"{seed}-{index}.jpg", quality=90)
