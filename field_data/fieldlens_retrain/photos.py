"""Real photos that ship inside scikit-image, for the demo folder camera and int8 calibration.

Only the images bundled in the scikit-image wheel are used: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


def _loaders() -> dict[str, Callable[[], np.ndarray]]:
    from skimage import data

    return {
        "astronaut": data.astronaut,
        "cat": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],  # type: ignore[no-untyped-call]
        "cameraman": data.camera,
    }


def sample_photos() -> dict[str, Image.Image]:
    """Name -> RGB image of each bundled sample photo."""
    return {name: Image.fromarray(load()).convert("RGB") for name, load in _loaders().items()}


def write_sample_photos(folder: Path, quality: int = 92) -> list[Path]:
    """Write the sample photos as JPEG files (what a camera would produce); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in sample_photos().items():
        path = folder / f"{name}.jpg"
        image.save(path, format="JPEG", quality=quality)
        paths.append(path)
    return paths
