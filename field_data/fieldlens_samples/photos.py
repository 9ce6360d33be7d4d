"""Real photos that ship inside scikit-image, for the demo folder camera and int8 calibration.

Only the images bundled in the scikit-image wheel are used: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Every real photograph in the scikit-image wheel (not the synthetic charts, logos or binary
# masks): objects, people, textures and microscopy, to measure int8 on more than one kind of scene.
BUNDLED_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)


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
    """Name -> RGB image of each demo sample photo."""
    return {name: Image.fromarray(load()).convert("RGB") for name, load in _loaders().items()}


def bundled_photos() -> dict[str, Image.Image]:
    """File name -> RGB image of every real photograph bundled with scikit-image."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return {name: Image.open(folder / name).convert("RGB") for name in BUNDLED_PHOTOS}


def random_views(image: Image.Image, count: int, seed: int) -> list[Image.Image]:
    """``count`` crops of 35-100% of each side at random places, half of them mirrored: what a
    camera pointed a little differently would see. The same seed gives the same views."""
    rng = np.random.default_rng(seed)
    width, height = image.size
    views = []
    for _ in range(count):
        scale = rng.uniform(0.35, 1.0)
        w, h = int(width * scale), int(height * scale)
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        view = image.crop((x, y, x + w, y + h))
        views.append(ImageOps.mirror(view) if rng.random() < 0.5 else view)
    return views


def write_sample_photos(folder: Path, quality: int = 92) -> list[Path]:
    """Write the sample photos as JPEG files (what a camera would produce); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in sample_photos().items():
        path = folder / f"{name}.jpg"
        image.save(path, format="JPEG", quality=quality)
        paths.append(path)
    return paths
