"""write_package, the one writer of packages, on a tiny torch network: its known answer passes the device's check."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fieldlens_core.model import image_tensor, preprocess
from fieldlens_core.model_check import check_package
from fieldlens_core.model_package import REFERENCE_FILE, InputSpec, read_card
from fieldlens_retrain.packaging import served_png, view_png, write_package

SPEC = InputSpec(size=32, resize=36, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
COLOURS = [(230, 30, 30), (30, 200, 40), (40, 40, 220), (200, 200, 40), (120, 120, 120), (20, 20, 20)]


def tiny_network() -> object:
    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    return network.eval()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packaging") / "candidate"
    calibration = [image_tensor(Image.new("RGB", (40, 36), colour), SPEC) for colour in COLOURS]
    card = {"name": "tiny-torch", "version": "1.0.0", "architecture": "conv"}
    write_package(out, tiny_network(), ["a", "b", "c"], SPEC, calibration, card)
    return out


@pytest.mark.slow  # torch's import and export: about 7 s
def test_the_package_carries_a_known_answer_for_every_variant(written: Path) -> None:
    card = read_card(written)
    assert {"reference.png", REFERENCE_FILE} <= set(card.files)
    reference = json.loads((written / REFERENCE_FILE).read_text())
    assert set(reference["expected"]) == set(card.variants) == {"fp32", "int8"}
    assert Image.open(written / "reference.png").size == (SPEC.size, SPEC.size)


@pytest.mark.slow
def test_the_written_package_passes_the_devices_check(written: Path) -> None:
    checked = check_package(written, require_reference=True)
    assert checked.reference is not None
    for variant, model in checked.models.items():
        top = model.classify((written / "reference.png").read_bytes(), 1, "image/png").predictions[0]
        assert top.label == checked.reference.expected[variant].label


def test_a_view_goes_back_to_the_pixels_it_came_from() -> None:
    tensor = image_tensor(Image.new("RGB", (32, 32), (10, 128, 250)), SPEC)
    with Image.open(io.BytesIO(view_png(tensor, SPEC))) as image:
        assert np.asarray(image)[5, 5].tolist() == [10, 128, 250]


@pytest.mark.parametrize("size", [(40, 36), (300, 200)])  # the larger JPEG is drafted at 1/2 by the service
def test_a_photo_as_served_png_is_answered_as_the_photo(size: tuple[int, int]) -> None:
    """A frozen candidate's reference image is a validation photo's served pixels, so the answers
    its head gave on the photo's cached features are the ones the device gets from the PNG."""
    pixels = np.random.default_rng(3).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    photo = buffer.getvalue()
    png = served_png(photo, SPEC)
    assert png[:4] == b"\x89PNG"
    assert np.array_equal(preprocess(png, SPEC, "image/png"), preprocess(photo, SPEC))
