"""Real labelled product photos for the retrain demo: Fashion-MNIST from Debian's dataset-fashion-mnist.

Studio photos (the dataset as is: a light product on black, upscaled) train the base model.
Field photos are other photos of the dataset as a camera in a shop or a warehouse would see
them: a coloured, textured background, tinted products, uneven lighting, blur, sensor noise,
a slight tilt and shift, and JPEG compression. The demo's ground truth stands in for a person
labelling field images.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from fieldlens_core.errors import FieldlensError

DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
SIZE = 160


class DatasetMissingError(FieldlensError, FileNotFoundError):
    """Debian's dataset-fashion-mnist is not installed."""


def load(split: str, directory: Path = DATASET_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N) of the ``train`` or ``t10k`` split."""
    images_path = directory / f"{split}-images-idx3-ubyte.gz"
    labels_path = directory / f"{split}-labels-idx1-ubyte.gz"
    if not images_path.exists():
        raise DatasetMissingError(
            f"{images_path} is missing: `sudo apt-get install dataset-fashion-mnist` (`make system-deps` does it)"
        )
    with gzip.open(images_path) as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_path) as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    return images, labels


def studio_photo(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BICUBIC).convert("RGB")


def field_photo(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """One field photo as JPEG bytes (what a camera would hand over)."""
    item = np.asarray(Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    alpha = np.clip(item * 1.6, 0, 1)[..., None]
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    base = rng.uniform(0.25, 0.85, 3)
    gradient = base + rng.uniform(-0.25, 0.25, 3) * (
        x[..., None] * rng.uniform(-1, 1) + y[..., None] * rng.uniform(-1, 1)
    )
    texture = rng.normal(0, 0.06, (SIZE // 8, SIZE // 8, 1))
    texture = (
        np.asarray(
            Image.fromarray(((texture[..., 0] + 0.5) * 255).clip(0, 255).astype(np.uint8)).resize(
                (SIZE, SIZE), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )[..., None]
        / 255
        - 0.5
    )
    background = np.clip(gradient + texture, 0, 1)
    tint = rng.uniform(0.45, 1.0, 3)
    photo = background * (1 - alpha) + (item[..., None] * tint) * alpha
    light = rng.uniform(0.55, 1.25) * (1 + rng.uniform(-0.35, 0.35) * (x[..., None] - 0.5))
    photo = np.clip(photo * light + rng.normal(0, 0.04, photo.shape), 0, 1)
    image = Image.fromarray((photo * 255).astype(np.uint8))
    image = image.rotate(
        rng.uniform(-12, 12),
        resample=Image.Resampling.BILINEAR,
        fillcolor=tuple(int(c * 255) for c in background[0, 0]),
        translate=(int(rng.integers(-10, 11)), int(rng.integers(-10, 11))),
    )
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.8)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(30, 75)))
    return buffer.getvalue()


def pick(labels: np.ndarray, per_class: int, rng: np.random.Generator, exclude: set[int] | None = None) -> list[int]:
    """``per_class`` indices of every class, at random, none from ``exclude``."""
    chosen: list[int] = []
    for label in range(len(LABELS)):
        candidates = [int(i) for i in np.flatnonzero(labels == label) if not exclude or int(i) not in exclude]
        chosen += [int(i) for i in rng.choice(candidates, per_class, replace=False)]
    return chosen


def write_studio(folder: Path, images: np.ndarray, labels: np.ndarray, indices: list[int]) -> None:
    """base/<label>/<index>.jpg: the layout `fieldlens dataset build --base` reads."""
    for index in indices:
        target = folder / LABELS[int(labels[index])] / f"{index}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        studio_photo(images[index]).save(target, format="JPEG", quality=92)


def write_field(folder: Path, images: np.ndarray, labels: np.ndarray, indices: list[int], seed: int) -> dict[str, str]:
    """Field photos named <index>.jpg; returns file name -> true label (the demo's stand-in for a person)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for index in indices:
        name = f"{index:05d}.jpg"
        (folder / name).write_bytes(field_photo(images[index], rng))
        truth[name] = LABELS[int(labels[index])]
    return truth
