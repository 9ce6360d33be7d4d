"""The embeddings' views: what each one is, and that the plain one is what a request becomes."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from fieldlens_core.model import image_tensor, preprocess, resize_and_crop, to_tensor, to_tensors
from fieldlens_retrain.backbone import INPUT_SPEC
from fieldlens_retrain.embeddings import VIEWS, views_of


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Noise with a gradient: every pixel differs from its neighbours, so resampling shows."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(160, 160), (400, 300), (333, 517)])
def test_the_plain_view_is_the_tensor_a_request_of_that_image_becomes(size: tuple[int, int]) -> None:
    """evaluate.HeadAnswers answers for the served graph from the plain view's embedding."""
    body = jpeg(photo(*size))
    views = views_of(Image.open(io.BytesIO(body)).convert("RGB"))
    assert len(views) == len(VIEWS) and all(view.size == (INPUT_SPEC.size, INPUT_SPEC.size) for view in views)
    np.testing.assert_array_equal(to_tensors(views, INPUT_SPEC)[0], preprocess(body, INPUT_SPEC)[0])


def astronaut(width: int, height: int) -> Image.Image:
    """scikit-image's sample photo at another size: edges, skin, sky and white highlights."""
    from skimage import data

    pixels = data.astronaut()  # type: ignore[no-untyped-call]
    return Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS)


@pytest.mark.parametrize("size", [(160, 160), (400, 400), (333, 517), (161, 160)])
@pytest.mark.parametrize("make", [photo, astronaut])
def test_each_view_is_the_image_changed_then_resized(
    size: tuple[int, int], make: Callable[[int, int], Image.Image]
) -> None:
    """Each view as if resized after the change; the mirror and the darker copy are made from the
    plain view, which gives the same pixels (the mirror) or the same up to rounding (darker)."""
    image = make(*size)
    width, height = image.size
    expected = [
        image,
        ImageOps.mirror(image),
        image.crop((0, 0, int(width * 0.85), int(height * 0.85))),
        image.crop((int(width * 0.15), int(height * 0.15), width, height)),
        ImageEnhance.Brightness(image).enhance(0.6),
        ImageEnhance.Brightness(image).enhance(1.4),
    ]
    made = [np.asarray(view, dtype=np.int16) for view in views_of(image)]
    wanted = [np.asarray(resize_and_crop(view, INPUT_SPEC), dtype=np.int16) for view in expected]
    for name, ours, theirs in zip(VIEWS, made, wanted, strict=True):
        if name == "darker":
            assert np.abs(ours - theirs).max() <= 2, name  # darkened after resizing: rounding only
        else:
            np.testing.assert_array_equal(ours, theirs, err_msg=name)


def test_a_batch_is_its_images_scaled_one_by_one() -> None:
    views = views_of(photo(200, 180))
    np.testing.assert_array_equal(
        to_tensors(views, INPUT_SPEC), np.concatenate([to_tensor(view, INPUT_SPEC) for view in views])
    )


def test_the_torch_features_are_what_the_networks_head_reads_and_are_computed_once(tmp_path: Path) -> None:
    """A frozen candidate's export check takes torch's logits from its head on these (train.py)."""
    import hashlib

    import torch

    from fieldlens_retrain.backbone import load_backbone
    from fieldlens_retrain.embeddings import EmbeddingCache
    from tests.helpers.colour_photos import write_class_folders

    write_class_folders(tmp_path / "photos", 1)
    paths = sorted((tmp_path / "photos").glob("*/*.jpg"))[:2]
    Image.open(paths[1]).save(paths[1].with_suffix(".webp"))  # a dataset may hold what the service refuses
    paths[1] = paths[1].with_suffix(".webp")
    items = [(hashlib.sha256(p.read_bytes()).hexdigest(), p) for p in paths]
    inputs, features = EmbeddingCache(tmp_path / "cache").torch_features(items)
    network = load_backbone(num_classes=3)
    with torch.no_grad():
        whole = torch.cat([network(torch.from_numpy(image_tensor(Image.open(p), INPUT_SPEC))) for p in paths])
        from_features = network._fc(torch.from_numpy(features))
    assert features.shape == (2, 1280) and features.dtype == np.float32
    assert np.allclose(from_features.numpy(), whole.numpy(), atol=1e-4)
    assert all(np.array_equal(i, image_tensor(Image.open(p), INPUT_SPEC)) for i, p in zip(inputs, paths, strict=True))
    kept = sorted((tmp_path / "cache").rglob("torch-*/*/*.npy"))
    assert len(kept) == 2
    written = [(f.stat().st_ino, f.stat().st_mtime_ns) for f in kept]
    again = EmbeddingCache(tmp_path / "cache").torch_features(items)[1]
    assert [(f.stat().st_ino, f.stat().st_mtime_ns) for f in kept] == written  # read, not computed and written again
    assert np.array_equal(again, features)
